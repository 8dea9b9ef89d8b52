"""The report of `benchmarks.run`: its targets, its markdown table and its bar chart."""

from __future__ import annotations

from pathlib import Path

from vaswani_transformer.training.allocator import DEFAULT_MMAP_THRESHOLD, DEFAULT_TRIM_THRESHOLD

from .contenders import CONTENDERS, P_DROP
from .report import iqr, target


__all__ = ["bar_chart", "markdown", "speedup_ceiling", "targets"]

# The targets: ours against MarianMT on the same machine in the same run (ratios are ours / Marian).
TRAINING_SPEEDUP = 1.25  # training tokens/s, base size, fp32: at least
BEAM4_SPEEDUP = 1.5  # beam-4 sentences/s: at least
TRAINING_MEMORY = 0.9  # peak memory of a training step, base size: at most
TRAINING_MFU = 0.40  # model FLOP utilisation of our training step, base size, fp32: at least
SDPA_OVER_EAGER_ENCODER_MEMORY = 1 / 8  # encoder peak memory at the longest source, sdpa / eager: at most
BF16_TRAINING_SPEEDUP = 1.5  # training tokens/s in bf16 autocast, at every size measured in bf16: at least
BF16_TRAINING_MFU = 0.50  # model FLOP utilisation in bf16 at the base size, of the measured bf16 peak: at least


def speedup_ceiling(row: dict) -> float:
    """The largest ours / Marian training speed-up that the same FLOPs allow on this machine: 1 / Marian's MFU, the
    ratio ours would reach running at 100% of the measured matmul peak (`benchmarks.flops`; the FLOPs of every
    contender are ours' analytic count, the models doing the same arithmetic). A target above it cannot hold here."""
    return 1 / row["mfu"]["marian"]


def targets(results: dict, base: str) -> dict:
    """Each target with the measured value and whether it holds; `base` names the size the targets are set at.
    Training speed-up targets also carry their `ceiling` (`speedup_ceiling`)."""
    train = results["training"][f"{base}/fp32"]
    encoder = results["memory"]["encoder"]
    longest = max(encoder, key=int)
    entries = {
        "training_tokens_per_s_vs_marian_base_fp32": (train["ratio_ours_over_marian"], ">=", TRAINING_SPEEDUP),
        "beam4_sentences_per_s_vs_marian": (
            results["translation"]["beam4"]["ratio_ours_over_marian"],
            ">=",
            BEAM4_SPEEDUP,
        ),
        "identical_translations": (results["translation"]["identical_translations"], "==", True),
        "peak_training_memory_vs_marian_base": (
            results["memory"]["training"][base]["ratio_ours_over_marian"],
            "<=",
            TRAINING_MEMORY,
        ),
        "training_mfu_base_fp32": (train["mfu"]["ours"], ">=", TRAINING_MFU),
        f"sdpa_over_eager_encoder_memory_at_{longest}": (
            encoder[longest]["ratio_sdpa_over_eager"],
            "<=",
            SDPA_OVER_EAGER_ENCODER_MEMORY,
        ),
    }
    ceilings = {"training_tokens_per_s_vs_marian_base_fp32": speedup_ceiling(train)}
    for key, row in results["training"].items():  # the bf16 rows that this run measured (CPU: if bf16 runs)
        size, precision = key.split("/")
        if precision == "bf16":
            name = f"training_tokens_per_s_vs_marian_{size}_bf16"
            entries[name] = (row["ratio_ours_over_marian"], ">=", BF16_TRAINING_SPEEDUP)
            ceilings[name] = speedup_ceiling(row)
            if size == base:
                entries[f"training_mfu_{base}_bf16"] = (row["mfu"]["ours"], ">=", BF16_TRAINING_MFU)
    return {
        name: {**target(value, op, bound, ".4g"), **({"ceiling": ceilings[name]} if name in ceilings else {})}
        for name, (value, op, bound) in entries.items()
    }


ALLOCATOR_NOTES = {
    "default": "Memory allocator: glibc malloc with its defaults, for every contender.",
    "keep_freed_memory": "Memory allocator: glibc malloc keeping freed memory (`--keep_freed_memory`: "
    f"M_MMAP_THRESHOLD {DEFAULT_MMAP_THRESHOLD >> 20} MiB, M_TRIM_THRESHOLD {DEFAULT_TRIM_THRESHOLD >> 20} MiB, "
    "as training/train.py sets it on CPU), for every contender; the memory sections run in fresh processes with "
    "malloc's defaults.",
}


