"""The base preset on one CUDA GPU at WMT size: preprocessing, then steps of the paper's base model, in one command;
tokens/s, MFU against the measured bf16 peak, memory, loss, test BLEU (phases and results: benchmarks/README.md)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
from pathlib import Path

import datasets
import torch
from transformers import HfArgumentParser

from vaswani_transformer import VaswaniTransformerForConditionalGeneration
from vaswani_transformer.training.batching import TokenBatchSampler, build_collator, non_pad_tokens
from vaswani_transformer.training.data import load_parallel_dataset
from vaswani_transformer.training.preprocessing import LENGTH_COLUMNS, length_columns, tokenize_split

from .. import RESULTS_DIR
from ..flops import model_flops_utilization, training_flops
from ..report import machine_name, write_report
from ..timing import matmul_peak
from . import base_preset
from .corpus import build_corpus, hub_config_name
from .run import run_train


__all__ = ["flops_per_token", "main"]

LANGUAGES = ("en", "de")  # the base preset's source and target


def flops_per_token(model_dir: Path, corpus: Path, cache: Path, max_tokens: int, pairs: int = 20_000) -> float:
    """Analytic training FLOPs per non-pad (source + target) token of the trained model on its own kind of batch:
    the first `pairs` training pairs, tokenized by the run's tokenizer and packed by `TokenBatchSampler` with the
    run's `max_tokens` and padding rule (`benchmarks.flops.training_flops`, summed over the batches)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = VaswaniTransformerForConditionalGeneration.from_pretrained(model_dir)
    datasets.config.HF_DATASETS_CACHE = str(cache)  # the run's cache: the corpus is read from its Arrow copy
    raw = load_parallel_dataset(
        *LANGUAGES, dataset_name=str(corpus / "parquet"), dataset_config_name=hub_config_name(LANGUAGES)
    )["train"].select(range(pairs))
    preset = base_preset()
    limits = (preset["max_source_length"], preset["max_target_length"])
    tokenized, _ = tokenize_split(raw, tokenizer, LANGUAGES, limits)
    pad = preset["pad_to_multiple_of"]
    sampler = TokenBatchSampler(*length_columns(tokenized), max_tokens, pad_to_multiple_of=pad, shuffle=False)
    collate = build_collator(tokenizer, pad)
    rows = tokenized.remove_columns(list(LENGTH_COLUMNS))
    flops = tokens = 0.0
    for indices in sampler:
        batch = collate([rows[i] for i in indices])
        flops += training_flops(model, batch)["flops_per_step"]
        tokens += sum(non_pad_tokens(batch))
    return flops / tokens


def summary(run_dir: Path, skip_steps: int) -> dict:
    """Throughput, memory and loss from `run_dir/log.jsonl`, and test BLEU from its results file."""
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    train_lines = [r for r in records if "tokens_per_second" in r]
    steady = [r["tokens_per_second"] for r in train_lines if r["step"] > skip_steps] or [
        r["tokens_per_second"] for r in train_lines
    ]
    results_files = sorted(run_dir.glob("results_*.json"))
    test = json.loads(results_files[0].read_text()) if results_files else {}
    return {
        "steps": train_lines[-1]["step"],
        "train_seconds": train_lines[-1]["elapsed_seconds"],
        "tokens_per_second_median": statistics.median(steady),
        "tokens_per_second_mean": round(statistics.fmean(steady), 1),
        "cuda_max_memory_mib": max(r.get("cuda_max_memory_mib", 0.0) for r in train_lines),
        "rss_mib_max_logged": max(r["rss_mib"] for r in train_lines),
        "loss": [(r["step"], round(r["loss"], 4)) for r in train_lines],
        "test": {k: v for k, v in test.items() if not isinstance(v, (list, dict))},
    }


def markdown(results: dict) -> str:
    """The results as a short report."""
    train = results.get("train", {})
    lines = [
        f"# The base preset on one {results['device_name']} (`python -m benchmarks.scale.gpu`)",
        "",
        f"Corpus: {results['pairs']:,} synthetic pairs (Parquet, Hub layout). torch {results['torch']}.",
        "",
        "| quantity | value |",
        "| --- | --- |",
    ]
    prepare = results.get("prepare", {})
    for key in ("corpus_seconds", "bpe_seconds", "tokenize_seconds", "tokenize_pairs_per_second"):
        if key in prepare:
            lines.append(f"| prepare: {key} | {prepare[key]} |")
    if train:
        summary_ = train["summary"]
        rows = {
            "steps": summary_["steps"],
            "tokens per side per step (max_tokens)": results["max_tokens"],
            "launch to first log line (s, from cache)": train["launch"]["first_step_seconds"],
            "training seconds": summary_["train_seconds"],
            "non-pad tokens/s per GPU (median of log lines)": summary_["tokens_per_second_median"],
            "analytic training FLOPs per non-pad token": f"{results['flops_per_token']:.3e}",
            "bf16 matmul peak (TFLOP/s, measured)": round(results["bf16_peak"]["peak_gflops"] / 1e3, 1),
            "MFU (median tokens/s)": f"{results['mfu']:.1%}",
            "max CUDA memory allocated (MiB)": summary_["cuda_max_memory_mib"],
            "peak RSS of the process tree (MiB)": train["launch"]["peak_rss_mib"],
            "first / last logged loss": f"{summary_['loss'][0][1]} / {summary_['loss'][-1][1]}",
            "test BLEU (Multi30k test_2016_flickr, sanity only)": summary_["test"].get("bleu"),
        }
        lines += [f"| {key} | {value} |" for key, value in rows.items()]
    return "\n".join(lines) + "\n"


