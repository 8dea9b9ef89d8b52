"""The command-line programs of the training library: the console scripts of pyproject.toml and `training/*.py`.

Each program is an arguments dataclass, parsed by `HfArgumentParser` (`command_line.parse_arguments`), and a
`main(argv)` that raises the library's user errors; each console script runs its `main` through `command_line.run`,
which prints a user error as one line, `<program>: error: <message>`, and exits with status 2 (`--debug` shows the
traceback). Tests call the `main` functions and assert the exception.

- `vaswani-train`: `train.main` (arguments in `arguments`); `vaswani-evaluate`: `evaluate_cli.main`;
- `vaswani-average-checkpoints` (§6.1), `vaswani-push-to-hub`, `vaswani-plot-bleu-curve`, `vaswani-model-card`,
  `vaswani-train-tokenizer` (§5.1): defined here, over `averaging`, `hub`, `bleu_curve`, `model_card` and
  `tokenizer_training`.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vaswani_transformer.command_line import parse_arguments, run
from vaswani_transformer.output_dir import check_output_dir, prepare_output_dir
from vaswani_transformer.tokenization_vaswani_transformer_fast import DEFAULT_MODEL_MAX_LENGTH
from vaswani_transformer.training import averaging, bleu_curve, hub, tokenizer_training
from vaswani_transformer.training import model_card as cards  # `model_card` is the console script below
from vaswani_transformer.training.checkpoints import list_checkpoints
from vaswani_transformer.training.data import load_parallel_dataset
from vaswani_transformer.training.telemetry import LOG_FORMAT


__all__ = [
    "AverageCheckpointsArguments",
    "ModelCardArguments",
    "PlotBleuCurveArguments",
    "PushToHubArguments",
    "TokenizerTrainingArguments",
    "average_checkpoints",
    "average_checkpoints_main",
    "evaluate",
    "model_card",
    "model_card_main",
    "plot_bleu_curve",
    "plot_bleu_curve_main",
    "push_to_hub",
    "push_to_hub_main",
    "train",
    "train_tokenizer",
    "train_tokenizer_main",
]

logger = logging.getLogger(__name__)


def _summary(module) -> str:
    """The first paragraph of a module's docstring: the description `--help` shows."""
    return module.__doc__.split("\n\n")[0]


def _deprecated_alias(new: str, old: str, help_text: str) -> dict:
    """Field metadata for a flag `new` that an older spelling `old` still sets (argparse alias): the flag names of
    transformers' Trainer (--output_dir, --hub_model_id) in every command. `_warn_deprecated` warns on `old`."""
    return {"help": f"{help_text} ({old} is a deprecated alias)", "aliases": [old]}


def _warn_deprecated(argv: Sequence[str] | None, renamed: dict[str, str]) -> None:
    """Warn once per deprecated flag spelling (old -> new) found in `argv` (default `sys.argv[1:]`)."""
    for argument in sys.argv[1:] if argv is None else argv:
        old = argument.split("=", 1)[0]
        if old in renamed:
            logger.warning("%s is deprecated: use %s", old, renamed[old])


# vaswani-average-checkpoints --------------------------------------------------------------------------------------


@dataclass
class AverageCheckpointsArguments:
    """Arguments of `vaswani-average-checkpoints` / `training/average_checkpoints.py`: --inputs or --checkpoint_dir."""

    output_dir: str = field(
        metadata=_deprecated_alias("--output_dir", "--output", "directory to write the averaged model into")
    )
    inputs: list[str] | None = field(
        default=None, metadata={"help": "checkpoint directories or .safetensors files to average"}
    )
    checkpoint_dir: str | None = field(
        default=None, metadata={"help": "a training output_dir; averages its newest --last_k checkpoints"}
    )
    last_k: int = field(default=5, metadata={"help": "§6.1: 5 for base models, 20 for big (default %(default)s)"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "replace a non-empty --output_dir"})
    config: str | None = field(
        default=None, metadata={"help": "directory with the model's config.json (default: --checkpoint_dir)"}
    )

    def __post_init__(self):
        if (self.inputs is None) == (self.checkpoint_dir is None):
            raise ValueError("give one of --inputs and --checkpoint_dir")


