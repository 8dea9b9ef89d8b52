"""Train the Transformer with the paper's recipe (§5) on any parallel corpus, with accelerate.

    accelerate launch training/train.py --config training/configs/multi30k_en_de_cpu.yaml
    python training/train.py --config training/configs/multi30k_en_de_cpu.yaml --max_steps 100 --output_dir runs/try
    accelerate launch --config_file training/configs/accelerate_cpu_2proc.yaml training/train.py --config ... \
        --use_cpu true   # 2 CPU processes (gloo); or: torchrun --nproc_per_node 2 training/train.py ... --use_cpu true

The YAML file gives defaults; flags on the command line win. Flow (after transformers'
`run_translation_no_trainer.py`): seed -> `Accelerator` -> read pairs (`training.data`) -> train the shared BPE
vocabulary unless `--tokenizer_name` is given (§5.1) -> tokenize with `datasets.map` under `main_process_first()`,
dropping empty and over-long pairs with logged counts -> token batches (`training.batching`, §5.1) -> model from a
preset (Table 3) -> Adam + Eq. 3 schedule (`training.recipe`, §5.3) -> loop with `accelerator.accumulate`, logging
to `output_dir/log.jsonl` and the trackers, validation loss + beam-search BLEU every `eval_steps`, atomic
checkpoints every `save_steps` / `save_minutes` (`training.checkpoints`) -> average the last K checkpoints (§6.1)
-> `save_pretrained` model, tokenizer and generation config -> sacreBLEU on the test split (`training.evaluate`).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
import yaml
from accelerate import Accelerator, skip_first_batches
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import GenerationConfig, HfArgumentParser

from vaswani_transformer import VaswaniTransformerConfig, VaswaniTransformerForConditionalGeneration
from vaswani_transformer.tokenization_vaswani_transformer_fast import VaswaniTransformerTokenizerFast
from vaswani_transformer.training.averaging import average_checkpoints, load_averaged_into
from vaswani_transformer.training.batching import TokenBatchSampler, build_collator, make_token_batches
from vaswani_transformer.training.checkpoints import (
    TrainerState,
    list_checkpoints,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from vaswani_transformer.training.data import default_data_dir, load_parallel_dataset
from vaswani_transformer.training.evaluation import evaluate_translations, load_metric, write_results
from vaswani_transformer.training.recipe import build_optimizer, build_scheduler
from vaswani_transformer.training.tokenizer_training import train_tokenizer


__all__ = ["DataArguments", "ModelArguments", "TrainingArguments", "main", "parse_arguments"]

logger = logging.getLogger("training.train")

MODEL_SIZE_FIELDS = (
    "d_model",
    "encoder_layers",
    "decoder_layers",
    "encoder_attention_heads",
    "decoder_attention_heads",
    "encoder_ffn_dim",
    "decoder_ffn_dim",
    "dropout",
    "attention_dropout",
    "activation_dropout",
    "label_smoothing",
    "max_position_embeddings",
    "layer_norm_position",
    "positional_encoding_layout",
    "scale_embedding",
    "tie_word_embeddings",
)


@dataclass
class ModelArguments:
    """The model (Table 3 presets or custom sizes) and its vocabulary. Unset sizes come from the preset."""

    model: str = field(default="base", metadata={"help": "Preset: base | big (Table 3) | custom (config defaults)."})
    d_model: int | None = field(default=None, metadata={"help": "d_model: width of the model (512 base)."})
    encoder_layers: int | None = field(default=None, metadata={"help": "N of the encoder (6)."})
    decoder_layers: int | None = field(default=None, metadata={"help": "N of the decoder (6)."})
    encoder_attention_heads: int | None = field(default=None, metadata={"help": "h of the encoder (8 base)."})
    decoder_attention_heads: int | None = field(default=None, metadata={"help": "h of the decoder (8 base)."})
    encoder_ffn_dim: int | None = field(default=None, metadata={"help": "d_ff of the encoder (2048 base)."})
    decoder_ffn_dim: int | None = field(default=None, metadata={"help": "d_ff of the decoder (2048 base)."})
    dropout: float | None = field(default=None, metadata={"help": "P_drop (§5.4; 0.1 base, 0.3 big)."})
    attention_dropout: float | None = field(default=None, metadata={"help": "Dropout on attention weights."})
    activation_dropout: float | None = field(default=None, metadata={"help": "Dropout after the FFN ReLU."})
    label_smoothing: float | None = field(default=None, metadata={"help": "eps_ls (§5.4; 0.1)."})
    max_position_embeddings: int | None = field(default=None, metadata={"help": "Precomputed positions."})
    layer_norm_position: str | None = field(default=None, metadata={"help": "post (paper) | pre."})
    positional_encoding_layout: str | None = field(default=None, metadata={"help": "interleaved | concatenated."})
    scale_embedding: bool | None = field(default=None, metadata={"help": "Multiply embeddings by sqrt(d_model)."})
    tie_word_embeddings: bool | None = field(default=None, metadata={"help": "Share embedding and softmax weights."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Saved tokenizer dir; else trained here."})
    vocab_size: int = field(default=8000, metadata={"help": "BPE vocabulary to train (§5.1; 37000 WMT EN-DE)."})
    min_frequency: int = field(default=2, metadata={"help": "Minimum pair count for a BPE merge."})
    torch_compile: bool = field(default=False, metadata={"help": "Apply torch.compile to the model."})


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


def parse_arguments(argv: Sequence[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """`--config file.yaml` gives defaults, the other flags override them (transformers.HfArgumentParser).

    Raises:
        ValueError: on keys in the YAML file that are not arguments (names them), or without an output_dir.
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
    if args.average_last_k > 1 and args.save_steps <= 0 and args.save_minutes <= 0:
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


