"""GPU readiness: the WMT presets run every stage of a WMT run, as users launch them, with tiny dimensions.

Each preset `wmt14_*` (vaswani_transformer/training/presets/) trains 50 steps on a synthetic corpus of
`benchmarks.scale.corpus` (Parquet in the Hub layout of wmt14, so `--dataset_name <corpus>` replaces only the Hub
name), on CPU, with the model's dimensions overridden to tiny ones and the preset's recipe otherwise: its vocabulary
size (a BPE vocabulary learnt on the corpus), token batches of 3125 per side, bf16 autocast, Eq. 3 with 4000 warmup
steps, label smoothing, beam-4 test decoding (of 32 sentences here), checkpoint averaging. `training/train.py`'s
`main(argv)` runs in this process (`conftest.train_in_process`). The corpus has `PAIRS` pairs, ~90 to a 3125-token
batch, so the 50 steps make two passes over it: a step costs in proportion to the vocabulary (logits and loss), which a
corpus this size keeps to ~9k tokens; the stages at WMT size (1M+ pairs) are benchmarks/scale's business, not this
test's. The corpora, the datasets cache and the runs live in a temp folder; EN-DE base and big share one corpus and
cache, so the second reads the vocabulary and the tokenized corpus back from the cache (EN-FR, another corpus, learns
and tokenizes its own, as EN-DE base did: at 1M pairs that made it 3.7x the EN-DE big run).
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
from conftest import train_in_process
from test_training import read_log


PAIRS = 2_000
TINY_DIMS = (
    "--d_model 32 --encoder_layers 1 --decoder_layers 1 --encoder_attention_heads 2 --decoder_attention_heads 2 "
    "--encoder_ffn_dim 64 --decoder_ffn_dim 64"
).split()


@pytest.fixture(scope="module")
def corpora(tmp_path_factory, multi30k_dir) -> dict[str, Path]:
    from benchmarks.scale.corpus import build_corpus

    root = tmp_path_factory.mktemp("wmt_like")
    for languages in (("en", "de"), ("en", "fr")):
        build_corpus(root / "-".join(languages), PAIRS, multi30k_dir=multi30k_dir, languages=languages,
                     formats=("parquet",))  # fmt: skip
    return {"de": root / "en-de", "fr": root / "en-fr", "cache": root / "datasets-cache"}


@pytest.mark.parametrize("preset", ["wmt14_en_de_base", "wmt14_en_de_big", "wmt14_en_fr_big"])
def test_preset_trains_50_steps_on_a_wmt_like_corpus(preset, corpora, tmp_path, monkeypatch):
    target = preset.split("_")[2]
    out = tmp_path / "run"
    argv = [
        "--config", preset,
        "--dataset_name", str(corpora[target] / "parquet"), "--output_dir", str(out), *TINY_DIMS,
        "--max_steps", "50", "--logging_steps", "10", "--use_cpu", "true", "--report_to", "none",
        "--max_test_samples", "32",
        "--target_tokens_per_step", "3125",  # one micro-batch a step, not the preset's 8 on one process: 8x faster
    ]  # fmt: skip
    # What HF_DATASETS_CACHE gives a new process (datasets reads it at import); the BPE cache lives beside it.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", corpora["cache"])
    # One torch thread (train_in_process's default): measured on this 2-core machine with other work running, a
    # preset's run took 12-14 s with 1 thread, 33-44 s with 2 (their OpenMP threads wait on each other).
    log = train_in_process(argv)
    if preset == "wmt14_en_de_big":  # runs after en_de_base on the same corpus and cache (see the module docstring)
        assert "shared BPE vocabulary of this train split and settings found in" in log
        assert f"train: tokenized {PAIRS} pairs" in log

    stats = json.loads((out / "data_stats.json").read_text())["train"]
    assert stats["pairs"] == PAIRS and stats["kept"] + stats["source_too_long"] + stats["target_too_long"] == PAIRS
    arguments = json.loads((out / "training_args.json").read_text())
    expected_vocab = {"wmt14_en_de_base": 37000, "wmt14_en_de_big": 37000, "wmt14_en_fr_big": 32000}[preset]
    assert arguments["vocab_size"] == expected_vocab and arguments["max_tokens"] == 3125
    assert arguments["model"] == ("base" if "base" in preset else "big") and arguments["mixed_precision"] == "bf16"
    config = json.loads((out / "config.json").read_text())
    # The preset's size, or fewer where the corpus runs out of merges: 9.4k (EN-DE) and 8.0k (EN-FR) on 2,000 pairs
    assert config["d_model"] == 32 and 5000 < config["vocab_size"] <= expected_vocab
    # §6.1 / Table 3: P_drop 0.1, except 0.3 for big EN-DE; eps_ls 0.1
    assert config["dropout"] == (0.3 if preset == "wmt14_en_de_big" else 0.1) and config["label_smoothing"] == 0.1
    losses = [line["loss"] for line in read_log(out) if "loss" in line]
    assert len(losses) == 5 and losses[-1] < losses[0]  # 50 steps logged every 10: it learns
    results = json.loads((out / "train_results.json").read_text())
    assert results["step"] == 50 and results["split"] == "test" and results["num_sentences"] == 32
