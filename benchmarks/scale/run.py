"""The paper's scale on this machine, in one command: for each WMT-size corpus, a cold and a warm launch of the base
preset (preprocessing, launch to first step, resident memory of the process tree) and the collator alone (the steps,
targets and results: benchmarks/README.md)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import psutil
from transformers import HfArgumentParser

from .. import BASE_PRESET, REPO_ROOT, RESULTS_DIR
from ..report import machine_name, target, write_report
from .collator import collator_throughput
from .corpus import build_corpus, hub_config_name


__all__ = ["launch", "main", "phase_seconds", "run_train"]

LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ [\w.]+: (.*)$")


def phase_seconds(stderr: str, started: float) -> dict:
    """Times of train.py's preprocessing phases from its log lines (`asctime`, ms): BPE training and tokenization
    seconds and rate as train.py logs them, and seconds from launch (`started`, epoch seconds) to the model."""
    phases: dict = {}
    for line in stderr.splitlines():
        match = LOG_LINE.match(line)
        if not match:
            continue
        when = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() - started
        message = match.group(2)
        if found := re.match(r"trained the shared BPE vocabulary in ([\d.]+) s", message):
            phases["bpe_seconds"] = float(found.group(1))
        if found := re.match(r"train: tokenized (\d+) pairs in ([\d.]+) s \(([\d.]+) pairs/s", message):
            phases["tokenize_seconds"], phases["tokenize_pairs_per_second"] = float(found[2]), float(found[3])
        if message.startswith("model: "):
            phases["launch_to_model_seconds"] = round(when, 1)
    return phases


def run_train(corpus: Path, output_dir: Path, cache: Path, arguments: list[str]) -> dict:
    """Run train.py with the base preset on `corpus` (its Parquet copy) into `output_dir`, the datasets cache in
    `cache`, and `arguments` after the preset's; watch it until it ends.

    Returns: wall_seconds; first_step_seconds, from launch to the first line of log.jsonl; peak_rss_mib, the largest
    resident memory of the launched process tree (MiB, sampled every 0.2 s); rss_samples, (seconds, MiB) pairs, at
    most ~200; and the phase times of `phase_seconds`. The stderr is kept beside output_dir (`<name>.stderr`).

    Raises:
        RuntimeError: if the run fails (with the end of its stderr).
    """
    command = [
        sys.executable, str(REPO_ROOT / "training" / "train.py"), "--config", str(BASE_PRESET),
        "--dataset_name", str(corpus / "parquet"), "--dataset_config_name", hub_config_name(("en", "de")),
        "--output_dir", str(output_dir), "--report_to", "none", *arguments,
    ]  # fmt: skip
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    stderr_path = output_dir.with_name(output_dir.name + ".stderr")
    started, first_step, peak, samples = time.time(), None, 0.0, []
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        root = psutil.Process(process.pid)
        while process.poll() is None:
            try:
                rss = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20
            except psutil.Error:  # a process ended between listing and reading
                rss = 0.0
            peak = max(peak, rss)
            samples.append((round(time.time() - started, 1), round(rss, 1)))
            if first_step is None and (output_dir / "log.jsonl").is_file():
                if (output_dir / "log.jsonl").read_text().strip():
                    first_step = time.time() - started
            time.sleep(0.2)
    log = stderr_path.read_text()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{log[-4000:]}")
    return {
        "first_step_seconds": round(first_step, 1) if first_step is not None else None,
        "wall_seconds": round(time.time() - started, 1),
        "peak_rss_mib": round(peak, 1),
        **phase_seconds(log, started),
        "rss_samples": samples[:: max(1, len(samples) // 200)],
    }


def launch(corpus: Path, output_dir: Path, cache: Path, steps: int, max_tokens: int) -> dict:
    """`run_train` for `steps` CPU steps of `max_tokens` a side, a log line a step, no validation, test or
    checkpoints; adds the number of steps and the median tokens/s of the log lines.

    Raises:
        RuntimeError: if the run fails (with the end of its stderr).
    """
    arguments = [
        "--max_steps", str(steps), "--max_tokens", str(max_tokens), "--logging_steps", "1", "--eval_steps", "0",
        "--do_test", "false", "--save_steps", "0", "--save_minutes", "0", "--average_last_k", "1",
        "--use_cpu", "true",
    ]  # fmt: skip
    result = run_train(corpus, output_dir, cache, arguments)
    records = [json.loads(line) for line in (output_dir / "log.jsonl").read_text().splitlines()]
    return {
        **result,
        "steps": len(records),
        "median_tokens_per_second": sorted(r["tokens_per_second"] for r in records)[len(records) // 2],
    }


def markdown(results: dict) -> str:
    """The results as a markdown report (one row per corpus size)."""
    lines = [
        f"# Scale: WMT-size synthetic corpora on {results['machine']}",
        "",
        f"Base preset (65M parameters) for {results['steps']} steps of {results['max_tokens']} tokens per side on "
        "CPU; datasets cache emptied before each cold launch. Times in seconds, memory in MiB (whole process tree).",
        "",
        "| pairs | corpus build | cold: BPE | cold: tokenize (pairs/s) | cold: first step | cold: peak RSS | "
        "warm: first step | warm: peak RSS | collator tokens/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for size in results["sizes"]:
        cold, warm = size["cold"], size["warm"]
        lines.append(
            f"| {size['pairs']:,} | {size['corpus_seconds']} | {cold.get('bpe_seconds')} | "
            f"{cold.get('tokenize_seconds')} ({cold.get('tokenize_pairs_per_second', 0):,.0f}) | "
            f"{cold['first_step_seconds']} | {cold['peak_rss_mib']:,.0f} | {warm['first_step_seconds']} | "
            f"{warm['peak_rss_mib']:,.0f} | {size['collator']['padded_tokens_per_second']:,.0f} |"
        )
    if "rss_mib_per_million_pairs" in results:
        lines += ["", f"Peak RSS per additional million pairs (cold): {results['rss_mib_per_million_pairs']} MiB."]
    lines += ["", "Targets at the largest size:", ""]
    for name, check in results["targets"].items():
        verdict = "holds" if check["holds"] else "MISSED"
        lines.append(f"- {name}: {check['value']} (target {check['target']}): {verdict}")
    return "\n".join(lines) + "\n"


@dataclasses.dataclass
class ScaleArguments:
    """`python -m benchmarks.scale.run` (benchmarks/README.md)."""

    pairs: list[int] = dataclasses.field(
        default_factory=lambda: [1_000_000, 4_500_000], metadata={"help": "Corpus sizes."}
    )
    steps: int = dataclasses.field(default=20, metadata={"help": "Optimizer steps per launch (base model, CPU)."})
    max_tokens: int = dataclasses.field(default=1024, metadata={"help": "Tokens per side per batch (CPU steps)."})
    work_dir: Path = dataclasses.field(default=Path("/tmp/vaswani-scale"), metadata={"help": "Corpora, caches, runs."})
    output: Path = dataclasses.field(default=RESULTS_DIR, metadata={"help": "Where the results files go."})


def main(argv: list[str] | None = None) -> None:
    """CLI (benchmarks/README.md)."""
    (args,) = HfArgumentParser(ScaleArguments, description=__doc__.split("\n\n")[0]).parse_args_into_dataclasses(argv)
    results = {"machine": machine_name("cpu"), "steps": args.steps, "max_tokens": args.max_tokens, "sizes": []}
    for pairs in args.pairs:
        corpus = args.work_dir / f"corpus-{pairs}"
        if not (corpus / "corpus.json").is_file():
            build_corpus(corpus, pairs, formats=("parquet",))
        size = {"pairs": pairs, "corpus_seconds": json.loads((corpus / "corpus.json").read_text())["seconds"]}
        cache, runs = args.work_dir / f"cache-{pairs}", args.work_dir / f"runs-{pairs}"
        for path in (cache, runs):
            shutil.rmtree(path, ignore_errors=True)
        runs.mkdir(parents=True)
        for name in ("cold", "warm"):
            size[name] = launch(corpus, runs / name, cache, args.steps, args.max_tokens)
            shown = {key: value for key, value in size[name].items() if key != "rss_samples"}
            print(f"{pairs:,} pairs, {name}: {json.dumps(shown)}", flush=True)
        env_cache = {"HF_DATASETS_CACHE": str(cache)}
        size["collator"] = collator_throughput(corpus / "parquet", runs / "cold", env_cache)
        results["sizes"].append(size)
    if len(results["sizes"]) > 1:
        small, large = results["sizes"][-2], results["sizes"][-1]
        growth = large["cold"]["peak_rss_mib"] - small["cold"]["peak_rss_mib"]
        slope = growth / ((large["pairs"] - small["pairs"]) / 1e6)
        results["rss_mib_per_million_pairs"] = round(slope, 1)
    last = results["sizes"][-1]
    results["targets"] = {
        "tokenize_pairs_per_second": target(last["cold"].get("tokenize_pairs_per_second", 0), ">=", 40_000),
        "warm_first_step_seconds": target(last["warm"]["first_step_seconds"], "<=", 60),
        "peak_rss_mib": target(max(last["cold"]["peak_rss_mib"], last["warm"]["peak_rss_mib"]), "<=", 3072),
        "collator_padded_tokens_per_second": target(last["collator"]["padded_tokens_per_second"], ">=", 1_000_000),
    }
    write_report(results, args.output, f"{results['machine']}-scale", markdown(results))


if __name__ == "__main__":
    main()
