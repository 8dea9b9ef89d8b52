"""The synthetic WMT-size corpus: joined Multi30k pairs that stay aligned, the same corpus in every format, each
loadable by the training data loader the way users load theirs."""

from __future__ import annotations

import json

import datasets
import pytest

from benchmarks.scale.corpus import MAX_PIECES, build_corpus, synthetic_chunks
from vaswani_transformer.training.data import load_parallel_dataset


def test_joined_pairs_stay_aligned_and_are_reproducible():
    sources = [f"s{i}" for i in range(50)]
    targets = [f"t{i}" for i in range(50)]
    chunks = list(synthetic_chunks(sources, targets, pairs=1000, seed=3, chunk=300))
    assert [len(chunk_sources) for chunk_sources, _ in chunks] == [300, 300, 300, 100]
    pieces = []
    for chunk_sources, chunk_targets in chunks:
        for source, target in zip(chunk_sources, chunk_targets, strict=True):
            # Target i is the translation of source i: joined in the same order.
            assert target.split() == [f"t{word[1:]}" for word in source.split()]
            pieces.append(len(source.split()))
    assert 1 == min(pieces) and max(pieces) <= MAX_PIECES and 1.6 < sum(pieces) / len(pieces) < 2.1
    assert chunks == list(synthetic_chunks(sources, targets, pairs=1000, seed=3, chunk=300))
    assert chunks != list(synthetic_chunks(sources, targets, pairs=1000, seed=4, chunk=300))
    with pytest.raises(ValueError, match="aligned"):
        next(synthetic_chunks(sources, targets[:-1], pairs=10))


def test_every_format_holds_the_same_corpus(multi30k_dir, tmp_path):
    output = tmp_path / "corpus"
    stats = build_corpus(output, 2500, multi30k_dir=multi30k_dir, chunk=1000)
    assert json.loads((output / "corpus.json").read_text()) == stats
    assert stats["pairs"] == 2500 and stats["multi30k_train_pairs"] == 29000
    assert 20 < stats["words_per_sentence"]["en"]["mean"] < 28
    text = load_parallel_dataset("en", "de", data_dir=output / "text")
    jsonl = load_parallel_dataset(
        "en",
        "de",
        train_file=str(output / "jsonl" / "train.jsonl"),
        validation_file=str(output / "jsonl" / "validation.jsonl"),
        test_file=str(output / "jsonl" / "test.jsonl"),
    )
    # the Hub layout of wmt14: a "de-en" configuration, the same load_dataset call as the WMT presets make
    parquet = load_parallel_dataset("en", "de", dataset_name=str(output / "parquet"), dataset_config_name="de-en")
    arrow = datasets.load_from_disk(str(output / "arrow"))
    multi30k = load_parallel_dataset("en", "de", data_dir=multi30k_dir)
    for corpus in (jsonl, parquet, arrow):
        for split in ("train", "validation", "test"):
            assert corpus[split]["translation"] == text[split]["translation"], split
    assert len(text["train"]) == 2500
    assert text["test"]["translation"] == multi30k["test"]["translation"]
    with pytest.raises(FileExistsError, match="never overwrites"):
        build_corpus(output, 10, multi30k_dir=multi30k_dir)
    with pytest.raises(ValueError, match="pairs=0"):
        build_corpus(tmp_path / "empty", 0, multi30k_dir=multi30k_dir)
    assert not (tmp_path / "empty").exists()  # checked before anything is written