def setup_logging(accelerator: Accelerator) -> None:
    """INFO logs from the main process, warnings only from the others; quiet datasets/transformers."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logger.setLevel(logging.INFO if accelerator.is_main_process else logging.WARNING)
    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()


def resolve_data_dir(args: DataArguments) -> None:
    """Set `args.data_dir` to the Multi30k folder (`training.data.default_data_dir()`) when no source is given, so
    that `training_args.json` records the folder the run actually read."""
    if args.data_dir is None and args.dataset_name is None and args.train_file is None:
        args.data_dir = str(default_data_dir())


def load_raw(args: DataArguments) -> datasets.DatasetDict:
    """Read train/validation/test pairs (`training.data.load_parallel_dataset`) from `args`, after
    `resolve_data_dir(args)` has named the Multi30k folder if no source was given."""
    data_dir = args.data_dir
    splits = {"train": "train", "validation": args.validation_split, "test": args.test_split} if data_dir else None
    raw = load_parallel_dataset(
        args.source_lang,
        args.target_lang,
        data_dir=data_dir,
        train_file=args.train_file,
        validation_file=args.validation_file,
        test_file=args.test_file,
        dataset_name=args.dataset_name,
        dataset_config_name=args.dataset_config_name,
        splits=splits,
    )
    if "train" not in raw:
        raise ValueError(f"no train split in the data (splits: {list(raw)})")
    for split, limit in (("train", args.max_train_samples), ("test", args.max_test_samples)):
        if limit is not None and split in raw:
            raw[split] = raw[split].select(range(min(limit, len(raw[split]))))
    return raw


def get_tokenizer(
    accelerator: Accelerator, args: ModelArguments, raw_train: datasets.Dataset, languages: tuple[str, str], out: Path
) -> VaswaniTransformerTokenizerFast:
    """`--tokenizer_name` if given; else the tokenizer already in output_dir (a resumed run); else train the shared
    BPE vocabulary on the train split (§5.1) on the main process, save it to output_dir, and load it everywhere."""
    if args.tokenizer_name:
        return VaswaniTransformerTokenizerFast.from_pretrained(args.tokenizer_name)
    if accelerator.is_main_process and not (out / "tokenizer.json").is_file():
        logger.info("training a %d-token shared BPE vocabulary on %d pairs", args.vocab_size, len(raw_train))
        train_tokenizer(raw_train, languages, args.vocab_size, min_frequency=args.min_frequency).save_pretrained(out)
    accelerator.wait_for_everyone()
    return VaswaniTransformerTokenizerFast.from_pretrained(out)


LENGTH_COLUMNS = ("source_length", "target_length")
DROP_REASONS = ("kept", "empty", "source_too_long", "target_too_long")


def drop_reason(source: str, target: str, source_length: int, target_length: int, args: DataArguments) -> str:
    """Why a pair is dropped (the first that applies), or "kept". Lengths in tokens, including `</s>`."""
    if not source.strip() or not target.strip():
        return "empty"
    if source_length > args.max_source_length:
        return "source_too_long"
    if target_length > args.max_target_length:
        return "target_too_long"
    return "kept"


def tokenize_split(
    dataset: datasets.Dataset, tokenizer, args: DataArguments, split: str
) -> tuple[datasets.Dataset, dict[str, int]]:
    """Tokenize pairs (`input_ids` and `labels` end in `</s>`) and drop empty and over-long pairs.

    Nothing is truncated: a pair whose source exceeds `max_source_length` tokens or whose target exceeds
    `max_target_length` tokens is dropped, as is a pair with an empty (whitespace-only) side.

    Returns:
        (dataset with columns input_ids, attention_mask, labels, source_length, target_length (tokens);
        counts {pairs, kept, empty, source_too_long, target_too_long}, each pair counted once, see `drop_reason`).
    """
    src, tgt = args.source_lang, args.target_lang

    def encode(batch):
        sources = [pair[src] for pair in batch["translation"]]
        targets = [pair[tgt] for pair in batch["translation"]]
        encoded = tokenizer(sources, text_target=targets)
        encoded["source_length"] = [len(ids) for ids in encoded["input_ids"]]
        encoded["target_length"] = [len(ids) for ids in encoded["labels"]]
        encoded["reason"] = [
            drop_reason(*pair, args=args)
            for pair in zip(sources, targets, encoded["source_length"], encoded["target_length"], strict=True)
        ]
        return encoded

    encoded = dataset.map(
        encode,
        batched=True,
        remove_columns=dataset.column_names,
        num_proc=args.preprocessing_num_workers,
        desc=f"tokenize {split}",
    )
    reasons = encoded["reason"]
    counts = {"pairs": len(reasons), **{key: reasons.count(key) for key in DROP_REASONS}}
    kept = encoded.select([i for i, reason in enumerate(reasons) if reason == "kept"]).remove_columns("reason")
    return kept, counts


def preprocess(
    accelerator: Accelerator, raw: datasets.DatasetDict, tokenizer, args: DataArguments, out: Path
) -> dict[str, datasets.Dataset]:
    """Tokenize and filter train and validation (under `main_process_first`); log and save the dropped counts.

    Raises:
        ValueError: if no training pair is left (names the counts and the limits).
    """
    tokenized, stats = {}, {}
    with accelerator.main_process_first():
        for split in ("train", "validation"):
            if split in raw:
                tokenized[split], stats[split] = tokenize_split(raw[split], tokenizer, args, split)
    for split, counts in stats.items():
        logger.info(
            "%s: kept %d of %d pairs; dropped %d empty, %d with source > %d tokens, %d with target > %d tokens",
            split, counts["kept"], counts["pairs"], counts["empty"], counts["source_too_long"],
            args.max_source_length, counts["target_too_long"], args.max_target_length,
        )  # fmt: skip
    if accelerator.is_main_process:
        (out / "data_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    if stats["train"]["kept"] == 0:
        raise ValueError(
            f"no training pairs left after filtering ({stats['train']}); check the data or raise "
            f"--max_source_length ({args.max_source_length}) / --max_target_length ({args.max_target_length})"
        )
    return tokenized


def build_model_config(args: ModelArguments, tokenizer) -> VaswaniTransformerConfig:
    """Table 3 preset (base | big) or the config defaults (custom), overridden by every size flag that is set."""
    overrides = {name: getattr(args, name) for name in MODEL_SIZE_FIELDS if getattr(args, name) is not None}
    special = dict(
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.bos_token_id,
    )
    presets = {"base": VaswaniTransformerConfig.base, "big": VaswaniTransformerConfig.big}
    if args.model not in (*presets, "custom"):
        raise ValueError(f"--model must be base, big or custom, got {args.model!r}")
    build = presets.get(args.model, VaswaniTransformerConfig)
    return build(vocab_size=len(tokenizer), **special, **overrides)


def build_generation_config(model_config, train_args: TrainingArguments, data_args: DataArguments):
    """§6.1 decoding: beam 4, length penalty 0.6, early stopping. `max_new_tokens` = max_source_length + 50 covers
    "input length + 50" for every input seen in training; `training/evaluate.py` sets it per batch instead.
    With `--num_beams 1` (greedy) the beam-only flags are left out, as transformers rejects them there."""
    beam = {"length_penalty": train_args.length_penalty, "early_stopping": True} if train_args.num_beams > 1 else {}
    return GenerationConfig(
        num_beams=train_args.num_beams,
        **beam,
        max_new_tokens=data_args.max_source_length + 50,
        pad_token_id=model_config.pad_token_id,
        bos_token_id=model_config.bos_token_id,
        eos_token_id=model_config.eos_token_id,
        decoder_start_token_id=model_config.decoder_start_token_id,
    )


def token_batches_for_rank(dataset: datasets.Dataset, max_tokens: int, rank: int, world: int) -> list[list[int]]:
    """Length-sorted token batches of an evaluation set, every `world`-th one for this rank (nothing dropped)."""
    lengths_src, lengths_tgt = dataset["source_length"], dataset["target_length"]
    order = sorted(range(len(dataset)), key=lambda i: (lengths_src[i], lengths_tgt[i]))
    return make_token_batches(np.asarray(lengths_src), np.asarray(lengths_tgt), max_tokens, np.asarray(order))[
        rank::world
    ]


@torch.no_grad()
def validation_loss(accelerator: Accelerator, model, dataset: datasets.Dataset, collator, max_tokens: int) -> float:
    """Label-smoothed cross-entropy per target token on `dataset` (all ranks; the unwrapped model, eval mode)."""
    model = accelerator.unwrap_model(model)
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=accelerator.device)  # (loss * tokens, tokens)
    inputs = dataset.remove_columns(list(LENGTH_COLUMNS))
    for indices in token_batches_for_rank(dataset, max_tokens, accelerator.process_index, accelerator.num_processes):
        batch = collator([inputs[i] for i in indices]).to(accelerator.device)
        with accelerator.autocast():
            loss = model(**batch).loss
        tokens = (batch["labels"] != -100).sum()
        totals += torch.stack([loss.double() * tokens, tokens.double()])
    totals = accelerator.reduce(totals, reduction="sum")
    model.train()
    return (totals[0] / totals[1]).item()


def validate(accelerator, model, tokenizer, tokenized_val, raw_val, collator, args, metric) -> dict:
    """Validation loss (label-smoothed, per token) and beam-search sacreBLEU/chrF, on the first `max_eval_samples`
    pairs (the loss on the first that many kept after filtering)."""
    d_args, t_args = args
    subset = tokenized_val.select(range(min(d_args.max_eval_samples or len(tokenized_val), len(tokenized_val))))
    results = {"eval_loss": validation_loss(accelerator, model, subset, collator, t_args.max_tokens)}
    pairs = raw_val["translation"][: d_args.max_eval_samples]
    scores, _ = evaluate_translations(
        accelerator.unwrap_model(model),
        tokenizer,
        [pair[d_args.source_lang] for pair in pairs],
        [pair[d_args.target_lang] for pair in pairs],
        batch_size=t_args.eval_batch_size,
        accelerator=accelerator,
        metric=metric,
    )
    accelerator.unwrap_model(model).train()
    results.update(eval_bleu=scores["bleu"], eval_chrf=scores["chrf"], eval_seconds=scores["seconds"])
    return results


class JsonlLog:
    """Append-only `log.jsonl` in output_dir: one JSON object per line, written by the main process only."""

    def __init__(self, accelerator: Accelerator, path: Path, append: bool):
        self.accelerator, self.path = accelerator, path
        if accelerator.is_main_process and not append:
            path.write_text("")

    def write(self, record: dict) -> None:
        """Append `record` to the file and send its numbers to the accelerate trackers (`accelerator.log`)."""
        self.accelerator.log({k: v for k, v in record.items() if k != "step"}, step=record.get("step"))
        if self.accelerator.is_main_process:
            with self.path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")


@dataclass
class Interval:
    """Sums since the last log line: loss over micro-batches and non-pad tokens (source + target)."""

    loss_sum: float = 0.0
    micro_batches: int = 0
    tokens: int = 0
    start: float = field(default_factory=time.perf_counter)


def log_interval(accelerator, interval: Interval, state: TrainerState, epoch_length: int, lr: float) -> dict:
    """Reduce the interval's sums over ranks into a log record.

    Fields: step (optimizer steps done), epoch (fractional), loss (label-smoothed cross-entropy per target token,
    averaged over the interval's micro-batches and ranks), lr (the rate of the step just taken, Eq. 3),
    tokens_per_second (non-pad source + target tokens over all ranks per wall-clock second of the interval),
    elapsed_seconds (training wall-clock since the start, across resumptions)."""
    sums = torch.tensor([interval.loss_sum, interval.micro_batches, interval.tokens], dtype=torch.float64)
    loss_sum, micro_batches, tokens = accelerator.reduce(sums.to(accelerator.device), reduction="sum").tolist()
    seconds = max(time.perf_counter() - interval.start, 1e-9)
    return {
        "step": state.step,
        "epoch": round(state.epoch + state.batches_in_epoch / max(epoch_length, 1), 4),
        "loss": loss_sum / max(micro_batches, 1),
        "lr": lr,
        "tokens_per_second": round(tokens / seconds, 1),
        "elapsed_seconds": round(state.elapsed_seconds, 2),
    }


def agree(accelerator: Accelerator, *flags: bool) -> list[bool]:
    """Make time-based decisions identical on every rank (true if true on any rank)."""
    if accelerator.num_processes == 1:
        return list(flags)
    values = torch.tensor([float(flag) for flag in flags], device=accelerator.device)
    return [bool(value) for value in accelerator.reduce(values, reduction="sum").tolist()]


def train_step(accelerator, model, forward, optimizer, batch, max_grad_norm: float) -> torch.Tensor:
    """One micro-batch: forward, backward (scaled by accelerate for accumulation), and on the last micro-batch of
    an accumulation group: clip (if max_grad_norm > 0), Adam step, zero grads. Returns the loss (detached).

    `model` is the prepared (possibly DDP-wrapped) model, `forward` the module to call (the same, or its
    torch.compile wrapper)."""
    with accelerator.accumulate(model):
        loss = forward(**batch).loss
        accelerator.backward(loss)
        if accelerator.sync_gradients and max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()
    return loss.detach()


@dataclass
class Run:
    """Everything the loop needs, built once by `main`."""

    accelerator: Accelerator
    model: torch.nn.Module
    forward: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    dataloader: DataLoader
    sampler: TokenBatchSampler
    log: JsonlLog
    out: Path
    args: TrainingArguments
    evaluate: object  # () -> dict of validation results


def stop_reason(run: Run, state: TrainerState, time_up: bool) -> str | None:
    """Why training ends after this step: max_steps, num_train_epochs or max_train_minutes (None: go on)."""
    args = run.args
    if args.max_steps > 0 and state.step >= args.max_steps:
        return f"max_steps {args.max_steps}"
    if state.epoch + state.batches_in_epoch / max(len(run.sampler), 1) >= args.num_train_epochs:
        return f"num_train_epochs {args.num_train_epochs}"
    if time_up:
        return f"max_train_minutes {args.max_train_minutes}"
    return None


def after_step(run: Run, state: TrainerState, interval: Interval, clock: dict) -> tuple[Interval, str | None]:
    """After each optimizer step: log, validate, checkpoint as configured; return a new interval and stop reason."""
    args, accelerator = run.args, run.accelerator
    state.elapsed_seconds = time.perf_counter() - clock["start"]
    time_up, save_due = agree(
        accelerator,
        bool(args.max_train_minutes) and state.elapsed_seconds >= args.max_train_minutes * 60,
        bool(args.save_minutes) and time.perf_counter() - clock["last_save"] >= args.save_minutes * 60,
    )
    reason = stop_reason(run, state, time_up)
    if args.logging_steps > 0 and (state.step % args.logging_steps == 0 or reason):
        record = log_interval(accelerator, interval, state, len(run.sampler), clock["lr"])
        run.log.write(record)
        clock["bar"].set_postfix(
            loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}", tok_s=record["tokens_per_second"]
        )
        interval = Interval()
    if args.eval_steps > 0 and state.step % args.eval_steps == 0:
        run.log.write({"step": state.step, **run.evaluate()})
        interval.start = time.perf_counter()
    if (args.save_steps > 0 and state.step % args.save_steps == 0) or save_due:
        save_checkpoint(accelerator, run.out, state, keep=checkpoints_to_keep(args))
        clock["last_save"], clock["last_saved_step"] = time.perf_counter(), state.step
    return interval, reason


def train_loop(run: Run, state: TrainerState) -> TrainerState:
    """Epochs of token batches from `state` on (skipping the batches a resumed epoch already consumed)."""
    accelerator, args = run.accelerator, run.args
    now = time.perf_counter()
    clock = {"start": now - state.elapsed_seconds, "last_save": now, "last_saved_step": state.step}
    total = (
        args.max_steps
        if args.max_steps > 0
        else math.ceil(args.num_train_epochs * len(run.sampler) / args.gradient_accumulation_steps)
    )
    clock["bar"] = tqdm(
        total=total, initial=state.step, desc="train", unit="step", disable=not accelerator.is_main_process
    )
    run.model.train()
    interval, reason = Interval(), stop_reason(run, state, False)
    while reason is None:
        run.sampler.set_epoch(state.epoch)
        loader = (
            skip_first_batches(run.dataloader, state.batches_in_epoch) if state.batches_in_epoch else run.dataloader
        )
        for batch in loader:
            batch = batch.to(accelerator.device)
            loss = train_step(accelerator, run.model, run.forward, run.optimizer, batch, args.max_grad_norm)
            state.batches_in_epoch += 1
            interval.loss_sum += loss.item()
            interval.micro_batches += 1
            interval.tokens += int(batch["attention_mask"].sum() + (batch["labels"] != -100).sum())
            if not accelerator.sync_gradients:
                continue
            clock["lr"] = run.optimizer.param_groups[0]["lr"]  # the lr this step used (Eq. 3 at state.step + 1)
            run.scheduler.step()
            state.step += 1
            clock["bar"].update(1)
            interval, reason = after_step(run, state, interval, clock)
            if reason:
                break
        if reason is None:
            state.epoch, state.batches_in_epoch = state.epoch + 1, 0
            reason = stop_reason(run, state, False)
    clock["bar"].close()
    logger.info("stopped at step %d (epoch %d): %s", state.step, state.epoch, reason)
    if (args.save_steps > 0 or args.save_minutes > 0) and clock["last_saved_step"] != state.step:
        save_checkpoint(accelerator, run.out, state, keep=checkpoints_to_keep(args))
    return state


def check_ranks_identical(accelerator: Accelerator, model) -> bool:
    """Data parallelism keeps one model: compare a float64 checksum of every rank's parameters (exact equality)."""
    params = list(accelerator.unwrap_model(model).parameters())
    checksum = torch.stack([p.detach().double().sum() + p.detach().double().abs().sum() for p in params]).sum()
    gathered = accelerator.gather(checksum.reshape(1).to(accelerator.device))
    identical = bool((gathered == gathered[0]).all())
    if not identical:
        raise RuntimeError(f"data-parallel ranks hold different weights (checksums {gathered.tolist()})")
    return identical


def finish(run: Run, state: TrainerState, tokenizer, raw, data_args: DataArguments, metric) -> dict:
    """§6.1 averaging of the last K checkpoints, save_pretrained (model, tokenizer, generation config), test BLEU.

    Writes `train_results.json` (step, epoch, elapsed_seconds, averaged_checkpoints, ranks_identical and the test
    scores) and, with a test split, `results_<test_split>.json` + `hyps_<test_split>.<lang>`."""
    accelerator, args, out = run.accelerator, run.args, run.out
    model = accelerator.unwrap_model(run.model)
    results = {"step": state.step, "epoch": state.epoch, "elapsed_seconds": round(state.elapsed_seconds, 2)}
    if args.average_last_k > 1:
        paths = list_checkpoints(out)[-args.average_last_k :]
        if len(paths) < args.average_last_k:
            logger.warning("averaging only %d checkpoints (asked for %d)", len(paths), args.average_last_k)
        load_averaged_into(model, {k: v.to(accelerator.device) for k, v in average_checkpoints(paths).items()})
        results["averaged_checkpoints"] = [path.name for path in paths]
        logger.info("averaged %s (§6.1)", ", ".join(path.name for path in paths))
    results["ranks_identical"] = check_ranks_identical(accelerator, run.model)
    if accelerator.is_main_process:
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    accelerator.wait_for_everyone()
    if args.do_test and "test" in raw:
        pairs = raw["test"]["translation"]
        scores, hypotheses = evaluate_translations(
            model,
            tokenizer,
            [pair[data_args.source_lang] for pair in pairs],
            [pair[data_args.target_lang] for pair in pairs],
            batch_size=args.eval_batch_size,
            accelerator=accelerator,
            metric=metric,
        )
        results.update(split=data_args.test_split, **scores)
        if accelerator.is_main_process:
            write_results(results, hypotheses, str(out), data_args.test_split, data_args.target_lang)
        logger.info("test %s: BLEU %.2f (%s)", data_args.test_split, scores["bleu"], scores["bleu_signature"])
        run.log.write({"step": state.step, "test_bleu": scores["bleu"], "test_chrf": scores["chrf"]})
    if accelerator.is_main_process:
        (out / "train_results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return results


def check_hub_access(args: TrainingArguments) -> None:
    """Fail before training if --push_to_hub cannot work. Raises ValueError with the reason."""
    if not args.push_to_hub:
        return
    from huggingface_hub import get_token

    if not args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id (e.g. your-name/transformer-multi30k-en-de)")
    if get_token() is None:
        raise ValueError("--push_to_hub needs a Hugging Face token: run `hf auth login` or set HF_TOKEN")


def main(argv: Sequence[str] | None = None) -> dict:
    """Train, save and score (see the module docstring). Returns the final results dict (every rank).

    Raises:
        ValueError: bad arguments or YAML keys, data errors from `training.data` (mismatched line counts name the
            files), no training pair left after filtering, or --push_to_hub without a token.
        FileNotFoundError: missing data files or an incomplete --resume_from_checkpoint directory.
    """
    model_args, data_args, train_args = parse_arguments(argv)
    check_hub_access(train_args)
    accelerator = Accelerator(
        gradient_accumulation_steps=train_args.gradient_accumulation_steps,
        mixed_precision=train_args.mixed_precision,
        cpu=train_args.use_cpu,
        log_with=None if train_args.report_to == "none" else train_args.report_to,
        project_dir=train_args.output_dir,
        step_scheduler_with_optimizer=False,  # we step the Eq. 3 scheduler once per optimizer step ourselves
    )
    setup_logging(accelerator)
    set_seed(train_args.seed)
    out = Path(train_args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    resolve_data_dir(data_args)
    arguments = {**asdict(model_args), **asdict(data_args), **asdict(train_args)}
    if accelerator.is_main_process:
        (out / "training_args.json").write_text(json.dumps(arguments, indent=2) + "\n")
    raw = load_raw(data_args)
    tokenizer = get_tokenizer(
        accelerator, model_args, raw["train"], (data_args.source_lang, data_args.target_lang), out
    )
    tokenized = preprocess(accelerator, raw, tokenizer, data_args, out)
    run, state = build_run(accelerator, model_args, data_args, train_args, tokenizer, tokenized, raw, out)
    if train_args.report_to != "none":
        accelerator.init_trackers("vaswani_transformer", config={k: v for k, v in arguments.items() if v is not None})
    state = train_loop(run, state)
    results = finish(run, state, tokenizer, raw, data_args, run.evaluate.metric)
    if train_args.push_to_hub and accelerator.is_main_process:
        from vaswani_transformer.training.hub import push_to_hub  # uploads the usable files only, never checkpoints

        logger.info("uploaded to %s", push_to_hub(out, train_args.hub_model_id))
    accelerator.end_training()
    return results


class Validator:
    """`validator()` -> validation loss and BLEU/chrF (`validate`); holds the sacreBLEU metric, loaded once."""

    def __init__(self, accelerator, model, tokenizer, tokenized, raw, collator, data_args, train_args):
        self.accelerator, self.model, self.tokenizer, self.collator = accelerator, model, tokenizer, collator
        self.tokenized_val, self.raw_val = tokenized.get("validation"), raw.get("validation")
        self.args = (data_args, train_args)
        self.metric = load_metric()

    def __call__(self) -> dict:
        if self.tokenized_val is None or len(self.tokenized_val) == 0:
            logger.warning("no validation pairs: skipping validation")
            return {}
        results = validate(
            self.accelerator, self.model, self.tokenizer, self.tokenized_val, self.raw_val, self.collator,
            self.args, self.metric,
        )  # fmt: skip
        logger.info("validation: %s", ", ".join(f"{k} {v:.4g}" for k, v in results.items()))
        return results


def build_run(
    accelerator, model_args, data_args, train_args, tokenizer, tokenized, raw, out
) -> tuple[Run, TrainerState]:
    """Sampler, dataloader, model, Adam, Eq. 3 schedule, `accelerator.prepare`, and resumption if asked for."""
    train = tokenized["train"]
    sampler = TokenBatchSampler(
        train["source_length"],
        train["target_length"],
        train_args.max_tokens,
        seed=train_args.seed,
        num_replicas=accelerator.num_processes,
        rank=accelerator.process_index,
    )
    collator = build_collator(tokenizer)
    # Not passed to accelerator.prepare: the sampler already shards batches over ranks (see TokenBatchSampler).
    # Its own generator: creating an iterator draws a seed from it, which must not advance the global RNG that
    # dropout uses (a resumed run creates one more iterator than an uninterrupted one).
    generator = torch.Generator().manual_seed(train_args.seed)
    dataloader = DataLoader(
        train.remove_columns(list(LENGTH_COLUMNS)), batch_sampler=sampler, collate_fn=collator, generator=generator
    )
    model_config = build_model_config(model_args, tokenizer)
    model = VaswaniTransformerForConditionalGeneration(model_config)
    model.generation_config = build_generation_config(model_config, train_args, data_args)
    logger.info("model: %s preset, %.2fM parameters", model_args.model, model.num_parameters() / 1e6)
    if accelerator.is_main_process:
        model_config.save_pretrained(out)  # lets average_checkpoints.py rebuild the model from a running job
    optimizer = build_optimizer(model)
    scheduler = build_scheduler(optimizer, model_config.d_model, train_args.warmup_steps, train_args.lr_multiplier)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    forward = torch.compile(model) if model_args.torch_compile else model
    checkpoint = resolve_checkpoint(train_args.resume_from_checkpoint, out)
    state = load_checkpoint(accelerator, checkpoint) if checkpoint else TrainerState()
    log = JsonlLog(accelerator, out / "log.jsonl", append=checkpoint is not None)
    validator = Validator(accelerator, model, tokenizer, tokenized, raw, collator, data_args, train_args)
    run = Run(accelerator, model, forward, optimizer, scheduler, dataloader, sampler, log, out, train_args, validator)
    return run, state


if __name__ == "__main__":
    main()
