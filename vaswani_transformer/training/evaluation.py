"""Translate a split with beam search and score it with sacreBLEU, chrF and lowercased BLEU (§6.1).

    python training/evaluate.py --model outputs/multi30k_en_de --split test_2016_flickr
    python training/evaluate.py --model outputs/run --split val --num_beams 1 --batch_size 128 --output_dir eval

Decoding follows §6.1 through the model's saved `generation_config.json` (train.py writes beam size 4, length
penalty alpha = 0.6, early stopping). "We set the maximum output length during inference to input length + 50":
here `max_new_tokens` = the longest source in the batch (tokens, including `</s>`) + 50, so each sentence may
produce at least its own length + 50 tokens. Scores are sacreBLEU's (detokenised text, 13a tokenisation), not the
paper's tokenised multi-bleu, which is why they are not directly comparable to Table 2.

Writes `results_<split>.json` (scores + sacreBLEU signatures + decoding settings) and `hyps_<split>.<lang>`
(one detokenised hypothesis per line) into --output_dir (default: --model).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import evaluate as hf_evaluate
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from transformers import HfArgumentParser, PreTrainedModel, PreTrainedTokenizerBase

from vaswani_transformer.training.batching import build_collator, evaluation_batches
from vaswani_transformer.training.data import default_data_dir, load_parallel_dataset, source_and_target_texts
from vaswani_transformer.training.preprocessing import LENGTH_COLUMNS


__all__ = [
    "EvaluationArguments",
    "ValidationSet",
    "evaluate_translations",
    "load_metric",
    "main",
    "translate",
    "validate",
    "validation_loss",
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
    batch_size: int = 64,
    max_source_length: int | None = None,
) -> list[str]:
    """Translate `sources` with `model.generate` (the model's generation config; `num_beams` overrides its beam).

    Sentences are decoded in batches of `batch_size` sentences sorted by length (less padding), and returned in
    the input order. Per batch, `max_new_tokens` = longest source (tokens) + 50 (§6.1).

    Args:
        max_source_length: truncate sources to this many tokens (None: the tokenizer's `model_max_length`).

    Returns:
        One detokenised hypothesis per source (special tokens removed).
    """
    model.eval()
    device = next(model.parameters()).device
    encoded = tokenizer(list(sources), truncation=True, max_length=max_source_length)["input_ids"]
    order = sorted(range(len(sources)), key=lambda i: len(encoded[i]), reverse=True)
    hypotheses: list[str] = [""] * len(sources)
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in indices]}, return_tensors="pt").to(device)
        kwargs = {"num_beams": num_beams} if num_beams else {}
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
    batch_size: int = 64,
    max_source_length: int | None = None,
    accelerator: Accelerator | None = None,
    metric=None,
) -> tuple[dict, list[str]]:
    """Translate `sources` and score them against `references` (one reference per source).

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
        batch_size=batch_size,
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
def validation_loss(accelerator: Accelerator, model, tokenizer, dataset: datasets.Dataset, max_tokens: int) -> float:
    """Label-smoothed cross-entropy per target token on a tokenized set (`training.preprocessing`), all ranks.

    Each rank scores its share of length-sorted token batches (`evaluation_batches`) with the unwrapped model in eval
    mode under the run's autocast; the sums are reduced over ranks. Leaves the model in train mode.
    """
    model = accelerator.unwrap_model(model).eval()
    collator = build_collator(tokenizer)
    totals = torch.zeros(2, dtype=torch.float64, device=accelerator.device)  # (loss * tokens, tokens)
    inputs = dataset.remove_columns(list(LENGTH_COLUMNS))
    for indices in evaluation_batches(
        dataset["source_length"], dataset["target_length"], max_tokens, accelerator.process_index,
        accelerator.num_processes,
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
    accelerator: Accelerator, model, tokenizer, data: ValidationSet | None, *, max_tokens: int, batch_size: int, metric
) -> dict:
    """Validation loss (label-smoothed, per target token) and beam-search sacreBLEU/chrF, on every rank.

    Returns {eval_loss, eval_bleu, eval_chrf, eval_seconds (wall-clock of the translation)}, or {} with a warning
    when there is no validation pair; leaves the model in train mode.
    """
    if data is None or len(data.tokenized) == 0:
        logger.warning("no validation pairs: skipping validation")
        return {}
    results = {"eval_loss": validation_loss(accelerator, model, tokenizer, data.tokenized, max_tokens)}
    scores, _ = evaluate_translations(
        model, tokenizer, data.sources, data.references, batch_size=batch_size, accelerator=accelerator, metric=metric
    )
    accelerator.unwrap_model(model).train()
    results.update(eval_bleu=scores["bleu"], eval_chrf=scores["chrf"], eval_seconds=scores["seconds"])
    return results


@dataclass
class EvaluationArguments:
    """Arguments of `python training/evaluate.py` (parsed by `transformers.HfArgumentParser`)."""

    model: str = field(metadata={"help": "A save_pretrained directory (model, tokenizer, generation_config)."})
    split: str = field(default="test_2016_flickr", metadata={"help": "File stem of the split, e.g. val."})
    data_dir: str | None = field(default=None, metadata={"help": "Folder of {split}.{lang}[.gz] (default Multi30k)."})
    source_lang: str = field(default="en", metadata={"help": "Source language code."})
    target_lang: str = field(default="de", metadata={"help": "Target language code."})
    num_beams: int | None = field(default=None, metadata={"help": "Beam size (default: generation_config, 4)."})
    batch_size: int = field(default=64, metadata={"help": "Sentences per generate call."})
    max_source_length: int | None = field(default=None, metadata={"help": "Truncate sources to this many tokens."})
    max_samples: int | None = field(default=None, metadata={"help": "Score only the first N pairs (a quick look)."})
    output_dir: str | None = field(default=None, metadata={"help": "Where to write results (default: --model)."})


def load_model_and_tokenizer(path: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a saved model and tokenizer with the Auto classes (remote code from the directory if needed)."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    import vaswani_transformer  # noqa: F401  (registers the Auto classes when the package is installed)

    model = AutoModelForSeq2SeqLM.from_pretrained(path, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    return model, tokenizer


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: translate `--split` of `--data_dir`, print the scores and write them with the hypotheses (`write_results`).

    Raises:
        FileNotFoundError / ValueError: from the data reader (missing files, mismatched line counts).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    (args,) = HfArgumentParser(EvaluationArguments).parse_args_into_dataclasses(args=argv)
    data_dir = args.data_dir or default_data_dir()
    raw = load_parallel_dataset(args.source_lang, args.target_lang, data_dir=data_dir, splits={"eval": args.split})
    if "eval" not in raw:
        raise FileNotFoundError(f"no {args.split}.{args.source_lang}[.gz] / .{args.target_lang}[.gz] in {data_dir}")
    sources, references = source_and_target_texts(raw["eval"], args.source_lang, args.target_lang, args.max_samples)
    model, tokenizer = load_model_and_tokenizer(args.model)
    scores, hypotheses = evaluate_translations(
        model,
        tokenizer,
        sources,
        references,
        num_beams=args.num_beams,
        batch_size=args.batch_size,
        max_source_length=args.max_source_length,
    )
    results = {
        "split": args.split,
        "data_dir": str(data_dir),
        "direction": f"{args.source_lang}-{args.target_lang}",
        **scores,
        "num_beams": args.num_beams or model.generation_config.num_beams,
        "generation_config": model.generation_config.to_diff_dict(),
        "arguments": asdict(args),
    }
    write_results(results, hypotheses, args.output_dir or args.model, args.split, args.target_lang)
    print(f"{args.split}: BLEU {scores['bleu']:.2f} ({scores['bleu_signature']})")
    print(f"{args.split}: chrF {scores['chrf']:.2f} ({scores['chrf_signature']})")
    print(f"{args.split}: BLEU lowercase {scores['bleu_lowercase']:.2f} ({scores['bleu_lowercase_signature']})")


def write_results(results: dict, hypotheses: Sequence[str], output_dir: str, split: str, lang: str) -> None:
    """Write `results_<split>.json` and `hyps_<split>.<lang>` (one hypothesis per line, UTF-8) into output_dir."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / f"results_{split}.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    (output / f"hyps_{split}.{lang}").write_text("".join(h.replace("\n", " ") + "\n" for h in hypotheses))


if __name__ == "__main__":
    main()
