"""`vaswani-evaluate` (`training/evaluate_model.py`): translate a test set with a saved model and score it (§6.1).

    vaswani-evaluate --model outputs/multi30k_en_de --test_split test_2016_flickr
    vaswani-evaluate --model outputs/run --test_file newstest2014.jsonl --device cuda --num_beams 1 4 8
    vaswani-evaluate --model outputs/run --dataset_name wmt/wmt14 --dataset_config_name de-en --test_split test \\
        --length_penalty 0.6 1.0

The test pairs come from one source, read by `training.data.load_parallel_dataset` as in training: a folder of text
files (`--data_dir`, default Multi30k, and the file stem `--test_split`), a JSON-lines, JSON, Parquet or CSV file
(`--test_file`), or a `datasets` dataset (`--dataset_name`, `--dataset_config_name`, `--dataset_revision`, the split
`--test_split`, default "test"), with a `translation` column or the columns `--source_column`/`--target_column`.
The model runs on `--device` (default `auto`: cuda when available, else cpu).

Translation and scores are the library's (`evaluation.evaluate_translations`: the model's generation config, §6.1's
output length, sacreBLEU). `--num_beams` and `--length_penalty` take several values: each combination is translated
and scored (greedy search, beam 1, once: no length penalty applies to it). `main` writes, per combination,
`results_<name>.json` (scores, sacreBLEU signatures, decoding settings, device, data source) and `hyps_<name>.<lang>`
(one detokenised hypothesis per line), where `<name>` is the split (the file's stem for `--test_file`), followed by
`-beam<N>-lp<alpha>` in a sweep, which also writes the summary table `sweep_<split>.md` (`evaluation.sweep_table`).

Output folder: by default `<model>/eval/<split>-<src>-<tgt>-beam<N>` (several values joined by commas), then
`-lp<alpha>` when `--length_penalty` is given, `-gnmt`, `-max_samples<N>` and `-max_source_length<N>` when given
(e.g. `outputs/run/eval/test_2016_flickr-en-de-beam4-max_samples5`); a Hub dataset's name comes first
(`wmt--wmt14-de-en-test-en-de-beam4`); for a `--model` that is not a local directory, `eval/<org>--<name>/<the same
name>` under the working directory. The rule of every command (`vaswani_transformer.output_dir`) applies: an
existing non-empty folder is refused unless `--overwrite_output_dir`, which empties it first; on top of it,
evaluation only ever empties a folder of evaluation results (`check_evaluation_output_dir`). Nothing is written
before the data, the device, the model and the output folder have been checked.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatch
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from vaswani_transformer.batching_vaswani_transformer import DEFAULT_MAX_TOKENS
from vaswani_transformer.command_line import parse_arguments, resolve_device
from vaswani_transformer.output_dir import check_not_model_dir, check_output_dir, prepare_output_dir
from vaswani_transformer.training.data import (
    available_splits,
    default_data_dir,
    load_parallel_dataset,
    source_and_target_texts,
)
from vaswani_transformer.training.dataset_layouts import dataset_split_names
from vaswani_transformer.training.evaluation import (
    EVALUATION_OUTPUTS,
    evaluate_translations,
    load_metric,
    sweep_table,
    write_results,
    write_sweep_table,
)
from vaswani_transformer.training.telemetry import LOG_FORMAT


__all__ = [
    "EvaluationArguments",
    "EvaluationSet",
    "check_evaluation_output_dir",
    "decoding_settings",
    "default_output_dir",
    "load_model_and_tokenizer",
    "load_evaluation_set",
    "main",
]

logger = logging.getLogger(__name__)

# The split read when --test_split is not given: Multi30k's test file stem for a data_dir, "test" for a dataset.
DEFAULT_DATA_DIR_SPLIT = "test_2016_flickr"
DEFAULT_DATASET_SPLIT = "test"
# File-name endings of a --test_file, removed to name its results.
TEST_FILE_SUFFIXES = (".gz", ".jsonl", ".json", ".parquet", ".csv")


@dataclass
class EvaluationArguments:
    """Arguments of `training/evaluate_model.py` / `vaswani-evaluate` (parsed by `transformers.HfArgumentParser`)."""

    model: str = field(
        metadata={
            "help": "A save_pretrained directory (model, tokenizer, generation_config) or a Hub model id.",
            "aliases": ["--model_name_or_path"],
        }
    )
    test_split: str | None = field(
        default=None,
        metadata={
            "help": f"The split to score: a --data_dir file stem (default {DEFAULT_DATA_DIR_SPLIT}) or a "
            f"--dataset_name split (default {DEFAULT_DATASET_SPLIT}).",
            "aliases": ["--split"],
        },
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "Folder of {split}.{lang}[.gz] text files (the default: Multi30k)."}
    )
    test_file: str | None = field(
        default=None, metadata={"help": "A data file of test pairs: JSON lines (.jsonl), JSON, Parquet or CSV."}
    )
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "A datasets.load_dataset name (Hub id or local folder), e.g. wmt/wmt14."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Its configuration, e.g. de-en."})
    dataset_revision: str | None = field(
        default=None, metadata={"help": "The dataset's revision (a branch, tag or commit) to pin."}
    )
    source_column: str | None = field(
        default=None,
        metadata={"help": "Column of the source texts (default: a 'translation' column, else --source_lang's)."},
    )
    target_column: str | None = field(
        default=None,
        metadata={"help": "Column of the reference texts (default: a 'translation' column, else --target_lang's)."},
    )
    source_lang: str = field(default="en", metadata={"help": "Source language code."})
    target_lang: str = field(default="de", metadata={"help": "Target language code."})
    device: str = field(
        default="auto",
        metadata={
            "help": "torch device to translate on, e.g. cuda, cuda:1, cpu or auto: cuda if available, else cpu."
        },
    )
    num_beams: list[int] | None = field(
        default=None,
        metadata={"help": "Beam size(s); several values sweep (default: generation_config's, 4 after training)."},
    )
    length_penalty: list[float] | None = field(
        default=None,
        metadata={
            "help": "Length penalty alpha(s) of beam search; several values sweep (default: "
            "generation_config's, 0.6 after training, §6.1)."
        },
    )
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
            "help": "Folder for results_*.json, hyps_* and sweep_*.md (default: <model>/eval/<split>-<src>-<tgt>-"
            "beam<N>[-lp<alpha>][-max_samples<N>][-max_source_length<N>]). Never a training run's own folder."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Clear an --output_dir holding earlier evaluation results instead of refusing it."},
    )


@dataclass
class EvaluationSet:
    """The pairs to score and where they come from.

    Attributes:
        split: the name of the split in file names (`results_<split>.json`): the --data_dir file stem, the dataset
            split, or the --test_file name without its endings (`TEST_FILE_SUFFIXES`).
        folder_name: the start of the default output folder's name (the dataset's name, then the split).
        source: what was read, as recorded in the results (data_dir, test_file or dataset_* and the columns).
        sources, references: the texts, aligned, at most --max_samples of each.
    """

    split: str
    folder_name: str
    source: dict
    sources: list[str]
    references: list[str]


def load_evaluation_set(args: EvaluationArguments) -> EvaluationSet:
    """Read the test pairs of `args` through `load_parallel_dataset`: exactly one of --data_dir (Multi30k when none
    of the three is given), --test_file, --dataset_name.

    Raises:
        ValueError: two sources given (names them); --test_split with --test_file; from the reader: a file or row
            without the languages or columns (names the file and row), mismatched line counts, bad UTF-8,
            --dataset_revision without --dataset_name; an empty test split (names it).
        FileNotFoundError: a missing data folder, file, or split (names the split and those that exist).
    """
    given = [flag for flag in ("data_dir", "test_file", "dataset_name") if getattr(args, flag) is not None]
    if len(given) > 1:
        raise ValueError(f"give one of --data_dir, --test_file, --dataset_name (got --{', --'.join(given)})")
    if args.test_file is not None and args.test_split is not None:
        raise ValueError("--test_split names a split of --data_dir or --dataset_name; a --test_file is one split")
    columns = {
        name: getattr(args, name)
        for name in ("source_column", "target_column", "dataset_revision")
        if getattr(args, name) is not None
    }
    if args.test_file is not None:
        split = Path(args.test_file).name
        while split.endswith(TEST_FILE_SUFFIXES):
            split = split[: split.rindex(".")]
        source = {"test_file": args.test_file}
        raw = load_parallel_dataset(args.source_lang, args.target_lang, test_file=args.test_file, **columns)
        folder_name, origin = split, args.test_file
    elif args.dataset_name is not None:
        split = args.test_split or DEFAULT_DATASET_SPLIT
        source = {"dataset_name": args.dataset_name, "dataset_config_name": args.dataset_config_name}
        raw = load_parallel_dataset(
            args.source_lang,
            args.target_lang,
            dataset_name=args.dataset_name,
            dataset_config_name=args.dataset_config_name,
            splits={"test": split},
            **columns,
        )
        dataset = Path(args.dataset_name).name if Path(args.dataset_name).is_dir() else args.dataset_name
        folder_name = "-".join([dataset.replace("/", "--"), *filter(None, [args.dataset_config_name]), split])
        origin = f"{args.dataset_name} [{split}]"
    else:
        data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
        split = args.test_split or DEFAULT_DATA_DIR_SPLIT
        source = {"data_dir": str(data_dir)}
        raw = load_parallel_dataset(
            args.source_lang, args.target_lang, data_dir=data_dir, splits={"test": split}, **columns
        )
        folder_name, origin = split, f"{data_dir / split}.{args.source_lang}[.gz]"
        if "test" not in raw:
            there = ", ".join(available_splits(data_dir, args.source_lang, args.target_lang)) or "none"
            raise FileNotFoundError(
                f"--test_split {split}: no {split}.{args.source_lang}[.gz] / .{args.target_lang}[.gz] in "
                f"{data_dir} (splits there: {there})"
            )
    if "test" not in raw:
        there = dataset_split_names(args.dataset_name, args.dataset_config_name, args.dataset_revision)
        raise FileNotFoundError(
            f"--test_split {split}: no such split in --dataset_name {args.dataset_name} "
            f"(splits there: {', '.join(there) or 'unknown'})"
        )
    if len(raw["test"]) == 0:
        raise ValueError(f"no pair to score: {origin} is empty")
    source.update(columns)
    sources, references = source_and_target_texts(raw["test"], args.source_lang, args.target_lang, args.max_samples)
    return EvaluationSet(split, folder_name, source, sources, references)


def decoding_settings(
    num_beams: Sequence[int], length_penalties: Sequence[float] | None
) -> list[tuple[int, float | None]]:
    """The (num_beams, length_penalty) combinations of a sweep, in the order given (beams outer).

    Greedy search (beam 1) is decoded once, with length_penalty None: a length penalty only rescales the scores of
    finished beam hypotheses (sum of log-probabilities / length^alpha), so it cannot change greedy output.

    Args:
        num_beams: beam sizes (each >= 1).
        length_penalties: alphas, or None for the generation config's (recorded as None in the settings).
    """
    settings: list[tuple[int, float | None]] = []
    for beams in num_beams:
        for alpha in length_penalties if length_penalties and beams > 1 else [None]:
            if (beams, alpha) not in settings:
                settings.append((beams, alpha))
    return settings


def default_output_dir(args: EvaluationArguments, num_beams: Sequence[int], folder_name: str | None = None) -> Path:
    """The folder `main` writes to without `--output_dir`: named after the split and the settings that change scores.

    `<model>/eval/<folder_name>-<src>-<tgt>-beam<num_beams, joined by commas>`, then `-lp<alphas>` when
    `--length_penalty` is given, `-gnmt` with `--length_penalty_type gnmt`, and `-max_samples<N>` and
    `-max_source_length<N>` when set; a sub-folder of the model directory, so never one of a training run's own
    files. For a `--model` that is not a local directory (a Hub id), `eval/<id with / as -->/<the same name>` under
    the working directory.

    Args:
        args: the parsed arguments (model, test_split, languages, length_penalty, max_samples, max_source_length).
        num_beams: the beam sizes used (`--num_beams`, else the model's generation config).
        folder_name: the test set's `EvaluationSet.folder_name` (default: `--test_split`, else Multi30k's test split).
    """
    beams = ",".join(str(beams) for beams in num_beams)
    name = (
        f"{folder_name or args.test_split or DEFAULT_DATA_DIR_SPLIT}-{args.source_lang}-{args.target_lang}-beam{beams}"
    )
    if args.length_penalty:
        name += "-lp" + ",".join(f"{alpha:g}" for alpha in args.length_penalty)
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
    """CLI: translate the test set with each decoding setting, print the scores and write them with the hypotheses
    (`write_results`, and `write_sweep_table` for a sweep) into `--output_dir` (default `default_output_dir`), after
    every check has passed.

    Args:
        argv: the command-line arguments (`EvaluationArguments`); default `sys.argv[1:]`.

    Raises:
        ValueError: a flag out of range (`--batch_size`, `--max_tokens`, `--num_beams`, `--max_samples`,
            `--max_source_length` < 1, named), an unusable `--device` (`resolve_device`), or from the data reader
            (`load_evaluation_set`: names the file, row or flag).
        FileNotFoundError: no such split, file or folder (`load_evaluation_set`).
        OSError: `--model` cannot be loaded (`load_model_and_tokenizer`).
        FileExistsError: a refused `--output_dir` (`check_evaluation_output_dir`).
    """
    logging.basicConfig(format=LOG_FORMAT, level=logging.INFO)
    args = parse_arguments(EvaluationArguments, argv, description=__doc__.split("\n\n")[0])
    for flag in ("batch_size", "max_tokens", "max_samples", "max_source_length"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise ValueError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if args.num_beams is not None and min(args.num_beams) < 1:
        raise ValueError(f"--num_beams must be at least 1, got {min(args.num_beams)}")
    # Every check before anything is written: the data, the device, the model, the output folder.
    data = load_evaluation_set(args)
    device = resolve_device(args.device)
    model, tokenizer = load_model_and_tokenizer(args.model)
    model.to(device)
    if args.length_penalty_type is not None:
        model.generation_config.length_penalty_type = args.length_penalty_type
    num_beams = args.num_beams or [model.generation_config.num_beams]
    settings = decoding_settings(num_beams, args.length_penalty)
    if args.length_penalty and all(beams == 1 for beams, _ in settings):
        logger.warning("--length_penalty has no effect on greedy search (--num_beams 1): ignored")
    output_dir = Path(args.output_dir) if args.output_dir else default_output_dir(args, num_beams, data.folder_name)
    check_evaluation_output_dir(output_dir, args.model, args.overwrite_output_dir)
    prepare_output_dir(output_dir, overwrite=False)  # created now: an unwritable folder fails before translating
    args.output_dir = str(output_dir)

    metric, sweep, rows = load_metric(), len(settings) > 1, []
    for beams, alpha in settings:
        name = data.split
        if sweep:
            name += f"-beam{beams}" + (f"-lp{alpha:g}" if alpha is not None else "")
        # Greedy search has no length penalty; beam search uses --length_penalty, else the generation config's.
        penalty = None if beams == 1 else model.generation_config.length_penalty if alpha is None else alpha
        logger.info("translating %d sentences on %s: num_beams %d, length_penalty %s", len(data.sources), device,
                    beams, penalty)  # fmt: skip
        scores, hypotheses = evaluate_translations(
            model,
            tokenizer,
            data.sources,
            data.references,
            num_beams=beams,
            length_penalty=alpha,
            batch_size=args.batch_size,
            max_tokens=args.max_tokens,
            max_source_length=args.max_source_length,
            metric=metric,
        )
        rows.append(
            {
                "split": data.split,
                **data.source,
                "direction": f"{args.source_lang}-{args.target_lang}",
                **scores,
                "num_beams": beams,
                "length_penalty": penalty,
                "device": str(device),
                "hypotheses_file": f"hyps_{name}.{args.target_lang}",
                "generation_config": model.generation_config.to_diff_dict(),
                "arguments": asdict(args),
            }
        )
        print(f"{name}: BLEU {scores['bleu']:.2f} ({scores['bleu_signature']})")
        print(f"{name}: chrF {scores['chrf']:.2f} ({scores['chrf_signature']})")
        print(f"{name}: BLEU lowercase {scores['bleu_lowercase']:.2f} ({scores['bleu_lowercase_signature']})")
        if len(rows) == 1:
            # Checked again (translating may take hours) and emptied only once the first setting is scored: a run
            # that fails before leaves earlier results in place; each later setting's files are written when done.
            check_evaluation_output_dir(output_dir, args.model, args.overwrite_output_dir)
            prepare_output_dir(output_dir, args.overwrite_output_dir)
        write_results(rows[-1], hypotheses, str(output_dir), name, args.target_lang)
    if sweep:
        print(sweep_table(rows), end="")
        write_sweep_table(rows, str(output_dir), data.split)
    logger.info("wrote %s", output_dir)
