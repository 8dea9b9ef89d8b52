"""Translate stdin to stdout, one sentence per line, in batches, with a saved model (remote code, no install needed).

    echo "A man is riding a bicycle." | python examples/translate.py --model outputs/multi30k_en_de_cpu
    python examples/translate.py --model outputs/multi30k_en_de_cpu --num_beams 4 --max_tokens 4096 < in.en > out.de
    python examples/translate.py --backend ctranslate2 --model outputs/multi30k_en_de_ct2 < in.en > out.de

`--backend ctranslate2` translates with a model written by `vaswani-export-ct2` through
`vaswani_transformer.export.Translator` (needs `pip install "vaswani_transformer[export]"`); everything else (batching,
truncation, the output format, errors) is the same as with the default backend, transformers' `generate()`.

Lines are read `--buffer_size` at a time; each buffer is translated longest sentence first, in batches of at most
`--max_tokens` padded source tokens (and `--batch_size` sentences, if given), with the batching of the model's own
code (`length_sorted_batches` in the saved `batching_vaswani_transformer.py`), and written in input order.

Each input line gives exactly one output line, in order: an empty line gives an empty line, a newline inside a
translation is written as a space. Input is read as bytes and decoded line by line (UTF-8; a `\\r\\n` ending is
dropped), so a line that is not valid UTF-8 is reported on stderr with its number and the reason, gives an empty
line, and every other line is still translated; the exit status is then 1. A source longer than `--max_source_length`
tokens (default: the tokenizer's `model_max_length`) is truncated, with one warning on stderr naming the first such
line. Decoding follows the model's `generation_config.json` unless `--num_beams` or `--max_new_tokens` is given.
Errors (a missing model directory, for example) print one line on stderr and exit 2. Output is UTF-8.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, HfArgumentParser


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


def chunks(lines: Iterable[Line], size: int) -> Iterator[list[Line]]:
    """Consecutive groups of `size` lines (the last may be shorter)."""
    chunk: list[Line] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def model_code(model, name: str):
    """The module `name` of the code saved beside the model (e.g. `batching_vaswani_transformer`), imported from
    the package its class was loaded from: the model's own remote code, or the installed `vaswani_transformer`."""
    return importlib.import_module(f"{type(model).__module__.rpartition('.')[0]}.{name}")


@torch.no_grad()
def transformers_generate(
    model, tokenizer, encoded: list[list[int]], max_tokens: int | None, batch_size: int | None, **generate_kwargs
) -> list[list[int]]:
    """`model.generate()` on `encoded` source ids, longest first in batches of at most `max_tokens` padded source
    tokens (default: the model code's `DEFAULT_MAX_TOKENS`) and `batch_size` sentences; ids in input order."""
    batching = model_code(model, "batching_vaswani_transformer")
    outputs: list[list[int]] = [[] for _ in encoded]
    budget = max_tokens or batching.DEFAULT_MAX_TOKENS
    for batch in batching.length_sorted_batches([len(ids) for ids in encoded], budget, batch_size):
        inputs = tokenizer.pad({"input_ids": [encoded[j] for j in batch]}, return_tensors="pt")
        generated = model.generate(**inputs.to(model.device), **generate_kwargs)  # (batch, out_len)
        for j, ids in zip(batch, generated.tolist(), strict=True):
            outputs[j] = ids
    return outputs


def ctranslate2_generate(
    translator, encoded: list[list[int]], max_tokens: int | None, batch_size: int | None, **generate_kwargs
) -> list[list[int]]:
    """`vaswani_transformer.export.Translator.generate` with the same batching as `transformers_generate`."""
    return translator.generate(encoded, max_tokens=max_tokens, batch_size=batch_size, **generate_kwargs)


def translate_lines(
    generate,
    tokenizer,
    sentences: list[str | None],
    max_source_length: int,
    max_tokens: int | None = None,
    batch_size: int | None = None,
    **generate_kwargs,
) -> tuple[list[str], list[tuple[int, int]]]:
    """Translate `sentences`; None and empty (whitespace-only) sentences are not sent to the model and give "".

    The others are translated by `generate(encoded, max_tokens, batch_size, **generate_kwargs)`
    (`transformers_generate` or `ctranslate2_generate`): longest first in batches of at most `max_tokens` padded
    source tokens and `batch_size` sentences. Sources longer than `max_source_length` tokens (`</s>` included) are
    truncated to it.

    Returns:
        (translations, truncated): one translation per sentence, in order; (position in `sentences`, length in
        tokens) of each truncated sentence, in order.
    """
    indices = [i for i, sentence in enumerate(sentences) if sentence is not None and sentence.strip()]
    outputs = [""] * len(sentences)
    texts = [sentences[i] for i in indices]
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]] if texts else []
    truncated = [(i, length) for i, length in zip(indices, lengths, strict=True) if length > max_source_length]
    encoded = tokenizer(texts, truncation=True, max_length=max_source_length)["input_ids"] if texts else []
    generated = generate(encoded, max_tokens, batch_size, **generate_kwargs) if encoded else []
    for j, text in enumerate(tokenizer.batch_decode(generated, skip_special_tokens=True)):
        outputs[indices[j]] = " ".join(text.splitlines()).strip()  # every line break, \r and \u2028 included
    return outputs, truncated


