"""GPU readiness: the WMT presets run on a WMT-size corpus, as users launch them, with tiny dimensions.

Each preset in training/configs/wmt14_*.yaml trains 50 steps on the synthetic 1M-pair corpus of
`benchmarks.scale.corpus` (Parquet in the Hub layout of wmt14, so `--dataset_name <corpus>` replaces only the Hub
name), on CPU, with the model's dimensions overridden to tiny ones and the preset's recipe otherwise: its vocabulary
size (a BPE vocabulary learnt on the full million pairs), token batches of 3125 per side, bf16 autocast, Eq. 3 with
4000 warmup steps, label smoothing, beam-4 test decoding (of 32 sentences here), checkpoint averaging. The
corpora, the datasets cache and the runs live in a temp folder; EN-DE base and big share one corpus and cache, so
the second reads the tokenized corpus back from the cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from test_training import read_log


PAIRS = 1_000_000
TINY_DIMS = (
    "--d_model 32 --encoder_layers 1 --decoder_layers 1 --encoder_attention_heads 2 --decoder_attention_heads 2 "
    "--encoder_ffn_dim 64 --decoder_ffn_dim 64"
).split()


@pytest.fixture(scope="module")
def corpora(tmp_path_factory, multi30k_dir) -> dict[str, Path]:
    from benchmarks.scale.corpus import build_corpus

    root = tmp_path_factory.mktemp("wmt_size")
    for languages in (("en", "de"), ("en", "fr")):
        build_corpus(root / "-".join(languages), PAIRS, multi30k_dir=multi30k_dir, languages=languages,
                     formats=("parquet",))  # fmt: skip
    return {"de": root / "en-de", "fr": root / "en-fr", "cache": root / "datasets-cache"}


@pytest.mark.parametrize("preset", ["wmt14_en_de_base", "wmt14_en_de_big", "wmt14_en_fr_big"])
def test_preset_trains_50_steps_on_a_million_pairs(preset, corpora, tmp_path):
    target = preset.split("_")[2]
    out = tmp_path / "run"
    command = [
        sys.executable, str(REPO_ROOT / "training" / "train.py"), "--config", f"training/configs/{preset}.yaml",
        "--dataset_name", str(corpora[target] / "parquet"), "--output_dir", str(out), *TINY_DIMS,
        "--max_steps", "50", "--logging_steps", "10", "--use_cpu", "true", "--report_to", "none",
        "--max_test_samples", "32",
    ]  # fmt: skip
    env = {**os.environ, "HF_DATASETS_CACHE": str(corpora["cache"]), "HF_HUB_OFFLINE": "1"}
    env.update(HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="2")
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-6000:]
    if preset == "wmt14_en_de_big":  # runs after en_de_base on the same corpus and cache (see the module docstring)
        assert "shared BPE vocabulary of this train split and settings found in" in result.stderr
        assert "train: tokenized 1000000 pairs" in result.stderr

    stats = json.loads((out / "data_stats.json").read_text())["train"]
    assert stats["pairs"] == PAIRS and stats["kept"] + stats["source_too_long"] + stats["target_too_long"] == PAIRS
    arguments = json.loads((out / "training_args.json").read_text())
    expected_vocab = {"wmt14_en_de_base": 37000, "wmt14_en_de_big": 37000, "wmt14_en_fr_big": 32000}[preset]
    assert arguments["vocab_size"] == expected_vocab and arguments["max_tokens"] == 3125
    assert arguments["model"] == ("base" if "base" in preset else "big") and arguments["mixed_precision"] == "bf16"
    config = json.loads((out / "config.json").read_text())
    # the preset's size, or fewer where the synthetic corpus (Multi30k's words) runs out of merges
    assert config["d_model"] == 32 and 5000 < config["vocab_size"] <= expected_vocab
    # §6.1 / Table 3: P_drop 0.1, except 0.3 for big EN-DE; eps_ls 0.1
    assert config["dropout"] == (0.3 if preset == "wmt14_en_de_big" else 0.1) and config["label_smoothing"] == 0.1
    losses = [line["loss"] for line in read_log(out) if "loss" in line]
    assert len(losses) == 5 and losses[-1] < losses[0]  # 50 steps logged every 10: it learns
    results = json.loads((out / "train_results.json").read_text())
    assert results["step"] == 50 and results["split"] == "newstest2014" and results["num_sentences"] == 32
