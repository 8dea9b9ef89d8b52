"""Tokenization and filtering of training pairs: every pair counted under exactly one reason (`drop_reason`, the
rule written out in Python), the kept pairs whole and in order, and their lengths."""

from __future__ import annotations

import datasets
from conftest import read_multi30k

from vaswani_transformer.training.preprocessing import DROP_REASONS, _tokenizer_key, drop_reason, tokenize_split


def test_kept_pairs_and_counts_follow_drop_reason(multi30k_dir, small_tokenizer):
    sources = read_multi30k(multi30k_dir, "train", "en", 300) + ["", "  ", "ok"]
    targets = read_multi30k(multi30k_dir, "train", "de", 300) + ["leer", "leer", " "]
    pairs = [{"en": source, "de": target} for source, target in zip(sources, targets, strict=True)]
    dataset = datasets.Dataset.from_dict({"translation": pairs})
    kept, counts = tokenize_split(dataset, small_tokenizer, ("en", "de"), (20, 22))

    expected, expected_ids = dict.fromkeys(DROP_REASONS, 0), []
    for source, target in zip(sources, targets, strict=True):
        source_ids = small_tokenizer(source)["input_ids"]
        target_ids = small_tokenizer(text_target=target)["input_ids"]
        reason = drop_reason(source, target, len(source_ids), len(target_ids), 20, 22)
        expected[reason] += 1
        if reason == "kept":
            expected_ids.append((source_ids, target_ids))
    assert counts == {"pairs": 303, **expected}
    assert counts["empty"] == 3 and counts["source_too_long"] > 0 and counts["target_too_long"] > 0
    assert [(row["input_ids"], row["labels"]) for row in kept] == expected_ids
    assert "reason" not in kept.column_names
    assert kept["source_length"] == [len(ids) for ids, _ in expected_ids]
    assert kept["target_length"] == [len(ids) for _, ids in expected_ids]


def test_a_split_with_nothing_dropped_is_not_reindexed(small_tokenizer):
    dataset = datasets.Dataset.from_dict({"translation": [{"en": "a dog", "de": "ein Hund"}] * 4})
    kept, counts = tokenize_split(dataset, small_tokenizer, ("en", "de"), (50, 50))
    assert counts == {"pairs": 4, "kept": 4, "empty": 0, "source_too_long": 0, "target_too_long": 0}
    assert kept._indices is None and len(kept) == 4


def test_truncation_gives_the_ids_of_the_tokenizers_own_truncation(multi30k_dir, small_tokenizer):
    """--truncate_long_pairs: transformers' run_translation.py behaviour, the tokenizer called with
    truncation=True and max_length (which keeps </s>); only empty pairs are dropped."""
    sources = read_multi30k(multi30k_dir, "train", "en", 200) + [""]
    targets = read_multi30k(multi30k_dir, "train", "de", 200) + ["leer"]
    pairs = [{"en": source, "de": target} for source, target in zip(sources, targets, strict=True)]
    dataset = datasets.Dataset.from_dict({"translation": pairs})
    kept, counts = tokenize_split(dataset, small_tokenizer, ("en", "de"), (12, 14), truncate=True)

    source_ids = small_tokenizer(sources[:-1], truncation=True, max_length=12)["input_ids"]
    target_ids = small_tokenizer(text_target=targets[:-1], truncation=True, max_length=14)["input_ids"]
    assert kept["input_ids"] == source_ids and kept["labels"] == target_ids
    assert kept["source_length"] == [len(ids) for ids in source_ids]
    full_sources = [len(ids) for ids in small_tokenizer(sources[:-1])["input_ids"]]
    full_targets = [len(ids) for ids in small_tokenizer(text_target=targets[:-1])["input_ids"]]
    # Each pair counted once, under the first rule that applies (as drop_reason): a cut source before a cut target.
    cut_targets = sum(target > 14 and source <= 12 for source, target in zip(full_sources, full_targets, strict=True))
    assert counts == {
        "pairs": 201, "kept": 200, "empty": 1, "source_too_long": 0, "target_too_long": 0,
        "source_truncated": sum(length > 12 for length in full_sources), "target_truncated": cut_targets,
    }  # fmt: skip
    assert counts["source_truncated"] > 0 and counts["target_truncated"] > 0


def test_counts_ignore_truncation_and_padding_left_on_the_tokenizer(small_tokenizer):
    """The Rust tokenizer keeps the last call's truncation and padding; tokenize_split must not count with them."""
    dataset = datasets.Dataset.from_dict({"translation": [{"en": "a dog runs on the beach", "de": "ein Hund"}] * 4})
    expected = tokenize_split(dataset, small_tokenizer, ("en", "de"), (50, 50))[1]
    key = _tokenizer_key(small_tokenizer)  # the datasets cache key of this encoding
    try:
        small_tokenizer(["a dog"], padding="max_length", max_length=60, truncation=True)  # leaves padding to 60
        assert small_tokenizer.backend_tokenizer.padding is not None
        assert _tokenizer_key(small_tokenizer) == key
        kept, counts = tokenize_split(dataset, small_tokenizer, ("en", "de"), (50, 50))
    finally:
        small_tokenizer(["a dog"])  # a plain call resets the backend's state for the other tests
    assert counts == expected == {"pairs": 4, "kept": 4, "empty": 0, "source_too_long": 0, "target_too_long": 0}
    assert kept["source_length"] == [len(small_tokenizer("a dog runs on the beach")["input_ids"])] * 4
