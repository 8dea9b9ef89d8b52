"""Token-based batching (§5.1) and the collator that pads the batches it makes.

§5.1: "Sentence pairs were batched together by approximate sequence length. Each training batch contained a set of
sentence pairs containing approximately 25000 source tokens and 25000 target tokens."

`TokenBatchSampler` follows fairseq's `batch_by_size`: order the pairs by length (randomly broken ties), cut the
ordered list greedily into batches whose *padded* source and target sizes both stay within `max_tokens` (the
package's one packing rule, `batching_vaswani_transformer.token_batch_bounds`), then shuffle the order of the
batches. `max_tokens` is per device and per forward pass: the paper's 25000 is the sum over
its 8 GPUs (and, here, over gradient-accumulation steps), so
    effective tokens per optimizer step ~= max_tokens * num_processes * gradient_accumulation_steps.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler
from transformers import DataCollatorForSeq2Seq, PreTrainedTokenizerBase

from vaswani_transformer.batching_vaswani_transformer import token_batch_bounds


__all__ = [
    "TokenBatchSampler",
    "build_collator",
    "evaluation_batches",
    "make_token_batches",
    "non_pad_tokens",
    "padded_lengths",
]


def padded_lengths(lengths: Sequence[int] | np.ndarray, pad_to_multiple_of: int = 1) -> np.ndarray:
    """`lengths` rounded up to a multiple of `pad_to_multiple_of` (tokens): the length a batch is padded to when
    these are its longest items (`build_collator` with the same `pad_to_multiple_of`). Returns an int64 array."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return -(-lengths // pad_to_multiple_of) * pad_to_multiple_of


