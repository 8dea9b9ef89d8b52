"""benchmarks/scale/gpu.py: its figures come from the run's own log.jsonl and results file, warm-up lines left out;
without a GPU it refuses to run instead of measuring the CPU."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.scale import gpu


def test_summary_reads_throughput_memory_and_bleu_from_the_run(tmp_path):
    lines = [
        {"step": step, "loss": 10.0 - step / 100, "tokens_per_second": tps, "elapsed_seconds": step / 10.0}
        | {"rss_mib": 3000.0 + step, "cuda_max_memory_mib": 15000.0 + step % 3}
        for step, tps in ((50, 90_000.0), (100, 300_000.0), (150, 380_000.0), (200, 400_000.0), (250, 390_000.0))
    ]
    lines.append({"step": 250, "test_bleu": 19.2, "test_chrf": 42.0})  # not a training line
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (tmp_path / "results_newstest2014.json").write_text(json.dumps({"bleu": 19.2, "predictions": ["a"]}))
    summary = gpu.summary(tmp_path, skip_steps=100)
    assert summary["steps"] == 250 and summary["train_seconds"] == 25.0
    assert summary["tokens_per_second_median"] == 390_000.0  # of steps 150, 200, 250: the warm-up is left out
    assert summary["cuda_max_memory_mib"] == 15002.0 and summary["rss_mib_max_logged"] == 3250.0
    assert summary["loss"][0] == (50, 9.5) and summary["test"] == {"bleu": 19.2}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_refuses_to_run_without_a_gpu(tmp_path, capsys):
    with pytest.raises(SystemExit) as error:
        gpu.main(["--work_dir", str(tmp_path), "--output", str(tmp_path)])
    assert error.value.code == 2 and "no CUDA device" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written
