"""Peak memory of one measurement, each in a fresh worker process so that no earlier allocation hides it.

A worker is started from the repository root as

    python -m benchmarks.memory '<JSON list of specs>' [--threads N]

and prints a JSON list with one result per spec on its last line. A spec names its task ("train": one training step
of a contender; "generate": one beam-search batch; "encoder": one encoder forward) and its settings; see `measure`.
On CPU the peak is the kernel's peak RSS (VmHWM, reset before each measurement), on CUDA the allocator's peak.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from . import REPO_ROOT
from .contenders import Size, build_contender, make_training_step, prepared_batch, translation_models
from .data import load_tokenizer, training_batch, translation_sentences


__all__ = ["WORKER_ENV", "measure", "measure_peak", "run_workers"]

MEMORY_RESOLUTION = 4096  # bytes: a peak-memory delta is at least one page (a reused page reads as 0)
# glibc settings for the workers: a fixed mmap threshold turns off glibc's dynamic threshold (which grows to 32 MiB
# and then serves freed activations from the already-resident heap, hiding them from RSS), so that every allocation
# of 64 KiB or more is mapped on allocation and unmapped on free, and RSS follows the live tensors.
WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072"}


def current_rss() -> int:
    """Resident set size of this process now, in bytes."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import psutil

        return psutil.Process().memory_info().rss


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM; Linux >= 4.0: write 5 to clear_refs). False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss() -> int:
    """Peak resident set size since the last reset (or since the start), in bytes."""
    try:
        with open("/proc/self/status") as handle:
            return int(re.search(r"VmHWM:\s+(\d+) kB", handle.read()).group(1)) * 1024
    except (OSError, AttributeError):
        import resource

        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return maxrss if sys.platform == "darwin" else maxrss * 1024


def release_free_heap() -> None:
    """Give memory that glibc holds after `free` back to the OS, so that RSS before a measurement is live memory."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def measure_peak(function: Callable[[], object], device: str) -> dict:
    """Peak memory above the level before `function()`: CUDA allocator peak, or CPU peak RSS minus RSS before."""
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        start = time.perf_counter()
        function()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated()
        return {
            "method": "torch.cuda.max_memory_allocated",
            "before": before,
            "peak": peak,
            "delta_mib": (peak - before) / 2**20,
            "seconds": seconds,
        }
    release_free_heap()
    method = "VmHWM after clear_refs" if reset_peak_rss() else "ru_maxrss (peak since process start)"
    before = current_rss()
    start = time.perf_counter()
    function()
    seconds = time.perf_counter() - start
    peak = peak_rss()
    delta_mib = max(peak - before, MEMORY_RESOLUTION) / 2**20
    return {"method": method, "before": before, "peak": peak, "delta_mib": delta_mib, "seconds": seconds}


def measure(spec: dict) -> dict:
    """One memory measurement, in this process; the result of `measure_peak`.

    Every spec has `task`, `device`, `size` (a `Size` as a dict), `data_dir`, `tokenizer_sentences` and
    `tokenizer_vocab`; "train" adds `kind`, `tokens`, `batch_pool`, `precision`; "generate" adds `kind`, `batch`,
    `num_beams`, `max_new_tokens`, `model_dir`; "encoder" adds `length` and `attn_implementation`.

    Raises:
        ValueError: for an unknown task.
    """
    device, size, data_dir = spec["device"], Size(**spec["size"]), Path(spec["data_dir"])
    tokenizer = load_tokenizer(data_dir, spec["tokenizer_sentences"], spec["tokenizer_vocab"])
    if spec["task"] == "train":
        batch = prepared_batch(training_batch(tokenizer, data_dir, spec["tokens"], spec["batch_pool"]), device)
        model = build_contender(spec["kind"], size).to(device)
        step = make_training_step(spec["kind"], model, batch, spec["precision"], device)
        step()  # Adam's state and the allocator's pools exist after one step; measure the steady state
        return measure_peak(step, device)
    if spec["task"] == "generate":
        marian, ours, model_tokenizer = translation_models(size, spec["model_dir"])
        tokenizer = model_tokenizer or tokenizer
        model = ours if spec["kind"] == "ours" else marian
        del marian, ours
        model = model.to(device)
        sentences = translation_sentences(data_dir, spec["batch"])
        inputs = tokenizer(sentences, return_tensors="pt", padding=True).to(device)
        kwargs = dict(num_beams=spec["num_beams"], max_new_tokens=spec["max_new_tokens"], do_sample=False)
        with torch.no_grad():
            return measure_peak(lambda: model.generate(**inputs, **kwargs), device)
    if spec["task"] == "encoder":
        model = build_contender("ours", size, attn_implementation=spec["attn_implementation"]).eval().to(device)
        encoder = model.get_encoder()
        text = " ".join(translation_sentences(data_dir, 1000))  # real text, longer than the longest length
        input_ids = tokenizer(text, return_tensors="pt")["input_ids"][:, : spec["length"]]  # (1, length)
        assert input_ids.shape[1] == spec["length"], "test_2016_flickr is too short for this length"
        encoder.to(torch.bfloat16 if device == "cuda" else torch.float32)
        with torch.no_grad():
            return measure_peak(lambda: encoder(input_ids=input_ids.to(device)), device)
    raise ValueError(f"unknown task {spec['task']!r}")


def run_workers(specs: list[dict], fresh: bool, parallel: int, threads: int | None = None) -> list[dict]:
    """Run each spec in its own fresh `python -m benchmarks.memory` process (or all in one, if not `fresh`).

    `parallel` workers run at once: a process's peak memory does not depend on its neighbours (its `seconds` do, so
    those are not timings), and fewer cores then sit idle while workers import torch. `threads`: torch threads per
    worker (None: torch's default).

    Raises:
        RuntimeError: with the worker's stderr, if a worker fails.
    """

    def run(group: list[dict]) -> list[dict]:
        completed = subprocess.run(
            [sys.executable, "-m", "benchmarks.memory", json.dumps(group)]
            + ([] if threads is None else ["--threads", str(threads)]),
            capture_output=True,
            text=True,
            check=False,
            cwd=REPO_ROOT,
            env={**os.environ, **WORKER_ENV},
        )
        if completed.returncode != 0:
            raise RuntimeError(f"memory worker failed for {group}:\n{completed.stderr[-4000:]}")
        return json.loads(completed.stdout.strip().splitlines()[-1])

    groups = [[spec] for spec in specs] if fresh else [specs]
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return [result for results in pool.map(run, groups) for result in results]


def main() -> None:
    parser = argparse.ArgumentParser(description="Measure the peak memory of each spec (a JSON list) in turn.")
    parser.add_argument("specs", help="JSON list of specs; see `measure`.")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's).")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(json.dumps([measure(spec) for spec in json.loads(args.specs)]))


if __name__ == "__main__":
    main()
