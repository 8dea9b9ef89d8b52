"""Flat memory over a training run: resident memory (RSS) from a run's `log.jsonl`, checked against the targets
`MAX_GROWTH` and `MAX_PEAK_MIB` (how to run it and what it writes: benchmarks/README.md)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tempfile
from pathlib import Path

from transformers import HfArgumentParser

from vaswani_transformer.training.bleu_curve import log_records

from . import CPU_PRESET, REPO_ROOT, RESULTS_DIR
from .report import machine_name, target, write_report


__all__ = ["MAX_GROWTH", "MAX_PEAK_MIB", "main", "memory_growth", "rss_samples"]

MAX_GROWTH = 0.05  # RSS at the end over RSS at the start minute, minus one: at most
MAX_PEAK_MIB = 2048.0  # the largest RSS sample of the main job (MiB): at most


def rss_samples(log_path: str | Path) -> list[tuple[int, float, float]]:
    """The training lines of `log.jsonl` that carry `rss_mib`: `[(step, training minutes, RSS in MiB), ...]`.

    Raises:
        FileNotFoundError: if `log_path` does not exist.
        ValueError: naming the file and line of a line that is not JSON, or if no line has `rss_mib` (a log written
            before it was logged).
    """
    path = Path(log_path)
    samples = []
    for _, record in log_records(path):
        if "rss_mib" in record:
            samples.append((record["step"], record["elapsed_seconds"] / 60, float(record["rss_mib"])))
    if not samples:
        raise ValueError(f"{path}: no line has rss_mib (written by training/train.py since resident memory is logged)")
    return samples


def memory_growth(samples: list[tuple[int, float, float]], start_minutes: float = 5.0) -> dict:
    """Growth of RSS from the first sample at or after `start_minutes` of training to the last sample.

    Args:
        samples: `rss_samples` output, in log order.
        start_minutes: where growth is measured from (training minutes).

    Returns:
        {start: {step, minutes, rss_mib}, end: {...}, peak: {...}, min_rss_mib, growth} where growth is
        end RSS / start RSS - 1 (0.05: 5% more memory at the end).

    Raises:
        ValueError: if no sample is at or after `start_minutes` (the run was shorter).
    """
    later = [sample for sample in samples if sample[1] >= start_minutes]
    if not later:
        raise ValueError(
            f"no RSS sample at or after minute {start_minutes:g}: the run logged {samples[-1][1]:.2f} minutes "
            "(pass a smaller --start_minutes, or train longer)"
        )

    def point(sample: tuple[int, float, float]) -> dict:
        return {"step": sample[0], "minutes": round(sample[1], 3), "rss_mib": sample[2]}

    start, end = later[0], samples[-1]
    return {
        "start": point(start),
        "end": point(end),
        "peak": point(max(samples, key=lambda sample: sample[2])),
        "min_rss_mib": min(sample[2] for sample in samples),
        "growth": end[2] / start[2] - 1,
    }


def train(config: Path, max_steps: int, output_dir: Path, threads: int, extra: list[str]) -> Path:
    """Train `config` for `max_steps` steps (no time limit) with `accelerate launch` into `output_dir`; the log.

    Raises:
        subprocess.CalledProcessError: if training fails (its output went to this process's stderr).
    """
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1",
        "--num_cpu_threads_per_process", str(threads), str(REPO_ROOT / "training" / "train.py"),
        "--config", str(config), "--output_dir", str(output_dir), "--max_steps", str(max_steps),
        "--max_train_minutes", "0", "--num_train_epochs", "100000", *extra,
    ]  # fmt: skip
    subprocess.run(command, check=True, cwd=REPO_ROOT)
    return output_dir / "log.jsonl"


def markdown(results: dict) -> str:
    """The figures and targets as markdown."""
    growth = results["growth"]
    lines = [
        f"# Resident memory over training on `{results['machine']}`",
        "",
        f"Run: {results['run']}. {len(results['samples'])} samples (one per log interval); "
        f"RSS = the largest rank's resident set size.",
        "",
        "| | step | training minutes | RSS (MiB) |",
        "|---|---|---|---|",
    ]
    for name in ("start", "end", "peak"):
        entry = growth[name]
        lines.append(f"| {name} | {entry['step']} | {entry['minutes']:.1f} | {entry['rss_mib']:,.1f} |")
    lines += [
        "",
        f"Growth from minute {results['start_minutes']:g} to the end: {growth['growth']:+.2%}; "
        f"lowest sample {growth['min_rss_mib']:,.1f} MiB.",
        "",
        "| target | value | goal | holds |",
        "|---|---|---|---|",
    ]
    for name, entry in results["targets"].items():
        lines.append(f"| {name} | {entry['value']:.4g} | {entry['target']} | {'yes' if entry['holds'] else 'no'} |")
    return "\n".join(lines) + "\n"


def plot(curves: dict[str, list[tuple[int, float, float]]], title: str, path: Path) -> None:
    """RSS (MiB) against training minutes, one line per `label: rss_samples(...)`, saved as a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 3.5))
    for label, samples in curves.items():
        axes.plot([minutes for _, minutes, _ in samples], [rss for _, _, rss in samples], linewidth=1.2, label=label)
    axes.axhline(MAX_PEAK_MIB, color="black", linewidth=0.8, linestyle="--", label=f"target {MAX_PEAK_MIB:,.0f} MiB")
    highest = max(rss for samples in curves.values() for _, _, rss in samples)
    axes.set_ylim(0, max(MAX_PEAK_MIB, highest) * 1.1)
    axes.set_xlabel("training time (minutes)")
    axes.set_ylabel("resident memory (MiB)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)


@dataclasses.dataclass
class TrainingRssArguments:
    """`python -m benchmarks.training_rss [flags] [-- more training/train.py arguments]` (benchmarks/README.md)."""

    log: Path | None = dataclasses.field(default=None, metadata={"help": "Check this run's log.jsonl (no training)."})
    config: Path = dataclasses.field(default=CPU_PRESET, metadata={"help": "The preset to train (without --log)."})
    max_steps: int = dataclasses.field(default=20000, metadata={"help": "Optimizer steps to train (without --log)."})
    threads: int = dataclasses.field(default=2, metadata={"help": "CPU threads of the training process."})
    start_minutes: float = dataclasses.field(default=5.0, metadata={"help": "Growth is measured from this minute."})
    output: str = str(RESULTS_DIR)
    plot: Path | None = dataclasses.field(default=None, metadata={"help": "Also draw RSS against minutes (PNG)."})
    label: str | None = dataclasses.field(default=None, metadata={"help": "The run's name in the plot."})
    compare: list[str] = dataclasses.field(
        default_factory=list,
        metadata={
            "help": "LABEL=LOG: another run's log.jsonl drawn beside it in the plot (not checked); repeatable.",
            "action": "extend",
        },
    )
    title: str = "Resident memory during training (2 CPU cores)"


def main(argv: list[str] | None = None) -> int:
    """CLI (benchmarks/README.md). Returns the exit status: 0 if every target holds, else 1."""
    parser = HfArgumentParser(TrainingRssArguments, description=__doc__.split("\n\n")[0])
    args, rest = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if rest and rest[0] != "--":
        parser.error(f"unrecognized arguments: {' '.join(rest)} (training/train.py arguments go after --)")
    train_args = rest[1:]
    if args.log is None and args.max_steps <= 0:
        parser.error(f"--max_steps must be positive, got {args.max_steps}")
    if args.log is not None and not args.log.is_file():
        parser.error(f"--log {args.log}: no such file")
    compare = {}
    for entry in args.compare:
        label, _, log = entry.partition("=")
        if not label or not Path(log).is_file():
            parser.error(f"--compare {entry}: expected LABEL=LOG with an existing log.jsonl")
        compare[label] = rss_samples(log)

    with tempfile.TemporaryDirectory(prefix="training-rss-") as scratch:
        if args.log is None:
            log = train(args.config, args.max_steps, Path(scratch) / "run", args.threads, train_args)
            run, name = f"`{args.config.name}`, {args.max_steps} steps", f"{args.config.stem}-{args.max_steps}steps"
        else:
            log, run, name = args.log, f"`{args.log}`", args.log.resolve().parent.name
        samples = rss_samples(log)
    growth = memory_growth(samples, args.start_minutes)
    results = {
        "machine": machine_name("cpu"),
        "run": run,
        "start_minutes": args.start_minutes,
        "growth": growth,
        "targets": {
            f"rss_growth_from_minute_{args.start_minutes:g}": target(growth["growth"], "<=", MAX_GROWTH, "g"),
            "peak_rss_mib": target(growth["peak"]["rss_mib"], "<=", MAX_PEAK_MIB, "g"),
        },
        "samples": [{"step": step, "minutes": minutes, "rss_mib": rss} for step, minutes, rss in samples],
    }
    write_report(results, args.output, f"{results['machine']}-training-rss-{name}", markdown(results))
    if args.plot is not None:
        plot({args.label or name: samples, **compare}, args.title, args.plot)
    return 0 if all(entry["holds"] for entry in results["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