def average_checkpoints_main(argv: Sequence[str] | None = None) -> None:
    """§6.1: average the given checkpoints, or the newest `--last_k` of a run, into `--output_dir`.

    Raises:
        ValueError: both or neither of --inputs and --checkpoint_dir; --checkpoint_dir holds fewer complete
            checkpoints than --last_k, or a checkpoint is truncated, corrupt or of another model (names the file).
        FileExistsError: --output_dir is not empty and --overwrite_output_dir is not given.
    """
    args = parse_arguments(AverageCheckpointsArguments, argv, description=_summary(averaging))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    _warn_deprecated(argv, {"--output": "--output_dir"})
    check_output_dir(args.output_dir, args.overwrite_output_dir)
    paths, config_dir = args.inputs, args.config
    if args.checkpoint_dir:
        paths = list_checkpoints(args.checkpoint_dir)[-args.last_k :]
        if len(paths) < args.last_k:
            raise ValueError(f"{args.checkpoint_dir} has {len(paths)} complete checkpoints, --last_k {args.last_k}")
        if config_dir is None and Path(args.checkpoint_dir, "config.json").is_file():
            config_dir = args.checkpoint_dir
    logger.info("averaging %d checkpoints: %s", len(paths), ", ".join(str(p) for p in paths))
    averaged = averaging.average_checkpoints(paths)
    prepare_output_dir(args.output_dir, args.overwrite_output_dir)
    logger.info("wrote %s", averaging.save_averaged(averaged, args.output_dir, config_dir))


# vaswani-push-to-hub ------------------------------------------------------------------------------------------------


@dataclass
class PushToHubArguments:
    """Arguments of `vaswani-push-to-hub` / `training/push_to_hub.py` (the output_dir also by position)."""

    hub_model_id: str = field(metadata=_deprecated_alias("--hub_model_id", "--repo_id", "Hub repository, ORG/NAME"))
    output_dir: str | None = field(
        default=None,
        metadata=_deprecated_alias(
            "--output_dir", "--directory", "A save_pretrained model directory (the output_dir of vaswani-train)"
        ),
    )
    private: bool = field(default=False, metadata={"help": "Create the repository as private."})
    dry_run: bool = field(default=False, metadata={"help": "Print the files that would be uploaded and stop."})
    commit_message: str | None = field(
        default=None, metadata={"help": "Commit message (default: 'Upload <dir name>')."}
    )


def push_to_hub_main(argv: Sequence[str] | None = None) -> int:
    """Upload `OUTPUT_DIR`'s usable files (`hub.files_to_upload`) to `--hub_model_id`, or list them with `--dry_run`.

    Raises:
        OSError: no model in the directory, no token, or an upload that failed (see `hub.push_to_hub`).
    """
    args = parse_arguments(PushToHubArguments, argv, description=_summary(hub), positional=("output_dir",))
    _warn_deprecated(argv, {"--repo_id": "--hub_model_id", "--directory": "--output_dir"})
    names = hub.files_to_upload(args.output_dir)
    if "README.md" not in names:
        print(
            f"warning: {args.output_dir} has no README.md (a finished training run writes its model card)",
            file=sys.stderr,
        )
    if args.dry_run:
        print("\n".join(names))
        return 0
    print(
        hub.push_to_hub(args.output_dir, args.hub_model_id, private=args.private, commit_message=args.commit_message)
    )
    return 0


# vaswani-plot-bleu-curve ------------------------------------------------------------------------------------------


@dataclass
class PlotBleuCurveArguments:
    """Arguments of `vaswani-plot-bleu-curve` / `training/plot_bleu_curve.py` (the run directories by position)."""

    output: str = field(metadata={"help": "PNG file to write"})
    run_dirs: list[str] = field(
        default_factory=list, metadata={"help": "output_dir of training runs (each holds log.jsonl)"}
    )
    title: str = field(default=bleu_curve.DEFAULT_TITLE, metadata={"help": "The plot's title."})


def plot_bleu_curve_main(argv: Sequence[str] | None = None) -> None:
    """One validation-BLEU curve per run directory, saved as a PNG (`bleu_curve.plot_bleu_curves`); prints its path.

    Raises:
        FileNotFoundError, ValueError: a run without log.jsonl, or a line of it that is not JSON (`bleu_curve`).
    """
    args = parse_arguments(PlotBleuCurveArguments, argv, description=_summary(bleu_curve), positional=("run_dirs",))
    print(bleu_curve.plot_bleu_curves(args.run_dirs, args.output, args.title))


# vaswani-model-card -----------------------------------------------------------------------------------------------


@dataclass
class ModelCardArguments:
    """Arguments of `vaswani-model-card` / `model_cards/render.py` (the run directory by position)."""

    output_dir: str | None = field(default=None, metadata={"help": "The output_dir of a finished training run."})
    hub_model_id: str | None = field(
        default=None,
        metadata=_deprecated_alias(
            "--hub_model_id", "--repo_id", "Hub repository id, used as model name and in snippets"
        ),
    )
    license: str = field(default=cards.DEFAULT_LICENSE, metadata={"help": "License id (default %(default)s)."})


