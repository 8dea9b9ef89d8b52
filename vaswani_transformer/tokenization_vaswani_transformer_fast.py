"""The shared source/target BPE tokenizer of the Transformer (Vaswani et al., 2017, §5.1).

The paper encodes WMT 2014 English-German with "byte-pair encoding, which has a shared source-target vocabulary of
about 37000 tokens" (§5.1). This module builds that tokenizer on Hugging Face `tokenizers` and wraps it in the
transformers v5 fast-tokenizer base class (`TokenizersBackend`), following the layout of
`transformers/models/roberta/tokenization_roberta.py` (byte-level BPE built in `__init__` from `vocab` and `merges`).

This file imports only the standard library, `tokenizers` and `transformers`: `save_pretrained` copies it next to a
saved tokenizer so that `AutoTokenizer.from_pretrained(path, trust_remote_code=True)` works where this package is
not installed.
"""

from __future__ import annotations

import contextlib
import gc
import os
import unicodedata
from collections.abc import Iterable, Iterator

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE
from transformers.tokenization_utils_base import BatchEncoding, PaddingStrategy, TruncationStrategy
from transformers.tokenization_utils_tokenizers import TokenizersBackend


__all__ = ["SPECIAL_TOKENS", "VaswaniTransformerTokenizerFast", "normalize_text"]

# Fixed ids: the model config uses pad_token_id=0, bos_token_id=decoder_start_token_id=1, eos_token_id=2.
SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<s>", "</s>", "<unk>")
# Unicode normalization form applied before tokenization (see the class docstring for why NFC and not NFKC).
NORMALIZATION_FORM = "NFC"
# Byte-level BPE starts from the 256 single-byte symbols, so no input can ever map to <unk>.
BYTE_ALPHABET_SIZE = 256
MIN_VOCAB_SIZE = len(SPECIAL_TOKENS) + BYTE_ALPHABET_SIZE
# Longest sequence, in tokens, that `truncation=True` keeps by default; keep equal to the model's
# `max_position_embeddings` (Multi30k sentences are < 100 tokens, WMT sentences rarely exceed 250).
DEFAULT_MODEL_MAX_LENGTH = 1024
# `_encode_plus` options that need transformers' per-sentence conversion (`TokenizersBackend._encode_plus`).
_BASE_CLASS_OPTIONS = (
    "is_split_into_words",
    "return_token_type_ids",
    "return_overflowing_tokens",
    "return_special_tokens_mask",
    "return_offsets_mapping",
    "return_length",
    "sanitize_control_tokens",
)


def normalize_text(text: str) -> str:
    """Return `text` in the tokenizer's Unicode normalization form (NFC), which is what decoding gives back.

    Args:
        text: any Python string.

    Returns:
        `unicodedata.normalize("NFC", text)`: for every string `x`,
        `tokenizer.decode(tokenizer(x).input_ids, skip_special_tokens=True) == normalize_text(x)`.
    """
    return unicodedata.normalize(NORMALIZATION_FORM, text)


# Deviation from the paper: a byte-level-safe BPE (tokenizers), not tensor2tensor's word-piece/BPE vocabulary.
def _build_backend(vocab: dict[str, int], merges: list[tuple[str, str]]) -> Tokenizer:
    """Build the `tokenizers` pipeline: NFC normalizer -> byte-level pre-tokenizer -> BPE -> byte-level decoder.

    Args:
        vocab: token -> id, ids contiguous from 0; the special tokens first (`SPECIAL_TOKENS`).
        merges: BPE merge rules in priority order, each a pair of vocabulary tokens.

    Returns:
        A `tokenizers.Tokenizer` without post-processor (the base class installs `$A </s>`).
    """
    backend = Tokenizer(
        BPE(
            vocab=vocab,
            merges=merges,
            unk_token=SPECIAL_TOKENS[3],
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
            dropout=None,
        )
    )
    backend.normalizer = normalizers.NFC()
    # add_prefix_space=False keeps decode exact (no space is invented before the first word); the GPT-2 regex
    # splits words, numbers, punctuation and whitespace runs, and ByteLevel maps every UTF-8 byte to a symbol.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    return backend


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector (reference counting still frees memory) inside the block.

    Building one small list of ints per sentence triggers a collection every `gc.get_threshold()[0]` new containers,
    and each older-generation pass walks every container object of the process, many once torch and transformers
    are imported. Lists of ints cannot form reference cycles, so the collector has nothing to find there. See the `gc`
    module docs on `gc.disable`.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _CountingIterator:
    """Wrap a training corpus (strings or batches of strings) and count texts and characters passing through."""

    def __init__(self, texts: Iterable[str] | Iterable[list[str]]):
        self._texts = iter(texts)
        self.num_texts = 0
        self.num_chars = 0

    def __iter__(self) -> Iterator[str | list[str]]:
        for item in self._texts:
            batch = [item] if isinstance(item, str) else item
            self.num_texts += len(batch)
            self.num_chars += sum(len(text) for text in batch)
            yield item


