"""Tokenization and filtering of training pairs: every pair counted under exactly one reason (`drop_reason`, the
rule written out in Python), the kept pairs whole and in order, and their lengths."""

from __future__ import annotations

import datasets
from conftest import read_multi30k

from vaswani_transformer.training.preprocessing import DROP_REASONS, drop_reason, tokenize_split


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
