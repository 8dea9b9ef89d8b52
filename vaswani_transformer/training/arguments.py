"""Command-line arguments of the training script: model, data and loop, as dataclasses for `HfArgumentParser`.

A `--config file.yaml` gives defaults and flags on the command line override them (`parse_arguments`). Flag names
follow transformers' `TrainingArguments` and `run_translation_no_trainer.py` where they overlap. The model-size flags
are not written here: `ModelArguments` is derived from `VaswaniTransformerConfig`'s own fields, and their help text
from its docstring, so a field added to the config is a flag at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import HfArgumentParser

from vaswani_transformer.batching_vaswani_transformer import DEFAULT_MAX_TOKENS
from vaswani_transformer.configuration_vaswani_transformer import VaswaniTransformerConfig
from vaswani_transformer.training.presets import resolve_config


# Attention kernels a model trains with (transformers' `attn_implementation` names); both are Eq. 1.
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")


__all__ = [
    "ARCHITECTURE_FIELDS",
    "DataArguments",
    "ModelArguments",
    "TrainingArguments",
    "architecture_overrides",
    "check_data_arguments",
    "check_training_arguments",
    "checkpoints_to_keep",
    "parse_arguments",
]

# Config fields that are not the architecture: the vocabulary size comes from the tokenizer, the special-token ids
# from its vocabulary, and the rest are transformers' generic switches.
_NOT_ARCHITECTURE = {
    "vocab_size",
    "use_cache",
    "is_encoder_decoder",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "decoder_start_token_id",
}
ARCHITECTURE_FIELDS = tuple(name for name in VaswaniTransformerConfig.__annotations__ if name not in _NOT_ARCHITECTURE)


def _config_field_help() -> dict[str, str]:
    """Help text per config field, read from the "- `field`, `field` (symbol): text" list of the config docstring."""
    helps, names, text = {}, [], []
    for line in (VaswaniTransformerConfig.__doc__ or "").splitlines() + ["- "]:
        stripped = line.strip()
        if stripped.startswith("- ") or not stripped:
            helps.update(dict.fromkeys(names, " ".join(text)))
            names, text = [], []
        if stripped.startswith("- `"):
            head, _, rest = stripped[2:].partition(": ")
            symbol = head[head.index("(") + 1 : head.rindex(")")] if "(" in head else ""
            names, text = re.findall(r"`(\w+)`", head), [f"{symbol}: {rest}" if symbol else rest]
        elif names:
            text.append(stripped)
    return helps


def _flag_type(annotation) -> type:
    """The type a flag parses into: `float | int` -> float, `X | None` -> X (the flag itself defaults to None)."""
    options = [option for option in typing.get_args(annotation) if option is not type(None)] or [annotation]
    return float if float in options else options[0]


@dataclass
class _ModelChoice:
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Fine-tune a saved model instead of training a new one: a save_pretrained directory (or Hub id) "
            "of this package's model (weights, tokenizer, generation config), or of a MarianMT/OPUS-MT model "
            "(converted with vaswani_transformer.convert.from_marian, trained with its own SentencePiece tokenizer). "
            "The architecture is the loaded one: --model and architecture flags that contradict it are refused; "
            "--dropout, --attention_dropout, --activation_dropout and --label_smoothing may change."
        },
    )
    model: str = field(default="base", metadata={"help": "Preset: base | big (Table 3) | custom (config defaults)."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Saved tokenizer dir; else trained here."})
    vocab_size: int = field(default=8000, metadata={"help": "BPE vocabulary to train (§5.1; 37000 WMT EN-DE)."})
    min_frequency: int = field(default=2, metadata={"help": "Minimum pair count for a BPE merge."})
    torch_compile: bool = field(
        default=False,
        metadata={
            "help": "Compile the training step (forward, §5.4 loss, backward) with torch.compile and dynamic shapes "
            "(training.compilation); the model itself stays eager for validation, generate() and saving."
        },
    )
    attn_implementation: str = field(
        default="sdpa",
        metadata={
            "help": "Attention kernel while training (transformers' attn_implementation): 'sdpa' (PyTorch's fused "
            "scaled_dot_product_attention; far less memory on long sequences) or 'eager' (Eq. 1 as matmul, softmax, "
            "matmul; faster for short sentences on CPU, where SDPA's backward is slow). Same math; a saved model "
            "loads with 'sdpa' either way.",
            "choices": list(ATTN_IMPLEMENTATIONS),
        },
    )


# The config's own annotations are strings ("float | int", from `from __future__ import annotations`) of builtin
# types; `typing.get_type_hints` would also evaluate the base class's, which name torch types it never imports.
_CONFIG_TYPES = {name: eval(hint, {}) for name, hint in VaswaniTransformerConfig.__annotations__.items()}  # noqa: S307
_CONFIG_HELP = _config_field_help()
ModelArguments = dataclasses.make_dataclass(
    "ModelArguments",
    [
        (name, _flag_type(_CONFIG_TYPES[name]) | None, field(default=None, metadata={"help": _CONFIG_HELP.get(name)}))
        for name in ARCHITECTURE_FIELDS
    ],
    bases=(_ModelChoice,),
    namespace={
        "__doc__": "The model: a Table 3 preset (`--model base|big`) or the config defaults (`custom`), overridden "
        "by every architecture flag that is set (one per `VaswaniTransformerConfig` field in `ARCHITECTURE_FIELDS`; "
        "unset flags are None), and the shared vocabulary (trained here unless `--tokenizer_name`).",
        "__module__": __name__,
    },
)


def architecture_overrides(args: ModelArguments) -> dict[str, object]:
    """The architecture flags that were set, as `VaswaniTransformerConfig` keyword arguments."""
    return {name: getattr(args, name) for name in ARCHITECTURE_FIELDS if getattr(args, name) is not None}


@dataclass
class DataArguments:
    """Where the sentence pairs come from (one kind of source, see `training.data`) and length limits."""

    dataset_name: str | None = field(
        default=None, metadata={"help": "datasets.load_dataset name or local dataset folder, e.g. wmt/wmt14."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Its configuration, e.g. de-en."})
    dataset_revision: str | None = field(
        default=None, metadata={"help": "Git revision (branch, tag or commit) of the --dataset_name Hub dataset."}
    )
    train_file: str | None = field(
        default=None, metadata={"help": "Train file: JSON lines, JSON, Parquet or CSV (by its extension)."}
    )
    validation_file: str | None = field(default=None, metadata={"help": "Validation file, as --train_file."})
    test_file: str | None = field(default=None, metadata={"help": "Test file, as --train_file."})
    data_dir: str | None = field(default=None, metadata={"help": "Folder of {split}.{lang}[.gz] (default Multi30k)."})
    source_column: str | None = field(
        default=None,
        metadata={
            "help": "Column of the source sentences in flat datasets (e.g. bentrevett/multi30k's 'en'). Default: the "
            "'translation' dict column, else a column named --source_lang."
        },
    )
    target_column: str | None = field(default=None, metadata={"help": "Column of the targets, as --source_column."})
    train_split: str = field(default="train", metadata={"help": "Split (data_dir: file stem) to train on."})
    validation_split: str | None = field(
        default=None,
        metadata={"help": "Split (data_dir: file stem) to validate on; default 'validation' ('val' in a data_dir)."},
    )
    test_split: str | None = field(
        default=None,
        metadata={
            "help": "Split (data_dir: file stem) to test on; default 'test' ('test_2016_flickr' in a data_dir)."
        },
    )
    source_lang: str = field(default="en", metadata={"help": "Source language code."})
    target_lang: str = field(default="de", metadata={"help": "Target language code."})
    max_source_length: int = field(
        default=256, metadata={"help": "Source tokens (</s> included) a pair may have: see --filter_long_pairs."}
    )
    max_target_length: int = field(
        default=256, metadata={"help": "Target tokens (</s> included) a pair may have: see --filter_long_pairs."}
    )
    filter_long_pairs: bool = field(
        default=True,
        metadata={
            "help": "Drop pairs whose source or target is longer than --max_source_length / --max_target_length "
            "(fairseq's and Marian's behaviour, the presets'; the counts are logged)."
        },
    )
    truncate_long_pairs: bool = field(
        default=False,
        metadata={
            "help": "Instead of dropping them, cut longer sources and targets to those lengths, keeping </s> "
            "(transformers' run_translation.py behaviour); takes precedence over --filter_long_pairs."
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N train pairs."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Validate on the first N pairs."})
    max_test_samples: int | None = field(default=None, metadata={"help": "Test on the first N pairs."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for datasets.map."})


@dataclass
class TrainingArguments:
    """The loop: batch size in tokens, schedule (Eq. 3), precision, logging, evaluation, checkpoints.

    Not transformers' `TrainingArguments`; flag names match it (and run_translation_no_trainer.py) where they overlap.
    """

    output_dir: str | None = field(default=None, metadata={"help": "Where everything is written (required)."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Delete a non-empty output_dir's contents first (else it is refused)."}
    )
    seed: int = field(default=42, metadata={"help": "Seed of weights, dropout and batch order."})
    max_tokens: int = field(default=4096, metadata={"help": "Padded tokens per side per batch per device (§5.1)."})
    pad_to_multiple_of: int = field(
        default=8,
        metadata={
            "help": "Pad every batch's source and target length to a multiple of this many tokens (1: no rounding). "
            "Fewer distinct tensor shapes: bounded memory for the per-shape kernel caches of bf16 on CPU (oneDNN), "
            "fewer torch.compile recompilations, tensor-core-friendly sizes on GPUs."
        },
    )
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    target_tokens_per_step: int | None = field(
        default=None,
        metadata={
            "help": "Derive --gradient_accumulation_steps from the process count: ceil(target / (max_tokens x "
            "processes)), so that a step holds ~target tokens per side on any number of devices (§5.1: ~25000); "
            "refused if one micro-batch on every process already holds over 1.25x the target."
        },
    )
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many optimizer steps (-1: epochs)."})
    num_train_epochs: float = field(default=10.0, metadata={"help": "Stop after this many epochs."})
    max_train_minutes: float | None = field(default=None, metadata={"help": "Stop after this much training time."})
    warmup_steps: int = field(default=4000, metadata={"help": "warmup_steps of Eq. 3 (§5.3: 4000)."})
    learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Peak learning rate: Eq. 3's shape (linear warmup, inverse square-root decay) scaled to peak at "
            "this rate at step warmup_steps. Unset: Eq. 3 as printed, d_model^-0.5 * warmup_steps^-0.5 at the peak; "
            "a fine-tune of a run of ours: the rate Eq. 3 had reached at that run's last step."
        },
    )
    lr_multiplier: float = field(
        default=1.0,
        metadata={"help": "Constant factor on Eq. 3 (1.0 = paper); --learning_rate sets the peak instead."},
    )
    max_grad_norm: float = field(default=0.0, metadata={"help": "Clip gradient norm (0: off, the paper)."})
    mixed_precision: str = field(default="no", metadata={"help": "no | bf16 | fp16 (accelerate autocast)."})
    use_cpu: bool = field(default=False, metadata={"help": "CPU only; needed for multi-process CPU (gloo) runs."})
    keep_freed_memory: bool = field(
        default=True,
        metadata={
            "help": "On CPU with glibc: keep freed memory in malloc's heap for reuse (mallopt; training.allocator) "
            "instead of page-faulting the step's large tensors in again every step."
        },
    )
    cpu_kernels: bool = field(
        default=False,
        metadata={
            "help": "CPU speed options of the training library: the fast CPU dropout kernel and the row-blocked "
            "label-smoothed loss; the saved model does not carry them"
        },
    )
    logging_steps: int = field(default=50, metadata={"help": "Log every N optimizer steps."})
    eval_steps: int = field(
        default=0, metadata={"help": "Validate every N steps and at the last one (0: only at the end)."}
    )
    early_stopping_patience: int = field(
        default=0,
        metadata={
            "help": "Stop when --metric_for_best_model has not improved for this many validations in a row "
            "(transformers' EarlyStoppingCallback, fairseq's --patience; 0: off). Needs --eval_steps."
        },
    )
    metric_for_best_model: str = field(
        default="bleu",
        metadata={"help": "Validation metric of early stopping: bleu or chrf (higher is better), loss (lower).",
                  "choices": ["bleu", "chrf", "loss"]},
    )  # fmt: skip
    num_beams: int = field(default=4, metadata={"help": "Beam size (§6.1: 4)."})
    length_penalty: float = field(default=0.6, metadata={"help": "Length penalty alpha (§6.1: 0.6)."})
    length_penalty_type: str = field(
        default="length",
        metadata={
            "help": "How alpha normalises a hypothesis: 'length' divides its log-probability by |Y|^alpha "
            "(transformers, fairseq), 'gnmt' by ((5 + |Y|) / 6)^alpha (Wu et al. 2016, which §6.1 cites).",
            "choices": ["length", "gnmt"],
        },
    )
    eval_max_tokens: int = field(
        default=DEFAULT_MAX_TOKENS,
        metadata={"help": "Padded source tokens per generate call in validation and test (longest first)."},
    )
    eval_batch_size: int | None = field(
        default=None, metadata={"help": "Sentences per generate call at most (default: only --eval_max_tokens)."}
    )
    save_steps: int = field(default=0, metadata={"help": "Checkpoint every N steps (0: off)."})
    save_minutes: float = field(default=0.0, metadata={"help": "Checkpoint every N minutes (§6.1: 10; 0: off)."})
    save_total_limit: int = field(default=5, metadata={"help": "Keep the newest K checkpoints (0: all)."})
    average_last_k: int = field(default=0, metadata={"help": "Average the last K checkpoints at the end (§6.1)."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "latest | a checkpoint-{step} dir: continue the run in output_dir."}
    )
    do_test: bool = field(default=True, metadata={"help": "Score the test split at the end."})
    report_to: str = field(default="none", metadata={"help": "accelerate trackers: none | tensorboard | all."})
    push_to_hub: bool = field(default=False, metadata={"help": "Upload output_dir (training/push_to_hub.py)."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repository id for --push_to_hub."})

    @property
    def saves_checkpoints(self) -> bool:
        """True when checkpoints are written (every `save_steps` steps or `save_minutes` minutes)."""
        return self.save_steps > 0 or self.save_minutes > 0


CONFIG_FLAG = "--config"

# What a YAML value of each flag type must be: argparse converts and checks command-line strings, but YAML values
# arrive already typed, so `_yaml_value` checks them (an int field takes no float, a str field no YAML boolean).
_YAML_TYPES = {
    bool: (bool, "true or false"),
    float: ((int, float), "a number"),
    int: (int, "a whole number"),
    str: (str, "a string"),
}
_YAML_BOOLEAN_HINT = ' (YAML reads unquoted yes/no/on/off/true/false as booleans: quote it, e.g. "no")'


def _config_path(argv: list[str]) -> tuple[Path | None, list[str]]:
    """Split `--config FILE` / `--config=FILE` off `argv`: (FILE or None, the other arguments).

    FILE is a path, or the name of a preset installed with the package (`presets.resolve_config`), returned as the
    preset's path so that later errors name the file.

    Raises:
        ValueError: if `--config` has no value or is given twice.
        FileNotFoundError: if the value is neither a file nor a preset name (the message lists the preset names).
    """
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    parser.add_argument(CONFIG_FLAG, action="append", default=[])
    try:
        paths, rest = parser.parse_known_args(argv)
    except argparse.ArgumentError:
        paths, rest = argparse.Namespace(config=[""]), argv
    if len(paths.config) > 1:
        raise ValueError(f"{CONFIG_FLAG} is given {len(paths.config)} times; give one YAML file")
    if paths.config and not paths.config[0]:
        raise ValueError(
            f"{CONFIG_FLAG} needs a preset name or the path of a YAML file, e.g. {CONFIG_FLAG} multi30k_en_de_cpu"
        )
    return (resolve_config(paths.config[0]) if paths.config else None), rest


def read_config_file(path: Path) -> dict:
    """The key: value mapping of a YAML config file (`yaml.safe_load`, as `HfArgumentParser.parse_yaml_file`).

    `path` is a file, or the name of a preset installed with the package (`presets.resolve_config`: an existing
    file wins, then a bare name such as `multi30k_en_de_cpu`).

    Raises:
        FileNotFoundError: if `path` is neither a file nor a preset name (the message lists the preset names).
        ValueError: on a YAML syntax error (names the file, line and column) or a top level that is not a mapping.
    """
    path = resolve_config(str(path))
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ValueError(f"{path}: invalid YAML{where}: {problem}") from error
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from error
    if not isinstance(values, dict | None):
        raise ValueError(f"{path}: expected a mapping of argument: value, found a YAML {type(values).__name__}")
    return values or {}


def _yaml_value(path: Path, name: str, value, hint, choices: list | None):
    """`value` of YAML key `name` as a flag of type `hint` takes it (an int becomes a float where one is wanted).

    Raises:
        ValueError: naming the file, the key, the value and the type or choices expected.
    """
    options = [option for option in typing.get_args(hint) if option is not type(None)] or [hint]
    if value is None:
        if type(None) in typing.get_args(hint):
            return None
        raise ValueError(f"{path}: {name} may not be empty (null); give a {options[0].__name__}")
    wanted = next(kind for kind in _YAML_TYPES if kind in options)
    accepted, expected = _YAML_TYPES[wanted]
    if not isinstance(value, accepted) or (isinstance(value, bool) and wanted is not bool):
        hint_text = _YAML_BOOLEAN_HINT if isinstance(value, bool) and wanted is str else ""
        raise ValueError(f"{path}: {name}: expected {expected}, got {value!r}{hint_text}")
    if choices and value not in choices:  # argparse checks the choices of command-line values only
        raise ValueError(f"{path}: {name}: expected one of {choices}, got {value!r}")
    return float(value) if wanted is float else value


def parse_arguments(argv: Sequence[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """`--config file.yaml` gives defaults, the other flags override them (transformers.HfArgumentParser).

    The YAML file goes through `HfArgumentParser.parse_dict` (which refuses keys no dataclass has), its values,
    checked against the flags' types and choices, become the parser's defaults, and
    `parse_args_into_dataclasses` reads the command line over them.

    Raises:
        ValueError: `--config` without a value or given twice; a YAML syntax error, unknown keys, a value of the
            wrong type or outside an argument's choices in the file (each names the file and key); inconsistent
            flags (`check_training_arguments`, `check_data_arguments`).
        FileNotFoundError: if the `--config` value is neither a file nor a preset name.
        SystemExit: (argparse, exit status 2) for an unknown flag or a command-line value of the wrong type.
    """
    classes = (ModelArguments, DataArguments, TrainingArguments)
    parser = HfArgumentParser(classes)
    config_path, argv = _config_path(list(sys.argv[1:] if argv is None else argv))
    if config_path is not None:
        values = read_config_file(config_path)
        fields = {f.name: f for cls in classes for f in dataclasses.fields(cls)}
        try:
            parser.parse_dict(values)
        except ValueError as error:  # "Some keys are not used by the HfArgumentParser: [...]"
            unknown = sorted(set(values) - set(fields))
            raise ValueError(f"{config_path}: unknown keys {unknown} (see --help for the arguments)") from error
        hints = {name: hint for cls in classes for name, hint in typing.get_type_hints(cls).items()}
        parser.set_defaults(
            **{
                name: _yaml_value(config_path, name, value, hints[name], fields[name].metadata.get("choices"))
                for name, value in values.items()
            }
        )
    model_args, data_args, train_args = parser.parse_args_into_dataclasses(args=argv)
    check_training_arguments(train_args)
    check_data_arguments(data_args)
    return model_args, data_args, train_args


def check_training_arguments(args: TrainingArguments) -> None:
    """Fail at the start, not after hours of training. Raises ValueError naming the flags."""
    if not args.output_dir:
        raise ValueError("--output_dir is required (on the command line or in the --config file)")
    if args.average_last_k > 1 and not args.saves_checkpoints:
        raise ValueError(
            f"--average_last_k {args.average_last_k} needs checkpoints: set --save_steps or --save_minutes"
        )
    if args.max_tokens <= 0 or args.gradient_accumulation_steps <= 0 or args.warmup_steps <= 0:
        raise ValueError("--max_tokens, --gradient_accumulation_steps and --warmup_steps must be positive")
    if args.pad_to_multiple_of <= 0:
        raise ValueError(f"--pad_to_multiple_of must be positive (1: no rounding), got {args.pad_to_multiple_of}")
    if args.eval_max_tokens <= 0 or (args.eval_batch_size is not None and args.eval_batch_size <= 0):
        raise ValueError("--eval_max_tokens and --eval_batch_size must be positive")
    if args.mixed_precision not in ("no", "bf16", "fp16"):
        raise ValueError(f"--mixed_precision must be no, bf16 or fp16, got {args.mixed_precision!r}")
    if args.learning_rate is not None and (args.learning_rate <= 0 or args.lr_multiplier != 1.0):
        raise ValueError(
            f"--learning_rate {args.learning_rate}: give a positive peak rate, and not with --lr_multiplier "
            f"{args.lr_multiplier} (both scale Eq. 3; keep one)"
        )
    if args.target_tokens_per_step is not None and args.target_tokens_per_step <= 0:
        raise ValueError(f"--target_tokens_per_step must be positive, got {args.target_tokens_per_step}")
    if args.early_stopping_patience < 0 or (args.early_stopping_patience and args.eval_steps <= 0):
        raise ValueError(
            f"--early_stopping_patience {args.early_stopping_patience} counts validations: it needs --eval_steps > 0 "
            f"(got {args.eval_steps}) and may not be negative"
        )


def check_data_arguments(args: DataArguments) -> None:
    """Raises ValueError naming the flags: long pairs neither cut nor dropped, one of two column names given."""
    if not (args.filter_long_pairs or args.truncate_long_pairs):
        raise ValueError("--filter_long_pairs false needs --truncate_long_pairs true: long pairs are cut or dropped")
    if (args.source_column is None) != (args.target_column is None):
        raise ValueError("give both --source_column and --target_column, or neither")


def checkpoints_to_keep(args: TrainingArguments) -> int:
    """--save_total_limit (0: keep all), raised to --average_last_k so the checkpoints to average survive."""
    return 0 if args.save_total_limit <= 0 else max(args.save_total_limit, args.average_last_k)
