"""The shared BPE tokenizer (§5.1): lossless round trip, fixed special ids, training, saving, remote-code loading."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import torch
from conftest import BLOCK_PACKAGE_IMPORT, REPO_ROOT, run_without_package
from tokenizers import pre_tokenizers
from transformers import AutoTokenizer
from transformers.tokenization_utils_tokenizers import TokenizersBackend

from vaswani_transformer.tokenization_vaswani_transformer_fast import VaswaniTransformerTokenizerFast
from vaswani_transformer.training.data import load_parallel_dataset, read_lines
from vaswani_transformer.training.tokenizer_training import train_tokenizer


LANGUAGES = ("en", "de", "fr", "cs")
SPLITS = ("train", "val", "test_2016_flickr")
PAD, BOS, EOS, UNK = 0, 1, 2, 3
HOSTILE = {
    "empty": "",
    "one_space": " ",
    "space_run": "     ",
    "tabs_newlines": "\t\t\n\n\r\n\x0b\x0c",
    "leading_trailing": "   lead and trail   ",
    "mixed_whitespace": "a \t b\n\n c\u00a0d\u2003e\u3000f",
    "line_separators": "a\u2028b\u2029c\x85d",
    "emoji_zwj_family": "👨‍👩‍👧‍👦 family",
    "emoji_skin_tones": "👍🏽👋🏿🤝🏻",
    "emoji_flags": "🏳️‍🌈🇩🇪🇫🇷",
    "cjk": "漢字とかなカナ。한국어 中文",
    "arabic_rtl": "مرحبا بالعالم، كيف حالك؟",
    "hebrew_rtl": "שָׁלוֹם עולם",
    "bidi_controls": "abc\u202eRTL\u202c\u200f\u200e",
    "zero_width": "a\u200db\u200cc\u200bd\ufeff",
    "lone_zwj": "\u200d",
    "nul": "\x00",
    "control_chars": "a\x00b\x01\x07\x1b[31mred\x1b[0m\x7f\x9f",
    "lone_combining_mark": "\u0301",
    "combining_after_space": " \u0301\u0308x",
    "decomposed_accent": "Cafe\u0301 nai\u0308ve",
    "compatibility_chars": "ﬁ ² ½ Ｆｕｌｌ ㎏",
    "special_token_strings": "</s> <s> <pad> <unk> <mask>",
    "byte_level_symbols": "Ġ Ċ ▁ Ã",
    "astral_and_noncharacters": "\U0001d11e \U0010ffff \uffff \ufffd",
    "long_line": "Two dogs run on the beach. " * 370 + "x" * 10,
    "long_single_char": "x" * 10_000,
}


@pytest.fixture(scope="session")
def multi30k_lines(multi30k_dir) -> dict[tuple[str, str], list[str]]:
    """(split, lang) -> the lines of `{split}.{lang}.gz`, for all 3 splits and 4 languages."""
    return {(split, lang): read_lines(multi30k_dir / f"{split}.{lang}.gz") for split in SPLITS for lang in LANGUAGES}


@pytest.fixture(scope="session")
def tokenizer(multi30k_lines) -> VaswaniTransformerTokenizerFast:
    """A tokenizer of 8000 tokens trained once on the Multi30k train split in en, de, fr and cs."""
    corpus = [line for lang in LANGUAGES for line in multi30k_lines["train", lang]]
    return VaswaniTransformerTokenizerFast.train_from_iterator(corpus, 8000)


SYNTHETIC_CORPUS = [
    "A man in a blue shirt is standing on a ladder cleaning windows.",
    "Ein Mann in einem blauen Hemd steht auf einer Leiter und putzt Fenster.",
    "Un homme en chemise bleue est debout sur une échelle pour nettoyer les fenêtres.",
    "Muž v modré košili stojí na žebříku a myje okna.",
]


@pytest.fixture(scope="session")
def synthetic_tokenizer() -> VaswaniTransformerTokenizerFast:
    """A 400-token tokenizer trained on four sentences: the tests below also run where Multi30k is absent."""
    return VaswaniTransformerTokenizerFast.train_from_iterator(SYNTHETIC_CORPUS * 2, 400)


@pytest.fixture(params=["multi30k", "synthetic"])
def any_tokenizer(request) -> VaswaniTransformerTokenizerFast:
    return request.getfixturevalue("tokenizer" if request.param == "multi30k" else "synthetic_tokenizer")


@pytest.fixture(scope="session")
def saved_dir(tokenizer, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save_pretrained(directory)
    return directory


SAMPLES = ["A man in a blue shirt.", "Ein Mann mit einem blauen Hemd.", "", "  x\ty  ", "👍🏽 漢字 \x00"]


def _round_trip(tokenizer: VaswaniTransformerTokenizerFast, texts: list[str]) -> tuple[list[list[int]], list[str]]:
    ids = tokenizer(texts)["input_ids"]
    return ids, tokenizer.batch_decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("split", SPLITS)
def test_round_trip_every_multi30k_sentence(tokenizer, multi30k_lines, split, lang):
    texts = multi30k_lines[split, lang]
    ids, decoded = _round_trip(tokenizer, texts)
    expected = [unicodedata.normalize("NFC", text) for text in texts]
    mismatches = [(index, text) for index, text in enumerate(texts) if decoded[index] != expected[index]]
    assert len(decoded) == len(texts) and not mismatches[:3], f"{len(mismatches)} sentences do not round-trip"
    assert sum(UNK in sequence for sequence in ids) == 0
    assert all(sequence[-1] == EOS and sequence[0] != BOS for sequence in ids)


@pytest.mark.parametrize("text", list(HOSTILE.values()), ids=list(HOSTILE))
def test_round_trip_hostile_strings(any_tokenizer, text):
    (ids,), (decoded,) = _round_trip(any_tokenizer, [text])
    assert decoded == unicodedata.normalize("NFC", text)
    assert UNK not in ids
    assert ids[-1] == EOS and EOS not in ids[:-1], "special-token strings in the text must be encoded as text"
    assert any_tokenizer.decode(ids, skip_special_tokens=True) == decoded


def test_hostile_strings_in_one_padded_batch(any_tokenizer):
    texts = list(HOSTILE.values())
    batch = any_tokenizer(texts, padding=True, return_tensors="pt")
    decoded = any_tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
    assert decoded == [unicodedata.normalize("NFC", text) for text in texts]


def test_normalization_is_nfc_not_nfkc(any_tokenizer):
    decoded = any_tokenizer.decode(any_tokenizer("Cafe\u0301 ﬁ ²").input_ids, skip_special_tokens=True)
    assert decoded == "Caf\u00e9 ﬁ ²"  # canonical composition only; compatibility characters are kept


def test_byte_alphabet_is_in_every_vocabulary(tokenizer):
    tiny = VaswaniTransformerTokenizerFast.train_from_iterator(["ab"], 300)
    for trained in (tokenizer, tiny):
        assert set(pre_tokenizers.ByteLevel.alphabet()) <= set(trained.get_vocab())


@pytest.mark.parametrize("corpus", [None, ["Zwei Hunde.", "Two dogs."]], ids=["multi30k", "tiny"])
def test_special_token_ids_are_fixed(tokenizer, corpus):
    trained = tokenizer if corpus is None else VaswaniTransformerTokenizerFast.train_from_iterator(corpus, 270)
    assert trained.convert_ids_to_tokens([0, 1, 2, 3]) == ["<pad>", "<s>", "</s>", "<unk>"]
    ids = (trained.pad_token_id, trained.bos_token_id, trained.eos_token_id, trained.unk_token_id)
    assert ids == (PAD, BOS, EOS, UNK)
    assert trained.padding_side == "right"
    assert trained.model_input_names == ["input_ids", "attention_mask"]
    assert trained.model_max_length == 1024


def test_source_ends_with_eos_and_labels_from_text_target(any_tokenizer):
    batch = any_tokenizer(["A dog runs.", "Hi"], text_target=["Ein Hund rennt.", "Hallo"])
    for source, label, target in zip(batch["input_ids"], batch["labels"], ["Ein Hund rennt.", "Hallo"], strict=True):
        assert source[-1] == EOS and BOS not in source
        assert label[-1] == EOS and BOS not in label
        assert label == any_tokenizer(target)["input_ids"]
    assert any_tokenizer.batch_decode(batch["labels"], skip_special_tokens=True) == ["Ein Hund rennt.", "Hallo"]


def test_padding_right_and_pt_tensors(any_tokenizer):
    texts = ["A man.", "A much longer sentence about a man in a blue shirt."]
    batch = any_tokenizer(texts, text_target=["Ein Mann.", "Ja"], padding=True, return_tensors="pt")
    lengths = [len(ids) for ids in any_tokenizer(texts)["input_ids"]]
    assert isinstance(batch["input_ids"], torch.Tensor) and batch["input_ids"].dtype == torch.long
    assert batch["input_ids"].shape == (2, max(lengths)) and batch["labels"].shape[0] == 2
    short = batch["input_ids"][0]
    assert short[lengths[0] - 1] == EOS and torch.all(short[lengths[0] :] == PAD)
    assert batch["attention_mask"][0].tolist() == [1] * lengths[0] + [0] * (max(lengths) - lengths[0])
    assert any_tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True) == texts


def test_truncation_keeps_eos(any_tokenizer):
    ids = any_tokenizer("one two three four five six seven eight", truncation=True, max_length=4)["input_ids"]
    assert len(ids) == 4 and ids[-1] == EOS
    assert (
        len(any_tokenizer(HOSTILE["long_single_char"], truncation=True)["input_ids"]) == any_tokenizer.model_max_length
    )


BATCH_CALLS = {
    "plain": {},
    "text_target": {"text_target": ["Ein Mann.", "", "Hallo Welt", "x", "y"]},
    "pad_longest_pt": {"padding": True, "return_tensors": "pt"},
    "pad_max_length_left": {"padding": "max_length", "max_length": 12, "padding_side": "left"},
    "pad_multiple_np": {"padding": True, "pad_to_multiple_of": 8, "return_tensors": "np"},
    "truncate": {"truncation": True, "max_length": 3},
    "no_special_tokens": {"add_special_tokens": False},
    "no_attention_mask": {"return_attention_mask": False},
    "keep_special_strings": {"split_special_tokens": False},
    "offsets_fall_back": {"return_offsets_mapping": True, "return_length": True},
    "token_type_ids_fall_back": {"return_token_type_ids": True, "return_special_tokens_mask": True},
}


@pytest.mark.parametrize("call", BATCH_CALLS)
def test_batch_fast_path_equals_tokenizers_backend(any_tokenizer, call, monkeypatch):
    """Our `_encode_plus` shortcut gives what transformers' own `TokenizersBackend._encode_plus` gives."""
    texts = ["A man in a blue shirt.", "", "</s> a literal end token", "👍🏽 漢字 \x00", "Two dogs run on the beach."]
    kwargs = BATCH_CALLS[call]
    ours = any_tokenizer(texts, **kwargs)
    monkeypatch.setattr(type(any_tokenizer), "_encode_plus", TokenizersBackend._encode_plus)
    reference = any_tokenizer(texts, **kwargs)
    assert ours.keys() == reference.keys()
    for key in reference:
        ours_value, reference_value = ours[key], reference[key]
        if hasattr(reference_value, "tolist"):
            assert type(ours_value) is type(reference_value) and ours_value.dtype == reference_value.dtype
            ours_value, reference_value = ours_value.tolist(), reference_value.tolist()
        assert ours_value == reference_value, key
    assert [encoding.ids for encoding in ours.encodings] == [encoding.ids for encoding in reference.encodings]
    assert ours.word_ids(0) == reference.word_ids(0)


