"""Token batches: THE batching rule of this package (fairseq's `batch_by_size`), used by training, evaluation, the
translation pipeline and the CTranslate2 `Translator`, and `length_sorted_batches`, which groups many sentences for
`generate()` the way fairseq and eole do: longest first, each batch within a budget of padded source tokens.

It imports only torch and the standard library: it travels with a saved model as remote code (the pipeline uses it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch


__all__ = ["DEFAULT_MAX_TOKENS", "length_sorted_batches", "pack_token_batches", "token_batch_bounds"]

# Padded source tokens (sentences x longest source, `</s>` included) per `generate()` call when translating many
# sentences. Beam-4 throughput with this module's search is flat from 2,048 to 8,192 tokens on the 2-core CPU of
# benchmarks/results (benchmarks/generation.py; docs/performance.md, "Translation speed"); larger budgets only cost
# memory.
DEFAULT_MAX_TOKENS = 4096


def token_batch_bounds(sides: Sequence, max_tokens: int, max_sentences: int | None = None) -> list[int]:
    """Greedy token batches of items already in packing order, as offsets: batch b is items
    `bounds[b]:bounds[b + 1]`. THE batching rule of this package (training, evaluation, the pipeline, the
    CTranslate2 `Translator`), fairseq's `batch_by_size` with `max_tokens` and `max_sentences`.

    A batch of n items costs n * (its longest item) padded tokens on every side, at most `max_tokens`, and holds at
    most `max_sentences` items; an item longer than `max_tokens` is a batch of its own. Vectorised per batch: the
    running maximum of a batch is at least its first item's length L, so a batch has at most `max_tokens // L`
    items and only that window is looked at (one `cummax` per batch), with no Python object per item.

    Args:
        sides: per side, `(items,)` lengths in tokens in packing order (lists, arrays or int tensors; padded as the
            collator pads them).
        max_tokens: padded-token budget per side per batch (tokens).
        max_sentences: items per batch, or None for no limit.
    Returns:
        `num_batches + 1` offsets, from 0 to `items`.
    Raises:
        ValueError: if `max_tokens` or `max_sentences` is not a positive integer.
    """
    if max_tokens < 1 or (max_sentences is not None and max_sentences < 1):
        raise ValueError(f"max_tokens and max_sentences must be positive, got {max_tokens} and {max_sentences}")
    lengths = torch.stack([torch.as_tensor(side, dtype=torch.int64) for side in sides])  # (sides, items)
    items = lengths.shape[1]
    first = lengths.amax(dim=0)  # (items,) longest side per item: a batch starting there holds <= max_tokens // it
    bounds, start = [0], 0
    while start < items:
        window = min(items - start, max_tokens // max(1, int(first[start])), max_sentences or items)
        size = 1
        if window > 1:
            longest = lengths[:, start : start + window].cummax(dim=1).values.amax(dim=0)  # (window,) running max
            over = torch.nonzero(longest * torch.arange(1, window + 1) > max_tokens)  # (k, 1) first index too big
            size = int(over[0]) if len(over) else window
        start += size
        bounds.append(start)
    return bounds


def pack_token_batches(
    order: Iterable[int], lengths: Sequence[Sequence[int]], max_tokens: int, max_sentences: int | None = None
) -> list[list[int]]:
    """Cut `order` into batches by `token_batch_bounds`: every index of `order` exactly once, in its order.

    Args:
        order: item indices in the order they are packed (sorted by length for little padding).
        lengths: per side, `(items,)` lengths in tokens, indexed by the indices of `order` (the source alone for
            translation; source and target for training, §5.1).
        max_tokens, max_sentences: as `token_batch_bounds`.
    Returns:
        Batches as lists of indices.
    Raises:
        ValueError: if `max_tokens` or `max_sentences` is not a positive integer.
    """
    order = [int(index) for index in order]
    index = torch.tensor(order, dtype=torch.int64)
    sides = [torch.as_tensor(side, dtype=torch.int64)[index] for side in lengths]  # per side, in packing order
    bounds = token_batch_bounds(sides, max_tokens, max_sentences)
    return [order[start:end] for start, end in zip(bounds[:-1], bounds[1:], strict=True)]


def length_sorted_batches(
    lengths: Sequence[int], max_tokens: int = DEFAULT_MAX_TOKENS, max_sentences: int | None = None
) -> list[list[int]]:
    """Batches of sentences for `generate()`: longest first (equal lengths in input order), each within
    `max_tokens` padded source tokens and `max_sentences` sentences (`pack_token_batches`).

    Sorting puts sentences of similar length together, so little of each batch is padding and its beams finish at
    similar steps; callers put the translations back in input order.

    Args:
        lengths: `(sentences,)` source lengths in tokens (`</s>` included).
    Returns:
        Lists of indices into `lengths`; every index exactly once.
    Raises:
        ValueError: if `max_tokens` or `max_sentences` is not a positive integer.
    """
    order = sorted(range(len(lengths)), key=lambda index: -lengths[index])
    return pack_token_batches(order, [lengths], max_tokens, max_sentences)
