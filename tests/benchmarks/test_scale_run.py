"""benchmarks/scale/run.py reads its phase times from train.py's log lines: the lines train.py writes."""

from __future__ import annotations

from datetime import datetime

from benchmarks.scale.run import phase_seconds


LOGGER = "vaswani_transformer.training.train"


def test_phase_seconds_reads_train_py_log_lines():
    started = datetime(2026, 11, 22, 10, 0, 0).timestamp()
    stderr = "\n".join(
        [
            f"2026-11-22 10:00:05,000 INFO {LOGGER}: training a 37000-token shared BPE ...",
            f"2026-11-22 10:00:35,250 INFO {LOGGER}: trained the shared BPE vocabulary in 30.2 s",
            "progress bar noise\r",
            f"2026-11-22 10:01:26,000 INFO {LOGGER}: train: tokenized 1000000 pairs in 50.7 s "
            "(19724 pairs/s; fast when read back from the datasets cache)",
            f"2026-11-22 10:01:30,500 INFO {LOGGER}: model: base preset, 63.08M parameters",
        ]
    )
    assert phase_seconds(stderr, started) == {
        "bpe_seconds": 30.2,
        "tokenize_seconds": 50.7,
        "tokenize_pairs_per_second": 19724.0,
        "launch_to_model_seconds": 90.5,
    }
