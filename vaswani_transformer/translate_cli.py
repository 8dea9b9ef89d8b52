"""`vaswani-translate`: translate a file or stdin with a saved model, an ensemble or a CTranslate2 export; print
n-best lists, or score given translations.

    vaswani-translate --model_name_or_path outputs/multi30k_en_de_cpu < in.en > out.de
    vaswani-translate in.en --output_file out.de --model_name_or_path run_seed1 --model_name_or_path run_seed2
    vaswani-translate in.en --model_name_or_path outputs/multi30k_en_de_cpu --num_return_sequences 4
    vaswani-translate pairs.tsv --model_name_or_path outputs/multi30k_en_de_cpu --score
    vaswani-translate in.en --model_name_or_path outputs/multi30k_en_de_cpu --target_prefix_file prefixes.de
    vaswani-translate in.en --backend ctranslate2 --model_name_or_path outputs/multi30k_en_de_ct2

Outputs, one input line at a time, in input order (UTF-8):
- translations: one line per input line (a blank line gives a blank line; a line break inside a translation is
  written as a space);
- with `--num_return_sequences N`, an n-best list as Moses, Marian and fairseq write one: N lines per input line,
  `i ||| translation ||| score`, `i` the input line's index from 0, best first, the score being sum(log p) /
  length ** length_penalty (natural log, `</s>` counted), as beam search ranks hypotheses;
- with `--score`, input lines `source<TAB>target` and one score per line, the same sum(log p) / length **
  length_penalty of the target given the source (forced decoding; fairseq `--score-reference`, `marian-scorer`).

Several `--model_name_or_path` (same tokenizer) decode as one ensemble: at each step the log of the models' mean
probability (`vaswani_transformer.ensemble`), for translation, n-best lists and scores alike. `--target_prefix_file`
holds one target prefix per input line (an empty line: none), forced before a free search (CTranslate2's
`target_prefix`). Lines are read `--buffer_size` at a time; each buffer is translated longest sentence first in
batches of at most `--max_tokens` padded source tokens (`batching_vaswani_transformer.length_sorted_batches`, the
package's one batching rule). A line that is not valid UTF-8 is reported on stderr with its number, gives an empty
output, and the exit status is 1; other errors (a missing model, bad flags) print one line and exit 2
(`command_line.run`). Decoding follows each model's `generation_config.json` unless a flag overrides it.

Part of the core package: it needs neither the training library nor, unless `--backend ctranslate2`, ctranslate2.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from transformers import AutoTokenizer

from .batching_vaswani_transformer import DEFAULT_MAX_TOKENS, length_sorted_batches
from .command_line import parse_arguments, resolve_device, run
from .decoding_vaswani_transformer import generated_labels, length_penalty_denominator
from .ensemble import EnsembleModel


__all__ = ["PROG", "TranslateArguments", "main", "translate"]

PROG = "vaswani-translate"
NBEST_SEPARATOR = " ||| "  # Moses' n-best field separator (Marian, fairseq's interactive n-best)


@dataclass
class TranslateArguments:
    """The flags of `vaswani-translate` (parsed by transformers' `HfArgumentParser`; the input file by position)."""

    input_file: str | None = field(
        default=None, metadata={"help": "Text to translate, one sentence a line (default: stdin)."}
    )
    model_name_or_path: list[str] = field(
        default_factory=list,
        metadata={
            "help": "A save_pretrained model directory or Hub id; give it several times for an ensemble (same "
            "tokenizer). With --backend ctranslate2, a vaswani-export-ct2 directory.",
            "aliases": ["--model"],
            "action": "extend",
        },
    )
    output_file: str | None = field(default=None, metadata={"help": "Where to write (default: stdout)."})
    overwrite_output_file: bool = field(default=False, metadata={"help": "Replace a non-empty --output_file."})
    device: str = field(
        default="auto", metadata={"help": "cpu, cuda, cuda:N, or auto: cuda when there is one (default: %(default)s)."}
    )
    backend: str = field(
        default="torch",
        metadata={
            "help": "torch: the model's generate(); ctranslate2: an export (default: %(default)s).",
            "choices": ("torch", "ctranslate2"),
        },
    )
    compute_type: str = field(
        default="default",
        metadata={
            "help": "With --backend ctranslate2: its compute type (int8, float32, ...; default: the exported one)."
        },
    )
    num_beams: int | None = field(default=None, metadata={"help": "Beam size (default: the generation config)."})
    length_penalty: float | None = field(
        default=None, metadata={"help": "alpha of sum(log p) / length ** alpha (default: the generation config)."}
    )
    max_new_tokens: int | None = field(default=None, metadata={"help": "Default: the generation config."})
    num_return_sequences: int | None = field(
        default=None, metadata={"help": "Print an n-best list of this many translations per line, with scores."}
    )
    score: bool = field(
        default=False, metadata={"help": "Score 'source<TAB>target' lines (forced decoding) instead of translating."}
    )
    target_prefix_file: str | None = field(
        default=None, metadata={"help": "One forced target prefix per input line (an empty line: none)."}
    )
    max_tokens: int = field(
        default=DEFAULT_MAX_TOKENS, metadata={"help": "Padded source tokens per batch (default: %(default)s)."}
    )
    batch_size: int | None = field(default=None, metadata={"help": "Sentences per batch at most."})
    buffer_size: int = field(
        default=10000, metadata={"help": "Lines read, sorted by length and translated at once (default: %(default)s)."}
    )
    max_source_length: int | None = field(
        default=None,
        metadata={"help": "Truncate longer sources to this many tokens (default: the tokenizer's model_max_length)."},
    )

    def __post_init__(self):
        """Raises ValueError naming the flag for a value or combination that cannot work."""
        if not self.model_name_or_path:
            raise ValueError("--model_name_or_path is required")
        for name in ("num_beams", "max_new_tokens", "num_return_sequences", "max_tokens", "batch_size", "buffer_size",
                     "max_source_length"):  # fmt: skip
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.score and (self.num_return_sequences or self.target_prefix_file):
            raise ValueError(
                "--score scores given translations: it takes no --num_return_sequences/--target_prefix_file"
            )
        if self.backend == "ctranslate2" and len(self.model_name_or_path) > 1:
            raise ValueError("An ensemble (several --model_name_or_path) needs --backend torch")
        if self.compute_type != "default" and self.backend != "ctranslate2":
            raise ValueError("--compute_type applies to --backend ctranslate2 only")


class Line(NamedTuple):
    """One input line: its number (from 1) and its text, or None if it could not be decoded."""

    number: int
    text: str | None


def read_lines(stream: Iterable[bytes], name: str) -> Iterator[Line]:
    """Decode each line of a byte stream as UTF-8, without its `\\n` or `\\r\\n` ending; a line that is not valid
    UTF-8 is reported on stderr (`vaswani-translate: <name>: line N: not valid UTF-8 (...)`) and yielded as None."""
    for number, raw in enumerate(stream, start=1):
        raw = raw.removesuffix(b"\n").removesuffix(b"\r")
        try:
            yield Line(number, raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            bad = raw[error.start : error.end].hex(" ")
            print(
                f"{PROG}: {name}: line {number}: not valid UTF-8 ({error.reason}: byte {error.start + 1} is {bad}); "
                "writing an empty output",
                file=sys.stderr,
            )
            yield Line(number, None)


def chunks(lines: Iterable, size: int) -> Iterator[list]:
    """Consecutive groups of `size` items (the last may be shorter)."""
    chunk: list = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class TorchBackend:
    """One model or an ensemble (`EnsembleModel`) on `device`, translating and scoring token ids in length-sorted
    batches. Raises OSError for a path without a model, ValueError for models whose tokenizers differ."""

    def __init__(self, paths: Sequence[str], device: str):
        tokenizers = [AutoTokenizer.from_pretrained(path) for path in paths]
        for path, tokenizer in zip(paths[1:], tokenizers[1:], strict=True):
            if tokenizer.get_vocab() != tokenizers[0].get_vocab():
                raise ValueError(f"{path} has another tokenizer than {paths[0]}: an ensemble needs one vocabulary")
        self.tokenizer = tokenizers[0]
        self.model = EnsembleModel.from_pretrained(paths).to(resolve_device(device))

    def translate(
        self, encoded, prefixes, max_tokens, batch_size, num_return_sequences, length_penalty, **generate_kwargs
    ) -> list[list[tuple[list[int], float | None]]]:
        """Per sentence of `encoded` (source ids), its translations (ids after the decoder start token, up to `</s>`)
        and, with `num_return_sequences`, their scores."""
        outputs: list = [None] * len(encoded)
        returns = num_return_sequences or 1
        if num_return_sequences:
            generate_kwargs["num_return_sequences"] = num_return_sequences
        if length_penalty is not None:
            generate_kwargs["length_penalty"] = length_penalty
        eos = self.model.generation_config.eos_token_id
        for indices in length_sorted_batches([len(ids) for ids in encoded], max_tokens, batch_size):
            inputs = self.tokenizer.pad({"input_ids": [encoded[i] for i in indices]}, return_tensors="pt")
            inputs = inputs.to(self.model.device)
            prefix = None if prefixes is None else [prefixes[i] for i in indices]
            with torch.no_grad():
                ids = self.model.generate(**inputs, target_prefix=prefix, **generate_kwargs)  # (batch * returns, len)
            labels = generated_labels(ids, eos)  # (batch * returns, len - 1), -100 after </s>
            scores = [None] * len(labels)
            if num_return_sequences:
                sources = {name: tensor.repeat_interleave(returns, dim=0) for name, tensor in inputs.items()}
                scores = self.model.score(
                    sources["input_ids"], labels, sources["attention_mask"], length_penalty=length_penalty
                ).sequences_scores.tolist()
            hypotheses = [([t for t in row if t != -100], s) for row, s in zip(labels.tolist(), scores, strict=True)]
            for position, index in enumerate(indices):
                outputs[index] = hypotheses[position * returns : (position + 1) * returns]
        return outputs

    def score(self, encoded, targets, max_tokens, batch_size, length_penalty) -> list[float]:
        """Length-normalised log-probability of each of `targets` (ids ending with `</s>`) given its source."""
        scores: list = [None] * len(encoded)
        for indices in length_sorted_batches([len(ids) for ids in encoded], max_tokens, batch_size):
            inputs = self.tokenizer.pad({"input_ids": [encoded[i] for i in indices]}, return_tensors="pt")
            longest = max(len(targets[i]) for i in indices)
            labels = torch.tensor([targets[i] + [-100] * (longest - len(targets[i])) for i in indices])
            device = self.model.device
            scored = self.model.score(
                inputs["input_ids"].to(device), labels.to(device), inputs["attention_mask"].to(device),
                length_penalty=length_penalty,
            )  # fmt: skip
            for position, index in enumerate(indices):
                scores[index] = float(scored.sequences_scores[position])
        return scores


class CTranslate2Backend:
    """`export.Translator` with the same interface as `TorchBackend`; scores come from CTranslate2's `score_batch`
    (`Translator.score`), normalised as beam search normalises them."""

    def __init__(self, path: str, device: str, compute_type: str):
        from .export import Translator  # lazily: ctranslate2 is the [export] extra

        self.translator = Translator(path, device=device, compute_type=compute_type)
        self.tokenizer = self.translator.tokenizer

    def _normalised(self, token_log_probs: list[float], length_penalty: float | None) -> float:
        alpha = self.translator.options["length_penalty"] if length_penalty is None else length_penalty
        return sum(token_log_probs) / length_penalty_denominator(len(token_log_probs), alpha)

    def translate(self, encoded, prefixes, max_tokens, batch_size, num_return_sequences, length_penalty, **kwargs):
        generated = self.translator.generate(
            encoded, length_penalty=length_penalty, max_tokens=max_tokens, batch_size=batch_size,
            target_prefix=prefixes, num_return_sequences=num_return_sequences or 1, **kwargs,
        )  # fmt: skip
        if not num_return_sequences:
            return [[(hypotheses[0], None)] for hypotheses in generated]
        eos = self.tokenizer.eos_token_id
        sources = [ids for ids, hypotheses in zip(encoded, generated, strict=True) for _ in hypotheses]
        # `score_batch` scores a closing `</s>`; a hypothesis cut by max_new_tokens has none, so it is scored with
        # one and that last log-probability is left out, as beam search scores it.
        targets = [ids if ids[-1:] == [eos] else [*ids, eos] for hypotheses in generated for ids in hypotheses]
        scores = iter(self.translator.score(sources, targets))
        return [
            [(ids, self._normalised(next(scores)[: len(ids)], length_penalty)) for ids in hypotheses]
            for hypotheses in generated
        ]

    def score(self, encoded, targets, max_tokens, batch_size, length_penalty) -> list[float]:
        return [self._normalised(scores, length_penalty) for scores in self.translator.score(encoded, targets)]


def one_line(text: str) -> str:
    """A translation on one line: every line break (\\r, \\u2028, ...) as a space, stripped."""
    return " ".join(text.splitlines()).strip()


def encode_sources(tokenizer, texts: list[str], limit: int) -> tuple[list[list[int]], list[int]]:
    """Source ids of `texts`, each cut to `limit` tokens with `</s>` kept last (as the tokenizer's truncation does),
    and the positions of those that were cut."""
    encoded = tokenizer(texts)["input_ids"] if texts else []
    cut = [index for index, ids in enumerate(encoded) if len(ids) > limit]
    for index in cut:
        encoded[index] = encoded[index][: limit - 1] + encoded[index][-1:]
    return encoded, cut


def process(
    backend, args: TranslateArguments, lines: list[Line], prefixes: list[str] | None, warned: bool
) -> tuple[list[str], bool]:
    """The output lines of a buffer of input lines, in order (n-best: `num_return_sequences` per input line), and
    whether a truncation warning has been printed (`warned`: before this buffer)."""
    tokenizer = backend.tokenizer
    limit = args.max_source_length or tokenizer.model_max_length
    returns = args.num_return_sequences
    indices = [i for i, line in enumerate(lines) if line.text is not None and line.text.strip()]
    name = args.input_file or "stdin"
    if args.score:
        pairs = []
        for i in indices:
            if "\t" not in lines[i].text:
                raise ValueError(f"{name}: line {lines[i].number}: --score needs 'source<TAB>target', found no tab")
            pairs.append(lines[i].text.split("\t", 1))
        encoded, cut = encode_sources(tokenizer, [source for source, _ in pairs], limit)
    else:
        encoded, cut = encode_sources(tokenizer, [lines[i].text for i in indices], limit)
    if cut and not warned:  # once per run
        print(
            f"{PROG}: warning: {name}: line {lines[indices[cut[0]]].number}: source longer than {limit} tokens, "
            "truncated to that length (later lines over the limit are truncated without a warning; "
            "--max_source_length sets the limit)",
            file=sys.stderr,
        )
    if args.score:
        targets = tokenizer(text_target=[target for _, target in pairs])["input_ids"] if pairs else []
        scores = (
            backend.score(encoded, targets, args.max_tokens, args.batch_size, args.length_penalty) if pairs else []
        )
        outputs = [""] * len(lines)
        for index, value in zip(indices, scores, strict=True):
            outputs[index] = f"{value:.6f}"
        return outputs, warned or bool(cut)
    prefix_ids = None
    if prefixes is not None:
        prefix_ids = [tokenizer(text_target=prefixes[i], add_special_tokens=False)["input_ids"] for i in indices]
    generate_kwargs = {name: getattr(args, name) for name in ("num_beams", "max_new_tokens") if getattr(args, name)}
    translated = backend.translate(
        encoded, prefix_ids, args.max_tokens, args.batch_size, returns, args.length_penalty, **generate_kwargs
    ) if encoded else []  # fmt: skip
    results: list = [[("", 0.0)] * (returns or 1) for _ in lines]
    for index, hypotheses in zip(indices, translated, strict=True):
        results[index] = [(one_line(tokenizer.decode(ids, skip_special_tokens=True)), s) for ids, s in hypotheses]
    if not returns:
        return [hypotheses[0][0] for hypotheses in results], warned or bool(cut)
    outputs = [
        NBEST_SEPARATOR.join((str(line.number - 1), text, f"{score:.6f}"))
        for line, hypotheses in zip(lines, results, strict=True)
        for text, score in hypotheses
    ]
    return outputs, warned or bool(cut)


def read_prefixes(path: str) -> list[str]:
    """The lines of `--target_prefix_file`. Raises OSError if missing, ValueError naming a line not in UTF-8."""
    lines = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                lines.append(raw.removesuffix(b"\n").removesuffix(b"\r").decode("utf-8"))
            except UnicodeDecodeError as error:
                raise ValueError(f"--target_prefix_file {path}: line {number}: not valid UTF-8 ({error})") from None
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """`vaswani-translate` (see the module docstring).

    Returns:
        0, or 1 if some input line was not valid UTF-8 (every other line was processed).
    Raises:
        OSError: a missing model or input file, or a non-empty `--output_file` without `--overwrite_output_file`.
        ValueError: bad flags, a `--score` line without a tab, a prefix file of another length (each names it).
        ImportError: `--backend ctranslate2` without ctranslate2.
        SystemExit: status 2 for a bad flag (argparse's message).
    """
    args = parse_arguments(TranslateArguments, argv, prog=PROG, description=__doc__.split("\n\n")[0])
    output_path = Path(args.output_file) if args.output_file else None
    if output_path and output_path.is_file() and output_path.stat().st_size and not args.overwrite_output_file:
        raise FileExistsError(f"--output_file {output_path} is not empty; pass --overwrite_output_file to replace it")
    if args.input_file and not Path(args.input_file).is_file():
        raise FileNotFoundError(f"--input_file {args.input_file} not found")
    prefixes = read_prefixes(args.target_prefix_file) if args.target_prefix_file else None
    if args.backend == "ctranslate2":
        backend = CTranslate2Backend(args.model_name_or_path[0], args.device, args.compute_type)
    else:
        backend = TorchBackend(args.model_name_or_path, args.device)
    source = open(args.input_file, "rb") if args.input_file else sys.stdin.buffer  # noqa: SIM115
    target = open(output_path, "wb") if output_path else sys.stdout.buffer  # noqa: SIM115
    bad_lines = read = 0
    warned = False
    try:
        for chunk in chunks(read_lines(source, args.input_file or "stdin"), args.buffer_size):
            bad_lines += sum(line.text is None for line in chunk)
            chunk_prefixes = None
            if prefixes is not None:
                if len(prefixes) < read + len(chunk):
                    raise ValueError(
                        f"--target_prefix_file {args.target_prefix_file} has {len(prefixes)} lines, the input more"
                    )
                chunk_prefixes = prefixes[read : read + len(chunk)]
            read += len(chunk)
            outputs, warned = process(backend, args, chunk, chunk_prefixes, warned)
            target.write("".join(line + "\n" for line in outputs).encode("utf-8"))
            target.flush()
    finally:
        for stream in (source, target):
            if stream not in (sys.stdin.buffer, sys.stdout.buffer):
                stream.close()
    if prefixes is not None and len(prefixes) != read:
        raise ValueError(f"--target_prefix_file {args.target_prefix_file} has {len(prefixes)} lines, the input {read}")
    return 1 if bad_lines else 0


def translate(argv: Sequence[str] | None = None) -> int:
    """The `vaswani-translate` console script: `main` with the user-error rule of `command_line.run`."""
    return run(main, argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(translate())
