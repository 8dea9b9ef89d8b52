"""Learn the shared source-target BPE vocabulary (§5.1) from the train split and save it with `save_pretrained`.

    python training/train_tokenizer.py --data_dir ../shared/data/multi30k --source_lang en --target_lang de \\
        --vocab_size 8000 --output_dir runs/tokenizer-en-de

The paper uses "byte-pair encoding, which has a shared source-target vocabulary of about 37000 tokens" for WMT 2014
English-German (§5.1); for the 29,000 pairs of Multi30k a vocabulary of about 8000 tokens is enough. Flag names
follow transformers' `run_translation_no_trainer.py`; the data flags are those of `training.data`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import datasets
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from vaswani_transformer.output_dir import check_output_dir, prepare_output_dir
from vaswani_transformer.tokenization_vaswani_transformer_fast import (
    DEFAULT_MODEL_MAX_LENGTH,
    VaswaniTransformerTokenizerFast,
)
from vaswani_transformer.training.data import iter_texts, load_parallel_dataset


__all__ = ["TokenizerTrainingArguments", "main", "train_tokenizer"]

logger = logging.getLogger(__name__)
# Corpora of at least this many texts get a progress bar by default (Multi30k en+de is 58,000 texts, ~2 s).
PROGRESS_MIN_TEXTS = 100_000


@dataclass
class TokenizerTrainingArguments:
    """Command-line arguments of `train_tokenizer.py` (parsed by `transformers.HfArgumentParser`)."""

    output_dir: str = field(metadata={"help": "Where save_pretrained writes the tokenizer (new or empty)."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace a non-empty output_dir."})
    source_lang: str = field(default="en", metadata={"help": "Source language code, e.g. en."})
    target_lang: str = field(default="de", metadata={"help": "Target language code, e.g. de."})
    vocab_size: int = field(
        default=8000, metadata={"help": "Shared vocabulary size incl. 4 special tokens and 256 bytes (§5.1)."}
    )
    min_frequency: int = field(default=2, metadata={"help": "Merge only pairs seen at least this many times."})
    model_max_length: int = field(
        default=DEFAULT_MODEL_MAX_LENGTH, metadata={"help": "Longest sequence in tokens kept by truncation."}
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "Folder of line-aligned {split}.{lang}[.gz] files (e.g. Multi30k)."}
    )
    train_file: str | None = field(default=None, metadata={"help": 'JSON lines {"translation": {...}}.'})
    dataset_name: str | None = field(default=None, metadata={"help": "Dataset name for datasets.load_dataset."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Its configuration, e.g. de-en."})


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


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, read the train split, train the shared vocabulary and save it to `--output_dir`.

    Raises:
        ValueError: as `load_parallel_dataset` and `train_tokenizer`, or if the data has no train split.
        FileExistsError: a non-empty --output_dir without --overwrite_output_dir (nothing is written).
    """
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    (args,) = HfArgumentParser(TokenizerTrainingArguments).parse_args_into_dataclasses(args=argv)
    check_output_dir(args.output_dir, args.overwrite_output_dir)
    raw = load_parallel_dataset(
        args.source_lang,
        args.target_lang,
        data_dir=args.data_dir,
        train_file=args.train_file,
        dataset_name=args.dataset_name,
        dataset_config_name=args.dataset_config_name,
    )
    if "train" not in raw:
        raise ValueError(f"no train split in the data (splits: {list(raw)})")
    languages = (args.source_lang, args.target_lang)
    num_pairs = len(raw["train"])
    logger.info("read %d lines: %d train pairs in %s and %s", 2 * num_pairs, num_pairs, *languages)
    tokenizer = train_tokenizer(
        raw["train"],
        languages,
        args.vocab_size,
        min_frequency=args.min_frequency,
        model_max_length=args.model_max_length,
    )
    tokenizer.save_pretrained(prepare_output_dir(args.output_dir, args.overwrite_output_dir))
    logger.info("vocabulary of %d tokens (asked for %d) saved to %s", len(tokenizer), args.vocab_size, args.output_dir)
