"""Translate stdin to stdout, one sentence per line, in batches, with a saved model (remote code, no install needed).

    echo "A man is riding a bicycle." | python examples/translate.py --model outputs/multi30k_en_de_cpu
    python examples/translate.py --model outputs/multi30k_en_de_cpu --num_beams 4 --batch_size 32 < in.en > out.de

Each input line gives exactly one output line, in order (an empty line gives an empty line; a newline inside a
translation is written as a space). Decoding follows the model's `generation_config.json` unless `--num_beams` or
`--max_new_tokens` is given. Errors (a missing model directory, for example) print one line on stderr, exit 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator, Sequence

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer


def batches(lines: Iterable[str], batch_size: int) -> Iterator[list[str]]:
    """Consecutive groups of `batch_size` lines (the last may be shorter), newline stripped."""
    batch: list[str] = []
    for line in lines:
        batch.append(line.rstrip("\n"))
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.no_grad()
def translate_batch(model, tokenizer, sentences: list[str], **generate_kwargs) -> list[str]:
    """Translate a batch; empty (whitespace-only) sentences are not sent to the model and give ""."""
    indices = [i for i, sentence in enumerate(sentences) if sentence.strip()]
    outputs = [""] * len(sentences)
    if indices:
        inputs = tokenizer([sentences[i] for i in indices], padding=True, truncation=True, return_tensors="pt")
        generated = model.generate(**inputs.to(model.device), **generate_kwargs)  # (batch, out_len)
        for i, text in zip(indices, tokenizer.batch_decode(generated, skip_special_tokens=True), strict=True):
            outputs[i] = " ".join(text.splitlines()).strip()  # every line break, \r and \u2028 included
    return outputs


def main(argv: Sequence[str] | None = None) -> int:
    """CLI (see the module docstring). Returns the exit status: 0, or 1 if the model cannot be loaded."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="A save_pretrained model directory or Hub repo id.")
    parser.add_argument("--num_beams", type=int, default=None, help="Beam size (default: the generation config).")
    parser.add_argument("--max_new_tokens", type=int, default=None, help="Default: the generation config.")
    parser.add_argument("--batch_size", type=int, default=32, help="Sentences per generate() call.")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size must be at least 1, got {args.batch_size}")
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(args.model, trust_remote_code=True).eval()
        tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=True)
    except OSError as error:
        print(f"error: cannot load --model {args.model}: {str(error).splitlines()[0]}", file=sys.stderr)
        return 1
    generate_kwargs = {
        key: value for key, value in (("num_beams", args.num_beams), ("max_new_tokens", args.max_new_tokens)) if value
    }
    for batch in batches(sys.stdin, args.batch_size):
        for line in translate_batch(model, tokenizer, batch, **generate_kwargs):
            print(line, flush=False)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
