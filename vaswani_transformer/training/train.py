"""Train the Transformer with the paper's recipe (§5) on any parallel corpus, with accelerate.

    accelerate launch training/train.py --config training/configs/multi30k_en_de_cpu.yaml
    vaswani-train --config training/configs/multi30k_en_de_cpu.yaml --max_steps 100 --output_dir runs/try
    accelerate launch --config_file training/configs/accelerate_cpu_2proc.yaml training/train.py --config ... \\
        --use_cpu true   # 2 CPU processes (gloo); or: torchrun --nproc_per_node 2 training/train.py ... --use_cpu true

The YAML file gives defaults; flags on the command line win (`training.arguments`). The flow follows transformers'
`run_translation_no_trainer.py`, top to bottom in this file: arguments -> `Accelerator` -> read pairs
(`training.data`) -> the shared BPE vocabulary, trained here unless `--tokenizer_name` (§5.1) -> tokenize and filter
with `datasets.map` under `main_process_first()` (`training.preprocessing`) -> token batches (`training.batching`,
§5.1) -> model from a preset (Table 3) -> Adam + Eq. 3 schedule (`training.recipe`, §5.3) -> `train()`: the loop with
`accelerator.accumulate`, logging to `output_dir/log.jsonl` and the trackers, validation loss + beam-search BLEU every
`eval_steps`, atomic checkpoints every `save_steps` / `save_minutes` (`training.checkpoints`) -> average the last K
checkpoints (§6.1, `training.averaging`) -> `save_pretrained` model, tokenizer and generation config -> sacreBLEU on
the test split (`training.evaluation`).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import psutil  # a dependency of accelerate
import torch
from accelerate import Accelerator, skip_first_batches
from accelerate.utils import broadcast_object_list, set_seed
from datasets.fingerprint import Hasher
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import GenerationConfig

from vaswani_transformer import VaswaniTransformerConfig, VaswaniTransformerForConditionalGeneration
from vaswani_transformer.output_dir import check_output_dir, prepare_output_dir, resume_differences
from vaswani_transformer.tokenization_vaswani_transformer_fast import VaswaniTransformerTokenizerFast
from vaswani_transformer.training.allocator import keep_freed_memory
from vaswani_transformer.training.arguments import (
    ARCHITECTURE_FIELDS,
    DataArguments,
    ModelArguments,
    TrainingArguments,
    architecture_overrides,
    checkpoints_to_keep,
    parse_arguments,
)
from vaswani_transformer.training.averaging import average_last_checkpoints
from vaswani_transformer.training.batching import TokenBatchSampler, build_collator, non_pad_tokens
from vaswani_transformer.training.checkpoints import TrainerState, load_checkpoint, resolve_checkpoint, save_checkpoint
from vaswani_transformer.training.data import (
    available_splits,
    default_data_dir,
    load_parallel_dataset,
    source_and_target_texts,
)
from vaswani_transformer.training.evaluation import (
    ValidationSet,
    evaluate_translations,
    load_metric,
    validate,
    write_results,
)
from vaswani_transformer.training.fsdp import enable_fsdp_on_cpu, full_model
from vaswani_transformer.training.hub import check_hub_access
from vaswani_transformer.training.model_card import render_model_card
from vaswani_transformer.training.preprocessing import LENGTH_COLUMNS, length_columns, tokenize_split
from vaswani_transformer.training.recipe import build_optimizer, build_scheduler
from vaswani_transformer.training.tokenizer_training import train_tokenizer


__all__ = ["TrainingRun", "main", "train"]

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------- data


def load_raw(args: DataArguments) -> datasets.DatasetDict:
    """Read train/validation/test pairs (`training.data.load_parallel_dataset`); Multi30k if no source is given.

    Sets `args.data_dir` to the folder read in that case, so that `training_args.json` records it.

    Raises:
        ValueError, FileNotFoundError: from the data reader (names the file); no or an empty train split (names
            its source).
    """
    if args.data_dir is None and args.dataset_name is None and args.train_file is None:
        args.data_dir = str(default_data_dir())
    splits = {"train": "train", "validation": args.validation_split, "test": args.test_split}
    raw = load_parallel_dataset(
        args.source_lang,
        args.target_lang,
        data_dir=args.data_dir,
        train_file=args.train_file,
        validation_file=args.validation_file,
        test_file=args.test_file,
        dataset_name=args.dataset_name,
        dataset_config_name=args.dataset_config_name,
        splits=splits if args.data_dir else None,
    )
    origin = (
        f"{Path(args.data_dir) / f'train.{args.source_lang}'}[.gz]"
        if args.data_dir
        else args.train_file or f"{args.dataset_name} [train]"
    )
    if "train" not in raw:
        raise ValueError(f"no train split in the data: {origin} (splits: {list(raw)})")
    if len(raw["train"]) == 0:
        raise ValueError(f"the train split is empty: {origin} has no line")
    for split, limit in (("train", args.max_train_samples), ("test", args.max_test_samples)):
        if limit is not None and split in raw:
            raw[split] = raw[split].select(range(min(limit, len(raw[split]))))
    return raw


def check_splits(raw: datasets.DatasetDict, args: DataArguments, train_args: TrainingArguments) -> None:
    """The splits of a data_dir that the run will use must exist: the test split unless `--do_test false`, the
    validation split when `--eval_steps` > 0. A misspelled `--test_split` fails here, before training, not after.

    Raises:
        ValueError: naming the flag, the two files looked for and the splits that are there.
    """
    if not args.data_dir:
        return
    needed = {
        "test": ("--test_split", args.test_split, train_args.do_test, "--do_test false"),
        "validation": ("--validation_split", args.validation_split, train_args.eval_steps > 0, "--eval_steps 0"),
    }
    for split, (flag, stem, used, way_out) in needed.items():
        if used and split not in raw:
            there = ", ".join(available_splits(args.data_dir, args.source_lang, args.target_lang)) or "none"
            raise ValueError(
                f"{flag} {stem!r}: no {stem}.{args.source_lang}[.gz] and {stem}.{args.target_lang}[.gz] in "
                f"{args.data_dir} (splits there: {there}); or pass {way_out}"
            )


def get_tokenizer(
    accelerator: Accelerator,
    args: ModelArguments,
    raw_train: datasets.Dataset,
    languages: tuple[str, str],
    run_dir: Path | None,
) -> VaswaniTransformerTokenizerFast:
    """`--tokenizer_name` if given; else the run's own tokenizer in `run_dir` (a resumed run); else train the shared
    BPE vocabulary on the train split (§5.1) on the main process and hand it to the others. A trained vocabulary is
    kept in the datasets cache (`HF_DATASETS_CACHE/vaswani_transformer_bpe/<key>`, key: the split's fingerprint,
    the languages, vocab_size and min_frequency), and the next run with the same key loads it instead of training.

    Writes nothing into output_dir (`main` saves the tokenizer once every check has passed). The trained tokenizer
    travels to the other ranks as its `save_pretrained` files through `accelerate.utils.broadcast_object_list`, and
    every rank loads those same files, so all ranks (and a 1-process run) hold an identical tokenizer.

    Raises:
        OSError, ValueError: a `--tokenizer_name` or run directory without a usable tokenizer (names the directory).
    """
    if args.tokenizer_name:
        return VaswaniTransformerTokenizerFast.from_pretrained(args.tokenizer_name)
    if run_dir is not None:
        return VaswaniTransformerTokenizerFast.from_pretrained(run_dir)
    files = [None]
    if accelerator.is_main_process:
        # Cached beside the datasets cache, keyed like it (the train split's fingerprint and the BPE settings): a
        # second run on the same data finds the vocabulary instead of learning it again (~30 s per million pairs).
        key = Hasher.hash((raw_train._fingerprint, languages, args.vocab_size, args.min_frequency, "bpe/1"))
        cached = Path(datasets.config.HF_DATASETS_CACHE, "vaswani_transformer_bpe", key)
        if (cached / "tokenizer.json").is_file():
            logger.info("shared BPE vocabulary of this train split and settings found in %s", cached)
        else:
            logger.info("training a %d-token shared BPE vocabulary on %d pairs", args.vocab_size, len(raw_train))
            started = time.perf_counter()
            tokenizer = train_tokenizer(raw_train, languages, args.vocab_size, min_frequency=args.min_frequency)
            logger.info("trained the shared BPE vocabulary in %.1f s", time.perf_counter() - started)
            cached.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=cached.parent))  # written whole, then renamed into place
            tokenizer.save_pretrained(staging)
            try:
                os.replace(staging, cached)
            except OSError:  # another run stored the same vocabulary meanwhile: keep that one
                shutil.rmtree(staging)
        files = [{path.name: path.read_bytes() for path in cached.iterdir()}]
    files = broadcast_object_list(files) if accelerator.num_processes > 1 else files
    with tempfile.TemporaryDirectory() as folder:
        for name, content in files[0].items():
            Path(folder, name).write_bytes(content)
        return VaswaniTransformerTokenizerFast.from_pretrained(folder)


def preprocess(
    accelerator: Accelerator, raw: datasets.DatasetDict, tokenizer, args: DataArguments
) -> tuple[dict[str, datasets.Dataset], dict[str, dict[str, int]]]:
    """Tokenize and filter train and validation (main process first, the others read its cache); log the drops.

    Returns:
        ({split: tokenized dataset}, {split: drop counts}) for the splits "train" and "validation" that exist.

    Raises:
        ValueError: if no training pair is left (names the counts and the limits).
    """
    tokenized, stats = {}, {}
    languages, max_lengths = (args.source_lang, args.target_lang), (args.max_source_length, args.max_target_length)
    with accelerator.main_process_first():
        for split in ("train", "validation"):
            if split in raw:
                started = time.perf_counter()
                tokenized[split], stats[split] = tokenize_split(
                    raw[split], tokenizer, languages, max_lengths, args.preprocessing_num_workers
                )
                seconds = time.perf_counter() - started
                logger.info(
                    "%s: tokenized %d pairs in %.1f s (%.0f pairs/s; fast when read back from the datasets cache)",
                    split, len(raw[split]), seconds, len(raw[split]) / max(seconds, 1e-9),
                )  # fmt: skip
    for split, counts in stats.items():
        logger.info(
            "%s: kept %d of %d pairs; dropped %d empty, %d with source > %d tokens, %d with target > %d tokens",
            split, counts["kept"], counts["pairs"], counts["empty"], counts["source_too_long"],
            args.max_source_length, counts["target_too_long"], args.max_target_length,
        )  # fmt: skip
    if stats["train"]["kept"] == 0:
        raise ValueError(
            f"no training pairs left after filtering ({stats['train']}); check the data or raise "
            f"--max_source_length ({args.max_source_length}) / --max_target_length ({args.max_target_length})"
        )
    return tokenized, stats


def validation_set(tokenized: datasets.Dataset, raw: datasets.Dataset, args: DataArguments) -> ValidationSet:
    """The first `max_eval_samples` validation pairs as text, and the first that many kept after filtering."""
    limit = min(args.max_eval_samples or len(tokenized), len(tokenized))
    sources, references = source_and_target_texts(raw, args.source_lang, args.target_lang, args.max_eval_samples)
    return ValidationSet(tokenized=tokenized.select(range(limit)), sources=sources, references=references)


# ---------------------------------------------------------------------------------------------------------- model


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


def build_generation_config(model_config, train_args: TrainingArguments, data_args: DataArguments):
    """§6.1 decoding: beam 4, length penalty 0.6 (`--length_penalty_type gnmt` for GNMT's form), early stopping.
    `max_new_tokens` = max_source_length + 50 covers "input length + 50" for every input seen in training;
    `training.evaluation` sets it per batch instead. With `--num_beams 1` (greedy) the beam-only flags are left
    out, as transformers rejects them there."""
    beam = {"length_penalty": train_args.length_penalty, "early_stopping": True} if train_args.num_beams > 1 else {}
    if beam and train_args.length_penalty_type != "length":  # only then: a saved config stays plain transformers
        beam["length_penalty_type"] = train_args.length_penalty_type
    return GenerationConfig(
        num_beams=train_args.num_beams,
        **beam,
        max_new_tokens=data_args.max_source_length + 50,
        pad_token_id=model_config.pad_token_id,
        bos_token_id=model_config.bos_token_id,
        eos_token_id=model_config.eos_token_id,
        decoder_start_token_id=model_config.decoder_start_token_id,
    )


# ------------------------------------------------------------------------------------------------------- the loop


class JsonlLog:
    """`output_dir/log.jsonl`, one JSON object a line (main process), also sent to the accelerate trackers.

    Only ever appended to: a resumed run continues the file, and a new run starts in an empty output_dir.
    """

    def __init__(self, accelerator: Accelerator, path: Path):
        self.accelerator, self.path = accelerator, path

    def write(self, record: dict) -> None:
        """Append `record` to the file and send its numbers to the trackers (`accelerator.log`)."""
        self.accelerator.log(
            {k: v for k, v in record.items() if k != "step" and not isinstance(v, dict)}, step=record.get("step")
        )
        if self.accelerator.is_main_process:
            with self.path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")


@dataclass
class Interval:
    """Sums since the last log line: label-smoothed loss over micro-batches (a 0-dim tensor on the training device
    once a micro-batch has run, so that reading it waits for the device only at log time), non-pad source + target
    tokens."""

    loss_sum: float | torch.Tensor = 0.0
    micro_batches: int = 0
    tokens: int = 0
    start: float = field(default_factory=time.perf_counter)

    def record(self, accelerator: Accelerator, state: TrainerState, epoch_length: int, lr: float) -> dict:
        """The log line: sums reduced over ranks. loss is per target token averaged over micro-batches and ranks,
        lr the rate of the step just taken (Eq. 3), tokens_per_second counts all ranks per wall-clock second,
        epoch is fractional, elapsed_seconds the training time across resumptions, rss_mib the largest resident
        memory of any rank (MiB, `resident_memory_mib`), rss_file_mib the largest file-backed part of it (MiB,
        `resident_file_memory_mib`: the memory-mapped Arrow cache and shared libraries); on CUDA also
        cuda_max_memory_mib, the largest `torch.cuda.max_memory_allocated` of any rank since the start (MiB:
        tensors, not the allocator's cache)."""
        sums = torch.tensor([float(self.loss_sum), self.micro_batches, self.tokens], dtype=torch.float64)
        loss_sum, micro_batches, tokens = accelerator.reduce(sums.to(accelerator.device), reduction="sum").tolist()
        memory = [resident_memory_mib(), resident_file_memory_mib()]
        if accelerator.device.type == "cuda":
            memory.append(torch.cuda.max_memory_allocated(accelerator.device) / 2**20)
        memory = accelerator.gather(torch.tensor([memory], dtype=torch.float64, device=accelerator.device))
        record = {
            "step": state.step,
            "epoch": round(state.epoch + state.batches_in_epoch / max(epoch_length, 1), 4),
            "loss": loss_sum / max(micro_batches, 1),
            "lr": lr,
            "tokens_per_second": round(tokens / max(time.perf_counter() - self.start, 1e-9), 1),
            "elapsed_seconds": round(state.elapsed_seconds, 2),
            "rss_mib": round(memory[:, 0].max().item(), 1),
            "rss_file_mib": round(memory[:, 1].max().item(), 1),
        }
        if accelerator.device.type == "cuda":
            record["cuda_max_memory_mib"] = round(memory[:, 2].max().item(), 1)
        return record


def resident_memory_mib() -> float:
    """This process's resident set size now (psutil's `memory_info().rss`), in MiB: the memory the operating system
    has given the process and not taken back, the quantity that runs a machine out of memory."""
    return psutil.Process().memory_info().rss / 2**20


def resident_file_memory_mib() -> float:
    """The file-backed part of `resident_memory_mib`, in MiB: pages of memory-mapped files (the datasets library's
    Arrow cache, which training reads through `mmap`, and shared libraries) that the operating system can drop and
    read again under memory pressure, unlike the process's own (anonymous) memory. psutil's `memory_info().shared`
    (Linux: RssFile + RssShmem of /proc/<pid>/statm); 0.0 where the platform does not report it."""
    return getattr(psutil.Process().memory_info(), "shared", 0) / 2**20


def on_any_rank(accelerator: Accelerator, *flags: bool) -> list[bool]:
    """Make wall-clock decisions identical on every rank: each flag is true if it is true on any rank."""
    if accelerator.num_processes == 1:
        return [bool(flag) for flag in flags]
    values = torch.tensor([float(bool(flag)) for flag in flags], device=accelerator.device)
    return [bool(value) for value in accelerator.reduce(values, reduction="sum").tolist()]


@dataclass
class TrainingRun:
    """What the loop drives, built by `main`: the prepared model, Adam and Eq. 3 schedule, batches and outputs."""

    args: TrainingArguments
    accelerator: Accelerator
    model: torch.nn.Module  # prepared: DDP/FSDP-wrapped where there are several processes
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    dataloader: DataLoader  # its batch_sampler is the TokenBatchSampler
    log: JsonlLog
    validate: Callable[[], dict]  # validation loss and BLEU on every rank


def stop_reason(args: TrainingArguments, state: TrainerState, epoch_length: int, time_up: bool) -> str | None:
    """Why training ends after this step: max_steps, num_train_epochs or max_train_minutes (None: go on)."""
    if args.max_steps > 0 and state.step >= args.max_steps:
        return f"max_steps {args.max_steps}"
    if state.epoch + state.batches_in_epoch / max(epoch_length, 1) >= args.num_train_epochs:
        return f"num_train_epochs {args.num_train_epochs}"
    if time_up:
        return f"max_train_minutes {args.max_train_minutes}"
    return None


def train(run: TrainingRun, state: TrainerState) -> TrainerState:
    """Epochs of token batches from `state` on, until `stop_reason`; returns the final state.

    Per micro-batch: forward, backward (scaled by accelerate for accumulation); on the last micro-batch of a group:
    clip (if max_grad_norm > 0), Adam step, Eq. 3 schedule step. After each optimizer step: log, validate and
    checkpoint as configured. A resumed run continues inside its epoch, skipping the batches already consumed.
    """
    args, accelerator, model = run.args, run.accelerator, run.model
    sampler: TokenBatchSampler = run.dataloader.batch_sampler
    total_steps = args.max_steps
    if total_steps <= 0:
        total_steps = math.ceil(args.num_train_epochs * len(sampler) / args.gradient_accumulation_steps)
    progress = tqdm(
        total=total_steps, initial=state.step, desc="train", unit="step", disable=not accelerator.is_main_process
    )
    start = time.perf_counter() - state.elapsed_seconds
    last_save, last_saved_step = time.perf_counter(), state.step
    interval = Interval()
    model.train()
    reason = stop_reason(args, state, len(sampler), time_up=False)
    while reason is None:
        sampler.set_epoch(state.epoch)
        batches = run.dataloader
        if state.batches_in_epoch:
            batches = skip_first_batches(run.dataloader, state.batches_in_epoch)
        for batch in batches:
            # Counted on the host batch, and the loss kept on the device until the log line: no device sync a step.
            interval.tokens += sum(non_pad_tokens(batch))
            batch = batch.to(accelerator.device, non_blocking=True)
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                run.optimizer.step()
                run.optimizer.zero_grad()
            state.batches_in_epoch += 1
            interval.loss_sum = interval.loss_sum + loss.detach().float()
            interval.micro_batches += 1
            if not accelerator.sync_gradients:
                continue

            lr = run.optimizer.param_groups[0]["lr"]  # the rate this step used: Eq. 3 at step_num = state.step + 1
            run.scheduler.step()
            state.step += 1
            state.elapsed_seconds = time.perf_counter() - start
            progress.update(1)
            time_up, save_due = on_any_rank(
                accelerator,
                bool(args.max_train_minutes) and state.elapsed_seconds >= args.max_train_minutes * 60,
                bool(args.save_minutes) and time.perf_counter() - last_save >= args.save_minutes * 60,
            )
            reason = stop_reason(args, state, len(sampler), time_up)
            if args.logging_steps > 0 and (state.step % args.logging_steps == 0 or reason):
                record = interval.record(accelerator, state, len(sampler), lr)
                run.log.write(record)
                progress.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}", tok_s=record["tokens_per_second"])
                interval = Interval()
            if args.eval_steps > 0 and state.step % args.eval_steps == 0:
                run.log.write({"step": state.step, **run.validate()})
                interval.start = time.perf_counter()  # validation time does not count as training throughput
            if (args.save_steps > 0 and state.step % args.save_steps == 0) or save_due:
                save_checkpoint(accelerator, args.output_dir, state, keep=checkpoints_to_keep(args), model=model)
                last_save, last_saved_step = time.perf_counter(), state.step
            if reason:
                break
        if reason is None:
            state.epoch, state.batches_in_epoch = state.epoch + 1, 0
            reason = stop_reason(args, state, len(sampler), time_up=False)
    progress.close()
    logger.info("stopped at step %d (epoch %d): %s", state.step, state.epoch, reason)
    if args.saves_checkpoints and last_saved_step != state.step:
        save_checkpoint(accelerator, args.output_dir, state, keep=checkpoints_to_keep(args), model=model)
    return state


# ------------------------------------------------------------------------------------------------------ after it


def check_ranks_identical(accelerator: Accelerator, model: torch.nn.Module) -> None:
    """Data parallelism keeps one model: compare a float64 checksum of every rank's parameters (exact equality).

    Raises:
        RuntimeError: if two ranks hold different weights (names the checksums).
    """
    params = list(accelerator.unwrap_model(model).parameters())
    checksum = torch.stack([p.detach().double().sum() + p.detach().double().abs().sum() for p in params]).sum()
    gathered = accelerator.gather(checksum.reshape(1).to(accelerator.device))
    if not bool((gathered == gathered[0]).all()):
        raise RuntimeError(f"data-parallel ranks hold different weights (checksums {gathered.tolist()})")


def check_resume(checkpoint: Path, model_config: VaswaniTransformerConfig, arguments: dict) -> None:
    """A resumed run must be the run its checkpoint belongs to: same architecture, vocabulary and languages.

    Raises:
        ValueError: naming every field in which the command differs from the run (`output_dir.resume_differences`).
    """
    fields = (*ARCHITECTURE_FIELDS, "vocab_size", "pad_token_id", "bos_token_id", "eos_token_id")
    differences = resume_differences(checkpoint.parent, model_config.to_dict(), arguments, fields)
    if differences:
        raise ValueError(
            f"--resume_from_checkpoint {checkpoint} belongs to a different run: {'; '.join(differences)}. "
            "Resume with the run's own settings, or train into a new --output_dir"
        )


def main(argv: Sequence[str] | None = None) -> None:
    """Train, save and score (see the module docstring).

    Nothing is written into `output_dir` until every check has passed: the directory is empty (or
    `--overwrite_output_dir` / `--resume_from_checkpoint` is given), the data and the splits the run uses exist, the
    tokenizer loads, the model config is valid and, for a resume, matches the run and its checkpoint loads.

    Writes into `output_dir`: training_args.json, data_stats.json, tokenizer and config files, log.jsonl,
    checkpoint-{step}/ directories, the final model (save_pretrained), train_results.json (step, epoch,
    elapsed_seconds, averaged_checkpoints and the test scores), with a test split results_<split>.json and
    hyps_<split>.<lang>, and last the model card README.md (`training.model_card`), so that the finished directory
    is the repository `--push_to_hub` / `vaswani-push-to-hub` uploads.

    Raises:
        FileExistsError: a non-empty output_dir without --overwrite_output_dir or --resume_from_checkpoint.
        ValueError: bad arguments or YAML (names the file and key), data errors from `training.data` (names the
            files), a missing split, no training pair left after filtering, a resume that changes the run (names the
            fields) or a corrupt checkpoint (names the file and the checkpoint before it), --push_to_hub without a
            token.
        FileNotFoundError: missing data files, config file or --resume_from_checkpoint directory.
        RuntimeError: if data-parallel ranks end with different weights.
    """
    model_args, data_args, train_args = parse_arguments(argv)
    out = Path(train_args.output_dir)
    check_output_dir(out, train_args.overwrite_output_dir, resume=train_args.resume_from_checkpoint is not None)
    check_hub_access(train_args)
    accelerator = Accelerator(
        gradient_accumulation_steps=train_args.gradient_accumulation_steps,
        mixed_precision=train_args.mixed_precision,
        cpu=train_args.use_cpu,
        log_with=None if train_args.report_to == "none" else train_args.report_to,
        project_dir=train_args.output_dir,
        step_scheduler_with_optimizer=False,  # the Eq. 3 schedule steps once per optimizer step, in `train`
    )
    enable_fsdp_on_cpu(accelerator)  # an FSDP launch with --use_cpu true: accelerate's FSDP2 on CPU (training.fsdp)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger("vaswani_transformer").setLevel(logging.INFO if accelerator.is_main_process else logging.WARNING)
    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    set_seed(train_args.seed)
    checkpoint = resolve_checkpoint(train_args.resume_from_checkpoint, out)
    non_empty = out.is_dir() and any(out.iterdir())
    if checkpoint is not None and non_empty and checkpoint.resolve().parent != out.resolve():
        raise FileExistsError(
            f"--output_dir {out} is not empty and is not the run of --resume_from_checkpoint {checkpoint}; resume "
            f"into {checkpoint.parent} or an empty --output_dir"
        )
    if train_args.resume_from_checkpoint and checkpoint is None and non_empty:  # "latest" found nothing to continue
        raise FileExistsError(
            f"--resume_from_checkpoint latest: {out} holds no complete checkpoint-<step> to continue, but is not "
            "empty; pass --overwrite_output_dir (without --resume_from_checkpoint) to replace it"
        )

    # Data: pairs, the shared vocabulary (§5.1), tokenized and filtered splits.
    raw = load_raw(data_args)
    check_splits(raw, data_args, train_args)
    arguments = {**asdict(model_args), **asdict(data_args), **asdict(train_args)}
    languages = (data_args.source_lang, data_args.target_lang)
    tokenizer = get_tokenizer(
        accelerator, model_args, raw["train"], languages, checkpoint.parent if checkpoint else None
    )
    tokenized, stats = preprocess(accelerator, raw, tokenizer, data_args)
    # The train text is not read again. Reading it (BPE, tokenization) mapped every page of its Arrow file into this
    # process: dropping the dataset closes the memory map (4.5M pairs: 0.9 GB less resident memory from here on).
    del raw["train"]
    train_set = tokenized["train"]
    sampler = TokenBatchSampler(
        *length_columns(train_set),  # numpy, straight from the Arrow columns
        train_args.max_tokens,
        seed=train_args.seed,
        num_replicas=accelerator.num_processes,
        rank=accelerator.process_index,
        pad_to_multiple_of=train_args.pad_to_multiple_of,
    )
    # Not passed to accelerator.prepare: the sampler already shards batches over ranks (see TokenBatchSampler).
    # Its own generator: creating an iterator draws a seed from it, which must not advance the global RNG that
    # dropout uses (a resumed run creates one more iterator than an uninterrupted one).
    dataloader = DataLoader(
        train_set.remove_columns(list(LENGTH_COLUMNS)),
        batch_sampler=sampler,
        collate_fn=build_collator(tokenizer, train_args.pad_to_multiple_of),
        pin_memory=accelerator.device.type == "cuda",  # page-locked batches: the host-to-device copy runs async
        generator=torch.Generator().manual_seed(train_args.seed),
    )

    # Model (Table 3), Adam and the Eq. 3 schedule (§5.3); a resume checks the run and loads its checkpoint.
    model_config = build_model_config(model_args, tokenizer)
    if checkpoint:
        check_resume(checkpoint, model_config, arguments)
    model_config._attn_implementation = model_args.attn_implementation  # training only: not saved with the model
    model = VaswaniTransformerForConditionalGeneration(model_config)
    model.generation_config = build_generation_config(model_config, train_args, data_args)
    logger.info(
        "model: %s preset, %.2fM parameters, %s attention",
        model_args.model,
        model.num_parameters() / 1e6,
        model_args.attn_implementation,
    )
    if model_args.torch_compile:
        model.compile()  # in place: the module, its state-dict keys and `unwrap_model` stay as they are
    optimizer = build_optimizer(model)
    scheduler = build_scheduler(optimizer, model_config.d_model, train_args.warmup_steps, train_args.lr_multiplier)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    state = load_checkpoint(accelerator, checkpoint) if checkpoint else TrainerState()

    # Every check has passed: from here on the run writes into output_dir.
    if accelerator.is_main_process:
        prepare_output_dir(out, train_args.overwrite_output_dir)
        (out / "training_args.json").write_text(json.dumps(arguments, indent=2) + "\n")
        (out / "data_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        tokenizer.save_pretrained(out)
        model_config.save_pretrained(out)  # lets average_checkpoints rebuild the model from a running job
    accelerator.wait_for_everyone()
    log = JsonlLog(accelerator, out / "log.jsonl")
    if checkpoint:
        log.write({"step": state.step, "resumed_from": str(checkpoint), "arguments": arguments})

    # The loop.
    if train_args.report_to != "none":
        accelerator.init_trackers("vaswani_transformer", config={k: v for k, v in arguments.items() if v is not None})
    metric = load_metric()
    has_validation = "validation" in tokenized
    pairs = validation_set(tokenized["validation"], raw["validation"], data_args) if has_validation else None
    validate_with = functools.partial(
        validate,
        accelerator,
        tokenizer=tokenizer,
        data=pairs,
        max_tokens=train_args.max_tokens,
        pad_to_multiple_of=train_args.pad_to_multiple_of,
        generation_max_tokens=train_args.eval_max_tokens,
        batch_size=train_args.eval_batch_size,
        metric=metric,
    )
    # Beam search never runs sharded: under FSDP each validation decodes with an all-gathered copy (training.fsdp).
    run = TrainingRun(
        train_args, accelerator, model, optimizer, scheduler, dataloader, log,
        lambda: validate_with(model=full_model(accelerator, model)),
    )  # fmt: skip
    if train_args.keep_freed_memory and accelerator.device.type == "cpu":
        # From here on no page faults for the tensors every step allocates anew; what data preparation freed is
        # returned to the kernel first (training.allocator).
        keep_freed_memory()
    state = train(run, state)

    # §6.1: average the last checkpoints, save the model, score the test split.
    unwrapped = full_model(accelerator, model)  # the model itself, or under FSDP its all-gathered copy
    results = {
        "step": state.step,
        "epoch": state.epoch,
        "elapsed_seconds": round(state.elapsed_seconds, 2),
        "distributed_type": accelerator.distributed_type.value,
        "num_processes": accelerator.num_processes,
    }
    if train_args.average_last_k > 1:
        results["averaged_checkpoints"] = average_last_checkpoints(
            unwrapped, out, train_args.average_last_k, accelerator.device
        )
    check_ranks_identical(accelerator, unwrapped)
    if accelerator.is_main_process:
        unwrapped.save_pretrained(out)
        tokenizer.save_pretrained(out)
    accelerator.wait_for_everyone()
    if train_args.do_test and "test" in raw:
        sources, references = source_and_target_texts(raw["test"], data_args.source_lang, data_args.target_lang)
        scores, hypotheses = evaluate_translations(
            unwrapped,
            tokenizer,
            sources,
            references,
            batch_size=train_args.eval_batch_size,
            max_tokens=train_args.eval_max_tokens,
            accelerator=accelerator,
            metric=metric,
        )
        results.update(split=data_args.test_split, **scores)
        if accelerator.is_main_process:
            write_results(results, hypotheses, str(out), data_args.test_split, data_args.target_lang)
        logger.info("test %s: BLEU %.2f (%s)", data_args.test_split, scores["bleu"], scores["bleu_signature"])
        log.write({"step": state.step, "test_bleu": scores["bleu"], "test_chrf": scores["chrf"]})
    elif train_args.do_test:
        logger.warning("no test split in the data: nothing scored (give --test_file, or --do_test false)")
    if accelerator.is_main_process:
        (out / "train_results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        render_model_card(out, train_args.hub_model_id)  # README.md: the measured results and the model-index
    if train_args.push_to_hub and accelerator.is_main_process:
        from vaswani_transformer.training.hub import push_to_hub  # uploads the usable files only, never checkpoints

        logger.info("uploaded to %s", push_to_hub(out, train_args.hub_model_id))
    accelerator.end_training()