def test_batch_fast_path_keeps_gc_state_and_too_long_warning(synthetic_tokenizer, caplog):
    import gc

    was_enabled = gc.isenabled()
    synthetic_tokenizer(["a b", "c"])
    assert gc.isenabled() == was_enabled
    gc.disable()
    try:
        synthetic_tokenizer(["a b", "c"])
        assert not gc.isenabled()
    finally:
        if was_enabled:
            gc.enable()
    synthetic_tokenizer.deprecation_warnings.pop("sequence-length-is-longer-than-the-specified-maximum", None)
    synthetic_tokenizer(["short", HOSTILE["long_single_char"]])
    assert synthetic_tokenizer.deprecation_warnings.get("sequence-length-is-longer-than-the-specified-maximum")
    with pytest.raises(TypeError):
        synthetic_tokenizer(["a string", 3])
    # Options left out take the base class's defaults (no padding, no truncation, special tokens added).
    assert dict(synthetic_tokenizer._encode_plus(["a b", "c"])) == dict(synthetic_tokenizer(["a b", "c"]))


def test_training_is_deterministic(multi30k_lines, tmp_path):
    corpus = [line for lang in ("en", "de") for line in multi30k_lines["val", lang]]
    for name in ("first", "second"):
        VaswaniTransformerTokenizerFast.train_from_iterator(corpus, 1000).save_pretrained(tmp_path / name)
    first, second = ((tmp_path / name / "tokenizer.json").read_bytes() for name in ("first", "second"))
    assert first == second
    assert len(json.loads(first)["model"]["vocab"]) == 1000


