"""`python -m benchmarks.run --quick` runs end to end and writes a complete, sane report; the parts it is built from
(the benchmark batch, the paired speed-up) do what they say."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT

from benchmarks.data import training_batch
from benchmarks.timing import medians, paired_speedup, time_interleaved
from vaswani_transformer.training.batching import non_pad_tokens


SECTIONS = ("matmul_peak", "training", "translation", "memory", "targets")
TARGETS = (
    "training_tokens_per_s_vs_marian_base_fp32",
    "beam4_sentences_per_s_vs_marian",
    "identical_translations",
    "peak_training_memory_vs_marian_base",
    "training_mfu_base_fp32",
)


def numbers(tree, path: str = ""):
    """Every (path, number) in a JSON tree, booleans excluded."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from numbers(value, f"{path}.{key}")
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            yield from numbers(value, f"{path}[{index}]")
    elif isinstance(tree, int | float) and not isinstance(tree, bool):
        yield path, tree


def run_quick(module: str, multi30k_dir, *args: str) -> None:
    """`python -m benchmarks.<module> --quick <args>` from the repository root on the real data; must exit 0."""
    completed = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", "--quick", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        env={**os.environ, "VASWANI_DATA_DIR": str(multi30k_dir.parent)},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]


@pytest.mark.slow  # a whole --quick benchmark run in a subprocess (about 20 s each)
@pytest.mark.parametrize("allocator", ["default", "keep_freed_memory"])
def test_quick_benchmark_writes_a_complete_report(tmp_path, multi30k_dir, allocator):
    flags = ["--keep_freed_memory"] if allocator == "keep_freed_memory" else []
    run_quick("run", multi30k_dir, "--output", str(tmp_path), *flags)
    (report,) = tmp_path.glob("*.json")
    results = json.loads(report.read_text())
    assert results["allocator"] == allocator
    assert report.stem.endswith("-keep-freed-memory") == (allocator == "keep_freed_memory")
    assert report.with_suffix(".md").stat().st_size > 0
    assert report.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    for section in SECTIONS:
        assert results[section], f"empty section {section}"
    assert set(TARGETS) <= set(results["targets"])
    assert any(name.startswith("sdpa_over_eager_encoder_memory_at_") for name in results["targets"])
    assert all(isinstance(entry["holds"], bool) for entry in results["targets"].values())
    bf16_sizes = [key.split("/")[0] for key in results["training"] if key.endswith("/bf16")]
    assert all(f"training_tokens_per_s_vs_marian_{size}_bf16" in results["targets"] for size in bf16_sizes)
    # A speed-up's ceiling is 1 / Marian's MFU: ours at 100% of the measured matmul peak, Marian as measured.
    base_fp32 = [row for key, row in results["training"].items() if key.endswith("/fp32")][-1]  # sizes: [-1] base
    ceiling = results["targets"]["training_tokens_per_s_vs_marian_base_fp32"]["ceiling"]
    assert ceiling == pytest.approx(
        base_fp32["tokens_per_s"]["ours"] / base_fp32["mfu"]["ours"] / base_fp32["tokens_per_s"]["marian"]
    )
    assert all("ceiling" in results["targets"][f"training_tokens_per_s_vs_marian_{size}_bf16"] for size in bf16_sizes)
    assert results["translation"]["identical_translations"] is True
    assert all(results["translation"][search]["identical_translations"] for search in ("greedy", "beam4"))
    for entry in results["training"].values():
        assert set(entry["tokens_per_s"]) == {"ours", "marian", "torch"}
        assert len(entry["seconds"]["ours"]) == results["repeats"] >= 2
    assert {"ours", "marian", "torch"} <= set(next(iter(results["memory"]["training"].values())))
    assert {"sdpa", "eager"} <= set(next(iter(results["memory"]["encoder"].values())))

    for path, value in numbers(results):
        assert math.isfinite(value), path
        if path.endswith("_dropout"):  # a size's attention / activation dropout: a probability, 0 in the paper
            assert 0 <= value < 1, f"{path} = {value}"
        elif not path.endswith(("before", "seed")):  # RSS before a measurement may be anything
            assert value > 0 or path.startswith(".section_seconds"), f"{path} = {value}"


def test_benchmark_batch_is_one_token_batch_of_the_training_loader(small_tokenizer, multi30k_dir):
    tokens_per_side = 256
    batch = training_batch(small_tokenizer, multi30k_dir, tokens_per_side, pool=500)
    (rows, src_len), (_, tgt_len) = batch["input_ids"].shape, batch["labels"].shape
    assert rows > 1 and rows * src_len <= tokens_per_side and rows * tgt_len <= tokens_per_side
    assert batch["attention_mask"].shape == batch["input_ids"].shape
    padded_source = batch["attention_mask"] == 0
    assert (batch["input_ids"][padded_source] == small_tokenizer.pad_token_id).all()
    assert (batch["labels"] != small_tokenizer.pad_token_id).all()  # target padding is -100, ignored by the loss
    src_tokens, _ = non_pad_tokens(batch)
    # Sorted by source length, the rows' sources are nearly equally long: far less padding than a random batch has.
    assert src_tokens > 0.9 * rows * src_len