def model_card_main(argv: Sequence[str] | None = None) -> int:
    """Render and write `<output_dir>/README.md` (`model_card.render_model_card`), print its path.

    Raises:
        FileNotFoundError, ValueError: from `render_model_card`, naming the file at fault.
    """
    args = parse_arguments(ModelCardArguments, argv, description=_summary(cards), positional=("output_dir",))
    _warn_deprecated(argv, {"--repo_id": "--hub_model_id"})
    cards.render_model_card(args.output_dir, args.hub_model_id, license=args.license)
    print(Path(args.output_dir) / "README.md")
    return 0


# vaswani-train-tokenizer ------------------------------------------------------------------------------------------


@dataclass
class TokenizerTrainingArguments:
    """Arguments of `vaswani-train-tokenizer` / `training/train_tokenizer.py`."""

    output_dir: str = field(metadata={"help": "Where save_pretrained writes the tokenizer (new or empty)."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace a non-empty output_dir."})
    source_lang: str = field(default="en", metadata={"help": "Source language code, e.g. en."})
    target_lang: str = field(default="de", metadata={"help": "Target language code, e.g. de."})
    vocab_size: int = field(
        default=8000, metadata={"help": "Shared vocabulary size incl. 4 special tokens and 256 bytes (§5.1)."}
    )
    min_frequency: int = field(default=2, metadata={"help": "Merge only pairs seen at least this many times."})
    model_max_length: int = field(
        default=DEFAULT_MODEL_MAX_LENGTH, metadata={"help": "Longest sequence in tokens kept by truncation."}
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "Folder of line-aligned {split}.{lang}[.gz] files (e.g. Multi30k)."}
    )
    train_file: str | None = field(default=None, metadata={"help": 'JSON lines {"translation": {...}}.'})
    dataset_name: str | None = field(default=None, metadata={"help": "Dataset name for datasets.load_dataset."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Its configuration, e.g. de-en."})


def train_tokenizer_main(argv: Sequence[str] | None = None) -> None:
    """§5.1: read the train split, learn the shared vocabulary (`tokenizer_training.train_tokenizer`), save it to
    `--output_dir`.

    Raises:
        ValueError: as `load_parallel_dataset` and `train_tokenizer`, or if the data has no train split.
        FileExistsError: a non-empty --output_dir without --overwrite_output_dir (nothing is written).
    """
    args = parse_arguments(TokenizerTrainingArguments, argv, description=_summary(tokenizer_training))
    logging.basicConfig(format=LOG_FORMAT, level=logging.INFO)
    check_output_dir(args.output_dir, args.overwrite_output_dir)
    raw = load_parallel_dataset(
        args.source_lang,
        args.target_lang,
        data_dir=args.data_dir,
        train_file=args.train_file,
        dataset_name=args.dataset_name,
        dataset_config_name=args.dataset_config_name,
    )
    if "train" not in raw:
        raise ValueError(f"no train split in the data (splits: {list(raw)})")
    languages = (args.source_lang, args.target_lang)
    num_pairs = len(raw["train"])
    logger.info("read %d lines: %d train pairs in %s and %s", 2 * num_pairs, num_pairs, *languages)
    tokenizer = tokenizer_training.train_tokenizer(
        raw["train"],
        languages,
        args.vocab_size,
        min_frequency=args.min_frequency,
        model_max_length=args.model_max_length,
    )
    tokenizer.save_pretrained(prepare_output_dir(args.output_dir, args.overwrite_output_dir))
    logger.info("vocabulary of %d tokens (asked for %d) saved to %s", len(tokenizer), args.vocab_size, args.output_dir)


# The console scripts ------------------------------------------------------------------------------------------------


def _console_script(main: Callable[[Sequence[str]], int | None]) -> Callable[[], int]:
    """A console-script function: `main` run through `command_line.run` (one-line user errors, exit status 2)."""

    def command(argv: Sequence[str] | None = None) -> int:
        return run(main, argv)

    command.__doc__ = f"Run `{main.__name__}` with the user-error rule of `command_line.run`."
    return command


def _lazy_main(module: str) -> Callable[[Sequence[str]], int | None]:
    """`vaswani_transformer.training.<module>.main`, imported when called (train.py's imports are heavy)."""

    def main(argv: Sequence[str]) -> int | None:
        return importlib.import_module(f"vaswani_transformer.training.{module}").main(argv)

    main.__name__ = f"{module}.main"
    return main


train = _console_script(_lazy_main("train"))
evaluate = _console_script(_lazy_main("evaluate_cli"))
average_checkpoints = _console_script(average_checkpoints_main)
push_to_hub = _console_script(push_to_hub_main)
plot_bleu_curve = _console_script(plot_bleu_curve_main)
model_card = _console_script(model_card_main)
train_tokenizer = _console_script(train_tokenizer_main)
