"""Encoding throughput of `VaswaniTransformerTokenizerFast.__call__` versus the bare `tokenizers.Tokenizer`, on
Multi30k train (how to run it, the contenders and the goal: benchmarks/README.md)."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import socket
import statistics
from pathlib import Path

import tokenizers
import transformers
from tokenizers.models import WordLevel
from transformers import HfArgumentParser

from vaswani_transformer.tokenization_vaswani_transformer_fast import VaswaniTransformerTokenizerFast
from vaswani_transformer.training.arguments import read_config_file
from vaswani_transformer.training.data import default_data_dir, iter_texts, load_parallel_dataset

from . import CPU_PRESET, RESULTS_DIR
from .timing import time_interleaved


__all__ = ["main"]


@dataclasses.dataclass
class TokenizerArguments:
    """`python -m benchmarks.tokenizer_throughput` (benchmarks/README.md)."""

    data_dir: str = dataclasses.field(default_factory=lambda: str(default_data_dir()))
    tokenizer_dir: str | None = dataclasses.field(
        default=None, metadata={"help": "Default: train one of the CPU preset's vocabulary size."}
    )
    repeats: int = 5
    output: str = dataclasses.field(default=str(RESULTS_DIR), metadata={"help": "Folder of the results file."})


def main(argv: list[str] | None = None) -> None:
    """CLI (benchmarks/README.md)."""
    parser = HfArgumentParser(TokenizerArguments, description=__doc__.split("\n\n")[0])
    (args,) = parser.parse_args_into_dataclasses(args=argv)

    raw = load_parallel_dataset("en", "de", data_dir=args.data_dir, splits={"train": "train"})["train"]
    texts = list(iter_texts(raw, ("en", "de")))
    if args.tokenizer_dir is None:
        vocab_size = read_config_file(CPU_PRESET)["vocab_size"]
        tokenizer = VaswaniTransformerTokenizerFast.train_from_iterator(texts, vocab_size)
    else:
        tokenizer = VaswaniTransformerTokenizerFast.from_pretrained(args.tokenizer_dir)
    bare = tokenizers.Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    assert tokenizer(texts[:100])["input_ids"] == [encoding.ids for encoding in bare.encode_batch(texts[:100])]
    ceiling = tokenizers.Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    ceiling.model = WordLevel(vocab=tokenizer.get_vocab(), unk_token=tokenizer.unk_token)

    contenders = {
        "wrapper: VaswaniTransformerTokenizerFast.__call__": lambda: tokenizer(texts),
        "bare: Tokenizer.encode_batch": lambda: bare.encode_batch(texts),
        "bare + lists: encode_batch, .ids, .attention_mask": lambda: [
            (encoding.ids, encoding.attention_mask) for encoding in bare.encode_batch(texts)
        ],
        "ceiling: encode_batch with a WordLevel model (no merges)": lambda: ceiling.encode_batch(texts),
    }
    times = time_interleaved(contenders, args.repeats)
    medians = {name: statistics.median(seconds) for name, seconds in times.items()}
    wrapper_s, bare_s, bare_lists_s, ceiling_s = medians.values()
    print(f"{len(texts)} sentences (Multi30k train en + de), median of {args.repeats} rounds after 1 warm-up round")
    print(f"{'encoder':<52} {'seconds':>8} {'sentences/s':>12}")
    for name, seconds in medians.items():
        print(f"{name:<52} {seconds:>8.3f} {len(texts) / seconds:>12,.0f}")
    print(f"time ratio wrapper / bare:         {wrapper_s / bare_s:.3f} (goal <= 1.2)")
    print(f"time ratio wrapper / bare + lists: {wrapper_s / bare_lists_s:.3f}")
    print(f"time ratio ceiling / bare:         {ceiling_s / bare_s:.3f} (1 - this: the share of encoding that is BPE)")

    result = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "tokenizers": tokenizers.__version__,
        "transformers": transformers.__version__,
        "num_sentences": len(texts),
        "vocab_size": len(tokenizer),
        "repeats": args.repeats,
        "seconds": times,
        "median_seconds": medians,
        "sentences_per_s": {name: len(texts) / seconds for name, seconds in medians.items()},
        "ratio_wrapper_over_bare": wrapper_s / bare_s,
        "ratio_wrapper_over_bare_with_lists": wrapper_s / bare_lists_s,
        "ratio_ceiling_over_bare": ceiling_s / bare_s,
    }
    out = Path(args.output) / f"tokenizer_{socket.gethostname()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
