"""Translate a split with beam search and score it with sacreBLEU, chrF and lowercased BLEU (§6.1).

    python training/evaluate_model.py --model outputs/multi30k_en_de --split test_2016_flickr
    vaswani-evaluate --model outputs/run --split val --num_beams 1 --max_tokens 8192 --output_dir eval/run-val

Decoding follows §6.1 through the model's saved `generation_config.json` (train.py writes beam size 4, length
penalty alpha = 0.6, early stopping). "We set the maximum output length during inference to input length + 50":
here `max_new_tokens` = the longest source in the batch (tokens, including `</s>`) + 50, so each sentence may
produce at least its own length + 50 tokens. Scores are sacreBLEU's (detokenised text, 13a tokenisation), not the
paper's tokenised multi-bleu, which is why they are not directly comparable to Table 2.

`main` writes `results_<split>.json` (scores + sacreBLEU signatures + decoding settings) and `hyps_<split>.<lang>`
(one detokenised hypothesis per line) into its own folder, never over a training run's files (`default_output_dir`):
by default `<model>/eval/<split>-<src>-<tgt>-beam<N>`, plus `-max_samples<N>` and `-max_source_length<N>` when
those flags are given (e.g. `outputs/run/eval/test_2016_flickr-en-de-beam4-max_samples5`); for a `--model` that is
not a local directory, `eval/<org>--<name>/<the same name>` under the working directory. The rule of every command
(`vaswani_transformer.output_dir`) applies: an existing non-empty folder is refused unless `--overwrite_output_dir`,
which empties it first; on top of it, evaluation only ever empties a folder of evaluation results
(`check_evaluation_output_dir`).
Nothing is written before the split, the model and the output folder have been checked.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import datasets
import evaluate as hf_evaluate
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from transformers import HfArgumentParser, PreTrainedModel, PreTrainedTokenizerBase

from vaswani_transformer.generation_vaswani_transformer import DEFAULT_MAX_TOKENS, length_sorted_batches
from vaswani_transformer.output_dir import check_not_model_dir, check_output_dir, prepare_output_dir
from vaswani_transformer.training.batching import build_collator, evaluation_batches
from vaswani_transformer.training.data import (
    available_splits,
    default_data_dir,
    load_parallel_dataset,
    source_and_target_texts,
)
from vaswani_transformer.training.preprocessing import LENGTH_COLUMNS


__all__ = [
    "EVALUATION_OUTPUTS",
    "EvaluationArguments",
    "ValidationSet",
    "check_evaluation_output_dir",
    "default_output_dir",
    "evaluate_translations",
    "load_metric",
    "load_model_and_tokenizer",
    "main",
    "translate",
    "validate",
    "validation_loss",
    "write_results",
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
    batch_size: int | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_source_length: int | None = None,
) -> list[str]:
    """Translate `sources` with `model.generate` (the model's generation config; `num_beams` overrides its beam).

    Sentences are decoded longest first in batches of at most `max_tokens` padded source tokens and `batch_size`
    sentences (`length_sorted_batches`, as fairseq and eole batch), and returned in the input order. Per batch,
    `max_new_tokens` = longest source (tokens) + 50 (§6.1).

    Args:
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
    batch_size: int | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_source_length: int | None = None,
    accelerator: Accelerator | None = None,
    metric=None,
) -> tuple[dict, list[str]]:
    """Translate `sources` and score them against `references` (one reference per source).

    Batches as `translate`: longest first, at most `max_tokens` padded source tokens and `batch_size` sentences.

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


@dataclass
class EvaluationArguments:
    """Arguments of `training/evaluate_model.py` / `vaswani-evaluate` (parsed by `transformers.HfArgumentParser`)."""

    model: str = field(metadata={"help": "A save_pretrained directory (model, tokenizer, generation_config)."})
    split: str = field(default="test_2016_flickr", metadata={"help": "File stem of the split, e.g. val."})
    data_dir: str | None = field(default=None, metadata={"help": "Folder of {split}.{lang}[.gz] (default Multi30k)."})
    source_lang: str = field(default="en", metadata={"help": "Source language code."})
    target_lang: str = field(default="de", metadata={"help": "Target language code."})
    num_beams: int | None = field(default=None, metadata={"help": "Beam size (default: generation_config, 4)."})
    length_penalty_type: str | None = field(
        default=None,
        metadata={
            "help": "'length' (|Y|^alpha, transformers) or 'gnmt' (((5 + |Y|) / 6)^alpha, Wu et al. 2016); "
            "default: the model's generation_config ('length' when unset).",
            "choices": ["length", "gnmt"],
        },
    )
    batch_size: int | None = field(
        default=None, metadata={"help": "Sentences per generate call at most (default: only --max_tokens limits)."}
    )
    max_tokens: int = field(
        default=DEFAULT_MAX_TOKENS,
        metadata={"help": "Padded source tokens per generate call (sentences x longest; longest sentences first)."},
    )
    max_source_length: int | None = field(default=None, metadata={"help": "Truncate sources to this many tokens."})
    max_samples: int | None = field(default=None, metadata={"help": "Score only the first N pairs (a quick look)."})
    output_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder for results_<split>.json and hyps_<split>.<lang> (default: <model>/eval/<split>-<src>-"
            "<tgt>-beam<N>[-max_samples<N>][-max_source_length<N>]). Never a training run's own folder."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Clear an --output_dir holding earlier evaluation results instead of refusing it."},
    )


# What `write_results` writes, and so all that evaluation ever empties (fnmatch patterns on file names).
EVALUATION_OUTPUTS = ("results_*.json", "hyps_*")


def default_output_dir(args: EvaluationArguments, num_beams: int) -> Path:
    """The folder `main` writes to without `--output_dir`: named after the split and the settings that change scores.

    `<model>/eval/<split>-<src>-<tgt>-beam<num_beams>`, then `-gnmt` with `--length_penalty_type gnmt`, and
    `-max_samples<N>` and `-max_source_length<N>` when set;
    a sub-folder of the model directory, so never one of a training run's own files. For a `--model` that is not a
    local directory (a Hub id), `eval/<id with / as -->/<the same name>` under the working directory.

    Args:
        args: the parsed arguments (model, split, languages, max_samples, max_source_length).
        num_beams: the beam size used (`--num_beams`, else the model's generation config).
    """
    name = f"{args.split}-{args.source_lang}-{args.target_lang}-beam{num_beams}"
    if args.length_penalty_type == "gnmt":
        name += "-gnmt"
    for flag in ("max_samples", "max_source_length"):
        if getattr(args, flag) is not None:
            name += f"-{flag}{getattr(args, flag)}"
    model = Path(args.model)
    base = model / "eval" if model.is_dir() else Path("eval") / args.model.replace("/", "--")
    return base / name


def check_evaluation_output_dir(output_dir: Path, model: str, overwrite: bool) -> None:
    """Refuse an `--output_dir` that evaluation must not write into; writes and removes nothing.

    Evaluation's own rule, then the rule of every command (`vaswani_transformer.output_dir.check_output_dir`).
    Accepted: a missing folder, an empty one, or (with `overwrite`) one that holds only evaluation results
    (`EVALUATION_OUTPUTS`), which `main` then empties (`vaswani_transformer.output_dir.prepare_output_dir`) just
    before writing.

    Args:
        output_dir: the folder results would go to.
        model: the `--model` argument; the model directory itself, or a folder holding it, is always refused.
        overwrite: `--overwrite_output_dir`.

    Raises:
        FileExistsError: if `output_dir` is the model directory or holds it, or holds anything besides evaluation
            results (a training run, a saved model), whatever `overwrite` says; if it is not empty and `overwrite`
            is false; if it is a file. The message names the folder and what to do.
    """
    check_not_model_dir(output_dir, model, "evaluation")
    entries = sorted(output_dir.iterdir()) if output_dir.is_dir() else []
    foreign = [e.name for e in entries if not (e.is_file() and any(fnmatch(e.name, p) for p in EVALUATION_OUTPUTS))]
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise FileExistsError(
            f"--output_dir {output_dir} holds entries that evaluation did not write ({shown}); it never writes over "
            "them, --overwrite_output_dir included: choose another --output_dir"
        )
    check_output_dir(output_dir, overwrite)


def load_model_and_tokenizer(path: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a saved model and tokenizer with the Auto classes (remote code from the directory if needed).

    Args:
        path: a `save_pretrained` directory (model, tokenizer, generation config) or a Hub repository id.

    Raises:
        FileNotFoundError: `cannot load --model <path>: no such folder, nor a Hub model (<cause>)` when `path` is
            neither a local folder nor a loadable Hub repository.
        OSError: `cannot load --model <path>: <cause>` when a folder lacks model or tokenizer files, or the Hub
            cannot be reached.
    """
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    import vaswani_transformer  # noqa: F401  (registers the Auto classes when the package is installed)

    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(path, trust_remote_code=True)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    except (OSError, ValueError) as error:  # ValueError: huggingface_hub's HFValidationError for a malformed id
        cause = (str(error).strip().splitlines() or [type(error).__name__])[0]
        if not Path(path).exists():
            missing = f"cannot load --model {path}: no such folder, nor a Hub model ({cause})"
            raise FileNotFoundError(missing) from error
        raise OSError(f"cannot load --model {path}: {cause}") from error
    return model, tokenizer


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: translate `--split` of `--data_dir`, print the scores and write them with the hypotheses (`write_results`)
    into `--output_dir` (default `default_output_dir`), after every check has passed.

    Args:
        argv: the command-line arguments (`EvaluationArguments`); default `sys.argv[1:]`.

    Raises:
        ValueError: a flag out of range (`--batch_size`, `--max_tokens`, `--num_beams`, `--max_samples`,
            `--max_source_length` < 1, named), or from the data reader (mismatched line counts, bad UTF-8; names the
            file).
        FileNotFoundError: no files for `--split` in the data folder (names the split and the folder), or a missing
            `--data_dir`.
        OSError: `--model` cannot be loaded (`load_model_and_tokenizer`).
        FileExistsError: a refused `--output_dir` (`check_evaluation_output_dir`).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    (args,) = HfArgumentParser(EvaluationArguments).parse_args_into_dataclasses(args=argv)
    for flag in ("batch_size", "max_tokens", "num_beams", "max_samples", "max_source_length"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise ValueError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    # Every check before anything is written: the split, the model, the output folder.
    data_dir = args.data_dir or default_data_dir()
    raw = load_parallel_dataset(args.source_lang, args.target_lang, data_dir=data_dir, splits={"eval": args.split})
    if "eval" not in raw:
        there = ", ".join(available_splits(data_dir, args.source_lang, args.target_lang)) or "none"
        raise FileNotFoundError(
            f"--split {args.split}: no {args.split}.{args.source_lang}[.gz] / .{args.target_lang}[.gz] in {data_dir} "
            f"(splits there: {there})"
        )
    sources, references = source_and_target_texts(raw["eval"], args.source_lang, args.target_lang, args.max_samples)
    model, tokenizer = load_model_and_tokenizer(args.model)
    if args.length_penalty_type is not None:
        model.generation_config.length_penalty_type = args.length_penalty_type
    num_beams = args.num_beams or model.generation_config.num_beams
    output_dir = Path(args.output_dir) if args.output_dir else default_output_dir(args, num_beams)
    check_evaluation_output_dir(output_dir, args.model, args.overwrite_output_dir)
    prepare_output_dir(output_dir, overwrite=False)  # created now: an unwritable folder fails before translating
    args.output_dir = str(output_dir)

    scores, hypotheses = evaluate_translations(
        model,
        tokenizer,
        sources,
        references,
        num_beams=args.num_beams,
        batch_size=args.batch_size,
        max_tokens=args.max_tokens,
        max_source_length=args.max_source_length,
    )
    results = {
        "split": args.split,
        "data_dir": str(data_dir),
        "direction": f"{args.source_lang}-{args.target_lang}",
        **scores,
        "num_beams": num_beams,
        "generation_config": model.generation_config.to_diff_dict(),
        "arguments": asdict(args),
    }
    # Checked again (translating may take hours) and emptied only now: a failed run leaves earlier results in place.
    check_evaluation_output_dir(output_dir, args.model, args.overwrite_output_dir)
    prepare_output_dir(output_dir, args.overwrite_output_dir)
    write_results(results, hypotheses, str(output_dir), args.split, args.target_lang)
    logger.info("wrote %s", output_dir)
    print(f"{args.split}: BLEU {scores['bleu']:.2f} ({scores['bleu_signature']})")
    print(f"{args.split}: chrF {scores['chrf']:.2f} ({scores['chrf_signature']})")
    print(f"{args.split}: BLEU lowercase {scores['bleu_lowercase']:.2f} ({scores['bleu_lowercase_signature']})")


def write_results(results: dict, hypotheses: Sequence[str], output_dir: str, split: str, lang: str) -> None:
    """Write `results_<split>.json` and `hyps_<split>.<lang>` (one hypothesis per line, UTF-8) into output_dir.

    train.py calls it with its run directory (the test split's scores belong to the run); `main` with a folder of
    its own. Creates `output_dir` if needed and replaces those two files if they exist; touches nothing else.

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


if __name__ == "__main__":
    main()
