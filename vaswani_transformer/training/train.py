"""Train the Transformer with the paper's recipe (§5) on any parallel corpus, with accelerate.

    accelerate launch training/train.py --config multi30k_en_de_cpu
    vaswani-train --config multi30k_en_de_cpu --max_steps 100 --output_dir runs/try
    accelerate launch --config_file vaswani_transformer/training/presets/accelerate_cpu_2proc.yaml \\
        training/train.py --config ... \\
        --use_cpu true   # 2 CPU processes (gloo); or: torchrun --nproc_per_node 2 training/train.py ... --use_cpu true

The YAML file gives defaults; flags on the command line win (`training.arguments`). The flow follows transformers'
`run_translation_no_trainer.py`, top to bottom in `main`: arguments -> `Accelerator` -> read pairs (`training.data`)
-> the shared BPE vocabulary, trained unless `--tokenizer_name` (§5.1, `training.vocabulary`) -> tokenize and filter
with `datasets.map` under `main_process_first()` (`training.preprocessing`) -> token batches (`training.batching`,
§5.1) -> model from a preset (Table 3), label-smoothed loss (§5.4, `training.criterion`) -> Adam + Eq. 3 schedule
(`training.recipe`, §5.3) -> the loop (`training.loop.train`) with `accelerator.accumulate`, logging to
`output_dir/log.jsonl` and the trackers (`training.telemetry`), validation loss + beam-search BLEU every `eval_steps`,
atomic checkpoints every `save_steps` / `save_minutes` (`training.checkpoints`) -> average the last K checkpoints
(§6.1, `training.averaging`) -> `save_pretrained` model, tokenizer and generation config -> sacreBLEU on the test
split (`training.evaluation`).
`--cpu_kernels` (the CPU presets) trains with the library's CPU dropout kernel and row-blocked loss
(`training.cpu_kernels`); the saved model does not carry them.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import datasets
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from vaswani_transformer import VaswaniTransformerForConditionalGeneration
from vaswani_transformer.output_dir import check_output_dir, prepare_output_dir
from vaswani_transformer.training.allocator import keep_freed_memory
from vaswani_transformer.training.arguments import (
    DataArguments,
    parse_arguments,
)
from vaswani_transformer.training.averaging import average_last_checkpoints
from vaswani_transformer.training.batching import TokenBatchSampler, build_collator
from vaswani_transformer.training.checkpoints import (
    TrainerState,
    check_resume,
    load_checkpoint,
    resolve_checkpoint,
)
from vaswani_transformer.training.compilation import compile_criterion
from vaswani_transformer.training.cpu_kernels import use_cpu_kernels
from vaswani_transformer.training.criterion import LabelSmoothedCrossEntropyCriterion, keep_logits_in_autocast_dtype
from vaswani_transformer.training.data import check_training_splits, load_training_splits, source_and_target_texts
from vaswani_transformer.training.distributed import check_ranks_identical
from vaswani_transformer.training.evaluation import (
    ValidationSet,
    evaluate_translations,
    load_metric,
    validate,
    write_results,
)
from vaswani_transformer.training.fsdp import enable_fsdp_on_cpu, full_model
from vaswani_transformer.training.hub import check_hub_access
from vaswani_transformer.training.initialization import build_model_config, initial_learning_rate, load_pretrained
from vaswani_transformer.training.loop import TrainingRun, train
from vaswani_transformer.training.model_card import render_model_card
from vaswani_transformer.training.preprocessing import LENGTH_COLUMNS, length_columns, tokenize_training_splits
from vaswani_transformer.training.recipe import (
    build_generation_config,
    build_optimizer,
    build_scheduler,
    effective_batch,
    eq3_multiplier,
    gradient_accumulation_for,
)
from vaswani_transformer.training.run_environment import environment
from vaswani_transformer.training.telemetry import JsonlLog, configure_logging
from vaswani_transformer.training.trackers import tracker_names
from vaswani_transformer.training.vocabulary import run_tokenizer


__all__ = ["main"]

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------- data and model


def validation_set(tokenized: datasets.Dataset, raw: datasets.Dataset, args: DataArguments) -> ValidationSet:
    """The first `max_eval_samples` validation pairs as text, and the first that many kept after filtering."""
    limit = min(args.max_eval_samples or len(tokenized), len(tokenized))
    sources, references = source_and_target_texts(raw, args.source_lang, args.target_lang, args.max_eval_samples)
    return ValidationSet(tokenized=tokenized.select(range(limit)), sources=sources, references=references)


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
    AcceleratorState._reset_state()  # forget an earlier run's settings in this process (tests run main twice)
    accelerator = Accelerator(
        gradient_accumulation_steps=train_args.gradient_accumulation_steps,
        mixed_precision=train_args.mixed_precision,
        cpu=train_args.use_cpu,
        log_with=tracker_names(train_args.report_to),  # one line if a tracker's package is missing (training.trackers)
        project_dir=train_args.output_dir,
        step_scheduler_with_optimizer=False,  # the Eq. 3 schedule steps once per optimizer step, in `train`
    )
    enable_fsdp_on_cpu(accelerator)  # an FSDP launch with --use_cpu true: accelerate's FSDP2 on CPU (training.fsdp)
    configure_logging(accelerator)
    set_seed(train_args.seed)
    if train_args.target_tokens_per_step:  # §5.1's ~25k tokens a step on any number of processes
        accelerator.gradient_accumulation_steps = train_args.gradient_accumulation_steps = gradient_accumulation_for(
            train_args.target_tokens_per_step, train_args.max_tokens, accelerator.num_processes
        )
    batch = effective_batch(train_args.max_tokens, accelerator.num_processes, train_args.gradient_accumulation_steps)
    logger.info(
        "effective batch: %d tokens per side per optimizer step (--max_tokens %d x %d processes x %d accumulation)",
        batch["tokens_per_step"], train_args.max_tokens, accelerator.num_processes,
        train_args.gradient_accumulation_steps,
    )  # fmt: skip
    checkpoint = resolve_checkpoint(train_args.resume_from_checkpoint, out)  # refuses to continue another run

    # Data: pairs, the shared vocabulary (§5.1), tokenized and filtered splits, token batches (§5.1).
    raw = load_training_splits(data_args)
    check_training_splits(raw, data_args, train_args)
    arguments = {**asdict(model_args), **asdict(data_args), **asdict(train_args)}
    languages = (data_args.source_lang, data_args.target_lang)
    run_dir = checkpoint.parent if checkpoint else None
    if model_args.model_name_or_path:  # fine-tuning: the saved model and its own tokenizer (training.initialization)
        pretrained, tokenizer = load_pretrained(model_args)
    else:
        pretrained, tokenizer = None, run_tokenizer(accelerator, model_args, raw["train"], languages, run_dir)
    tokenized, stats = tokenize_training_splits(accelerator, raw, tokenizer, data_args)
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

    # Model (Table 3, or the one fine-tuned), label-smoothed loss (§5.4), Adam and the Eq. 3 schedule (§5.3); a
    # resume checks the run and loads its checkpoint.
    model_config = pretrained.config if pretrained else build_model_config(model_args, tokenizer)
    if checkpoint:
        check_resume(checkpoint, model_config, arguments)
    model_config._attn_implementation = model_args.attn_implementation  # training only: not saved with the model
    model = pretrained or VaswaniTransformerForConditionalGeneration(model_config)
    if not pretrained:  # a fine-tune keeps the generation config it loaded
        model.generation_config = build_generation_config(model_config, train_args, data_args)
    logger.info(
        "model: %s, %.2fM parameters, %s attention",
        model_args.model_name_or_path or f"{model_args.model} preset",
        model.num_parameters() / 1e6,
        model_args.attn_implementation,
    )
    if train_args.cpu_kernels:
        use_cpu_kernels(model)  # the CPU dropout kernel, in place; saved files stay those of nn.Dropout
    # §5.4 loss. --torch_compile compiles it with the forward and backward (training.compilation); the model stays
    # eager for validation, generate() and saving. The row-blocked CPU loss does not compile: the default replaces it.
    blocked_loss = train_args.cpu_kernels and not model_args.torch_compile
    criterion = LabelSmoothedCrossEntropyCriterion(model_config.label_smoothing, blocked=blocked_loss)
    if model_args.torch_compile:
        criterion = compile_criterion(criterion)
    optimizer = build_optimizer(model)
    learning_rate = train_args.learning_rate or initial_learning_rate(model_args.model_name_or_path, model_config)
    multiplier = eq3_multiplier(model_config.d_model, train_args.warmup_steps, learning_rate, train_args.lr_multiplier)
    scheduler = build_scheduler(optimizer, model_config.d_model, train_args.warmup_steps, multiplier)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    keep_logits_in_autocast_dtype(accelerator, model)  # the criterion reads bf16 logits, not an fp32 copy
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
        train_args, accelerator, model, criterion, optimizer, scheduler, dataloader, log,
        (lambda: validate_with(model=full_model(accelerator, model))) if has_validation else None,
    )  # fmt: skip
    if train_args.keep_freed_memory and accelerator.device.type == "cpu":
        # From here on no page faults for the tensors every step allocates anew; what data preparation freed is
        # returned to the kernel first (training.allocator).
        keep_freed_memory()
    state, stop_reason = train(run, state)
    log.write({"step": state.step, "stop_reason": stop_reason})

    # §6.1: average the last checkpoints, save the model, score the test split.
    unwrapped = full_model(accelerator, model)  # the model itself, or under FSDP its all-gathered copy
    results = {
        "step": state.step,
        "epoch": state.epoch,
        "elapsed_seconds": round(state.elapsed_seconds, 2),
        "distributed_type": accelerator.distributed_type.value,
        "num_processes": accelerator.num_processes,
        "effective_batch": batch,  # tokens per optimizer step (training.recipe.effective_batch)
        "stop_reason": stop_reason,  # the flag that ended the loop, and why (training.loop.stop_reason)
        **environment(accelerator),  # hardware and versions, for the model card (training.run_environment)
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
