"""Each committed results file renders again to its committed Markdown: the report code keeps the results' format."""

from __future__ import annotations

import json

import pytest

from benchmarks import RESULTS_DIR
from benchmarks.deploy import markdown as deploy_markdown
from benchmarks.generation import markdown as generation_markdown
from benchmarks.gpu_train_step import markdown as train_step_markdown
from benchmarks.run_report import markdown as run_markdown
from benchmarks.scale.gpu import markdown as scale_gpu_markdown
from benchmarks.scale.run import markdown as scale_markdown
from benchmarks.training_rss import markdown as training_rss_markdown


def renderer(stem: str):
    """The `markdown` function of the benchmark that writes `<stem>.md`, known by the stem's suffix."""
    for marker, render in (
        ("-generation", generation_markdown),
        ("-train-step", train_step_markdown),
        ("-deploy", deploy_markdown),
        ("-training-rss-", training_rss_markdown),
        ("-scale-gpu", scale_gpu_markdown),
        ("-scale", scale_markdown),
    ):
        if marker in stem:
            return render
    return run_markdown


REPORTS = sorted(RESULTS_DIR.glob("*.md"))


def test_every_results_table_has_its_json():
    assert REPORTS, f"no results in {RESULTS_DIR}"
    assert all(report.with_suffix(".json").is_file() for report in REPORTS)


@pytest.mark.parametrize("report", REPORTS, ids=[report.stem for report in REPORTS])
def test_results_json_renders_to_the_committed_markdown(report):
    results = json.loads(report.with_suffix(".json").read_text())
    assert renderer(report.stem)(results) == report.read_text()
