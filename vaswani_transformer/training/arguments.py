"""Command-line arguments of the training script: model, data and loop, as dataclasses for `HfArgumentParser`.

A `--config file.yaml` gives defaults and flags on the command line override them (`parse_arguments`). Flag names
follow transformers' `TrainingArguments` and `run_translation_no_trainer.py` where they overlap. The model-size flags
are not written here: `ModelArguments` is derived from `VaswaniTransformerConfig`'s own fields, and their help text
from its docstring, so a field added to the config is a flag at once.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import HfArgumentParser

from vaswani_transformer.configuration_vaswani_transformer import VaswaniTransformerConfig


__all__ = [
    "ARCHITECTURE_FIELDS",
    "DataArguments",
    "ModelArguments",
    "TrainingArguments",
    "architecture_overrides",
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
    model: str = field(default="base", metadata={"help": "Preset: base | big (Table 3) | custom (config defaults)."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Saved tokenizer dir; else trained here."})
    vocab_size: int = field(default=8000, metadata={"help": "BPE vocabulary to train (§5.1; 37000 WMT EN-DE)."})
    min_frequency: int = field(default=2, metadata={"help": "Minimum pair count for a BPE merge."})
    torch_compile: bool = field(
        default=False, metadata={"help": "torch.compile the model in place (nn.Module.compile)."}
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

    dataset_name: str | None = field(default=None, metadata={"help": "datasets.load_dataset name, e.g. wmt/wmt14."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Its configuration, e.g. de-en."})
    train_file: str | None = field(default=None, metadata={"help": 'JSON lines {"translation": {...}}.'})
    validation_file: str | None = field(default=None, metadata={"help": "JSON lines, validation split."})
    test_file: str | None = field(default=None, metadata={"help": "JSON lines, test split."})
    data_dir: str | None = field(default=None, metadata={"help": "Folder of {split}.{lang}[.gz] (default Multi30k)."})
    validation_split: str = field(default="val", metadata={"help": "data_dir file stem of the validation split."})
    test_split: str = field(default="test_2016_flickr", metadata={"help": "data_dir file stem of the test split."})
    source_lang: str = field(default="en", metadata={"help": "Source language code."})
    target_lang: str = field(default="de", metadata={"help": "Target language code."})
    max_source_length: int = field(default=256, metadata={"help": "Drop pairs with longer sources (tokens)."})
    max_target_length: int = field(default=256, metadata={"help": "Drop pairs with longer targets (tokens)."})
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
    seed: int = field(default=42, metadata={"help": "Seed of weights, dropout and batch order."})
    max_tokens: int = field(default=4096, metadata={"help": "Padded tokens per side per batch per device (§5.1)."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many optimizer steps (-1: epochs)."})
    num_train_epochs: float = field(default=10.0, metadata={"help": "Stop after this many epochs."})
    max_train_minutes: float | None = field(default=None, metadata={"help": "Stop after this much training time."})
    warmup_steps: int = field(default=4000, metadata={"help": "warmup_steps of Eq. 3 (§5.3: 4000)."})
    lr_multiplier: float = field(default=1.0, metadata={"help": "Constant factor on Eq. 3 (1.0 = paper)."})
    max_grad_norm: float = field(default=0.0, metadata={"help": "Clip gradient norm (0: off, the paper)."})
    mixed_precision: str = field(default="no", metadata={"help": "no | bf16 | fp16 (accelerate autocast)."})
    use_cpu: bool = field(default=False, metadata={"help": "CPU only; needed for multi-process CPU (gloo) runs."})
    logging_steps: int = field(default=50, metadata={"help": "Log every N optimizer steps."})
    eval_steps: int = field(default=0, metadata={"help": "Validate every N steps (0: only at the end)."})
    num_beams: int = field(default=4, metadata={"help": "Beam size (§6.1: 4)."})
    length_penalty: float = field(default=0.6, metadata={"help": "Length penalty alpha (§6.1: 0.6)."})
    eval_batch_size: int = field(default=64, metadata={"help": "Sentences per generate call."})
    save_steps: int = field(default=0, metadata={"help": "Checkpoint every N steps (0: off)."})
    save_minutes: float = field(default=0.0, metadata={"help": "Checkpoint every N minutes (§6.1: 10; 0: off)."})
    save_total_limit: int = field(default=5, metadata={"help": "Keep the newest K checkpoints (0: all)."})
    average_last_k: int = field(default=0, metadata={"help": "Average the last K checkpoints at the end (§6.1)."})
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "latest | checkpoint dir."})
    do_test: bool = field(default=True, metadata={"help": "Score the test split at the end."})
    report_to: str = field(default="none", metadata={"help": "accelerate trackers: none | tensorboard | all."})
    push_to_hub: bool = field(default=False, metadata={"help": "Upload output_dir (training/push_to_hub.py)."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repository id for --push_to_hub."})

    @property
    def saves_checkpoints(self) -> bool:
        """True when checkpoints are written (every `save_steps` steps or `save_minutes` minutes)."""
        return self.save_steps > 0 or self.save_minutes > 0


def parse_arguments(argv: Sequence[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """`--config file.yaml` gives defaults, the other flags override them (transformers.HfArgumentParser).

    Raises:
        ValueError: on keys in the YAML file that are not arguments (names them), or on inconsistent flags
            (`check_training_arguments`).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    if "--config" in argv:
        position = argv.index("--config")
        config_path = Path(argv[position + 1])
        del argv[position : position + 2]
        values = yaml.safe_load(config_path.read_text()) or {}
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{config_path}: unknown keys {unknown}")
        parser.set_defaults(**values)
    model_args, data_args, train_args = parser.parse_args_into_dataclasses(args=argv)
    check_training_arguments(train_args)
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
    if args.mixed_precision not in ("no", "bf16", "fp16"):
        raise ValueError(f"--mixed_precision must be no, bf16 or fp16, got {args.mixed_precision!r}")


def checkpoints_to_keep(args: TrainingArguments) -> int:
    """--save_total_limit (0: keep all), raised to --average_last_k so the checkpoints to average survive."""
    return 0 if args.save_total_limit <= 0 else max(args.save_total_limit, args.average_last_k)
