"""Tokenize sentence pairs for training and drop the pairs the model cannot train on, counting each drop.

Runs through `datasets.map` (Arrow, cached by fingerprint, `num_proc` processes). Nothing is truncated: a pair is
kept whole or dropped whole, and `tokenize_split` returns how many pairs each rule dropped so that the training
script logs them and writes them to `data_stats.json`.
"""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow.compute as pc
from transformers import PreTrainedTokenizerBase


__all__ = ["DROP_REASONS", "LENGTH_COLUMNS", "drop_reason", "tokenize_split"]

LENGTH_COLUMNS = ("source_length", "target_length")
DROP_REASONS = ("kept", "empty", "source_too_long", "target_too_long")


def drop_reason(
    source: str, target: str, source_length: int, target_length: int, max_source_length: int, max_target_length: int
) -> str:
    """Why a pair is dropped (the first rule that applies), or "kept". Lengths in tokens, including `</s>`."""
    if not source.strip() or not target.strip():
        return "empty"
    if source_length > max_source_length:
        return "source_too_long"
    if target_length > max_target_length:
        return "target_too_long"
    return "kept"


def tokenize_split(
    dataset: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    languages: tuple[str, str],
    max_lengths: tuple[int, int],
    num_proc: int | None = None,
) -> tuple[datasets.Dataset, dict[str, int]]:
    """Tokenize pairs (`input_ids` and `labels` end in `</s>`) and drop empty and over-long pairs.

    Args:
        dataset: one split with a "translation" column of {lang: text} (`training.data`).
        languages: (source, target) language codes.
        max_lengths: (max source, max target) tokens; a longer side drops the pair, as does a whitespace-only side.
        num_proc: processes for `datasets.map` (None: this process).

    Returns:
        (dataset with columns input_ids, attention_mask, labels, source_length, target_length (tokens);
        counts {pairs, kept, empty, source_too_long, target_too_long}, each pair counted once, see `drop_reason`).
    """
    source_lang, target_lang = languages

    def encode(batch):
        sources = [pair[source_lang] for pair in batch["translation"]]
        targets = [pair[target_lang] for pair in batch["translation"]]
        encoded = tokenizer(sources, text_target=targets)
        encoded["source_length"] = [len(ids) for ids in encoded["input_ids"]]
        encoded["target_length"] = [len(ids) for ids in encoded["labels"]]
        lengths = zip(sources, targets, encoded["source_length"], encoded["target_length"], strict=True)
        encoded["reason"] = [drop_reason(*pair, *max_lengths) for pair in lengths]
        return encoded

    encoded = dataset.map(
        encode, batched=True, remove_columns=dataset.column_names, num_proc=num_proc, desc="tokenize"
    )
    if len(encoded) == 0:  # an empty split: `map` returns no columns at all
        return encoded, {"pairs": 0, **dict.fromkeys(DROP_REASONS, 0)}
    # Counted and selected on the Arrow column (no Python object per pair): millions of pairs at the paper's scale.
    reasons = encoded.data.column("reason")
    found = {entry["values"]: entry["counts"] for entry in pc.value_counts(reasons).to_pylist()}
    counts = {"pairs": len(encoded), **{key: int(found.get(key, 0)) for key in DROP_REASONS}}
    if counts["kept"] < len(encoded):
        encoded = encoded.select(np.flatnonzero(pc.equal(reasons, "kept").to_numpy(zero_copy_only=False)))
    return encoded.remove_columns("reason"), counts