def markdown(results: dict) -> str:
    """The results as markdown: one table per section, then the targets."""
    lines = [
        f"# Benchmarks on `{results['machine']}` ({results['device']}{', quick' if results['quick'] else ''})",
        "",
        f"torch {results['versions']['torch']}, transformers {results['versions']['transformers']}; "
        f"median of {results['repeats']} rounds after a warm-up; ratios are ours / peer (speed: of the medians; "
        "'per round': the median and quartiles of the ratios within each round).",
        "",
        # Results files written before the allocator and the dropouts were recorded render without their notes.
        *([ALLOCATOR_NOTES[results["allocator"]], ""] if "allocator" in results else []),
        "## Training step (forward + backward + Adam), source + target tokens/s",
        "",
        "| size / precision | batch (src, tgt) | ours | MarianMT | nn.Transformer | ours/Marian | per round (IQR) "
        "| ours/torch | MFU ours | MFU Marian | MFU torch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, entry in results["training"].items():
        rate, mfu = entry["tokens_per_s"], entry["mfu"]
        lines.append(
            f"| {key} | {entry['src_shape']}, {entry['tgt_shape']} | {rate['ours']:,.0f} | "
            f"{rate['marian']:,.0f} | {rate['torch']:,.0f} | {entry['ratio_ours_over_marian']:.3f} | "
            f"{iqr(entry['paired_ratio_ours_over_marian'])} | "
            f"{entry['ratio_ours_over_torch']:.3f} | {mfu['ours']:.1%} | {mfu['marian']:.1%} | "
            f"{mfu['torch']:.1%} |"
        )
    peaks = ", ".join(
        f"{k} {v['peak_gflops']:,.1f} GFLOP/s (median {v['median_gflops']:,.1f})"
        for k, v in results["matmul_peak"].items()
    )
    fp32_peak = results["matmul_peak"]["fp32"]
    n, runs = fp32_peak["n"], len(fp32_peak["seconds"])
    sizes = {entry["size"]["name"]: entry["size"] for entry in results["training"].values()}
    if all("attention_dropout" in size for size in sizes.values()):
        dropouts = ", ".join(
            f"{name} {size['attention_dropout']:g} and {size['activation_dropout']:g}" for name, size in sizes.items()
        )
        lines += [
            "",
            f"Dropout: P_drop {P_DROP:g} on every sub-layer output and embedding sum (§5.4); on the attention "
            f"weights and the feed-forward's ReLU output (not in the paper): {dropouts}, every contender alike.",
        ]
    lines += ["", f"Matmul peak (torch.mm of two {n} x {n} matrices, best of {runs} runs): {peaks}.", ""]
    translation = results["translation"]
    lines += [
        f"## Translation, {translation['sentences']} Multi30k test_2016_flickr sentences, batch "
        f"{translation['batch_size']}, max {translation['max_new_tokens']} new tokens",
        "",
        f"Model: {translation['model']}; size {translation['size']}.",
        "",
        "| search | ours sent/s | Marian sent/s | ours tok/s | Marian tok/s | ours/Marian | per round (IQR) "
        "| identical ids |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label in ("greedy", "beam4"):
        entry = translation[label]
        sent, tok = entry["sentences_per_s"], entry["generated_tokens_per_s"]
        lines.append(
            f"| {label} | {sent['ours']:,.2f} | {sent['marian']:,.2f} | {tok['ours']:,.0f} | "
            f"{tok['marian']:,.0f} | {entry['ratio_ours_over_marian']:.3f} | "
            f"{iqr(entry['paired_ratio_ours_over_marian'])} | {entry['identical_translations']} |"
        )
    memory = results["memory"]
    lines += [
        "",
        "## Peak memory above the level before (MiB; fresh process each)",
        "",
        "| measurement | ours | MarianMT | nn.Transformer | ours/Marian |",
        "|---|---|---|---|---|",
    ]
    for name, entry in memory["training"].items():
        lines.append(
            f"| training step, {name} fp32 | {entry['ours']['delta_mib']:,.1f} | "
            f"{entry['marian']['delta_mib']:,.1f} | {entry['torch']['delta_mib']:,.1f} | "
            f"{entry['ratio_ours_over_marian']:.3f} |"
        )
    generation = memory["generation"]
    lines.append(
        f"| beam-4 generation, one batch | {generation['ours']['delta_mib']:,.1f} | "
        f"{generation['marian']['delta_mib']:,.1f} | | {generation['ratio_ours_over_marian']:.3f} |"
    )
    lines += [
        "",
        "## Encoder forward peak memory, base size, batch 1 (MiB)",
        "",
        "| source length | sdpa | eager | sdpa/eager |",
        "|---|---|---|---|",
    ]
    for length, entry in memory["encoder"].items():
        lines.append(
            f"| {length} | {entry['sdpa']['delta_mib']:,.1f} | {entry['eager']['delta_mib']:,.1f} | "
            f"{entry['ratio_sdpa_over_eager']:.4f} |"
        )
    lines += [
        "",
        "## Targets",
        "",
    ]
    with_ceilings = any("ceiling" in entry for entry in results["targets"].values())  # recorded since they exist
    if with_ceilings:
        lines += [
            "Ceiling: for a training speed-up, the largest ours / Marian ratio the same FLOPs allow here, 1 / "
            "Marian's MFU (ours at 100% of the measured matmul peak).",
            "",
        ]
    lines += ["| target | value | goal | holds |" + (" ceiling |" if with_ceilings else ""), "|---|---|---|---|"]
    lines[-1] += "---|" if with_ceilings else ""
    for name, entry in results["targets"].items():
        value = entry["value"] if isinstance(entry["value"], bool) else f"{entry['value']:.3f}"
        cells = [name, str(value), entry["target"], "yes" if entry["holds"] else "no"]
        if with_ceilings:
            cells.append(f"{entry['ceiling']:.3f}" if "ceiling" in entry else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(results: dict, base: str, path: Path) -> None:
    """Ratios as 'times better than the peer' (speed: ours/peer; memory: peer/ours), with each target marked, and
    the MFU of each contender at the `base` size in fp32."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    bars: list[tuple[str, float, float | None]] = []  # label, value, target
    base_fp32 = f"{base}/fp32"
    for key, entry in results["training"].items():
        target = TRAINING_SPEEDUP if key == base_fp32 else None
        bars.append((f"train {key} vs Marian", entry["ratio_ours_over_marian"], target))
        bars.append((f"train {key} vs nn.Transformer", entry["ratio_ours_over_torch"], None))
    for label in ("greedy", "beam4"):
        target = BEAM4_SPEEDUP if label == "beam4" else None
        bars.append((f"translate {label} vs Marian", results["translation"][label]["ratio_ours_over_marian"], target))
    memory = results["memory"]
    for name, entry in memory["training"].items():
        bars.append((f"train memory {name}: Marian/ours", 1 / entry["ratio_ours_over_marian"], 1 / TRAINING_MEMORY))
    bars.append(("beam-4 memory: Marian/ours", 1 / memory["generation"]["ratio_ours_over_marian"], None))
    longest = max(memory["encoder"], key=int)
    eager_over_sdpa = 1 / memory["encoder"][longest]["ratio_sdpa_over_eager"]
    bars.append((f"encoder memory at {longest}: eager/sdpa", eager_over_sdpa, 1 / SDPA_OVER_EAGER_ENCODER_MEMORY))

    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 0.42 * len(bars) + 1.5), width_ratios=(3, 1))
    positions = range(len(bars))
    left.barh(
        positions, [value for _, value, _ in bars], color=["tab:green" if v >= 1 else "tab:red" for _, v, _ in bars]
    )
    for position, (_, value, target) in zip(positions, bars, strict=True):
        left.text(value, position, f" {value:.2f}x", va="center", fontsize=8)
        if target is not None:
            left.plot([target, target], [position - 0.4, position + 0.4], color="black", linewidth=2)
    left.set_xscale("log")
    left.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%gx"))
    left.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    left.axvline(1.0, color="grey", linewidth=0.8)
    left.set_yticks(list(positions), [label for label, _, _ in bars], fontsize=8)
    left.invert_yaxis()
    left.set_xlabel("times better than the peer (log scale; black tick = target)")
    entry = results["training"][base_fp32]
    right.bar(range(3), [entry["mfu"][kind] * 100 for kind in CONTENDERS], color="tab:blue")
    right.axhline(TRAINING_MFU * 100, color="black", linewidth=1)
    right.set_xticks(range(3), ["ours", "Marian", "torch"])
    right.set_ylabel(f"MFU % of matmul peak ({base_fp32})")
    figure.suptitle(f"vaswani_transformer vs peers on {results['machine']} ({results['device']})")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
