"""The training step on one GPU: the paper's base and big models (Table 3), eager against compiled
(`training.compilation`), 25,000 tokens a side per step; non-pad tokens/s, MFU against the bf16 matmul peak measured
in the same run, peak memory, compile time, and the loss curves of both (benchmarks/README.md).

    python -m benchmarks.gpu_train_step              # one CUDA GPU, about 6 minutes on an H100
    python -m benchmarks.gpu_train_step --dry-run    # the same code on a tiny model on CPU, in seconds (dynamo only;
                                                     # add --compile_backend inductor for minutes of compiling)
    python -m benchmarks.gpu_train_step --cpu        # the CPU preset's model, 2,048-token batches, on this CPU

Batches are synthetic, made by the training loader's rule: lengths drawn around WMT 2014 EN-DE's (a log-normal with
a median of 27 BPE tokens), packed by `TokenBatchSampler` within `max_tokens` padded tokens a side, lengths rounded
up to a multiple of 8 (`pad_to_multiple_of`, as the presets train), so that the batches have many shapes as in
training. The task is learnable (each target repeats the start of its source), so that the loss curves of eager and
compiled steps can be compared. A step is what `training/train.py` runs on one GPU: forward and loss under bf16
autocast, backward, fused Adam (`training.recipe.build_optimizer`) with the Eq. 3 schedule, batches copied from
pinned memory without blocking, the loss kept on the device until the end.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from transformers import HfArgumentParser

from vaswani_transformer import VaswaniTransformerConfig, VaswaniTransformerForConditionalGeneration
from vaswani_transformer.training.batching import TokenBatchSampler, non_pad_tokens, padded_lengths
from vaswani_transformer.training.compilation import compile_criterion, compiled_graphs
from vaswani_transformer.training.cpu_kernels import use_cpu_kernels
from vaswani_transformer.training.criterion import LabelSmoothedCrossEntropyCriterion
from vaswani_transformer.training.recipe import build_optimizer, build_scheduler

from . import RESULTS_DIR
from .flops import model_flops_utilization, training_flops
from .report import environment, machine_name, target, write_report
from .timing import matmul_peak, synchronize


__all__ = ["StepArguments", "main", "markdown", "synthetic_batches"]

# The targets on one H100: MFU of the measured bf16 matmul peak, and the compile time.
MFU_TARGETS = {"base": 0.35, "big": 0.45}
COMPILE_SECONDS_TARGET = 120.0
VARIANTS = ("eager", "compiled", "compiled_chunked")  # chunked: the output projection and loss in row chunks
PAD, START = VaswaniTransformerConfig.pad_token_id, VaswaniTransformerConfig.decoder_start_token_id


@dataclasses.dataclass
class StepArguments:
    """`python -m benchmarks.gpu_train_step` (benchmarks/README.md)."""

    dry_run: bool = dataclasses.field(default=False, metadata={"help": "A tiny model on CPU: checks the code."})
    cpu: bool = dataclasses.field(default=False, metadata={"help": "The CPU preset's model on this CPU."})
    models: str = dataclasses.field(default="base,big", metadata={"help": "Table 3 models, comma-separated."})
    variants: str = dataclasses.field(
        default="eager,compiled", metadata={"help": f"Comma-separated, of {', '.join(VARIANTS)}."}
    )
    max_tokens: int = dataclasses.field(default=25_000, metadata={"help": "Padded tokens a side per step."})
    steps: int = dataclasses.field(default=300, metadata={"help": "Timed steps per model and variant."})
    warmup_steps: int = dataclasses.field(default=20, metadata={"help": "Untimed steps first (compiling in them)."})
    batches: int = dataclasses.field(default=48, metadata={"help": "Distinct synthetic batches, used in turn."})
    output_chunks: int = dataclasses.field(default=8, metadata={"help": "Row chunks of compiled_chunked."})
    compile_backend: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "torch.compile's backend (default: inductor; with --dry-run dynamo alone, 'eager', which checks "
            "the graph and its recompilations in seconds where inductor takes minutes on a CPU)."
        },
    )
    budget_minutes: float = dataclasses.field(
        default=7.5, metadata={"help": "Skip what would start after this many minutes (the run's time limit)."}
    )
    output: Path = dataclasses.field(default=RESULTS_DIR, metadata={"help": "Where the results files go."})


def synthetic_batches(
    vocab_size: int, max_tokens: int, count: int, pad_to_multiple_of: int = 8, seed: int = 0
) -> list[dict[str, torch.Tensor]]:
    """`count` training batches as `build_collator` makes them, of synthetic pairs packed by `TokenBatchSampler`.

    Target lengths: log-normal, median 27 tokens, clipped to [2, min(200, max_tokens / 8)]; source lengths: the
    target's times U(0.8, 1.25), clipped alike. Source ids are uniform over the vocabulary past the special tokens;
    a target repeats the start of its source (padded with fresh ids where longer). Returns `input_ids`,
    `attention_mask` `(batch, src_len)` and `labels` `(batch, tgt_len)` (-100 at padding), lengths multiples of
    `pad_to_multiple_of`, in memory pinned where CUDA runs.
    """
    rng = np.random.default_rng(seed)
    pairs = count * max(1, max_tokens // 25)  # enough pairs for `count` full batches
    longest = min(200, max_tokens // 8)  # at least 8 sentences a batch: no batch of one sentence (see compilation)
    lengths_tgt = np.clip(np.round(rng.lognormal(np.log(27), 0.5, pairs)), 2, longest).astype(np.int64)
    lengths_src = np.clip(np.round(lengths_tgt * rng.uniform(0.8, 1.25, pairs)), 2, longest).astype(np.int64)
    sampler = TokenBatchSampler(lengths_src, lengths_tgt, max_tokens, seed=seed, pad_to_multiple_of=pad_to_multiple_of)
    batches = []
    for indices in sampler.all_batches()[:count]:
        src, tgt = lengths_src[indices], lengths_tgt[indices]
        src_len, tgt_len = (int(padded_lengths([lengths.max()], pad_to_multiple_of)[0]) for lengths in (src, tgt))
        width = max(src_len, tgt_len)
        ids = torch.from_numpy(rng.integers(4, vocab_size, (len(indices), width)))  # (batch, width)
        positions_src, positions_tgt = torch.arange(src_len), torch.arange(tgt_len)
        source_mask = positions_src < torch.from_numpy(src).unsqueeze(1)  # (batch, src_len)
        target_mask = positions_tgt < torch.from_numpy(tgt).unsqueeze(1)  # (batch, tgt_len)
        batch = {
            "input_ids": ids[:, :src_len].masked_fill(~source_mask, PAD),
            "attention_mask": source_mask.long(),
            "labels": ids[:, :tgt_len].masked_fill(~target_mask, -100),
        }
        if torch.cuda.is_available():
            batch = {name: tensor.pin_memory() for name, tensor in batch.items()}
        batches.append(batch)
    return batches


def model_config(name: str, device: str, dry_run: bool) -> tuple[VaswaniTransformerConfig, bool]:
    """The config of `name` (Table 3 base or big, the WMT presets' 37,000 tokens; the CPU preset's model with
    `--cpu`; a tiny one with `--dry-run`), with its attention kernel set, and whether its eager step uses the CPU
    kernels (`use_cpu_kernels` and the blocked loss, as the CPU preset trains)."""
    if dry_run:
        config = VaswaniTransformerConfig(
            vocab_size=1000, d_model=32, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=64, decoder_ffn_dim=64
        )
        return config, False
    if name == "multi30k_cpu":
        from .run import cpu_preset  # here: benchmarks.run imports `datasets`, which a bare GPU machine may lack

        size, _ = cpu_preset(device)
        config = size.config(training=True)
        config._attn_implementation = size.attn_implementation
        return config, size.cpu_kernels
    return {"base": VaswaniTransformerConfig.base, "big": VaswaniTransformerConfig.big}[name](), False


def measure(
    config: VaswaniTransformerConfig,
    variant: str,
    batches: list[dict],
    args: StepArguments,
    device: str,
    cpu_kernels: bool,
) -> dict:
    """Warm-up steps, then `args.steps` timed steps of one variant on a fresh model (seed 0, the same for every
    variant): seconds, non-pad tokens/s, peak memory, the first step's seconds (compiling, for compiled variants),
    graphs compiled in warm-up and in the timed steps, and the loss of every step."""
    torch.manual_seed(0)
    model = VaswaniTransformerForConditionalGeneration(config).to(device).train()
    blocked = cpu_kernels and variant == "eager"
    if blocked:
        use_cpu_kernels(model)
    chunks = args.output_chunks if variant == "compiled_chunked" else 0
    criterion = LabelSmoothedCrossEntropyCriterion(config.label_smoothing, blocked=blocked, output_chunks=chunks)
    if variant != "eager":
        torch._dynamo.reset()  # compile as a fresh training process would, not as a recompilation of the last one
        criterion = compile_criterion(criterion, backend=args.compile_backend)
    optimizer = build_optimizer(model)  # fused Adam on CUDA and CPU, the paper's betas and epsilon
    scheduler = build_scheduler(optimizer, config.d_model, warmup_steps=4000)  # Eq. 3, as the presets train
    losses = []

    def step(index: int) -> None:
        batch = {name: t.to(device, non_blocking=True) for name, t in batches[index % len(batches)].items()}
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = criterion(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        losses.append(loss.detach())  # on the device: read once, at the end

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    graphs_before = compiled_graphs()
    start = time.perf_counter()
    step(0)
    synchronize(device)
    first_step_seconds = time.perf_counter() - start  # with compiled variants: compiling forward and backward
    for index in range(1, args.warmup_steps):
        step(index)
    synchronize(device)
    graphs_warm = compiled_graphs()
    tokens = sum(
        sum(non_pad_tokens(batches[i % len(batches)]))
        for i in range(args.warmup_steps, args.warmup_steps + args.steps)
    )
    start = time.perf_counter()
    for index in range(args.warmup_steps, args.warmup_steps + args.steps):
        step(index)
    synchronize(device)
    seconds = time.perf_counter() - start
    flops = [
        training_flops(model, batches[i % len(batches)])["flops_per_step"]
        for i in range(args.warmup_steps, args.warmup_steps + args.steps)
    ]
    return {
        "fused_adam": bool(optimizer.defaults["fused"]),
        "first_step_seconds": round(first_step_seconds, 3),
        "graphs_compiled_in_warmup": graphs_warm - graphs_before,
        "graphs_compiled_after_warmup": compiled_graphs() - graphs_warm,
        "seconds": round(seconds, 3),
        "non_pad_tokens": tokens,
        "tokens_per_second": round(tokens / seconds, 1),
        "flops_per_token": sum(flops) / tokens,
        "peak_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device == "cuda" else None,
        "losses": [round(value, 4) for value in torch.stack(losses).float().tolist()],
    }


def compare(variants: dict, model: str, device: str) -> dict:
    """Each compiled variant against eager: speed-up, relative difference of the mean loss over the last 50 steps
    (the same batches, weights and schedule; only dropout's random draws differ), and the targets it is held to."""
    eager = variants.get("eager")
    compared = {}
    for name, measured in variants.items():
        if name == "eager":
            continue
        entry = {
            "compile": target(measured["first_step_seconds"], "<=", COMPILE_SECONDS_TARGET),
            "no_recompilation_after_warmup": target(measured["graphs_compiled_after_warmup"], "==", 0),
        }
        if device == "cuda" and model in MFU_TARGETS:
            entry["mfu"] = target(round(measured["mfu"], 4), ">=", MFU_TARGETS[model])
        if eager is not None:
            entry["speedup_over_eager"] = round(measured["tokens_per_second"] / eager["tokens_per_second"], 3)
            tail = min(50, len(eager["losses"]))
            ours, theirs = statistics.fmean(measured["losses"][-tail:]), statistics.fmean(eager["losses"][-tail:])
            entry["loss_tail_relative_difference"] = target(round(abs(ours - theirs) / theirs, 4), "<=", 0.01)
        compared[name] = entry
    return compared


def markdown(results: dict) -> str:
    """The results as the tables of docs/performance.md."""
    peak = results["bf16_peak"]["peak_gflops"]
    lines = [
        f"# Training step on {results['device_name']} (`python -m benchmarks.gpu_train_step{results['mode_flag']}`)",
        "",
        f"{results['max_tokens']:,} padded tokens a side per step (synthetic batches, lengths rounded to multiples "
        f"of 8), {results['steps']} timed steps after {results['warmup_steps']} warm-up steps, bf16 autocast, fused "
        f"Adam. bf16 matmul peak measured in the same run: {peak / 1e3:,.2f} TFLOP/s. torch "
        f"{results['versions']['torch']}.",
        "",
        "| model | step | non-pad tokens/s | MFU | speed-up | peak memory (MiB) | first step (s) | graphs after "
        "warm-up | loss, last 50 steps |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for model, entry in results["models"].items():
        for variant, measured in entry["variants"].items():
            compared = entry["compared"].get(variant, {})
            tail = measured["losses"][-50:]
            lines.append(
                f"| {model} | {variant} | {measured['tokens_per_second']:,.0f} | {measured['mfu']:.1%} | "
                f"{compared.get('speedup_over_eager', 1.0):.2f}x | {measured['peak_memory_mib'] or '-'} | "
                f"{measured['first_step_seconds']} | {measured['graphs_compiled_after_warmup']} | "
                f"{statistics.fmean(tail):.4f} |"
            )
        for variant in entry["skipped"]:
            lines.append(f"| {model} | {variant} | skipped: past the time budget | | | | | | |")
    lines += ["", "| target | value | goal | holds |", "| --- | --- | --- | --- |"]
    for model, entry in results["models"].items():
        for variant, compared in entry["compared"].items():
            for name, held in compared.items():
                if isinstance(held, dict):
                    lines.append(
                        f"| {model} {variant}: {name} | {held['value']} | {held['target']} | {held['holds']} |"
                    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    """CLI (benchmarks/README.md); returns the results it writes."""
    parser = HfArgumentParser(StepArguments, description=__doc__.split("\n\n")[0])
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    variants = args.variants.split(",")
    if not set(variants) <= set(VARIANTS):
        parser.error(f"--variants must be of {', '.join(VARIANTS)}, got {args.variants}")
    device, models, mode_flag, matmul = "cuda", args.models.split(","), "", (8192, 10)
    if args.compile_backend is None:
        args = dataclasses.replace(args, compile_backend="eager" if args.dry_run else "inductor")
    if args.dry_run:
        device, models, mode_flag, matmul = "cpu", ["tiny"], " --dry-run", (256, 2)
        args = dataclasses.replace(args, max_tokens=min(args.max_tokens, 256), steps=min(args.steps, 3))
        args = dataclasses.replace(args, warmup_steps=min(args.warmup_steps, 2), batches=min(args.batches, 4))
    elif args.cpu:
        device, models, mode_flag, matmul = "cpu", ["multi30k_cpu"], " --cpu", (2048, 5)
        from .run import cpu_preset

        args = dataclasses.replace(args, max_tokens=cpu_preset("cpu")[1])
    elif not torch.cuda.is_available():
        parser.error("no CUDA device: this benchmark measures one GPU (--cpu or --dry-run run on CPU)")
    started = time.perf_counter()
    stem = f"{machine_name(device)}-train-step" + ("-dry-run" if args.dry_run else "")
    results = {
        **environment(device),
        "mode_flag": mode_flag,
        "max_tokens": args.max_tokens,
        "steps": args.steps,
        "warmup_steps": args.warmup_steps,
        "compile_backend": args.compile_backend,
        "bf16_peak": matmul_peak(device, torch.bfloat16, *matmul),
        "models": {},
    }
    for name in models:
        config, cpu_kernels = model_config(name, device, args.dry_run)
        batches = synthetic_batches(config.vocab_size, args.max_tokens, args.batches)
        entry = {"parameters": sum(p.numel() for p in VaswaniTransformerForConditionalGeneration(config).parameters())}
        entry.update(cpu_kernels_in_eager=cpu_kernels, variants={}, skipped=[])
        for variant in variants:
            if time.perf_counter() - started > args.budget_minutes * 60:
                entry["skipped"].append(variant)
                continue
            measured = measure(config, variant, batches, args, device, cpu_kernels)
            measured["mfu"] = model_flops_utilization(
                measured["flops_per_token"], measured["tokens_per_second"], results["bf16_peak"]["peak_gflops"]
            )
            entry["variants"][variant] = measured
            entry["compared"] = compare(entry["variants"], name, device)
            results["models"][name] = entry
            results["total_seconds"] = round(time.perf_counter() - started, 1)
            # Written after every measurement: a run stopped by its time limit keeps what it measured.
            write_report(results, args.output, stem, markdown(results))
            print(f"{name} {variant}: {measured['tokens_per_second']:,.0f} tokens/s", flush=True)
            if device == "cuda":
                torch.cuda.empty_cache()
        entry["compared"] = compare(entry["variants"], name, device)
        results["models"][name] = entry
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    write_report(results, args.output, stem, markdown(results))
    return results


if __name__ == "__main__":
    main()
