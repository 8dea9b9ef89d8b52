"""Speed and memory of `VaswaniTransformerForConditionalGeneration` side by side with its peers, in one run: training
step throughput and MFU, translation throughput, peak memory (how to run it and what it writes: benchmarks/README.md).

Peers, on the same machine in the same run, so that only ratios matter (absolute times on a shared machine are
noise): MarianMT with the paper's math and the same model on `torch.nn.Transformer` (`benchmarks.contenders`).
"""

from __future__ import annotations

import dataclasses
import gc
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import HfArgumentParser

from vaswani_transformer import VaswaniTransformerConfig
from vaswani_transformer.training.allocator import keep_freed_memory
from vaswani_transformer.training.arguments import ARCHITECTURE_FIELDS, TrainingArguments, read_config_file
from vaswani_transformer.training.batching import non_pad_tokens
from vaswani_transformer.training.data import default_data_dir

from . import CPU_PRESET, RESULTS_DIR
from .contenders import (
    CONTENDERS,
    RANDOM_MARIAN_INIT_STD,
    Size,
    build_contender,
    make_training_step,
    prepared_batch,
    translation_models,
)
from .data import load_tokenizer, training_batch, translation_sentences
from .flops import model_flops_utilization, training_flops
from .memory import memory_section
from .report import environment, write_report
from .run_report import bar_chart, markdown, targets
from .timing import bf16_supported, matmul_peak, medians, paired_speedup, synchronize, time_interleaved


