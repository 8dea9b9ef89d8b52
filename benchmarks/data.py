"""The benchmark's data: Multi30k text, a BPE learnt from it, and one training batch made by the training loader's
rule (`vaswani_transformer.training.batching`)."""

from __future__ import annotations

from pathlib import Path

from vaswani_transformer.tokenization_vaswani_transformer_fast import VaswaniTransformerTokenizerFast
from vaswani_transformer.training.batching import TokenBatchSampler, build_collator
from vaswani_transformer.training.data import DEFAULT_SPLITS, read_lines

from . import CACHE_DIR


__all__ = ["load_tokenizer", "training_batch", "translation_sentences"]

TRAIN = DEFAULT_SPLITS["train"]  # the Multi30k training files' stem


def load_tokenizer(data_dir: Path, sentences: int, vocab_size: int) -> VaswaniTransformerTokenizerFast:
    """The shared BPE learnt from the first `sentences` Multi30k train pairs (EN + DE), cached in benchmarks/.cache."""
    cache = CACHE_DIR / f"tokenizer_multi30k_{sentences}_{vocab_size}"
    if (cache / "tokenizer.json").is_file():
        return VaswaniTransformerTokenizerFast.from_pretrained(cache)
    texts = [text for lang in ("en", "de") for text in read_lines(data_dir / f"{TRAIN}.{lang}.gz")[:sentences]]
    tokenizer = VaswaniTransformerTokenizerFast.train_from_iterator(texts, vocab_size)
    tokenizer.save_pretrained(cache)
    return tokenizer


def training_batch(tokenizer, data_dir: Path, tokens_per_side: int, pool: int | None = None) -> dict:
    """One batch of real Multi30k train pairs, as the training loader makes them: the middle one of the
    length-sorted batches of `TokenBatchSampler` (no shuffling), each within `tokens_per_side` padded tokens per
    side, padded by `build_collator`. The middle batch holds pairs of typical length.

    Args:
        pool: how many train pairs to batch (the first `pool`); None for all 29,000.
    Returns:
        `input_ids`, `attention_mask` `(batch, src_len)`; `labels` `(batch, tgt_len)` with -100 at padding.
    """
    sources, targets = (read_lines(data_dir / f"{TRAIN}.{lang}.gz")[:pool] for lang in ("en", "de"))
    encoded = tokenizer(sources, text_target=targets)
    lengths_src = [len(ids) for ids in encoded["input_ids"]]
    lengths_tgt = [len(ids) for ids in encoded["labels"]]
    batches = TokenBatchSampler(lengths_src, lengths_tgt, tokens_per_side, shuffle=False).all_batches()
    examples = [
        {name: encoded[name][index] for name in ("input_ids", "attention_mask", "labels")}
        for index in batches[len(batches) // 2]
    ]
    return dict(build_collator(tokenizer)(examples))


def translation_sentences(data_dir: Path, count: int) -> list[str]:
    """The first `count` English sentences of Multi30k test_2016_flickr."""
    return test_pairs(data_dir, count)[0]


def test_pairs(
    data_dir: Path, count: int, source_lang: str = "en", target_lang: str = "de"
) -> tuple[list[str], list[str]]:
    """The first `count` sources of Multi30k test_2016_flickr and their references (the benchmarked models translate
    English into German). Raises FileNotFoundError naming a missing file."""
    stem = DEFAULT_SPLITS["test"]
    return tuple(read_lines(data_dir / f"{stem}.{lang}.gz")[:count] for lang in (source_lang, target_lang))
