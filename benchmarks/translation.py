"""What the translation benchmarks share (`benchmarks.generation`, `benchmarks.deploy`): their command line, the
adapter that translates with `generate()`, and one row of results (speed, BLEU) per setting."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import sacrebleu
import torch
from transformers import HfArgumentParser

from vaswani_transformer.training.arguments import TrainingArguments
from vaswani_transformer.training.data import default_data_dir
from vaswani_transformer.training.evaluation import EXTRA_OUTPUT_TOKENS

from . import RESULTS_DIR
from .timing import medians, synchronize


__all__ = [
    "LENGTH_PENALTY",
    "NUM_BEAMS",
    "TranslationArguments",
    "bleu",
    "hf_translator",
    "strip_eos",
    "translation_arguments",
    "translation_row",
]

# §6.1 decoding, as the training library decodes: beam 4, length penalty 0.6 (its arguments' defaults).
NUM_BEAMS, LENGTH_PENALTY = TrainingArguments.num_beams, TrainingArguments.length_penalty


def strip_eos(ids: list[int], eos_token_id: int) -> list[int]:
    """Generated ids up to (without) the first EOS."""
    return ids[: ids.index(eos_token_id)] if eos_token_id in ids else ids


def hf_translator(
    model,
    tokenizer,
    encoded: list[list[int]],
    batches: list[list[int]],
    device: str,
    outputs: dict,
    num_beams: int = NUM_BEAMS,
    max_new_tokens: int | None = None,
    **generate_kwargs,
) -> Callable[[], None]:
    """A callable that translates `encoded` (source ids) in `batches` (lists of indices) with `model.generate`: beam
    `num_beams` (with length penalty 0.6 and early stopping), `max_new_tokens` = longest source of the batch + 50 as
    `vaswani-evaluate` (unless given), and `generate_kwargs` (e.g. `custom_generate`). It stores the generated ids
    of each sentence, without the start token and from the first EOS on, in `outputs["ids"]` (input order)."""

    beam = {"length_penalty": LENGTH_PENALTY, "early_stopping": True} if num_beams > 1 else {}  # greedy: neither

    def run() -> None:
        result: list[list[int]] = [[] for _ in encoded]
        with torch.inference_mode():
            for indices in batches:
                batch = tokenizer.pad({"input_ids": [encoded[i] for i in indices]}, return_tensors="pt").to(device)
                generated = model.generate(  # (batch, out_len)
                    **batch,
                    num_beams=num_beams,
                    **beam,
                    do_sample=False,
                    max_new_tokens=max_new_tokens or batch["input_ids"].shape[1] + EXTRA_OUTPUT_TOKENS,
                    **generate_kwargs,
                )
                for index, row in zip(indices, generated.tolist(), strict=True):
                    result[index] = strip_eos(row[1:], tokenizer.eos_token_id)
        synchronize(device)
        outputs["ids"] = result

    return run


def bleu(tokenizer, ids: list[list[int]], references: list[str]) -> float:
    """sacreBLEU (13a, mixed case) of the decoded `ids` against `references`."""
    hypotheses = [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]
    return sacrebleu.corpus_bleu(hypotheses, [references]).score


def translation_row(
    times: dict[str, list[float]], outputs: dict[str, list[list[int]]], sentences: int, tokenizer, references
) -> dict:
    """One setting's results: `sentences`, every time, the median seconds, sentences/s and BLEU per contender
    (`outputs`: each contender's generated ids of the first `sentences` sentences)."""
    median = medians(times)
    return {
        "sentences": sentences,
        "seconds": times,
        "median_seconds": median,
        "sentences_per_s": {name: sentences / seconds for name, seconds in median.items()},
        "bleu": {name: bleu(tokenizer, ids, references[:sentences]) for name, ids in outputs.items()},
    }


@dataclasses.dataclass
class TranslationArguments:
    """The command line the translation benchmarks share (benchmarks/README.md)."""

    model_dir: str = dataclasses.field(metadata={"help": "A trained model directory (save_pretrained)."})
    data_dir: Path = dataclasses.field(default_factory=default_data_dir, metadata={"help": "The Multi30k folder."})
    output: str = str(RESULTS_DIR)
    repeats: int = dataclasses.field(default=3, metadata={"help": "Timed rounds per contender."})
    sentences: int = dataclasses.field(default=1000, metadata={"help": "test_2016_flickr sentences (1,000 in all)."})
    batch1_sentences: int = dataclasses.field(default=200, metadata={"help": "Sentences timed at batch size 1."})
    quick: bool = dataclasses.field(
        default=False, metadata={"help": "A smoke run: a few sentences, one round, one torch thread."}
    )


def translation_arguments(arguments_class: type, argv: list[str] | None, description: str, quick: tuple[int, int]):
    """Parse `argv` into `arguments_class` (a `TranslationArguments`) with transformers' `HfArgumentParser`;
    `--quick` sets `(sentences, batch1_sentences) = quick`, one round and one torch thread, and `--device cuda`
    (where the class has it) fp32 matmuls without TF32.

    Raises:
        SystemExit: argparse's (exit status 2), naming the flag at fault.
    """
    (args,) = HfArgumentParser(arguments_class, description=description).parse_args_into_dataclasses(args=argv)
    if args.quick:
        (args.sentences, args.batch1_sentences), args.repeats = quick, 1
        torch.set_num_threads(1)  # as `benchmarks.run --quick`: one thread is robust on a busy machine
    if getattr(args, "device", "cpu") == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32: token ids must match across contenders
    return args
