"""Translate stdin to stdout, one sentence per line, in batches, with a saved model (remote code, no install needed).

    echo "A man is riding a bicycle." | python examples/translate.py --model outputs/multi30k_en_de_cpu
    python examples/translate.py --model outputs/multi30k_en_de_cpu --num_beams 4 --batch_size 32 < in.en > out.de

Each input line gives exactly one output line, in order: an empty line gives an empty line, a newline inside a
translation is written as a space. Input is read as bytes and decoded line by line (UTF-8; a `\\r\\n` ending is
dropped), so a line that is not valid UTF-8 is reported on stderr with its number and the reason, gives an empty
line, and every other line is still translated; the exit status is then 1. A source longer than `--max_source_length`
tokens (default: the tokenizer's `model_max_length`) is truncated, with one warning on stderr naming the first such
line. Decoding follows the model's `generation_config.json` unless `--num_beams` or `--max_new_tokens` is given.
Errors (a missing model directory, for example) print one line on stderr and exit 2. Output is UTF-8.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer


PROG = "translate.py"


class Line(NamedTuple):
    """One input line: its number (from 1) and its text, or None if it could not be decoded."""

    number: int
    text: str | None


def read_lines(stream: Iterable[bytes]) -> Iterator[Line]:
    """Decode each line of a byte stream as UTF-8, without its `\\n` or `\\r\\n` ending.

    A line that is not valid UTF-8 is reported on stderr (`translate.py: line N: not valid UTF-8 (...)`) and
    yielded with `text=None`; the lines after it are read as usual.
    """
    for number, raw in enumerate(stream, start=1):
        raw = raw.removesuffix(b"\n").removesuffix(b"\r")
        try:
            yield Line(number, raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            bad = raw[error.start : error.end]
            print(
                f"{PROG}: line {number}: not valid UTF-8 ({error.reason}: byte {error.start + 1} is {bad.hex(' ')}); "
                "writing an empty line",
                file=sys.stderr,
            )
            yield Line(number, None)


def batches(lines: Iterable[Line], batch_size: int) -> Iterator[list[Line]]:
    """Consecutive groups of `batch_size` lines (the last may be shorter)."""
    batch: list[Line] = []
    for line in lines:
        batch.append(line)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.no_grad()
def translate_batch(
    model, tokenizer, sentences: list[str | None], max_source_length: int, **generate_kwargs
) -> tuple[list[str], list[tuple[int, int]]]:
    """Translate a batch; None and empty (whitespace-only) sentences are not sent to the model and give "".

    Sources longer than `max_source_length` tokens (`</s>` included) are truncated to it.

    Returns:
        (translations, truncated): one translation per sentence; (position in the batch, length in tokens) of each
        truncated sentence.
    """
    indices = [i for i, sentence in enumerate(sentences) if sentence is not None and sentence.strip()]
    outputs = [""] * len(sentences)
    if not indices:
        return outputs, []
    texts = [sentences[i] for i in indices]
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    truncated = [(i, length) for i, length in zip(indices, lengths, strict=True) if length > max_source_length]
    inputs = tokenizer(texts, padding=True, truncation=True, max_length=max_source_length, return_tensors="pt")
    generated = model.generate(**inputs.to(model.device), **generate_kwargs)  # (batch, out_len)
    for i, text in zip(indices, tokenizer.batch_decode(generated, skip_special_tokens=True), strict=True):
        outputs[i] = " ".join(text.splitlines()).strip()  # every line break, \r and \u2028 included
    return outputs, truncated


def main(argv: Sequence[str] | None = None) -> int:
    """CLI (see the module docstring).

    Args:
        argv: the command-line arguments (default `sys.argv[1:]`).

    Returns:
        The exit status: 0; 1 if some line was not valid UTF-8 (every other line was translated); 2 if the model
        cannot be loaded (one line on stderr). Bad flags exit 2 through argparse.
    """
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="A save_pretrained model directory or Hub repo id.")
    parser.add_argument("--num_beams", type=int, default=None, help="Beam size (default: the generation config).")
    parser.add_argument("--max_new_tokens", type=int, default=None, help="Default: the generation config.")
    parser.add_argument("--batch_size", type=int, default=32, help="Sentences per generate() call.")
    parser.add_argument(
        "--max_source_length",
        type=int,
        default=None,
        help="Truncate longer sources to this many tokens, warning once (default: the tokenizer's model_max_length).",
    )
    args = parser.parse_args(argv)
    for flag in ("batch_size", "max_source_length"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(args.model, trust_remote_code=True).eval()
        tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=True)
    except (OSError, ValueError) as error:  # ValueError: huggingface_hub's HFValidationError for a malformed id
        cause = (str(error).strip().splitlines() or [type(error).__name__])[0]
        print(f"{PROG}: error: cannot load --model {args.model}: {cause}", file=sys.stderr)
        return 2
    max_source_length = args.max_source_length or tokenizer.model_max_length
    generate_kwargs = {
        key: value for key, value in (("num_beams", args.num_beams), ("max_new_tokens", args.max_new_tokens)) if value
    }
    bad_lines, warned = 0, False
    for batch in batches(read_lines(sys.stdin.buffer), args.batch_size):
        bad_lines += sum(line.text is None for line in batch)
        outputs, truncated = translate_batch(
            model, tokenizer, [line.text for line in batch], max_source_length, **generate_kwargs
        )
        if truncated and not warned:
            position, length = truncated[0]
            limit = "--max_source_length" if args.max_source_length else "the tokenizer's model_max_length"
            print(
                f"{PROG}: warning: line {batch[position].number} has {length} tokens, more than {limit} "
                f"{max_source_length}: truncated to {max_source_length} tokens (later lines over the limit are "
                "truncated without a warning; --max_source_length sets the limit)",
                file=sys.stderr,
            )
            warned = True
        sys.stdout.buffer.write("".join(output + "\n" for output in outputs).encode("utf-8"))
        sys.stdout.buffer.flush()
    return 1 if bad_lines else 0


if __name__ == "__main__":
    sys.exit(main())