class VaswaniTransformerTokenizerFast(TokenizersBackend):
    """§5.1: one byte-level BPE vocabulary shared by source and target, special tokens at fixed ids.

    Pipeline (all in `tokenizer.json`, run by the Rust `tokenizers` library):

    * Normalizer: Unicode **NFC**. NFC only merges canonically equivalent code point sequences (e.g. "e" + U+0301
      -> "é"), so the decoded text is canonically equivalent to, and renders exactly like, the input. NFKC would
      also fold compatibility characters ("ﬁ" -> "fi", "²" -> "2", full-width -> ASCII), which changes what a
      translation may output and what BLEU is computed on; we leave such folding to the data.
    * Pre-tokenizer: GPT-2 **byte-level** (`ByteLevel(add_prefix_space=False)`): text is split by the GPT-2 regex
      into words, numbers, punctuation and whitespace runs, and each UTF-8 byte is mapped to one of 256 printable
      symbols; the byte-level decoder inverts that map. Since the 256 byte symbols are always in the vocabulary,
      no character can become `<unk>` (emoji, CJK, RTL scripts, control characters, NUL, lone combining marks),
      and whitespace (runs, tabs, newlines, leading and trailing) survives. We chose it over Metaspace + BPE with
      byte fallback because Metaspace turns a leading space and a literal "▁" into something else on decoding.
    * Model: BPE (Sennrich et al., 2016) learned jointly on both languages.
    * Post-processor: source ids end with `</s>` (no `<s>`); `text_target` labels end with `</s>` as well. The
      decoder input starts with `<s>` (the model's `decoder_start_token_id`), added by the model by shifting
      labels right.
    * `split_special_tokens=True` by default: a literal "</s>" inside a sentence is encoded as ordinary bytes, so
      `skip_special_tokens=True` never deletes text.

    Hence, for every string `x`: `decode(encode(x), skip_special_tokens=True) == normalize_text(x)` (NFC of x).

    Special tokens and ids: `<pad>`=0, `<s>`=1, `</s>`=2, `<unk>`=3. Padding is on the right. `model_max_length`
    defaults to 1024 tokens (`DEFAULT_MODEL_MAX_LENGTH`), the length used by `truncation=True`.

    Follows `transformers.models.roberta.tokenization_roberta.RobertaTokenizer` (v5 `TokenizersBackend` that builds
    its backend from `vocab`/`merges`). Train one with `train_from_iterator` (from scratch) or with transformers'
    `train_new_from_iterator` (same pipeline, new corpus).

    Args:
        vocab: token -> id mapping (ids contiguous from 0, `SPECIAL_TOKENS` first). `None` gives a vocabulary of
            the four special tokens only, the starting point of training.
        merges: BPE merges in priority order, as pairs `(left, right)` or strings `"left right"`.
        pad_token, bos_token, eos_token, unk_token: the special tokens (ids 0, 1, 2, 3 in a trained vocabulary).
        add_bos_token: whether to prepend `<s>` to encoded sequences (default False: the paper's encoder input
            has no start token).
        add_eos_token: whether to append `</s>` to encoded sequences (default True).
        split_special_tokens: encode special-token strings found in the text as plain text (default True).
        **kwargs: passed to `TokenizersBackend` (`model_max_length`, `padding_side`, `tokenizer_object`, ...).
    """

    vocab_files_names = {"tokenizer_file": "tokenizer.json"}
    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "right"
    truncation_side = "right"
    model = BPE

    def __init__(
        self,
        vocab: dict[str, int] | None = None,
        merges: list[tuple[str, str]] | list[str] | None = None,
        pad_token: str = SPECIAL_TOKENS[0],
        bos_token: str = SPECIAL_TOKENS[1],
        eos_token: str = SPECIAL_TOKENS[2],
        unk_token: str = SPECIAL_TOKENS[3],
        add_bos_token: bool = False,
        add_eos_token: bool = True,
        split_special_tokens: bool = True,
        **kwargs,
    ):
        if vocab is None:
            vocab = {str(token): index for index, token in enumerate((pad_token, bos_token, eos_token, unk_token))}
        merges = [tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge) for merge in merges or []]
        self._tokenizer = _build_backend(vocab, merges)
        kwargs.setdefault("model_max_length", DEFAULT_MODEL_MAX_LENGTH)
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        super().__init__(
            pad_token=pad_token,
            bos_token=bos_token,
            eos_token=eos_token,
            unk_token=unk_token,
            add_bos_token=add_bos_token,
            add_eos_token=add_eos_token,
            split_special_tokens=split_special_tokens,
            **kwargs,
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *init_inputs, **kwargs) -> VaswaniTransformerTokenizerFast:
        """`PreTrainedTokenizerBase.from_pretrained`, refusing a tokenizer whose vocabulary is only special tokens.

        Without `tokenizer.json` the base class builds the tokenizer from `tokenizer_config.json` alone: `__init__`
        without `vocab` gives the four special tokens, every word encodes to `<unk>`, and a model translates every
        sentence to "". Also used by `AutoTokenizer.from_pretrained(..., trust_remote_code=True)`. A tokenizer built
        in code (`train_from_iterator`, `train_new_from_iterator`, `tokenizer_object=...`) is not checked.

        Args and returns: as `PreTrainedTokenizerBase.from_pretrained`.

        Raises:
            OSError: naming the directory, if it is a local directory without `tokenizer.json`.
            ValueError: naming where it was loaded from, if the loaded vocabulary holds only special tokens (an
                untrained `tokenizer.json`, or a Hub repository without one).
        """
        tokenizer = super().from_pretrained(pretrained_model_name_or_path, *init_inputs, **kwargs)
        vocab = tokenizer.get_vocab()
        if set(vocab) > set(tokenizer.all_special_tokens):
            return tokenizer
        directory = str(pretrained_model_name_or_path)
        if kwargs.get("subfolder"):
            directory = os.path.join(directory, kwargs["subfolder"])
        tokenizer_file = cls.vocab_files_names["tokenizer_file"]
        special = " ".join(sorted(vocab, key=vocab.get))
        if os.path.isdir(directory) and not os.path.isfile(os.path.join(directory, tokenizer_file)):
            raise OSError(
                f"{directory} has no {tokenizer_file}: the tokenizer would know only its special tokens ({special}) "
                f"and encode every word as {tokenizer.unk_token}. Save the trained tokenizer there "
                "(tokenizer.save_pretrained) or load it from the directory that holds its tokenizer.json."
            )
        raise ValueError(
            f"The tokenizer loaded from {directory} has only its special tokens ({special}) in its vocabulary: its "
            f"{tokenizer_file} is missing or untrained, and every word would be encoded as {tokenizer.unk_token}."
        )

    def _encode_plus(self, text, text_pair=None, **kwargs) -> BatchEncoding:
        """Encode a batch of plain strings straight from `encode_batch`; anything else goes to `TokenizersBackend`.

        `TokenizersBackend._encode_plus` builds one dict per sentence in Python and then restacks them. For the
        common call (a list of strings, no pairs, none of `_BASE_CLASS_OPTIONS`) this builds the same
        `BatchEncoding` -- same keys, same ids and masks, same `encodings`, same too-long warning -- with one list
        comprehension per key, with the cyclic garbage collector paused while the lists are built
        (`_cyclic_gc_paused`). Options not given take the base class's defaults. `tests/model/test_tokenization.py`
        checks equality with the base class for padding, truncation and tensors; `tests/model/test_contracts.py`
        checks the base method's signature against the installed transformers.

        Args and returns: as `TokenizersBackend._encode_plus` (called by `__call__`).

        Raises:
            TypeError: if an item of the batch is not a string (raised by `tokenizers`).
        """
        if (
            not isinstance(text, list)
            or not text
            or not isinstance(text[0], str)
            or text_pair is not None
            or any(kwargs.get(option) for option in _BASE_CLASS_OPTIONS)
        ):
            return super()._encode_plus(text, text_pair=text_pair, **kwargs)
        max_length = kwargs.get("max_length")
        self.set_truncation_and_padding(
            padding_strategy=kwargs.get("padding_strategy", PaddingStrategy.DO_NOT_PAD),
            truncation_strategy=kwargs.get("truncation_strategy", TruncationStrategy.DO_NOT_TRUNCATE),
            max_length=max_length,
            stride=kwargs.get("stride", 0),
            pad_to_multiple_of=kwargs.get("pad_to_multiple_of"),
            padding_side=kwargs.get("padding_side"),
        )
        split_special_tokens = kwargs.get("split_special_tokens")
        if split_special_tokens is None:
            split_special_tokens = self.split_special_tokens
        if self._tokenizer.encode_special_tokens != split_special_tokens:
            self._tokenizer.encode_special_tokens = split_special_tokens
        # A non-string item past the first raises the Rust TypeError, as in the base class.
        encodings = self._tokenizer.encode_batch(text, add_special_tokens=kwargs.get("add_special_tokens", True))
        return_attention_mask = kwargs.get("return_attention_mask")
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        with _cyclic_gc_paused():
            data = {"input_ids": [encoding.ids for encoding in encodings]}
            if return_attention_mask:
                data["attention_mask"] = [encoding.attention_mask for encoding in encodings]
        longest = max(data["input_ids"], key=len)
        self._eventual_warn_about_too_long_sequence(longest, max_length, kwargs.get("verbose", True))
        return BatchEncoding(data, encodings, tensor_type=kwargs.get("return_tensors"))

    @classmethod
    def train_from_iterator(
        cls,
        texts: Iterable[str] | Iterable[list[str]],
        vocab_size: int,
        *,
        min_frequency: int = 2,
        length: int | None = None,
        show_progress: bool = False,
        **kwargs,
    ) -> VaswaniTransformerTokenizerFast:
        """§5.1: learn a shared BPE vocabulary of `vocab_size` tokens from scratch (source and target texts mixed).

        Deterministic: the same texts (in the same order) and arguments give a byte-identical `tokenizer.json`.

        Args:
            texts: the corpus, strings or batches (lists) of strings; pass both languages (see
                `training.data.iter_texts`).
            vocab_size: number of tokens including the 4 special tokens and the 256 byte symbols.
            min_frequency: a pair is merged only if it occurs at least this many times.
            length: number of items in `texts`, for the progress bar only.
            show_progress: show the `tokenizers` progress bar.
            **kwargs: passed to the constructor (e.g. `model_max_length`).

        Returns:
            A trained `VaswaniTransformerTokenizerFast`.

        Raises:
            ValueError: if `vocab_size` < 260 (4 special tokens + 256 bytes), or if `texts` holds no character.
        """
        return cls(**kwargs).train_new_from_iterator(
            texts, vocab_size, length=length, min_frequency=min_frequency, show_progress=show_progress
        )

    def train_new_from_iterator(
        self,
        text_iterator: Iterable[str] | Iterable[list[str]],
        vocab_size: int,
        length: int | None = None,
        new_special_tokens: list[str] | None = None,
        special_tokens_map: dict[str, str] | None = None,
        **kwargs,
    ) -> VaswaniTransformerTokenizerFast:
        """Train a new tokenizer with this one's pipeline and special tokens on a new corpus (as in transformers).

        Follows `TokenizersBackend.train_new_from_iterator`, adding the byte alphabet and two checks.

        Args:
            text_iterator: strings or batches (lists) of strings.
            vocab_size: number of tokens including special tokens and the 256 byte symbols.
            length: number of items in `text_iterator`, for the progress bar only.
            new_special_tokens: extra special tokens, given ids after the four fixed ones.
            special_tokens_map: renames of special tokens, as in transformers.
            **kwargs: passed to `tokenizers.trainers.BpeTrainer` (`min_frequency`, `show_progress`, ...).

        Returns:
            A new `VaswaniTransformerTokenizerFast`.

        Raises:
            ValueError: if `vocab_size` < 4 + 256 (+ the new special tokens), or if the corpus holds no character.
        """
        num_special = len(SPECIAL_TOKENS) + len(new_special_tokens or [])
        if vocab_size < num_special + BYTE_ALPHABET_SIZE:
            raise ValueError(
                f"vocab_size={vocab_size} is smaller than the {num_special} special tokens + {BYTE_ALPHABET_SIZE} "
                f"byte symbols = {num_special + BYTE_ALPHABET_SIZE} tokens of the base alphabet"
            )
        kwargs.setdefault("show_progress", False)
        corpus = _CountingIterator(text_iterator)
        trained = super().train_new_from_iterator(
            corpus,
            vocab_size,
            length=length,
            new_special_tokens=new_special_tokens,
            special_tokens_map=special_tokens_map,
            **kwargs,
        )
        if corpus.num_chars == 0:
            raise ValueError(f"cannot train a tokenizer on an empty corpus ({corpus.num_texts} texts, 0 characters)")
        return trained


VaswaniTransformerTokenizerFast.register_for_auto_class("AutoTokenizer")