@dataclasses.dataclass
class GpuArguments:
    """`python -m benchmarks.scale.gpu` (benchmarks/README.md)."""

    phase: str = dataclasses.field(default="all", metadata={"choices": ["prepare", "train", "all"]})
    pairs: int = dataclasses.field(default=4_500_000, metadata={"help": "Synthetic corpus size (WMT14 EN-DE: 4.5M)."})
    steps: int = dataclasses.field(default=2000, metadata={"help": "Optimizer steps of the train phase."})
    max_tokens: int = dataclasses.field(default=25_000, metadata={"help": "Tokens per side per step (one GPU)."})
    max_train_minutes: float = dataclasses.field(default=7.0, metadata={"help": "Safety stop of the train phase."})
    skip_steps: int = dataclasses.field(default=200, metadata={"help": "Log lines up to this step are warm-up."})
    work_dir: Path = dataclasses.field(default=Path("/tmp/vaswani-gpu"), metadata={"help": "Corpus, cache, runs."})
    output: Path = dataclasses.field(default=RESULTS_DIR, metadata={"help": "Where the results files go."})


def main(argv: list[str] | None = None) -> None:
    """CLI (benchmarks/README.md)."""
    parser = HfArgumentParser(GpuArguments, description=__doc__.split("\n\n")[0])
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    if not torch.cuda.is_available():
        parser.error("no CUDA device: this benchmark measures one GPU")
    corpus, cache = args.work_dir / f"corpus-{args.pairs}", args.work_dir / f"cache-{args.pairs}"
    state_file = args.work_dir / "results.json"
    results = json.loads(state_file.read_text()) if state_file.is_file() else {}
    results.update(
        pairs=args.pairs,
        max_tokens=args.max_tokens,
        device_name=torch.cuda.get_device_name(),
        torch=torch.__version__,
    )
    if args.phase in ("prepare", "all"):
        if not (corpus / "corpus.json").is_file():
            build_corpus(corpus, args.pairs, formats=("parquet",))
        run_dir = args.work_dir / "prepare-run"
        shutil.rmtree(run_dir, ignore_errors=True)
        extra = ["--max_steps", "1", "--eval_steps", "0", "--do_test", "false"]  # the preset's max_tokens
        extra += ["--save_steps", "0", "--save_minutes", "0", "--average_last_k", "1", "--logging_steps", "1"]
        results["prepare"] = {
            "corpus_seconds": json.loads((corpus / "corpus.json").read_text())["seconds"],
            **run_train(corpus, run_dir, cache, extra),
        }
        print(json.dumps(results["prepare"]), flush=True)
    if args.phase in ("train", "all"):
        run_dir = args.work_dir / "train-run"
        shutil.rmtree(run_dir, ignore_errors=True)
        extra = ["--max_steps", str(args.steps), "--max_tokens", str(args.max_tokens), "--eval_steps", "0"]
        extra += ["--max_train_minutes", str(args.max_train_minutes), "--logging_steps", "50", "--save_minutes", "0"]
        extra += ["--average_last_k", "1", "--eval_batch_size", "256"]
        launched = run_train(corpus, run_dir, cache, extra)
        results["train"] = {"launch": launched, "summary": summary(run_dir, args.skip_steps)}
        results["bf16_peak"] = matmul_peak("cuda", torch.bfloat16, 8192, 10)
        results["flops_per_token"] = flops_per_token(run_dir, corpus, cache, args.max_tokens)
        tokens_per_second = results["train"]["summary"]["tokens_per_second_median"]
        results["mfu"] = model_flops_utilization(
            results["flops_per_token"], tokens_per_second, results["bf16_peak"]["peak_gflops"]
        )
    state_file.parent.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps(results, indent=2) + "\n")
    write_report(results, args.output, f"{machine_name('cuda')}-scale-gpu", markdown(results))


if __name__ == "__main__":
    main()
