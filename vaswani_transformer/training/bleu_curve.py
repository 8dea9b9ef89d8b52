"""Plot validation sacreBLEU against training minutes from a run's `log.jsonl` (written by `training/train.py`).

    python training/plot_bleu_curve.py outputs/multi30k_en_de_cpu [more run dirs] --output docs/bleu_curve.png

Each training log line carries `step` and `elapsed_seconds` (training wall-clock, validation included); each
validation line carries `step` and `eval_bleu`. A validation point is placed at the elapsed time of the training line
with the same step. The final test score (`test_bleu`) is drawn as a marker at the end of the run. The command
(`vaswani-plot-bleu-curve`) is `training.cli.plot_bleu_curve_main`.
"""

import json
from collections.abc import Iterator, Sequence
from pathlib import Path


__all__ = ["DEFAULT_TITLE", "bleu_curve", "log_records", "plot_bleu_curves"]

# The plot's title unless told otherwise: the presets' runs train on the 2 CPU cores of the project VM.
DEFAULT_TITLE = "Validation sacreBLEU during training (2 CPU cores)"


def log_records(log_path: str | Path) -> Iterator[tuple[int, dict]]:
    """`(line number, record)` for each non-blank line of a run's `log.jsonl`, in order.

    Raises:
        FileNotFoundError: if `log_path` does not exist.
        ValueError: naming the file and line number of a line that is not JSON.
    """
    path = Path(log_path)
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not a JSON line ({error.msg})") from error


def bleu_curve(log_path: str | Path) -> tuple[list[tuple[float, float]], float | None, float]:
    """Read `log.jsonl`: `([(minutes, validation BLEU), ...], test BLEU or None, minutes of training in all)`.

    Raises:
        FileNotFoundError: if `log_path` does not exist.
        ValueError: naming the file and line number of a line that is not JSON, or a validation step that has no
            training line with its elapsed time.
    """
    elapsed_by_step, validation, test_bleu, last_minutes = {}, [], None, 0.0
    path = Path(log_path)
    for number, record in log_records(path):
        if "elapsed_seconds" in record:
            elapsed_by_step[record["step"]] = record["elapsed_seconds"] / 60
            last_minutes = max(last_minutes, elapsed_by_step[record["step"]])
        if "eval_bleu" in record:
            validation.append((record["step"], record["eval_bleu"], number))
        if "test_bleu" in record:
            test_bleu = record["test_bleu"]
    points = []
    for step, bleu, number in validation:
        if step not in elapsed_by_step:
            raise ValueError(f"{path}:{number}: validation at step {step} has no training line with elapsed_seconds")
        points.append((elapsed_by_step[step], bleu))
    return points, test_bleu, last_minutes


def plot_bleu_curves(run_dirs: Sequence[str | Path], output: str | Path, title: str = DEFAULT_TITLE) -> Path:
    """One curve per run directory, saved as a PNG (matplotlib, Agg backend), the test score (if any) as a star at the
    end of the run and in the legend. Creates `output`'s folder if needed; returns `output` as a Path.

    Raises:
        FileNotFoundError, ValueError: as `bleu_curve`, for the first run whose log.jsonl is missing or wrong.
        ImportError: if matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 4))
    for run_dir in run_dirs:
        points, test_bleu, end_minutes = bleu_curve(Path(run_dir) / "log.jsonl")
        minutes, bleus = zip(*points, strict=True) if points else ((), ())
        # The test score goes in the legend: runs of one preset end at nearly the same point, where text would overlap
        test = "" if test_bleu is None else f"; test {test_bleu:.2f}, the star"
        (line,) = axes.plot(minutes, bleus, marker="o", label=f"{Path(run_dir).name} (validation{test})")
        if test_bleu is not None:
            axes.plot([end_minutes], [test_bleu], marker="*", markersize=14, color=line.get_color(), linestyle="")
    axes.set_xlabel("training time (minutes)")
    axes.set_ylabel("sacreBLEU")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(output, dpi=120)
    pyplot.close(figure)
    return output