def test_train_new_from_iterator(tokenizer, multi30k_lines):
    corpus = multi30k_lines["val", "fr"]
    retrained = tokenizer.train_new_from_iterator(iter(corpus), 600)
    assert isinstance(retrained, VaswaniTransformerTokenizerFast) and len(retrained) == 600
    assert retrained.convert_ids_to_tokens([0, 1, 2, 3]) == ["<pad>", "<s>", "</s>", "<unk>"]
    ids, decoded = _round_trip(retrained, corpus[:50] + list(HOSTILE.values()))
    assert decoded == [unicodedata.normalize("NFC", text) for text in corpus[:50] + list(HOSTILE.values())]
    assert all(sequence[-1] == EOS and UNK not in sequence for sequence in ids)


def test_vocab_size_too_small_is_an_error():
    with pytest.raises(ValueError, match=r"vocab_size=259\b.*260"):
        VaswaniTransformerTokenizerFast.train_from_iterator(["some text"], 259)
    assert len(VaswaniTransformerTokenizerFast.train_from_iterator(["some text"], 260)) == 260


@pytest.mark.parametrize("corpus", [[], ["", ""], [[], [""]]], ids=["no_texts", "empty_texts", "empty_batches"])
def test_empty_corpus_is_an_error(corpus):
    with pytest.raises(ValueError, match="empty corpus"):
        VaswaniTransformerTokenizerFast.train_from_iterator(corpus, 1000)


