"""Does the input pipeline keep a GPU fed? Sampler + collator alone, from the cached Arrow split to padded tensors.

Tokenizes the train split with `training.preprocessing.tokenize_split` (read back from the datasets cache when the
training run made it: set `HF_DATASETS_CACHE` to that run's cache), then iterates a `torch.utils.data.DataLoader`
with the base preset's `TokenBatchSampler` and `build_collator`, as train.py builds them, with 0 and 1 worker
processes, and reports padded source + target tokens per second over `--batches` batches after 20 warm-up batches.
The peer figure: an H100 trains the base model at a few hundred thousand tokens per second, so >= 1M padded
tokens/s per process leaves the GPU waiting on nothing. Prints one JSON line (`benchmarks.scale.run` reads it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from transformers import HfArgumentParser

from .. import REPO_ROOT
from . import base_preset


__all__ = ["collator_throughput", "main", "measure"]


def measure(dataset_name: str, dataset_config_name: str, tokenizer_dir: str, batches: int, max_tokens: int) -> dict:
    """Padded tokens/s of the training input pipeline with 0 and 1 DataLoader workers (see the module docstring)."""
    import torch
    from torch.utils.data import DataLoader

    from vaswani_transformer import VaswaniTransformerTokenizerFast
    from vaswani_transformer.training.batching import TokenBatchSampler, build_collator
    from vaswani_transformer.training.data import load_parallel_dataset
    from vaswani_transformer.training.preprocessing import LENGTH_COLUMNS, length_columns, tokenize_split

    tokenizer = VaswaniTransformerTokenizerFast.from_pretrained(tokenizer_dir)
    raw = load_parallel_dataset("en", "de", dataset_name=dataset_name, dataset_config_name=dataset_config_name)
    started = time.perf_counter()
    preset = base_preset()
    languages, limits = ("en", "de"), (preset["max_source_length"], preset["max_target_length"])
    train, _ = tokenize_split(raw["train"], tokenizer, languages, limits)
    results = {"tokenize_or_cache_seconds": round(time.perf_counter() - started, 2), "pairs": len(train)}
    pad = preset["pad_to_multiple_of"]
    sampler = TokenBatchSampler(*length_columns(train), max_tokens, seed=0, pad_to_multiple_of=pad)
    started = time.perf_counter()
    results["epoch_batches"] = len(sampler)
    results["sampler_epoch_seconds"] = round(time.perf_counter() - started, 2)
    inputs = train.remove_columns(list(LENGTH_COLUMNS))
    for workers in (0, 1):
        loader = DataLoader(
            inputs,
            batch_sampler=sampler,
            collate_fn=build_collator(tokenizer, pad),
            num_workers=workers,
            pin_memory=torch.cuda.is_available(),
        )
        tokens, count = 0, 0
        for index, batch in enumerate(loader):
            if index == 20:
                started, tokens = time.perf_counter(), 0
            tokens += batch["input_ids"].numel() + batch["labels"].numel()
            count = index
            if index == 20 + batches:
                break
        seconds = time.perf_counter() - started
        results[f"workers_{workers}"] = {"batches": count - 20, "padded_tokens_per_second": round(tokens / seconds)}
    results["padded_tokens_per_second"] = max(results[f"workers_{w}"]["padded_tokens_per_second"] for w in (0, 1))
    results["max_tokens"] = max_tokens
    return results


def collator_throughput(parquet_dir: Path, tokenizer_dir: Path, env: dict, batches: int = 500) -> dict:
    """Run `measure` in a subprocess with `env` added (e.g. the training run's HF_DATASETS_CACHE); return its dict.

    Raises:
        RuntimeError: if the subprocess fails (with its stderr's end).
    """
    command = [sys.executable, "-m", "benchmarks.scale.collator", "--dataset_name", str(parquet_dir)]
    command += ["--tokenizer", str(tokenizer_dir), "--batches", str(batches)]
    result = subprocess.run(command, cwd=REPO_ROOT, env={**os.environ, **env}, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


@dataclasses.dataclass
class CollatorArguments:
    """`python -m benchmarks.scale.collator` (the module docstring)."""

    dataset_name: str = dataclasses.field(metadata={"help": "The corpus (Parquet folder, Hub layout)."})
    tokenizer: str = dataclasses.field(metadata={"help": "A saved tokenizer (a training run's output_dir)."})
    dataset_config_name: str = "de-en"
    batches: int = dataclasses.field(default=500, metadata={"help": "Batches timed per setting, after 20 warm-up."})
    max_tokens: int = dataclasses.field(
        default_factory=lambda: base_preset()["max_tokens"], metadata={"help": "Tokens per side per batch."}
    )


def main(argv: list[str] | None = None) -> None:
    """CLI (the module docstring)."""
    parser = HfArgumentParser(CollatorArguments, description=__doc__.split("\n\n")[0])
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    results = measure(args.dataset_name, args.dataset_config_name, args.tokenizer, args.batches, args.max_tokens)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
