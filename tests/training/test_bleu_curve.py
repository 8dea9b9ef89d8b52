"""The BLEU-against-minutes curve drawn from a run's log.jsonl."""

from __future__ import annotations

import json

import pytest

from vaswani_transformer.training.bleu_curve import bleu_curve
from vaswani_transformer.training.cli import plot_bleu_curve_main


def test_bleu_curve_places_validation_at_the_training_clock(tmp_path):
    records = [
        {"step": 50, "loss": 5.0, "elapsed_seconds": 60.0},
        {"step": 100, "loss": 4.0, "elapsed_seconds": 120.0},
        {"step": 100, "eval_loss": 4.1, "eval_bleu": 12.5},
        {"step": 150, "loss": 3.0, "elapsed_seconds": 210.0},
        {"step": 150, "test_bleu": 20.0, "test_chrf": 40.0},
    ]
    log = tmp_path / "run" / "log.jsonl"
    log.parent.mkdir()
    log.write_text("\n".join(json.dumps(record) for record in records) + "\n")
    assert bleu_curve(log) == ([(2.0, 12.5)], 20.0, 3.5)
    plot_bleu_curve_main([str(log.parent), "--output", str(tmp_path / "curve.png")])
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log.write_text(log.read_text() + "{not json\n")
    with pytest.raises(ValueError, match=r"log.jsonl:6: not a JSON line"):
        bleu_curve(log)
