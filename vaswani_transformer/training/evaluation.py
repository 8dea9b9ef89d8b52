"""Translate with beam search and score with sacreBLEU, chrF and lowercased BLEU (§6.1); the validation of training.

Decoding follows §6.1 through the model's saved `generation_config.json` (train.py writes beam size 4, length
penalty alpha = 0.6, early stopping). "We set the maximum output length during inference to input length + 50":
here `max_new_tokens` = the longest source in the batch (tokens, including `</s>`) + 50, so each sentence may
produce at least its own length + 50 tokens. Scores are sacreBLEU's (detokenised text, 13a tokenisation), not the
paper's tokenised multi-bleu, which is why they are not directly comparable to Table 2.

- `translate`, `evaluate_translations`: length-sorted batches through `generate`, then the local sacreBLEU metric;
- `validation_loss`, `validate`, `ValidationSet`: what train.py measures on the validation pairs;
- `write_results`: `results_<split>.json` and `hyps_<split>.<lang>`, the files of a scored split;
- `sweep_table`, `write_sweep_table`: one row per decoding setting of a `vaswani-evaluate` sweep, `sweep_<split>.md`.

The `vaswani-evaluate` command (`training/evaluate_model.py`) is `evaluate_cli`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import evaluate as hf_evaluate
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from vaswani_transformer.batching_vaswani_transformer import DEFAULT_MAX_TOKENS, length_sorted_batches
from vaswani_transformer.training.batching import build_collator, evaluation_batches
from vaswani_transformer.training.preprocessing import LENGTH_COLUMNS


__all__ = [
    "EVALUATION_OUTPUTS",
    "EXTRA_OUTPUT_TOKENS",
    "ValidationSet",
    "evaluate_translations",
    "load_metric",
    "sweep_table",
    "translate",
    "validate",
    "validation_loss",
    "write_results",
    "write_sweep_table",
]

logger = logging.getLogger(__name__)

METRIC_PATH = Path(__file__).resolve().parent / "sacrebleu_metric.py"
# §6.1: "maximum output length during inference to input length + 50".
EXTRA_OUTPUT_TOKENS = 50


def load_metric():
    """The local sacreBLEU/chrF `evaluate` metric (no Hub access; see training/metrics/sacrebleu_metric)."""
    return hf_evaluate.load(str(METRIC_PATH))


@torch.no_grad()
def translate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sources: Sequence[str],
    *,
    num_beams: int | None = None,
    length_penalty: float | None = None,
    batch_size: int | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_source_length: int | None = None,
) -> list[str]:
    """Translate `sources` with `model.generate` (the model's generation config; `num_beams` and `length_penalty`
    override its values), on the device the model is on.

    Sentences are decoded longest first in batches of at most `max_tokens` padded source tokens and `batch_size`
    sentences (`length_sorted_batches`, as fairseq and eole batch), and returned in the input order. Per batch,
    `max_new_tokens` = longest source (tokens) + 50 (§6.1).

    Args:
        num_beams: beam size (None: the generation config's; 1 is greedy search).
        length_penalty: alpha of the beam's length normalisation (None: the generation config's; §6.1 uses 0.6).
        batch_size: sentences per `generate()` call at most (None: only `max_tokens` limits a batch).
        max_tokens: padded source tokens per `generate()` call (sentences x longest source, `</s>` included).
        max_source_length: truncate sources to this many tokens (None: the tokenizer's `model_max_length`).
    Returns:
        One detokenised hypothesis per source (special tokens removed).
    Raises:
        ValueError: if `batch_size` or `max_tokens` is not positive.
    """
    model.eval()
    device = next(model.parameters()).device
    encoded = tokenizer(list(sources), truncation=True, max_length=max_source_length)["input_ids"]
    hypotheses: list[str] = [""] * len(sources)
    kwargs = {"num_beams": num_beams} if num_beams else {}
    if length_penalty is not None:
        kwargs["length_penalty"] = length_penalty
    for indices in length_sorted_batches([len(ids) for ids in encoded], max_tokens, batch_size):
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in indices]}, return_tensors="pt").to(device)
        generated = model.generate(  # (batch, out_len)
            **batch, max_new_tokens=batch["input_ids"].shape[1] + EXTRA_OUTPUT_TOKENS, **kwargs
        )
        for index, text in zip(indices, tokenizer.batch_decode(generated, skip_special_tokens=True), strict=True):
            hypotheses[index] = text.strip()
    return hypotheses


def evaluate_translations(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sources: Sequence[str],
    references: Sequence[str],
    *,
    num_beams: int | None = None,
    length_penalty: float | None = None,
    batch_size: int | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_source_length: int | None = None,
    accelerator: Accelerator | None = None,
    metric=None,
) -> tuple[dict, list[str]]:
    """Translate `sources` and score them against `references` (one reference per source).

    Batches as `translate`: longest first, at most `max_tokens` padded source tokens and `batch_size` sentences;
    `num_beams` and `length_penalty` override the model's generation config, as there.

    With an `accelerator`, every process translates every `num_processes`-th sentence and the hypotheses are
    gathered (`accelerate.utils.gather_object`) so that all processes return the full list and the same scores;
    call it on every process. The model may be wrapped (DDP/compiled): it is unwrapped for `generate`.

    Returns:
        (scores, hypotheses): scores from the sacreBLEU metric (bleu, bleu_lowercase, chrf, their signatures, ...)
        plus num_sentences and seconds (wall-clock of the translation); hypotheses in the order of `sources`.

    Raises:
        ValueError: if `sources` and `references` differ in length or are empty.
    """
    if len(sources) != len(references) or not sources:
        raise ValueError(f"need the same non-zero number of sources and references: {len(sources)}, {len(references)}")
    start = time.perf_counter()
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    if accelerator is not None:
        model = accelerator.unwrap_model(model)
    mine = list(range(rank, len(sources), world))
    texts = translate(
        model,
        tokenizer,
        [sources[i] for i in mine],
        num_beams=num_beams,
        length_penalty=length_penalty,
        batch_size=batch_size,
        max_tokens=max_tokens,
        max_source_length=max_source_length,
    )
    pairs = list(zip(mine, texts, strict=True))
    if world > 1:
        pairs = gather_object(pairs)
    by_index = dict(pairs)
    hypotheses = [by_index[i] for i in range(len(sources))]
    scores = (metric or load_metric()).compute(predictions=hypotheses, references=[[ref] for ref in references])
    scores.update(num_sentences=len(sources), seconds=round(time.perf_counter() - start, 3))
    return scores, hypotheses


@torch.no_grad()
def validation_loss(
    accelerator: Accelerator,
    model,
    tokenizer,
    dataset: datasets.Dataset,
    max_tokens: int,
    pad_to_multiple_of: int = 1,
) -> float:
    """Label-smoothed cross-entropy per target token on a tokenized set (`training.preprocessing`), all ranks.

    Each rank scores its share of length-sorted token batches (`evaluation_batches`, padded as in training to
    multiples of `pad_to_multiple_of` tokens) with the unwrapped model in eval mode under the run's autocast; the
    sums are reduced over ranks. Leaves the model in train mode.
    """
    model = accelerator.unwrap_model(model).eval()
    collator = build_collator(tokenizer, pad_to_multiple_of)
    totals = torch.zeros(2, dtype=torch.float64, device=accelerator.device)  # (loss * tokens, tokens)
    inputs = dataset.remove_columns(list(LENGTH_COLUMNS))
    for indices in evaluation_batches(
        dataset["source_length"], dataset["target_length"], max_tokens, accelerator.process_index,
        accelerator.num_processes, pad_to_multiple_of,
    ):  # fmt: skip
        batch = collator([inputs[i] for i in indices]).to(accelerator.device)
        with accelerator.autocast():
            loss = model(**batch).loss
        tokens = (batch["labels"] != -100).sum()
        totals += torch.stack([loss.double() * tokens, tokens.double()])
    totals = accelerator.reduce(totals, reduction="sum")
    model.train()
    return (totals[0] / totals[1]).item()


@dataclass
class ValidationSet:
    """The pairs validated during training: tokenized (for the loss) and as text (for BLEU and chrF)."""

    tokenized: datasets.Dataset
    sources: list[str]
    references: list[str]


def validate(
    accelerator: Accelerator,
    model,
    tokenizer,
    data: ValidationSet | None,
    *,
    max_tokens: int,
    pad_to_multiple_of: int = 1,
    generation_max_tokens: int = DEFAULT_MAX_TOKENS,
    batch_size: int | None = None,
    metric,
) -> dict:
    """Validation loss (label-smoothed, per target token) and beam-search sacreBLEU/chrF, on every rank.

    The loss is computed in batches of `max_tokens` padded tokens per side, padded to multiples of
    `pad_to_multiple_of` (the training batches' shapes); translation in
    length-sorted batches of `generation_max_tokens` padded source tokens and at most `batch_size` sentences.

    Returns {eval_loss, eval_bleu, eval_chrf, eval_seconds (wall-clock of the translation)}, or {} with a warning
    when there is no validation pair; leaves the model in train mode.
    """
    if data is None or len(data.tokenized) == 0:
        logger.warning("no validation pairs: skipping validation")
        return {}
    loss = validation_loss(accelerator, model, tokenizer, data.tokenized, max_tokens, pad_to_multiple_of)
    results = {"eval_loss": loss}
    scores, _ = evaluate_translations(
        model,
        tokenizer,
        data.sources,
        data.references,
        batch_size=batch_size,
        max_tokens=generation_max_tokens,
        accelerator=accelerator,
        metric=metric,
    )
    accelerator.unwrap_model(model).train()
    results.update(eval_bleu=scores["bleu"], eval_chrf=scores["chrf"], eval_seconds=scores["seconds"])
    return results


# What `write_results` and `write_sweep_table` write, and so all that evaluation ever empties (fnmatch patterns).
EVALUATION_OUTPUTS = ("results_*.json", "hyps_*", "sweep_*.md")


def write_results(results: dict, hypotheses: Sequence[str], output_dir: str, split: str, lang: str) -> None:
    """Write `results_<split>.json` and `hyps_<split>.<lang>` (one hypothesis per line, UTF-8) into output_dir.

    train.py calls it with its run directory (the test split's scores belong to the run); `vaswani-evaluate`
    (`evaluate_cli.main`) with a folder of its own. Creates `output_dir` if needed and replaces those two files if
    they exist; touches nothing else.

    Args:
        results: JSON-serialisable scores and settings.
        hypotheses: one translation per source, in order (a newline inside one is written as a space).
        output_dir: the folder.
        split: the split's name, used in both file names.
        lang: the hypotheses' language code (the file extension).

    Raises:
        OSError: if the folder or the files cannot be written.
    """
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / f"results_{split}.json").write_text(
        json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (output / f"hyps_{split}.{lang}").write_text(
        "".join(h.replace("\n", " ") + "\n" for h in hypotheses), encoding="utf-8"
    )


# The columns of a sweep's summary: (header, key in a `results` dict, format).
SWEEP_COLUMNS = (
    ("num_beams", "num_beams", "{}"),
    ("length_penalty", "length_penalty", "{}"),
    ("BLEU", "bleu", "{:.2f}"),
    ("chrF", "chrf", "{:.2f}"),
    ("BLEU lowercase", "bleu_lowercase", "{:.2f}"),
    ("seconds", "seconds", "{:.1f}"),
    ("hypotheses", "hypotheses_file", "{}"),
)


def sweep_table(rows: Sequence[dict]) -> str:
    """A Markdown table of a decoding sweep: one line per setting, in the order given, and the signatures below it.

    Args:
        rows: `results` dicts (as written to `results_*.json`) with num_beams, length_penalty (None for greedy
            search, where no length penalty applies: shown as "-"), bleu, chrf, bleu_lowercase, seconds,
            hypotheses_file, bleu_signature and chrf_signature.
    Returns:
        The table, ending in a newline. The sacreBLEU signatures are those of the first row; they differ between
        rows only in the library's version string, which is the same within one run.
    Raises:
        KeyError: if a row lacks one of those keys.
    """
    lines = ["| " + " | ".join(header for header, _, _ in SWEEP_COLUMNS) + " |"]
    lines.append("|" + "|".join("---:" if key != "hypotheses_file" else "---" for _, key, _ in SWEEP_COLUMNS) + "|")
    for row in rows:
        cells = ["-" if row[key] is None else form.format(row[key]) for _, key, form in SWEEP_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    if rows:
        lines += ["", f"BLEU: {rows[0]['bleu_signature']}", f"chrF: {rows[0]['chrf_signature']}"]
    return "\n".join(lines) + "\n"


def write_sweep_table(rows: Sequence[dict], output_dir: str, split: str) -> Path:
    """Write `sweep_table(rows)` to `output_dir/sweep_<split>.md` (UTF-8) and return the path.

    Raises:
        OSError: if the file cannot be written.
    """
    path = Path(output_dir) / f"sweep_{split}.md"
    path.write_text(sweep_table(rows), encoding="utf-8")
    return path