__all__ = ["Plan", "main", "plan"]


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one run measures; `plan(quick, device)` gives the full or the smoke version."""

    repeats: int
    tokenizer_sentences: int  # Multi30k train pairs the tokenizer learns from (both languages)
    tokenizer_vocab: int
    sizes: tuple[Size, ...]  # training sizes: [0] the Multi30k CPU preset, [-1] the paper's base (the targets' size)
    train_tokens: dict[str, int]  # padded tokens per side in the training batch, by size name
    batch_pool: int | None  # the training batch is made from the first `batch_pool` train pairs (None: all)
    train_precisions: dict[str, tuple[str, ...]]  # by size name
    translate_size: str
    translate_sentences: int
    translate_batch: int
    max_new_tokens: int
    memory_sizes: tuple[str, ...]
    encoder_lengths: tuple[int, ...]
    matmul_n: int
    fresh_process_per_measurement: bool


def cpu_preset(device: str) -> tuple[Size, int]:
    """The Multi30k CPU preset's size and vocabulary, attention kernel, attention and activation dropout and CPU
    kernels (on CPU only), and its `max_tokens` (padded tokens per side of a batch), read from `benchmarks.CPU_PRESET`.

    Raises:
        FileNotFoundError, ValueError: from `read_config_file`, naming the file.
    """
    values = read_config_file(CPU_PRESET)
    architecture = {name: values[name] for name in ARCHITECTURE_FIELDS if name in values}
    config = VaswaniTransformerConfig(vocab_size=values["vocab_size"], **architecture)  # the tokenizer's vocabulary
    settings = {name: values[name] for name in ("attn_implementation", "attention_dropout", "activation_dropout")}
    cpu_kernels = device == "cpu" and values.get("cpu_kernels", TrainingArguments.cpu_kernels)
    return Size.of("multi30k_cpu", config, cpu_kernels=cpu_kernels, **settings), values["max_tokens"]


def plan(quick: bool, device: str) -> Plan:
    """The full run for `device`, or (`quick`) a smoke run of tiny sizes that checks every section end to end."""
    if quick:
        return Plan(
            repeats=2,
            tokenizer_sentences=2000,
            tokenizer_vocab=1000,
            sizes=(Size("tiny", 32, 2, 4, 64, 1000, "eager"), Size("small", 64, 2, 4, 128, 2000)),
            train_tokens={"tiny": 256, "small": 256},
            batch_pool=2000,
            train_precisions={"tiny": ("fp32", "bf16"), "small": ("fp32",)},
            translate_size="tiny",
            translate_sentences=32,
            translate_batch=32,
            max_new_tokens=12,
            memory_sizes=("small",),
            encoder_lengths=(64, 256),
            matmul_n=512,
            fresh_process_per_measurement=False,  # one worker for all: importing torch dominates a smoke run
        )
    cuda = device == "cuda"
    preset, preset_tokens = cpu_preset(device)
    # Base: Table 3's base model with the paper's vocabulary of 37000 (§5.1), so that the output projection costs
    # what it costs there; the batch's ids come from the preset's Multi30k tokenizer. On CPU with its kernels.
    base = Size.of("base", VaswaniTransformerConfig.base(), cpu_kernels=preset.cpu_kernels)
    # On CPU, bf16 at the base size also with eager attention (ours and Marian alike), the kernel the CPU presets
    # train with: on short sentences PyTorch's CPU flash-attention backward takes a large share of an SDPA step.
    base_eager = dataclasses.replace(base, name="base_eager", attn_implementation="eager")
    return Plan(
        repeats=9,  # odd, for a true median; many, because a shared machine's step times swing between rounds
        tokenizer_sentences=29000,
        tokenizer_vocab=preset.vocab_size,
        sizes=(preset, base) if cuda else (preset, base_eager, base),  # [-1]: the targets' size
        # The preset's batch as it trains; base at 1024 tokens per side keeps a CPU run within minutes.
        train_tokens={preset.name: preset_tokens, base.name: 4096 if cuda else 1024, base_eager.name: 1024},
        batch_pool=None,
        train_precisions={preset.name: ("fp32", "bf16"), base.name: ("fp32", "bf16"), base_eager.name: ("bf16",)},
        translate_size="multi30k_cpu",
        translate_sentences=200 if cuda else 64,
        translate_batch=32,
        max_new_tokens=32,
        memory_sizes=("multi30k_cpu", "base"),
        encoder_lengths=(128, 256, 512, 1024, 2048, 4096),
        matmul_n=4096 if cuda else 2048,
        fresh_process_per_measurement=True,
    )


# Sections ------------------------------------------------------------------------------------------------------


def training_section(args, run_plan: Plan, tokenizer, peaks: dict) -> dict:
    """Training-step throughput and MFU of every contender, by size and precision (section 1, 5)."""
    section = {}
    bf16 = bf16_supported(args.device)
    for size in run_plan.sizes:
        batch = prepared_batch(
            training_batch(tokenizer, args.data_dir, run_plan.train_tokens[size.name], run_plan.batch_pool),
            args.device,
        )
        tokens = sum(non_pad_tokens(batch))
        models = {kind: build_contender(kind, size).to(args.device) for kind in CONTENDERS}
        flops = training_flops(models["ours"], batch)
        for precision in run_plan.train_precisions[size.name]:
            if precision == "bf16" and not bf16:
                continue
            steps = {
                kind: make_training_step(kind, model, size, batch, precision, args.device)
                for kind, model in models.items()
            }
            times = time_interleaved(steps, run_plan.repeats)
            median = medians(times)
            tokens_per_s = {kind: tokens / seconds for kind, seconds in median.items()}
            peak_gflops = peaks[precision]["peak_gflops"]
            section[f"{size.name}/{precision}"] = {
                "size": dataclasses.asdict(size),
                "precision": precision,
                "batch_pairs": batch["input_ids"].shape[0],
                "src_shape": list(batch["input_ids"].shape),
                "tgt_shape": list(batch["labels"].shape),
                "tokens_per_step": tokens,
                "seconds": times,
                "median_seconds": median,
                "tokens_per_s": tokens_per_s,
                "ratio_ours_over_marian": tokens_per_s["ours"] / tokens_per_s["marian"],
                "ratio_ours_over_torch": tokens_per_s["ours"] / tokens_per_s["torch"],
                "paired_ratio_ours_over_marian": paired_speedup(times, "marian"),
                "flops": flops,
                "mfu": {
                    kind: model_flops_utilization(flops["flops_per_token"], rate, peak_gflops)
                    for kind, rate in tokens_per_s.items()
                },
            }
            print(
                f"train {size.name}/{precision}: " + ", ".join(f"{k} {v:,.0f} tok/s" for k, v in tokens_per_s.items())
            )
        del models
        gc.collect()
    return section


def translation_section(args, run_plan: Plan, tokenizer) -> dict:
    """Greedy and beam-4 translation throughput of ours and Marian holding the same weights, and whether their token
    ids are identical (section 2)."""
    size = next(size for size in run_plan.sizes if size.name == run_plan.translate_size)
    marian, ours, model_tokenizer = translation_models(size, args.model_dir)
    tokenizer = model_tokenizer or tokenizer
    marian, ours = marian.to(args.device), ours.to(args.device)
    sentences = translation_sentences(args.data_dir, run_plan.translate_sentences)
    batches = [
        tokenizer(sentences[i : i + run_plan.translate_batch], return_tensors="pt", padding=True).to(args.device)
        for i in range(0, len(sentences), run_plan.translate_batch)
    ]
    config = ours.config
    section = {
        "model": args.model_dir
        or f"random Marian (init_std {RANDOM_MARIAN_INIT_STD}) and its conversion by from_marian",
        "size": {
            "name": "model_dir" if args.model_dir else size.name,
            "d_model": config.d_model,
            "layers": config.encoder_layers,
            "heads": config.encoder_attention_heads,
            "ffn_dim": config.encoder_ffn_dim,
            "vocab_size": config.vocab_size,
        },
        "sentences": len(sentences),
        "batch_size": run_plan.translate_batch,
        "max_new_tokens": run_plan.max_new_tokens,
        "precision": "fp32",
    }
    outputs: dict[str, list[torch.Tensor]] = {}

    def translate(model, name: str, num_beams: int) -> Callable[[], None]:
        def run() -> None:
            kwargs = dict(num_beams=num_beams, max_new_tokens=run_plan.max_new_tokens, do_sample=False)
            with torch.no_grad():
                outputs[name] = [model.generate(**batch, **kwargs) for batch in batches]
            synchronize(args.device)

        return run

    identical_all = True
    for label, num_beams in (("greedy", 1), ("beam4", 4)):
        times = time_interleaved(
            {"ours": translate(ours, "ours", num_beams), "marian": translate(marian, "marian", num_beams)},
            run_plan.repeats,
        )
        identical = all(torch.equal(a, b) for a, b in zip(outputs["ours"], outputs["marian"], strict=True))
        identical_all &= identical
        generated = sum(int((out[:, 1:] != tokenizer.pad_token_id).sum()) for out in outputs["marian"])
        distinct = len({token for out in outputs["marian"] for token in out[:, 1:].flatten().tolist()})
        median = medians(times)
        sentences_per_s = {kind: len(sentences) / seconds for kind, seconds in median.items()}
        section[label] = {
            "num_beams": num_beams,
            "seconds": times,
            "median_seconds": median,
            "sentences_per_s": sentences_per_s,
            "generated_tokens_per_s": {kind: generated / seconds for kind, seconds in median.items()},
            "generated_tokens": generated,
            "distinct_generated_tokens": distinct,
            "ratio_ours_over_marian": sentences_per_s["ours"] / sentences_per_s["marian"],
            "paired_ratio_ours_over_marian": paired_speedup(times, "marian"),
            "identical_translations": identical,
        }
        print(
            f"translate {label}: "
            + ", ".join(f"{k} {v:,.2f} sent/s" for k, v in sentences_per_s.items())
            + f", identical {identical}"
        )
    section["identical_translations"] = identical_all
    return section


# Main ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class RunArguments:
    """`python -m benchmarks.run` (benchmarks/README.md)."""

    quick: bool = dataclasses.field(default=False, metadata={"help": "Tiny sizes, 2 repeats: a smoke run."})
    device: str = dataclasses.field(default="cpu", metadata={"choices": ["cpu", "cuda"]})
    output: str = str(RESULTS_DIR)
    data_dir: Path = dataclasses.field(default_factory=default_data_dir, metadata={"help": "The Multi30k folder."})
    model_dir: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "A trained model (post-norm; e.g. outputs/multi30k_en_de_cpu) for the translation sections, with "
            "its Marian twin from to_marian; default: a random Marian of the CPU preset size and its conversion."
        },
    )
    keep_freed_memory: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "CPU: time training and translation with glibc malloc keeping freed memory, as training/train.py "
            "runs on CPU (for every contender), and add -keep-freed-memory to the report's name."
        },
    )


def main(argv: list[str] | None = None) -> None:
    """CLI (benchmarks/README.md). Exits non-zero, after writing its results, if ours and Marian translate
    differently."""
    parser = HfArgumentParser(RunArguments, description=__doc__.split("\n\n")[0])
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    if args.keep_freed_memory and args.device != "cpu":
        parser.error("--keep_freed_memory is a setting of glibc malloc for CPU runs; drop it with --device cuda")
    if args.quick:
        torch.set_num_threads(1)  # a smoke run: one thread is robust when the machine is busy with other work
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device")
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32: generation must match Marian token for token

    started = time.perf_counter()
    run_plan = plan(args.quick, args.device)
    if args.model_dir is not None:  # a trained model stops at </s>: room for its longest translations
        run_plan = dataclasses.replace(run_plan, max_new_tokens=4 * run_plan.max_new_tokens)
    tokenizer = load_tokenizer(args.data_dir, run_plan.tokenizer_sentences, run_plan.tokenizer_vocab)
    # The vocabulary of the sizes is the plan's; the tokenizer's ids (< its vocabulary) must fit in every one.
    assert all(len(tokenizer) <= size.vocab_size for size in run_plan.sizes), "tokenizer larger than a model vocab"
    allocator = "default"
    if args.keep_freed_memory:  # after the tokenizer, as train.py sets it after data preparation
        if not keep_freed_memory():
            parser.error("--keep_freed_memory: glibc malloc did not accept the setting on this system (see the log)")
        allocator = "keep_freed_memory"
    peak_repeats = max(2 * run_plan.repeats, 5)
    peaks = {"fp32": matmul_peak(args.device, torch.float32, run_plan.matmul_n, peak_repeats)}
    peaks["bf16"] = matmul_peak(args.device, torch.bfloat16, run_plan.matmul_n, peak_repeats)
    print("matmul peak: " + ", ".join(f"{k} {v['peak_gflops']:,.1f} GFLOP/s" for k, v in peaks.items()))

    results = {
        **environment(args.device),
        "allocator": allocator,
        "quick": args.quick,
        "repeats": run_plan.repeats,
        "tokenizer": {"train_pairs": run_plan.tokenizer_sentences, "vocab_size": len(tokenizer)},
        "matmul_peak": peaks,
    }
    results["section_seconds"] = {"setup": time.perf_counter() - started}
    for name, section in (
        ("training", lambda: training_section(args, run_plan, tokenizer, peaks)),
        ("translation", lambda: translation_section(args, run_plan, tokenizer)),
        ("memory", lambda: memory_section(run_plan, args.device, args.data_dir, args.model_dir, args.quick)),
    ):
        section_started = time.perf_counter()
        results[name] = section()
        results["section_seconds"][name] = time.perf_counter() - section_started
    base = run_plan.sizes[-1].name
    results["targets"] = targets(results, base)
    results["wall_seconds"] = time.perf_counter() - started

    name = results["machine"] + ("-keep-freed-memory" if allocator == "keep_freed_memory" else "")
    stem = write_report(results, args.output, name, markdown(results))
    bar_chart(results, base, Path(f"{stem}.png"))
    print(f"wrote {stem}.json, .md, .png in {results['wall_seconds']:.0f} s")
    if not results["translation"]["identical_translations"]:
        raise SystemExit("ours and MarianMT produced different translations (token ids); see the JSON")


if __name__ == "__main__":
    main()
