"""Peak memory of one measurement, each in a fresh worker process so that no earlier allocation hides it.

A worker is started from the repository root as `python -m benchmarks.memory --specs '<JSON list>' [--threads N]`
and prints a JSON list with one result per spec on its last line. A spec names its task ("train": one training step
of a contender; "generate": one beam-search batch; "encoder": one encoder forward) and its settings; see `measure`.
On CPU the peak is the kernel's peak RSS (VmHWM, reset before each measurement), on CUDA the allocator's peak.
"""

from __future__ import annotations

import dataclasses
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
from transformers import HfArgumentParser

from . import REPO_ROOT
from .contenders import CONTENDERS, Size, build_contender, make_training_step, prepared_batch, translation_models
from .data import load_tokenizer, training_batch, translation_sentences


__all__ = ["WORKER_ENV", "measure", "measure_peak", "memory_section", "run_workers"]

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
        step = make_training_step(spec["kind"], model, size, batch, spec["precision"], device)
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
            [sys.executable, "-m", "benchmarks.memory", "--specs", json.dumps(group)]
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


def memory_section(run_plan, device: str, data_dir: Path, model_dir: str | None, quick: bool) -> dict:
    """`benchmarks.run`'s memory section: peak memory of a training step of every contender, of a beam-search batch
    (ours and Marian) and of the encoder ("sdpa" and "eager") as `run_plan` (a `benchmarks.run.Plan`) sets them, in
    worker processes (`run_workers`), two at a time, with ratios."""
    sizes = {size.name: size for size in run_plan.sizes}
    common = dict(
        device=device,
        data_dir=str(data_dir),
        tokenizer_sentences=run_plan.tokenizer_sentences,
        tokenizer_vocab=run_plan.tokenizer_vocab,
    )
    specs = []
    for name in run_plan.memory_sizes:
        for kind in CONTENDERS:
            specs.append(
                dict(
                    common,
                    task="train",
                    kind=kind,
                    size=dataclasses.asdict(sizes[name]),
                    tokens=run_plan.train_tokens[name],
                    batch_pool=run_plan.batch_pool,
                    precision="fp32",
                )
            )
    translate_size = dataclasses.asdict(sizes[run_plan.translate_size])
    for kind in ("ours", "marian"):
        specs.append(
            dict(
                common,
                task="generate",
                kind=kind,
                size=translate_size,
                batch=run_plan.translate_batch,
                num_beams=4,
                max_new_tokens=run_plan.max_new_tokens,
                model_dir=model_dir,
            )
        )
    base = dataclasses.asdict(run_plan.sizes[-1])
    for length in run_plan.encoder_lengths:
        for attn_implementation in ("sdpa", "eager"):
            specs.append(
                dict(common, task="encoder", size=base, length=length, attn_implementation=attn_implementation)
            )
    threads, parallel = 1 if quick else None, 2  # torch threads as in this process; two workers at once
    results = run_workers(specs, run_plan.fresh_process_per_measurement, parallel=parallel, threads=threads)
    section: dict = {
        "training": {},
        "generation": {},
        "encoder": {},
        "parallel_workers": parallel,
        "worker_env": WORKER_ENV,
        "fresh_process_each": run_plan.fresh_process_per_measurement,
    }
    for spec, result in zip(specs, results, strict=True):
        if spec["task"] == "train":
            section["training"].setdefault(spec["size"]["name"], {})[spec["kind"]] = result
        elif spec["task"] == "generate":
            section["generation"][spec["kind"]] = result
        else:
            section["encoder"].setdefault(str(spec["length"]), {})[spec["attn_implementation"]] = result
    for name, results_by_kind in section["training"].items():
        mib = {kind: result["delta_mib"] for kind, result in results_by_kind.items()}
        section["training"][name]["ratio_ours_over_marian"] = mib["ours"] / mib["marian"]
        section["training"][name]["ratio_ours_over_torch"] = mib["ours"] / mib["torch"]
        print(f"memory train {name}: " + ", ".join(f"{k} {v:,.0f} MiB" for k, v in mib.items()))
    generation = section["generation"]
    generation["ratio_ours_over_marian"] = generation["ours"]["delta_mib"] / generation["marian"]["delta_mib"]
    for length, by_impl in section["encoder"].items():
        by_impl["ratio_sdpa_over_eager"] = by_impl["sdpa"]["delta_mib"] / by_impl["eager"]["delta_mib"]
        print(
            f"memory encoder {length}: sdpa {by_impl['sdpa']['delta_mib']:,.1f} MiB, "
            f"eager {by_impl['eager']['delta_mib']:,.1f} MiB"
        )
    return section


@dataclasses.dataclass
class WorkerArguments:
    """A memory worker's command line (`run_workers` writes it)."""

    specs: str = dataclasses.field(metadata={"help": "JSON list of specs; see `measure`."})
    threads: int | None = dataclasses.field(default=None, metadata={"help": "torch threads (default: torch's)."})


def main(argv: list[str] | None = None) -> None:
    """Measure the peak memory of each spec in turn; print the results as one JSON line."""
    (args,) = HfArgumentParser(WorkerArguments).parse_args_into_dataclasses(args=argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(json.dumps([measure(spec) for spec in json.loads(args.specs)]))


if __name__ == "__main__":
    main()
