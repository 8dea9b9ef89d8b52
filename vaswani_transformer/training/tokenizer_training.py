"""Learn the shared source-target BPE vocabulary (§5.1) from both sides of the training pairs.

    python training/train_tokenizer.py --data_dir ../shared/data/multi30k --source_lang en --target_lang de \\
        --vocab_size 8000 --output_dir runs/tokenizer-en-de

The paper uses "byte-pair encoding, which has a shared source-target vocabulary of about 37000 tokens" for WMT 2014
English-German (§5.1); for the 29,000 pairs of Multi30k a vocabulary of about 8000 tokens is enough. The command
(`vaswani-train-tokenizer`, flag names of transformers' `run_translation_no_trainer.py`, the data flags of
`training.data`) is `training.cli.train_tokenizer_main`, which saves the result with `save_pretrained`.
"""

from __future__ import annotations

import logging

import datasets
from tqdm.auto import tqdm

from vaswani_transformer.tokenization_vaswani_transformer_fast import (
    DEFAULT_MODEL_MAX_LENGTH,
    VaswaniTransformerTokenizerFast,
)
from vaswani_transformer.training.data import iter_texts


__all__ = ["PROGRESS_MIN_TEXTS", "train_tokenizer"]

logger = logging.getLogger(__name__)
# Corpora of at least this many texts get a progress bar by default (Multi30k en+de is 58,000 texts, ~2 s).
PROGRESS_MIN_TEXTS = 100_000


def train_tokenizer(
    raw_train: datasets.Dataset,
    languages: tuple[str, ...] | list[str],
    vocab_size: int,
    *,
    min_frequency: int = 2,
    model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
    show_progress: bool | None = None,
) -> VaswaniTransformerTokenizerFast:
    """§5.1: learn one BPE vocabulary from both sides of the training pairs.

    Args:
        raw_train: the train split, a "translation" column of {lang: text} (see `training.data`).
        languages: the sides to learn from, e.g. ("en", "de"); all of them share the vocabulary.
        vocab_size: tokens in the vocabulary, including the 4 special tokens and the 256 byte symbols.
        min_frequency: a pair is merged only if it occurs at least this many times.
        model_max_length: the tokenizer's `model_max_length`, in tokens.
        show_progress: tqdm bar over the texts; None shows it for corpora of >= `PROGRESS_MIN_TEXTS` texts.

    Returns:
        The trained `VaswaniTransformerTokenizerFast` (deterministic for the same data and arguments).

    Raises:
        ValueError: if `vocab_size` < 260, the corpus holds no character, or a row lacks a language.
    """
    num_texts = len(raw_train) * len(languages)
    texts = iter_texts(raw_train, languages)
    if show_progress if show_progress is not None else num_texts >= PROGRESS_MIN_TEXTS:
        texts = tqdm(texts, total=num_texts, desc="BPE corpus", unit="text")
    return VaswaniTransformerTokenizerFast.train_from_iterator(
        texts, vocab_size, min_frequency=min_frequency, length=num_texts, model_max_length=model_max_length
    )
