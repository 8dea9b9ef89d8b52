"""The flat-memory check reads RSS from a run's log.jsonl, measures growth from the start minute, and fails the run
when memory grows or peaks past the targets."""

from __future__ import annotations

import json

import pytest

from benchmarks.report import machine_name
from benchmarks.training_rss import MAX_PEAK_MIB, main, memory_growth, rss_samples


def write_log(path, rss_by_minute: dict[float, float]) -> None:
    records = []
    for step, (minutes, rss) in enumerate(rss_by_minute.items(), start=1):
        records.append({"step": step * 50, "loss": 3.0, "elapsed_seconds": minutes * 60, "rss_mib": rss})
        if step % 2 == 0:
            records.append({"step": step * 50, "eval_loss": 3.1, "eval_bleu": 10.0})  # no rss_mib: skipped
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


def test_growth_is_measured_from_the_start_minute_to_the_end(tmp_path):
    log = tmp_path / "run" / "log.jsonl"
    write_log(log, {1.0: 900.0, 4.5: 1200.0, 5.5: 1000.0, 20.0: 1300.0, 40.0: 1040.0})
    samples = rss_samples(log)
    assert samples == [
        (50, 1.0, 900.0),
        (100, 4.5, 1200.0),
        (150, 5.5, 1000.0),
        (200, 20.0, 1300.0),
        (250, 40.0, 1040.0),
    ]
    growth = memory_growth(samples, start_minutes=5.0)
    assert growth["start"] == {"step": 150, "minutes": 5.5, "rss_mib": 1000.0}
    assert growth["end"]["rss_mib"] == 1040.0 and growth["peak"]["rss_mib"] == 1300.0
    assert growth["growth"] == pytest.approx(0.04) and growth["min_rss_mib"] == 900.0
    with pytest.raises(ValueError, match="no RSS sample at or after minute 50: the run logged 40.00 minutes"):
        memory_growth(samples, start_minutes=50)


def test_logs_without_rss_or_with_a_broken_line_name_the_file(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1, "loss": 2.0, "elapsed_seconds": 1.0}\n')
    with pytest.raises(ValueError, match="log.jsonl: no line has rss_mib"):
        rss_samples(log)
    log.write_text('{"step": 1, "loss": 2.0, "elapsed_seconds": 1.0, "rss_mib": 5.0}\n{"step"\n')
    with pytest.raises(ValueError, match=r"log.jsonl:2: not a JSON line"):
        rss_samples(log)


@pytest.mark.parametrize(
    ("rss_by_minute", "status", "holds"),
    [
        ({2.0: 800.0, 6.0: 1000.0, 30.0: 1049.0}, 0, [True, True]),
        ({2.0: 800.0, 6.0: 1000.0, 30.0: 1060.0}, 1, [False, True]),  # grew 6%
        ({2.0: 800.0, 6.0: MAX_PEAK_MIB + 100, 30.0: MAX_PEAK_MIB + 100}, 1, [True, False]),  # flat, too high
    ],
)
def test_cli_writes_its_results_then_fails_a_target_that_does_not_hold(tmp_path, rss_by_minute, status, holds):
    log = tmp_path / "main-job" / "log.jsonl"
    write_log(log, rss_by_minute)
    plot = tmp_path / "rss.png"
    assert main(["--log", str(log), "--output", str(tmp_path / "results"), "--plot", str(plot)]) == status
    (written,) = (tmp_path / "results").glob("*-training-rss-main-job.json")
    results = json.loads(written.read_text())
    assert [entry["holds"] for entry in results["targets"].values()] == holds
    assert len(results["samples"]) == 3 and written.with_suffix(".md").is_file()
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_folder_with_dots_names_the_whole_results_file(tmp_path):
    log = tmp_path / "scale-4.5m" / "log.jsonl"
    write_log(log, {2.0: 800.0, 6.0: 1000.0, 30.0: 1010.0})
    assert main(["--log", str(log), "--output", str(tmp_path / "results")]) == 0
    stem = f"{machine_name('cpu')}-training-rss-scale-4.5m"
    assert sorted(path.name for path in (tmp_path / "results").iterdir()) == [f"{stem}.json", f"{stem}.md"]
