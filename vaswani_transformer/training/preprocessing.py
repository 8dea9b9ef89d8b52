"""Tokenize sentence pairs for training and drop the pairs the model cannot train on, counting each drop.

Runs through `datasets.map` (Arrow in, Arrow out, cached by fingerprint, `num_proc` processes). A pair with an empty
side is dropped; a longer side than the limits drops the pair (`--filter_long_pairs`, the default: fairseq's and
Marian's way) or is cut to the limit, keeping its final `</s>` (`--truncate_long_pairs`: transformers'
`run_translation.py`, whose tokenizer call truncates). `tokenize_split` returns how many pairs each rule dropped or
cut so that the training script logs them and writes them to `data_stats.json`.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from accelerate import Accelerator
from datasets.fingerprint import Hasher
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerBase

from vaswani_transformer.training.arguments import DataArguments


__all__ = [
    "DROP_REASONS",
    "TRUNCATED",
    "LENGTH_COLUMNS",
    "drop_reason",
    "length_columns",
    "tokenize_split",
    "tokenize_training_splits",
]

logger = logging.getLogger(__name__)

LENGTH_COLUMNS = ("source_length", "target_length")
DROP_REASONS = ("kept", "empty", "source_too_long", "target_too_long")
# With truncation, what happened to a kept pair whose side was too long (counted in data_stats.json).
TRUNCATED = ("source_truncated", "target_truncated")
KEPT = pa.array([DROP_REASONS[0], *TRUNCATED])  # the reasons of the rows a split keeps
ENCODED_FEATURES = datasets.Features(
    {
        "input_ids": datasets.List(datasets.Value("int32")),
        "labels": datasets.List(datasets.Value("int32")),
        "source_length": datasets.Value("int32"),
        "target_length": datasets.Value("int32"),
        "reason": datasets.Value("string"),
    }
)


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


def _plain_backend(tokenizer: PreTrainedTokenizerBase) -> Tokenizer:
    """A copy of a fast tokenizer's Rust backend without truncation or padding: the backend keeps the last
    `__call__`'s (or a saved tokenizer.json's) truncation and padding settings, which would cut or pad the ids
    counted here and change the cache key of the same encoding."""
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    return backend


def _encoders(tokenizer: PreTrainedTokenizerBase) -> tuple[Callable, Callable]:
    """(encode sources, encode targets): each maps a list of texts to lists of token ids ending in `</s>`.

    A fast tokenizer's Rust backend (`tokenizers`' `encode_batch_fast`: the ids of `tokenizer(texts)`, on all
    cores) encodes both sides, as its vocabulary is shared (§5.1). Others through their own call: a
    `MarianTokenizer` encodes targets with its target SentencePiece model (`text_target`).
    """
    if getattr(tokenizer, "is_fast", False):
        backend = _plain_backend(tokenizer)
        encode_batch = getattr(backend, "encode_batch_fast", backend.encode_batch)  # the fast one: tokenizers >= 0.20

        def encode(texts: list[str]) -> list[list[int]]:
            return [encoding.ids for encoding in encode_batch(texts, add_special_tokens=True)]

        return encode, encode
    return (lambda texts: tokenizer(texts)["input_ids"]), (lambda texts: tokenizer(text_target=texts)["input_ids"])


def _tokenizer_key(tokenizer: PreTrainedTokenizerBase) -> str:
    """What identifies a tokenizer's encoding in the datasets cache key: a fast one's JSON, else `Hasher.hash` of
    the tokenizer object (a `MarianTokenizer` pickles its SentencePiece models)."""
    if getattr(tokenizer, "is_fast", False):
        return _plain_backend(tokenizer).to_str()
    return Hasher.hash(tokenizer)


def tokenize_split(
    dataset: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    languages: tuple[str, str],
    max_lengths: tuple[int, int],
    num_proc: int | None = None,
    truncate: bool = False,
) -> tuple[datasets.Dataset, dict[str, int]]:
    """Tokenize pairs (`input_ids` and `labels` end in `</s>`), drop empty pairs, and drop or cut over-long ones.

    Each batch of 10,000 pairs goes from Arrow to the Rust tokenizer (`tokenizers`' `encode_batch_fast`, the ids
    that `tokenizer(sources, text_target=targets)` gives, on all cores) and back to Arrow int32 columns, with no
    Python list per pair kept. The result is cached by `datasets` (its fingerprint: the split's, the tokenizer's
    JSON, the languages and the limits), so a second run on the same data and tokenizer reads it back from disk.
    There is no `attention_mask` column: the collator (`tokenizer.pad`) builds it from the lengths. A tokenizer
    without a Rust backend (a MarianMT model's SentencePiece `MarianTokenizer`, which has a source and a target
    model) encodes through `tokenizer(sources)` and `tokenizer(text_target=targets)` instead.

    Args:
        dataset: one split with a "translation" column of {lang: text} (`training.data`).
        languages: (source, target) language codes.
        max_lengths: (max source, max target) tokens; a longer side drops the pair, as does a whitespace-only side.
        num_proc: processes for `datasets.map` (None: this process, whose tokenizer already uses every core).
        truncate: cut a longer side to its limit (its last kept token replaced by the side's final `</s>`) instead
            of dropping the pair.

    Returns:
        (dataset with columns input_ids, labels (int32 token ids), source_length, target_length (tokens, int32),
        without an indices mapping, so that lengths read straight from Arrow; counts {pairs, kept, empty,
        source_too_long, target_too_long}, each pair counted once, see `drop_reason`; with `truncate`, the
        too-long counts are 0 and {source_truncated, target_truncated} count the pairs cut, kept among "kept").
    """
    source_lang, target_lang = languages
    encoders = _encoders(tokenizer)

    def token_ids(texts: list[str], side: int) -> tuple[pa.ListArray, np.ndarray, np.ndarray]:
        ids = encoders[side](texts)
        too_long = np.fromiter((len(item) > max_lengths[side] for item in ids), dtype=bool, count=len(ids))
        if truncate:
            ids = [
                item[: max_lengths[side] - 1] + item[-1:] if len(item) > max_lengths[side] else item for item in ids
            ]
        lengths = np.fromiter(map(len, ids), dtype=np.int32, count=len(ids))
        offsets = np.zeros(len(ids) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        values = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(offsets[-1]))
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values)), lengths, too_long

    def encode(batch: pa.Table) -> pa.Table:
        translation = batch.column("translation")
        sources = pc.struct_field(translation, source_lang).to_pylist()
        targets = pc.struct_field(translation, target_lang).to_pylist()
        input_ids, source_lengths, source_too_long = token_ids(sources, 0)
        labels, target_lengths, target_too_long = token_ids(targets, 1)
        empty = np.fromiter((not (s.strip() and t.strip()) for s, t in zip(sources, targets, strict=True)), bool)
        long_reasons = TRUNCATED if truncate else DROP_REASONS[2:]
        reason = np.select(
            [empty, source_too_long, target_too_long], [DROP_REASONS[1], *long_reasons], "kept"
        )  # the first rule that applies, as `drop_reason`
        return pa.table(
            {"input_ids": input_ids, "labels": labels, "source_length": source_lengths,
             "target_length": target_lengths, "reason": pa.array(reason)}
        )  # fmt: skip

    fingerprint = Hasher.hash(
        (
            dataset._fingerprint,
            _tokenizer_key(tokenizer),
            languages,
            max_lengths,
            truncate,
            "tokenize_split/5",
            datasets.__version__,
        )
    )
    encoded = dataset.with_format("arrow").map(
        encode,
        batched=True,
        batch_size=10_000,
        remove_columns=dataset.column_names,
        num_proc=num_proc,
        new_fingerprint=fingerprint,
        features=ENCODED_FEATURES,
        desc="tokenize",
    )
    encoded = encoded.with_format(None)
    if len(encoded) == 0:  # an empty split: `map` returns no columns at all
        return encoded, {"pairs": 0, **dict.fromkeys(DROP_REASONS, 0)}
    # Counted and selected on the Arrow column (no Python object per pair): millions of pairs at the paper's scale.
    reasons = encoded.data.column("reason")
    found = {entry["values"]: entry["counts"] for entry in pc.value_counts(reasons).to_pylist()}
    counts = {"pairs": len(encoded), **{key: int(found.get(key, 0)) for key in DROP_REASONS}}
    if truncate:
        counts.update({key: int(found.get(key, 0)) for key in TRUNCATED})
        counts["kept"] += sum(counts[key] for key in TRUNCATED)
    if counts["kept"] < len(encoded):
        # The kept rows written contiguously (a second cached map, Arrow to Arrow), so that lengths read without an
        # indices mapping; `select` + `flatten_indices` re-casts every row and took 10x longer.
        encoded = (
            encoded.with_format("arrow")
            .map(
                lambda batch: batch.filter(pc.is_in(batch.column("reason"), value_set=KEPT)),
                batched=True,
                batch_size=10_000,
                new_fingerprint=Hasher.hash((fingerprint, "kept")),
                features=ENCODED_FEATURES,
                desc="drop",
            )
            .with_format(None)
        )
    return encoded.remove_columns("reason"), counts


def tokenize_training_splits(
    accelerator: Accelerator, raw: datasets.DatasetDict, tokenizer: PreTrainedTokenizerBase, args: DataArguments
) -> tuple[dict[str, datasets.Dataset], dict[str, dict[str, int]]]:
    """`tokenize_split` of train and validation, on the main process first (the others read its datasets cache);
    logs the time taken and the pairs each rule dropped.

    Returns:
        ({split: tokenized dataset}, {split: drop counts}) for the splits "train" and "validation" that exist.

    Raises:
        ValueError: if no training pair is left (names the counts and the limits).
    """
    tokenized, stats = {}, {}
    languages, max_lengths = (args.source_lang, args.target_lang), (args.max_source_length, args.max_target_length)
    with accelerator.main_process_first():
        for split in ("train", "validation"):
            if split in raw:
                started = time.perf_counter()
                tokenized[split], stats[split] = tokenize_split(
                    raw[split],
                    tokenizer,
                    languages,
                    max_lengths,
                    args.preprocessing_num_workers,
                    truncate=args.truncate_long_pairs,
                )
                seconds = time.perf_counter() - started
                logger.info(
                    "%s: tokenized %d pairs in %.1f s (%.0f pairs/s; fast when read back from the datasets cache)",
                    split, len(raw[split]), seconds, len(raw[split]) / max(seconds, 1e-9),
                )  # fmt: skip
    for split, counts in stats.items():
        logger.info(
            "%s: kept %d of %d pairs; dropped %d empty, %d with source > %d tokens, %d with target > %d tokens",
            split, counts["kept"], counts["pairs"], counts["empty"], counts["source_too_long"],
            args.max_source_length, counts["target_too_long"], args.max_target_length,
        )  # fmt: skip
        if args.truncate_long_pairs:
            logger.info(
                "%s: cut %d sources to %d tokens and %d targets to %d tokens (--truncate_long_pairs)",
                split, counts["source_truncated"], args.max_source_length, counts["target_truncated"],
                args.max_target_length,
            )  # fmt: skip
    if stats["train"]["kept"] == 0:
        raise ValueError(
            f"no training pairs left after filtering ({stats['train']}); check the data or raise "
            f"--max_source_length ({args.max_source_length}) / --max_target_length ({args.max_target_length})"
        )
    return tokenized, stats


def length_columns(dataset: datasets.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(source_length, target_length) of a `tokenize_split` result as int64 arrays, read from its Arrow columns
    (one copy each, no Python int per pair): `(num_pairs,)` tokens each, for the token batch samplers."""
    if dataset._indices is not None:
        dataset = dataset.flatten_indices()
    return tuple(dataset.data.column(name).to_numpy().astype(np.int64) for name in LENGTH_COLUMNS)