def test_save_load_round_trip(tokenizer, saved_dir):
    loaded = VaswaniTransformerTokenizerFast.from_pretrained(saved_dir)
    assert loaded(SAMPLES)["input_ids"] == tokenizer(SAMPLES)["input_ids"]
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert (loaded.model_max_length, loaded.padding_side, loaded.split_special_tokens) == (1024, "right", True)


def test_save_writes_auto_map_and_code(saved_dir):
    config = json.loads((saved_dir / "tokenizer_config.json").read_text())
    module = "tokenization_vaswani_transformer_fast"
    assert config["auto_map"]["AutoTokenizer"][-1] == f"{module}.VaswaniTransformerTokenizerFast"
    source = REPO_ROOT / "vaswani_transformer" / f"{module}.py"
    assert (saved_dir / f"{module}.py").read_bytes() == source.read_bytes()
    assert not (saved_dir / "config.json").exists()  # remote-code loading needs no model config


def test_auto_tokenizer_after_package_import(tokenizer, saved_dir):
    import vaswani_transformer  # noqa: F401  (registers the tokenizer with AutoTokenizer)

    loaded = AutoTokenizer.from_pretrained(saved_dir)
    assert type(loaded) is VaswaniTransformerTokenizerFast
    assert loaded(SAMPLES)["input_ids"] == tokenizer(SAMPLES)["input_ids"]


REMOTE_SCRIPT = (
    BLOCK_PACKAGE_IMPORT
    + """
import json
from transformers import AutoTokenizer
from transformers.tokenization_utils_tokenizers import TokenizersBackend
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True)
print(json.dumps({"module": type(tokenizer).__module__, "ids": tokenizer(json.loads(sys.argv[2]))["input_ids"]}))
"""
)


def test_remote_code_load_without_the_package(tokenizer, saved_dir, tmp_path):
    copy = shutil.copytree(saved_dir, tmp_path / "copy")
    command = [sys.executable, "-c", REMOTE_SCRIPT, str(copy), json.dumps(SAMPLES)]
    result = run_without_package(command, cwd=tmp_path, hf_home=tmp_path / "hf_home")
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["module"].startswith("transformers_modules.")
    assert answer["ids"] == tokenizer(SAMPLES)["input_ids"]


def test_train_tokenizer_uses_both_sides(multi30k_dir):
    raw = load_parallel_dataset("en", "de", data_dir=multi30k_dir, splits={"train": "val"})["train"]
    trained = train_tokenizer(raw, ("en", "de"), 1500)
    english_only = train_tokenizer(raw, ("en",), 1500)
    german = raw["translation"][0]["de"]
    assert len(trained(german)["input_ids"]) < len(english_only(german)["input_ids"])
    assert len(trained) == 1500


def test_cli_matches_library_call(multi30k_dir, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for lang in ("en", "de"):  # the Multi30k validation split as a small train split
        shutil.copy(multi30k_dir / f"val.{lang}.gz", data_dir / f"train.{lang}.gz")
    command = [sys.executable, "training/train_tokenizer.py", "--data_dir", str(data_dir), "--source_lang", "en"]
    command += ["--target_lang", "de", "--vocab_size", "1200", "--output_dir", str(tmp_path / "out")]
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "read 2028 lines" in result.stderr and "vocabulary of 1200 tokens" in result.stderr
    raw = load_parallel_dataset("en", "de", data_dir=data_dir)["train"]
    in_process = train_tokenizer(raw, ("en", "de"), 1200)
    in_process.save_pretrained(tmp_path / "in_process")
    from_cli, from_library = (tmp_path / name / "tokenizer.json" for name in ("out", "in_process"))
    assert from_cli.read_bytes() == from_library.read_bytes()
