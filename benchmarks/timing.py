"""Wall-clock timing shared by every benchmark: interleaved rounds, medians, round-by-round speed-ups, the machine's
matmul peak."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


__all__ = ["bf16_supported", "matmul_peak", "medians", "paired_speedup", "synchronize", "time_interleaved"]


def synchronize(device: str) -> None:
    """Wait for queued CUDA kernels, so that a wall-clock time covers the work; nothing to wait for on CPU."""
    if device == "cuda":
        torch.cuda.synchronize()


def time_interleaved(
    contenders: dict[str, Callable[[], object]],
    repeats: int,
    warm_up: dict[str, Callable[[], object]] | None = None,
) -> dict[str, list[float]]:
    """A warm-up, then `repeats` rounds of running every contender once; seconds per contender and round.

    The warm-up is one round of the contenders themselves, or each callable of `warm_up` once (e.g. the same
    contender on a few sentences; `{}` for none). A contender's seconds are the wall time of its call, or the float it
    returns (a contender that runs in another process and times itself there).

    Interleaving puts every contender on the same machine state in each round: load from other processes on a
    shared machine hits all alike instead of whichever happens to run then.
    """
    for function in (contenders if warm_up is None else warm_up).values():
        function()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, function in contenders.items():
            start = time.perf_counter()
            seconds = function()
            times[name].append(seconds if isinstance(seconds, float) else time.perf_counter() - start)
    return times


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    """The median seconds of each contender of `time_interleaved`."""
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def paired_speedup(times: dict[str, list[float]], peer: str, base: str = "ours") -> dict:
    """Speed-up of `base` ("ours") over `peer` round by round (peer seconds / base seconds within one round):
    median and quartiles (`statistics.quantiles`, n=4, method="inclusive": the quartiles stay between the smallest
    and largest ratio; the default "exclusive" method extrapolates past them with few rounds, down to a negative
    quartile of positive ratios with two). A shared machine's speed drifts between rounds; the two runs of one round
    see nearly the same machine, so these ratios show how far the ratio of medians can be trusted.
    """
    ratios = [theirs / ours for ours, theirs in zip(times[base], times[peer], strict=True)]
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else (ratios[0],) * 3
    return {"median": median, "q1": q1, "q3": q3, "per_round": ratios}


def matmul_peak(device: str, dtype: torch.dtype, n: int, repeats: int) -> dict:
    """This machine's dense matmul peak: the best GFLOP/s of `repeats` runs of `torch.mm` of two n x n matrices
    (2 n^3 FLOPs), after two warm-ups. The best rather than the median, because a peak is what the hardware reaches
    when nothing else interferes (a shared machine's median swings with its neighbours' load); it makes MFU
    smaller, i.e. the conservative choice. The median is recorded too."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for index in range(repeats + 2):  # two warm-ups
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)  # (n, n) @ (n, n)
        synchronize(device)
        if index >= 2:
            times.append(time.perf_counter() - start)
    return {
        "n": n,
        "dtype": str(dtype),
        "seconds": times,
        "peak_gflops": 2 * n**3 / min(times) / 1e9,
        "median_gflops": 2 * n**3 / statistics.median(times) / 1e9,
    }


def bf16_supported(device: str) -> bool:
    """Whether bf16 autocast runs on `device` (CUDA: the GPU supports it; CPU: a bf16 matmul under autocast runs)."""
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.mm(torch.ones(8, 8), torch.ones(8, 8))
        return True
    except RuntimeError:
        return False