@dataclass
class TranslateArguments:
    """The flags of translate.py (parsed by transformers' `HfArgumentParser`)."""

    model: str = field(
        metadata={
            "help": "A save_pretrained model directory or Hub repo id; with --backend ctranslate2, a "
            "vaswani-export-ct2 directory."
        }
    )
    backend: str = field(
        default="transformers",
        metadata={
            "help": "transformers: the model's generate(); ctranslate2: CTranslate2 (default: %(default)s).",
            "choices": ("transformers", "ctranslate2"),
        },
    )
    compute_type: str = field(
        default="default",
        metadata={
            "help": "With --backend ctranslate2: CTranslate2's compute type (int8, float32, ...; default: the "
            "exported one)."
        },
    )
    num_beams: int | None = field(default=None, metadata={"help": "Beam size (default: the generation config)."})
    max_new_tokens: int | None = field(default=None, metadata={"help": "Default: the generation config."})
    max_tokens: int | None = field(
        default=None,
        metadata={
            "help": "Padded source tokens per generate() call (default: the model code's DEFAULT_MAX_TOKENS, 4096)."
        },
    )
    batch_size: int | None = field(default=None, metadata={"help": "Sentences per generate() call at most."})
    buffer_size: int = field(default=1024, metadata={"help": "Lines read, sorted and translated at once."})
    max_source_length: int | None = field(
        default=None,
        metadata={
            "help": "Truncate longer sources to this many tokens, warning once (default: the tokenizer's "
            "model_max_length)."
        },
    )


def main(argv: Sequence[str] | None = None) -> int:
    """CLI (see the module docstring).

    Args:
        argv: the command-line arguments (default `sys.argv[1:]`).

    Returns:
        The exit status: 0; 1 if some line was not valid UTF-8 (every other line was translated); 2 if the model
        cannot be loaded (one line on stderr). Bad flags exit 2 through `HfArgumentParser` (argparse's error).
    """
    parser = HfArgumentParser(TranslateArguments, prog=PROG, description=__doc__.split("\n\n")[0])
    (args,) = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    for flag in ("max_tokens", "batch_size", "buffer_size", "max_source_length"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if args.compute_type != "default" and args.backend != "ctranslate2":
        parser.error("--compute_type applies to --backend ctranslate2 only")
    try:
        if args.backend == "ctranslate2":
            from vaswani_transformer.export import Translator

            translator = Translator(args.model, compute_type=args.compute_type)
            tokenizer = translator.tokenizer
            generate = functools.partial(ctranslate2_generate, translator)
        else:
            model = AutoModelForSeq2SeqLM.from_pretrained(args.model, trust_remote_code=True).eval()
            tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=True)
            generate = functools.partial(transformers_generate, model, tokenizer)
    except (OSError, ValueError, ImportError) as error:  # ValueError: HFValidationError for a malformed Hub id
        cause = (str(error).strip().splitlines() or [type(error).__name__])[0]
        print(f"{PROG}: error: cannot load --model {args.model}: {cause}", file=sys.stderr)
        return 2
    max_source_length = args.max_source_length or tokenizer.model_max_length
    if args.backend == "ctranslate2":  # before reading stdin: a longer source or output cannot be decoded
        for flag, value in (("--max_source_length", max_source_length), ("--max_new_tokens", args.max_new_tokens)):
            if value is not None and value > translator.max_positions:
                parser.error(
                    f"{flag} {value} exceeds the {translator.max_positions} positions {args.model} was exported with "
                    "(export again with vaswani-export-ct2 --max_positions)"
                )
    generate_kwargs = {
        key: value for key, value in (("num_beams", args.num_beams), ("max_new_tokens", args.max_new_tokens)) if value
    }
    bad_lines, warned = 0, False
    for chunk in chunks(read_lines(sys.stdin.buffer), args.buffer_size):
        bad_lines += sum(line.text is None for line in chunk)
        outputs, truncated = translate_lines(
            generate,
            tokenizer,
            [line.text for line in chunk],
            max_source_length,
            args.max_tokens,
            args.batch_size,
            **generate_kwargs,
        )
        if truncated and not warned:
            position, length = truncated[0]
            limit = "--max_source_length" if args.max_source_length else "the tokenizer's model_max_length"
            print(
                f"{PROG}: warning: line {chunk[position].number} has {length} tokens, more than {limit} "
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
