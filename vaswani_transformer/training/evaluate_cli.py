"""`vaswani-evaluate` (`training/evaluate_model.py`): translate a split of a saved model and score it (§6.1).

    python training/evaluate_model.py --model outputs/multi30k_en_de --split test_2016_flickr
    vaswani-evaluate --model outputs/run --split val --num_beams 1 --max_tokens 8192 --output_dir eval/run-val

Translation and scores are the library's (`evaluation.evaluate_translations`: the model's generation config, §6.1's
output length, sacreBLEU). `main` writes `results_<split>.json` (scores + sacreBLEU signatures + decoding settings)
and `hyps_<split>.<lang>` (one detokenised hypothesis per line) into its own folder, never over a training run's files
(`default_output_dir`): by default `<model>/eval/<split>-<src>-<tgt>-beam<N>`, plus `-max_samples<N>` and
`-max_source_length<N>` when those flags are given (e.g. `outputs/run/eval/test_2016_flickr-en-de-beam4-max_samples5`);
for a `--model` that is not a local directory, `eval/<org>--<name>/<the same name>` under the working directory. The
rule of every command (`vaswani_transformer.output_dir`) applies: an existing non-empty folder is refused unless
`--overwrite_output_dir`, which empties it first; on top of it, evaluation only ever empties a folder of evaluation
results (`check_evaluation_output_dir`). Nothing is written before the split, the model and the output folder have
been checked.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatch
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from vaswani_transformer.batching_vaswani_transformer import DEFAULT_MAX_TOKENS
from vaswani_transformer.command_line import parse_arguments
from vaswani_transformer.output_dir import check_not_model_dir, check_output_dir, prepare_output_dir
from vaswani_transformer.training.data import (
    available_splits,
    default_data_dir,
    load_parallel_dataset,
    source_and_target_texts,
)
from vaswani_transformer.training.evaluation import EVALUATION_OUTPUTS, evaluate_translations, write_results
from vaswani_transformer.training.telemetry import LOG_FORMAT


__all__ = [
    "EvaluationArguments",
    "check_evaluation_output_dir",
    "default_output_dir",
    "load_model_and_tokenizer",
    "main",
]

logger = logging.getLogger(__name__)


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
    logging.basicConfig(format=LOG_FORMAT, level=logging.INFO)
    args = parse_arguments(EvaluationArguments, argv, description=__doc__.split("\n\n")[0])
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
