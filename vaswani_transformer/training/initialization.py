"""Where a run's model starts: a new model of a Table 3 preset (trained from scratch, §5), or a saved model to
fine-tune (`--model_name_or_path`).

A saved model is one of ours (`save_pretrained`: weights, tokenizer, generation config) or a MarianMT / OPUS-MT model,
converted with `vaswani_transformer.convert.from_marian` (the same function, to float rounding) and trained with its
own SentencePiece tokenizer, which the run saves beside it. A fine-tune keeps the architecture it loads: flags may
change the regularisation (`FINE_TUNING_OVERRIDES`: P_drop, attention and activation dropout, eps_ls), but an
architecture flag that contradicts the loaded model (pre-norm into post-norm, another d_model, ...) or a tokenizer
whose vocabulary the embeddings were not trained on is refused with one line.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from transformers import MarianConfig, MarianMTModel, PretrainedConfig

from vaswani_transformer import VaswaniTransformerConfig, VaswaniTransformerForConditionalGeneration
from vaswani_transformer.convert import from_marian, load_tokenizer
from vaswani_transformer.training.arguments import ARCHITECTURE_FIELDS, ModelArguments, architecture_overrides
from vaswani_transformer.training.recipe import eq3_multiplier, inverse_sqrt_lr


__all__ = [
    "FINE_TUNING_OVERRIDES",
    "build_model_config",
    "check_vocabulary",
    "continued_learning_rate",
    "initial_learning_rate",
    "load_pretrained",
]

logger = logging.getLogger(__name__)

# Config fields a fine-tune may change: regularisation of training, not the function the weights compute.
FINE_TUNING_OVERRIDES = ("dropout", "attention_dropout", "activation_dropout", "label_smoothing")


def build_model_config(args: ModelArguments, tokenizer) -> VaswaniTransformerConfig:
    """Table 3 preset (base | big) or the config defaults (custom), overridden by every architecture flag set.

    Raises:
        ValueError: for an unknown `--model`, or an invalid architecture (from the config, naming the values).
    """
    presets = {"base": VaswaniTransformerConfig.base, "big": VaswaniTransformerConfig.big}
    if args.model not in (*presets, "custom"):
        raise ValueError(f"--model must be base, big or custom, got {args.model!r}")
    return presets.get(args.model, VaswaniTransformerConfig)(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.bos_token_id,
        **architecture_overrides(args),
    )


def load_pretrained(args: ModelArguments) -> tuple[VaswaniTransformerForConditionalGeneration, object]:
    """The model of `--model_name_or_path` in train mode, and its tokenizer (`--tokenizer_name` if given).

    Ours loads with `from_pretrained`; a MarianMT model (`model_type` "marian") with `MarianMTModel.from_pretrained`
    and is converted (`from_marian`: its generation config comes along; its config has label_smoothing 0, Marian's
    plain cross-entropy, unless `--label_smoothing` is given). `FINE_TUNING_OVERRIDES` that are set apply before the
    layers are built, so that the dropout modules use them.

    Raises:
        OSError: `--model_name_or_path` holds no model (from transformers, naming it).
        ValueError: a model type other than ours or Marian's; an architecture flag that contradicts the loaded model
            (names the flag and both values); a vocabulary mismatch (`check_vocabulary`).
    """
    path = args.model_name_or_path
    model_type = PretrainedConfig.get_config_dict(path)[0].get("model_type")
    overrides = {name: getattr(args, name) for name in FINE_TUNING_OVERRIDES if getattr(args, name) is not None}
    # The config is loaded and changed first: from_pretrained's keyword arguments would reach the generation config.
    if model_type == VaswaniTransformerConfig.model_type:
        config = VaswaniTransformerConfig.from_pretrained(path, **overrides)
        model = VaswaniTransformerForConditionalGeneration.from_pretrained(path, config=config)
    elif model_type == "marian":
        marian_overrides = {name: value for name, value in overrides.items() if name != "label_smoothing"}
        marian = MarianMTModel.from_pretrained(path, config=MarianConfig.from_pretrained(path, **marian_overrides))
        model = from_marian(marian)
        model.config.label_smoothing = overrides.get("label_smoothing", model.config.label_smoothing)
    else:
        raise ValueError(
            f"--model_name_or_path {path}: model_type {model_type!r}; fine-tuning takes a model of this package "
            f"({VaswaniTransformerConfig.model_type}) or a MarianMT/OPUS-MT model (marian)"
        )
    loaded = model.config
    for name in ARCHITECTURE_FIELDS:
        value = getattr(args, name)
        if name not in FINE_TUNING_OVERRIDES and value is not None and value != getattr(loaded, name):
            raise ValueError(
                f"--{name} {value} contradicts the model being fine-tuned ({path}: {name}={getattr(loaded, name)!r}); "
                "a fine-tune keeps the architecture it loads: drop the flag (or train a new model without "
                "--model_name_or_path)"
            )
    tokenizer = load_tokenizer(args.tokenizer_name or path)
    check_vocabulary(loaded, tokenizer, args.tokenizer_name or path)
    logger.info(
        "fine-tuning %s (%s, %.2fM parameters); --model %s and the vocabulary flags are not used",
        path, model_type, model.num_parameters() / 1e6, args.model,
    )  # fmt: skip
    return model.train(), tokenizer


def check_vocabulary(config: VaswaniTransformerConfig, tokenizer, origin: str) -> None:
    """The tokenizer must index the embeddings the model was trained with: no more tokens than `vocab_size`, and the
    same padding and end-of-sentence ids.

    Raises:
        ValueError: naming the tokenizer's origin and the mismatched sizes or ids.
    """
    if len(tokenizer) > config.vocab_size:
        raise ValueError(
            f"vocabulary mismatch: the tokenizer of {origin} has {len(tokenizer)} tokens, the model's embeddings "
            f"{config.vocab_size}; fine-tune with the model's own tokenizer"
        )
    for name in ("pad_token_id", "eos_token_id"):
        if getattr(tokenizer, name) != getattr(config, name):
            raise ValueError(
                f"vocabulary mismatch: the tokenizer of {origin} has {name}={getattr(tokenizer, name)}, the model "
                f"{getattr(config, name)}; fine-tune with the model's own tokenizer"
            )


def continued_learning_rate(path: str, d_model: int) -> float | None:
    """The rate Eq. 3 had reached at the last step of the run that saved `path` (read from its `training_args.json`
    and `train_results.json`): the default peak of a fine-tune, so that it never steps harder than its start was
    trained at the end; None if `path` has no such records (a MarianMT model, a Hub model).

    Returns:
        multiplier * d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5) with that run's step, warmup_steps and
        multiplier (its --learning_rate or --lr_multiplier).
    """
    folder = Path(path)
    arguments_file, results_file = folder / "training_args.json", folder / "train_results.json"
    if not (arguments_file.is_file() and results_file.is_file()):
        return None
    arguments = json.loads(arguments_file.read_text())
    step = json.loads(results_file.read_text())["step"]
    warmup = arguments["warmup_steps"]
    multiplier = eq3_multiplier(d_model, warmup, arguments.get("learning_rate"), arguments.get("lr_multiplier", 1.0))
    return inverse_sqrt_lr(step, d_model, warmup, multiplier)


def initial_learning_rate(model_name_or_path: str | None, config: VaswaniTransformerConfig) -> float | None:
    """The peak learning rate of a run without `--learning_rate`: None for a new model (Eq. 3 as printed, times
    `--lr_multiplier`); for a fine-tune, the rate its start was trained at last (`continued_learning_rate`).

    Raises:
        ValueError: a fine-tune of a model without a run's records (a MarianMT model): `--learning_rate` is needed.
    """
    if model_name_or_path is None:
        return None
    rate = continued_learning_rate(model_name_or_path, config.d_model)
    if rate is None:
        raise ValueError(
            f"--learning_rate is needed to fine-tune {model_name_or_path}: it has no training_args.json and "
            "train_results.json of a run of ours to continue Eq. 3 from; give the peak rate"
        )
    logger.info("peak learning rate %.3g: Eq. 3 at the last step of the run that saved %s", rate, model_name_or_path)
    return rate