def test_paired_speedup_is_the_median_and_quartiles_of_per_round_ratios():
    times = {"ours": [1.0, 1.0, 2.0, 1.0], "marian": [1.0, 2.0, 6.0, 4.0]}
    paired = paired_speedup(times, "marian")
    assert paired["per_round"] == [1.0, 2.0, 3.0, 4.0]
    # Inclusive quartiles (numpy's default "linear" percentile): 1 + 0.75 * (2 - 1) and 3 + 0.25 * (4 - 3).
    assert (paired["q1"], paired["median"], paired["q3"]) == pytest.approx((1.75, 2.5, 3.25))
    assert [paired["q1"], paired["median"], paired["q3"]] == pytest.approx(np.percentile([1, 2, 3, 4], [25, 50, 75]))


def test_paired_speedup_quartiles_stay_within_the_ratios_with_two_rounds():
    """The quick benchmark's smoke runs have two or three rounds: the quartiles must not leave the measured range
    (statistics.quantiles' default method gave a negative q1 of two positive ratios)."""
    paired = paired_speedup({"ours": [1.0, 1.0], "marian": [0.5, 3.0]}, "marian")
    assert 0.5 <= paired["q1"] <= paired["median"] <= paired["q3"] <= 3.0


def test_interleaved_rounds_warm_up_then_take_returned_seconds_or_wall_time():
    """One warm-up (the contenders themselves, or the given callables), then every contender once per round; a
    contender that returns a float (one timed in another process) is credited those seconds."""
    calls = []
    contenders = {"here": lambda: calls.append("here"), "elsewhere": lambda: calls.append("elsewhere") or 2.5}
    times = time_interleaved(contenders, repeats=2)
    assert calls == ["here", "elsewhere"] * 3 and times["elsewhere"] == [2.5, 2.5]
    assert all(0 <= seconds < 1 for seconds in times["here"])
    calls.clear()
    times = time_interleaved(contenders, repeats=1, warm_up={"few": lambda: calls.append("few")})
    assert calls == ["few", "here", "elsewhere"] and len(times["here"]) == 1 and "few" not in times
    assert medians({"a": [3.0, 1.0, 2.0]}) == {"a": 2.0}


def test_quick_generation_benchmark_writes_its_table(tmp_path, multi30k_dir, small_tokenizer):
    """`python -m benchmarks.generation --quick` on a tiny saved model: every setting timed and scored, our token ids
    equal to transformers' loop's (the run fails otherwise), the table written; eole rows only where eole is."""
    from conftest import save_tiny_translation_model

    save_tiny_translation_model(tmp_path / "model", small_tokenizer, max_position_embeddings=256)  # Marian: + 50
    run_quick(
        "generation", multi30k_dir, "--model_dir", str(tmp_path / "model"), "--output", str(tmp_path / "results")
    )
    (report,) = (tmp_path / "results").glob("*-generation.json")
    results = json.loads(report.read_text())
    assert results["identical_to_transformers_loop"] is True
    assert {"batch 1", "batch 64", "batch 256", "2048 tokens", "batch 64, file order"} <= set(results["settings"])
    for row in results["settings"].values():
        assert row["sentences_per_s"]["ours"] > 0 and row["sentences_per_s"]["transformers_loop"] > 0
        assert row["identical_to_transformers_loop"] is True
        assert math.isfinite(row["bleu"]["ours"])
    assert results["main_job_evaluation"]["ours_over_before"]["median"] > 0
    assert "| batch 64 |" in report.with_suffix(".md").read_text()


@pytest.mark.slow  # exports, then times CTranslate2 and generate() in a subprocess (about 35 s)
def test_quick_deploy_benchmark_writes_its_table(tmp_path, multi30k_dir, small_tokenizer):
    """`python -m benchmarks.deploy --quick` on a tiny saved model: every engine timed and scored in both searches
    and batch sizes, CTranslate2 fp32 and Marian with exactly our token ids (the run fails otherwise)."""
    pytest.importorskip("ctranslate2")
    from conftest import save_tiny_translation_model

    save_tiny_translation_model(tmp_path / "model", small_tokenizer, max_position_embeddings=256)  # Marian: + 50
    run_quick("deploy", multi30k_dir, "--model_dir", str(tmp_path / "model"), "--output", str(tmp_path / "results"))
    (report,) = (tmp_path / "results").glob("*-deploy.json")
    results = json.loads(report.read_text())
    assert results["identical_where_required"] is True
    assert set(results["settings"]) == {"greedy, batch 1", "greedy, batch 64", "beam 4, batch 1", "beam 4, batch 64"}
    for row in results["settings"].values():
        assert {"ours", "marian", "ct2_float32", "ct2_int8"} <= set(row["sentences_per_s"])
        assert row["identical_to_ours"]["ct2_float32"] == row["sentences"]
        assert all(math.isfinite(value) and value > 0 for value in row["tokens_per_s"].values())
    assert results["export"]["int8"]["bytes"] < results["export"]["float32"]["bytes"]
    assert "| beam 4 | 64 | ct2_int8 |" in report.with_suffix(".md").read_text()