def make_token_batches(
    lengths_src: np.ndarray, lengths_tgt: np.ndarray, max_tokens: int, order: np.ndarray, pad_to_multiple_of: int = 1
) -> list[list[int]]:
    """Greedily cut `order` (indices already sorted by length) into batches within the token budget.

    A batch of n pairs costs n * max(source lengths) padded source tokens and n * max(target lengths) padded
    target tokens, each length rounded up to a multiple of `pad_to_multiple_of` as the collator pads it; both must
    be <= `max_tokens`. A single pair longer than `max_tokens` forms its own batch (it cannot be split; truncate or
    filter it upstream if that is not wanted). The rule is `batching_vaswani_transformer.token_batch_bounds`.

    Args:
        lengths_src, lengths_tgt: (num_pairs,) token counts per pair (source `input_ids`, target `labels`).
        max_tokens: padded-token budget per side per batch (tokens).
        order: (num_pairs,) permutation of the indices, in the order they are packed.
        pad_to_multiple_of: the collator's rounding of padded lengths (1: none).

    Returns:
        Batches as lists of dataset indices; together they contain every index of `order` exactly once.
    """
    order = np.asarray(order, dtype=np.int64)
    bounds = _packing_bounds(lengths_src, lengths_tgt, max_tokens, order, pad_to_multiple_of)
    return [order[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _packing_bounds(
    lengths_src: np.ndarray, lengths_tgt: np.ndarray, max_tokens: int, order: np.ndarray, pad_to_multiple_of: int
) -> np.ndarray:
    """`token_batch_bounds` of the pairs in `order`, each side's lengths rounded as the collator pads them:
    `(num_batches + 1,)` int64 offsets into `order`."""
    sides = [padded_lengths(lengths, pad_to_multiple_of)[order] for lengths in (lengths_src, lengths_tgt)]
    return np.asarray(token_batch_bounds(sides, max_tokens), dtype=np.int64)


def evaluation_batches(
    lengths_src: Sequence[int],
    lengths_tgt: Sequence[int],
    max_tokens: int,
    rank: int = 0,
    num_replicas: int = 1,
    pad_to_multiple_of: int = 1,
) -> list[list[int]]:
    """Token batches of an evaluation set in length order (no shuffling), every `num_replicas`-th one for `rank`.

    Unlike training batches, none is dropped: together the ranks' batches cover every pair exactly once.
    Lengths in tokens; returns lists of dataset indices. `pad_to_multiple_of` as in `make_token_batches`.
    """
    lengths_src, lengths_tgt = np.asarray(lengths_src), np.asarray(lengths_tgt)
    order = np.lexsort((lengths_tgt, lengths_src))  # by source length, then target length
    return make_token_batches(lengths_src, lengths_tgt, max_tokens, order, pad_to_multiple_of)[rank::num_replicas]


class TokenBatchSampler(Sampler[list[int]]):
    """§5.1 token-based batch sampler: batches of similar-length pairs, each within `max_tokens` per side.

    For every epoch (seeded from `(seed, epoch)`; call `set_epoch` before iterating):
      1. shuffle the indices, then stable-sort them by (source length, target length): pairs of equal length land in
         a new random order each epoch, so batch *contents* change between epochs (fairseq's `batch_by_size`);
      2. pack them greedily into batches with padded source tokens <= max_tokens and padded target tokens
         <= max_tokens (`make_token_batches`; an over-long pair is a batch on its own);
      3. shuffle the order of the batches;
      4. data parallelism: drop the last `len(batches) % num_replicas` batches of that shuffled order (fewer than
         `num_replicas` batches, a different few each epoch) so every rank gets the same number of batches, then
         rank r takes batches r, r + num_replicas, ... The ranks' batches are disjoint. With num_replicas == 1
         every pair appears exactly once per epoch.
    With `shuffle=False` steps 1 and 3 are skipped (deterministic length order, e.g. for evaluation).

    Global batch at step k with gradient accumulation A on P ranks = batches [k*P*A, (k+1)*P*A) of the shuffled list,
    the same pairs a 1-process run with accumulation P*A would see.

    Args:
        lengths_src, lengths_tgt: per-pair token counts (sequence of ints, length num_pairs).
        max_tokens: padded-token budget per side per batch, per device per forward pass (tokens).
        pad_to_multiple_of: the collator's rounding of padded lengths, counted in the budget (1: none).
        seed: base seed; each epoch uses `numpy.random.default_rng((seed, epoch))`.
        shuffle: shuffle ties and batch order (training) or not (evaluation).
        num_replicas, rank: data-parallel world size and this process's rank.

    Raises:
        ValueError: on mismatched or empty length lists, non-positive lengths or `max_tokens`, or a bad rank.
    """

    def __init__(
        self,
        lengths_src: Sequence[int],
        lengths_tgt: Sequence[int],
        max_tokens: int,
        seed: int = 0,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
        pad_to_multiple_of: int = 1,
    ) -> None:
        self.lengths_src = np.asarray(lengths_src, dtype=np.int64)
        self.lengths_tgt = np.asarray(lengths_tgt, dtype=np.int64)
        if self.lengths_src.shape != self.lengths_tgt.shape or self.lengths_src.ndim != 1:
            raise ValueError(f"length lists differ: {self.lengths_src.shape} vs {self.lengths_tgt.shape}")
        if len(self.lengths_src) == 0:
            raise ValueError("TokenBatchSampler got no pairs (empty dataset)")
        if self.lengths_src.min() <= 0 or self.lengths_tgt.min() <= 0:
            raise ValueError("every pair needs at least one source and one target token")
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        if num_replicas <= 0 or not 0 <= rank < num_replicas:
            raise ValueError(f"need 0 <= rank < num_replicas, got rank={rank}, num_replicas={num_replicas}")
        if pad_to_multiple_of <= 0:
            raise ValueError(f"pad_to_multiple_of must be positive, got {pad_to_multiple_of}")
        self.max_tokens = max_tokens
        self.pad_to_multiple_of = pad_to_multiple_of
        self.seed = seed
        self.shuffle = shuffle
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self._cache: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields (like `DistributedSampler.set_epoch`)."""
        self.epoch = epoch

    def _epoch_batches(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The current epoch as arrays: `order` (num_pairs,) indices in packing order, `bounds` (num_batches + 1,)
        offsets into it (`token_batch_bounds`), and `batches` (kept batches,) batch numbers in global order, after
        the shuffle and the dropped remainder. Cached for the epoch: about 16 bytes a pair, no Python list."""
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1:]
        rng = np.random.default_rng((self.seed, self.epoch))
        indices = rng.permutation(len(self.lengths_src)) if self.shuffle else np.arange(len(self.lengths_src))
        # np.lexsort sorts by the last key first and is stable: by source length, then target length, ties random.
        order = indices[np.lexsort((self.lengths_tgt[indices], self.lengths_src[indices]))]
        bounds = _packing_bounds(self.lengths_src, self.lengths_tgt, self.max_tokens, order, self.pad_to_multiple_of)
        batches = np.arange(len(bounds) - 1)
        if self.shuffle:
            batches = batches[rng.permutation(len(batches))]
        batches = batches[: len(batches) - len(batches) % self.num_replicas]
        self._cache = (self.epoch, order, bounds, batches)
        return order, bounds, batches

    def all_batches(self) -> list[list[int]]:
        """Every rank's batches for the current epoch, in global order, after the remainder is dropped (lists of
        dataset indices; built on demand, the sampler itself keeps arrays)."""
        order, bounds, batches = self._epoch_batches()
        return [order[bounds[b] : bounds[b + 1]].tolist() for b in batches]

    def __iter__(self) -> Iterator[list[int]]:
        order, bounds, batches = self._epoch_batches()
        for b in batches[self.rank :: self.num_replicas]:
            yield order[bounds[b] : bounds[b + 1]].tolist()

    def __len__(self) -> int:
        """Number of batches this rank yields in the current epoch (can vary slightly between epochs)."""
        return len(self._epoch_batches()[2]) // self.num_replicas


def build_collator(tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int = 1) -> DataCollatorForSeq2Seq:
    """Pad examples {input_ids, attention_mask, labels} into a batch with transformers' `DataCollatorForSeq2Seq`.

    Source ids are padded with the tokenizer's pad id (0) and `attention_mask` with 0; `labels` are padded with
    -100 so the loss ignores them. No model is passed: the model itself builds `decoder_input_ids` by shifting the
    labels right (`config.decoder_start_token_id`). Both lengths are rounded up to a multiple of
    `pad_to_multiple_of` (the collator's own option; 1: the longest example), which the samplers count in their
    `max_tokens` budget, so padded sizes stay within it.

    Returns:
        A callable mapping a list of examples to tensors input_ids/attention_mask (batch, src_len) and
        labels (batch, tgt_len), int64.
    """
    return DataCollatorForSeq2Seq(
        tokenizer,
        model=None,
        padding=True,
        label_pad_token_id=-100,
        pad_to_multiple_of=pad_to_multiple_of if pad_to_multiple_of > 1 else None,
        return_tensors="pt",
    )


def non_pad_tokens(batch: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(source, target) tokens of a collated batch without padding: the work a step does, the unit of tokens/s.

    Counts `attention_mask` ones `(batch, src_len)` and `labels` other than -100 `(batch, tgt_len)`.
    """
    return int(batch["attention_mask"].sum()), int((batch["labels"] != -100).sum())
