"""The training loop (§5): token batches, Adam steps on the Eq. 3 schedule, logging, validation and checkpoints,
until a stopping rule says why it ends (`stop_reason`).

`training.train.main` builds a `TrainingRun` (arguments, data, model, optimizer) and calls `train`; the loop follows
transformers' `run_translation_no_trainer.py` (accumulation with `accelerator.accumulate`, `skip_first_batches` to
resume inside an epoch).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from accelerate import Accelerator, skip_first_batches
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from vaswani_transformer.training.arguments import TrainingArguments, checkpoints_to_keep
from vaswani_transformer.training.batching import TokenBatchSampler, non_pad_tokens
from vaswani_transformer.training.checkpoints import TrainerState, save_checkpoint
from vaswani_transformer.training.criterion import LabelSmoothedCrossEntropyCriterion
from vaswani_transformer.training.distributed import on_any_rank
from vaswani_transformer.training.telemetry import Interval, JsonlLog


__all__ = ["TrainingRun", "stop_reason", "train"]

logger = logging.getLogger(__name__)


@dataclass
class TrainingRun:
    """What the loop drives, built by `main`: the prepared model, its loss, Adam and Eq. 3 schedule, batches and
    outputs."""

    args: TrainingArguments
    accelerator: Accelerator
    model: torch.nn.Module  # prepared: DDP/FSDP-wrapped where there are several processes
    criterion: LabelSmoothedCrossEntropyCriterion  # §5.4: the loss of a batch
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    dataloader: DataLoader  # its batch_sampler is the TokenBatchSampler
    log: JsonlLog
    validate: Callable[[], dict] | None  # validation loss and BLEU on every rank; None: no validation pairs


def stop_reason(args: TrainingArguments, state: TrainerState, epoch_length: int, time_up: bool) -> str | None:
    """Why training ends after this step: max_steps, num_train_epochs, max_train_minutes or early stopping
    (`early_stopping`), as a line that starts with the flag that stopped it (None: go on)."""
    patience = args.early_stopping_patience
    if patience and state.validations_without_improvement >= patience:
        return (
            f"early_stopping_patience {patience}: eval_{args.metric_for_best_model} did not improve on "
            f"{state.best_metric:.4g} (step {state.best_step}) in {patience} validations"
        )
    if args.max_steps > 0 and state.step >= args.max_steps:
        return f"max_steps {args.max_steps}"
    if state.epoch + state.batches_in_epoch / max(epoch_length, 1) >= args.num_train_epochs:
        return f"num_train_epochs {args.num_train_epochs}"
    if time_up:
        return f"max_train_minutes {args.max_train_minutes}"
    return None


def early_stopping(args: TrainingArguments, state: TrainerState, results: dict) -> None:
    """Count a validation for early stopping (transformers' `EarlyStoppingCallback`, fairseq's `--patience`): a new
    best `eval_{metric_for_best_model}` (higher BLEU or chrF, lower loss) resets the count of validations without
    improvement, any other value adds one. Kept in `state`, so that a resumed run goes on counting."""
    value = results.get(f"eval_{args.metric_for_best_model}")
    if value is None:
        return
    lower_is_better = args.metric_for_best_model == "loss"
    if state.best_metric is None or (value < state.best_metric if lower_is_better else value > state.best_metric):
        state.best_metric, state.best_step, state.validations_without_improvement = value, state.step, 0
    else:
        state.validations_without_improvement += 1


def train(run: TrainingRun, state: TrainerState) -> tuple[TrainerState, str]:
    """Epochs of token batches from `state` on, until `stop_reason`; returns the final state and that reason.

    Per micro-batch: forward, backward (scaled by accelerate for accumulation); on the last micro-batch of a group:
    clip (if max_grad_norm > 0), Adam step, Eq. 3 schedule step. After each optimizer step: log, validate (every
    `eval_steps` and at the last step) and checkpoint as configured. A resumed run continues inside its epoch,
    skipping the batches already consumed.
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
    last_validated_step = None
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
                loss = run.criterion(model, batch)
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
            if run.validate and args.eval_steps > 0 and state.step % args.eval_steps == 0:
                results = run.validate()
                early_stopping(args, state, results)
                run.log.write({"step": state.step, **results})
                last_validated_step = state.step
                interval.start = time.perf_counter()  # validation time does not count as training throughput
                reason = reason or stop_reason(args, state, len(sampler), time_up)
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
    if run.validate and last_validated_step != state.step:  # the last step's weights, before any averaging
        run.log.write({"step": state.step, **run.validate()})
    if args.saves_checkpoints and last_saved_step != state.step:
        save_checkpoint(accelerator, args.output_dir, state, keep=checkpoints_to_keep(args), model=model)
    return state, reason
