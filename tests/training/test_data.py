"""Reading parallel text (`training/data.py`): the real Multi30k folder, JSON lines, and every error path."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import datasets
import pytest
from conftest import REPO_ROOT

from vaswani_transformer.training.data import (
    DEFAULT_SPLITS,
    default_data_dir,
    iter_texts,
    load_parallel_dataset,
    read_lines,
)


def _first_and_last_line(path: Path) -> tuple[str, str]:
    with gzip.open(path, "rt", encoding="utf-8", newline="\n") as handle:
        lines = handle.read().split("\n")
    return lines[0], lines[-2] if lines[-1] == "" else lines[-1]


def _write(path: Path, lines: list[str] | bytes) -> Path:
    data = lines if isinstance(lines, bytes) else "".join(f"{line}\n" for line in lines).encode("utf-8")
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("source_lang, target_lang", [("en", "de"), ("fr", "cs")])
def test_multi30k_splits_rows_and_first_lines(multi30k_dir, source_lang, target_lang):
    raw = load_parallel_dataset(source_lang, target_lang, data_dir=multi30k_dir)
    assert {split: len(raw[split]) for split in raw} == {"train": 29000, "validation": 1014, "test": 1000}
    for split, stem in DEFAULT_SPLITS.items():
        assert raw[split].column_names == ["translation"]
        for lang in (source_lang, target_lang):
            first, last = _first_and_last_line(multi30k_dir / f"{stem}.{lang}.gz")
            assert raw[split][0]["translation"][lang] == first
            assert raw[split][-1]["translation"][lang] == last


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("VASWANI_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path / "multi30k"
    monkeypatch.delenv("VASWANI_DATA_DIR")
    assert default_data_dir() == REPO_ROOT.parent / "shared" / "data" / "multi30k"


def test_iter_texts_yields_both_sides_row_by_row(multi30k_dir):
    raw = load_parallel_dataset("en", "de", data_dir=multi30k_dir)["validation"]
    texts = list(iter_texts(raw, ("en", "de"), batch_size=100))
    pairs = raw["translation"]
    assert len(texts) == 2 * len(raw)
    assert texts[0::2] == [pair["en"] for pair in pairs] and texts[1::2] == [pair["de"] for pair in pairs]
    assert list(iter_texts(raw.select(range(2)), ("de",))) == [pairs[0]["de"], pairs[1]["de"]]
    with pytest.raises(ValueError, match="'fr'"):
        next(iter_texts(raw, ("fr",)))


def test_lines_are_kept_exactly(tmp_path):
    source = ["", "  spaces  ", "line\u2028separator", "tab\there", "crlf", "x\x0cy\x1cz"]
    target = ["leer", "b", "c", "d", "e", "f"]
    _write(tmp_path / "train.en", source[:4] + ["crlf\r"] + source[5:])  # plain file, one CRLF line ending
    _write(tmp_path / "train.de.gz", target)
    raw = load_parallel_dataset("en", "de", data_dir=tmp_path)
    assert list(raw) == ["train"]  # validation and test files absent: not in the result
    assert [pair["en"] for pair in raw["train"]["translation"]] == source
    assert [pair["de"] for pair in raw["train"]["translation"]] == target


def test_custom_splits(tmp_path):
    _write(tmp_path / "corpus.en", ["a"])
    _write(tmp_path / "corpus.de", ["b"])
    _write(tmp_path / "newstest.en", ["c", "d"])
    _write(tmp_path / "newstest.de", ["e", "f"])
    raw = load_parallel_dataset("en", "de", data_dir=tmp_path, splits={"train": "corpus", "test": "newstest"})
    assert {split: len(dataset) for split, dataset in raw.items()} == {"train": 1, "test": 2}


def test_mismatched_line_counts(tmp_path):
    source = _write(tmp_path / "train.en.gz", ["a", "b", "c"])
    target = _write(tmp_path / "train.de", ["x", "y"])
    with pytest.raises(ValueError, match="line counts differ") as error:
        load_parallel_dataset("en", "de", data_dir=tmp_path)
    assert all(part in str(error.value) for part in (str(source), str(target), "3 lines", "2 lines"))


@pytest.mark.parametrize("name", ["train.de", "train.de.gz"])
def test_non_utf8_names_file_and_line(tmp_path, name):
    _write(tmp_path / "train.en", ["a", "b", "c"])
    bad = _write(tmp_path / name, "gut\nauch gut\nschlecht \xe4\n".encode("latin-1"))
    with pytest.raises(ValueError, match="line 3 is not valid UTF-8") as error:
        load_parallel_dataset("en", "de", data_dir=tmp_path)
    assert str(bad) in str(error.value)
    with pytest.raises(ValueError, match=re.escape(f"{bad}: line 3")):
        read_lines(bad)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_dir not found"):
        load_parallel_dataset("en", "de", data_dir=tmp_path / "nowhere")
    _write(tmp_path / "val.en", ["a"])
    _write(tmp_path / "val.de", ["b"])
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "train.en"))):
        load_parallel_dataset("en", "de", data_dir=tmp_path)
    _write(tmp_path / "train.en", ["a"])
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "train.de"))):
        load_parallel_dataset("en", "de", data_dir=tmp_path)
    _write(tmp_path / "train.de", ["b"])
    _write(tmp_path / "test_2016_flickr.de", ["b"])
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "test_2016_flickr.en"))):
        load_parallel_dataset("en", "de", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "missing.en"))):
        read_lines(tmp_path / "missing.en")


def test_plain_and_gz_of_the_same_file_is_ambiguous(tmp_path):
    _write(tmp_path / "train.en", ["a"])
    _write(tmp_path / "train.en.gz", ["a"])
    _write(tmp_path / "train.de", ["b"])
    with pytest.raises(ValueError, match="both .*train.en and .*train.en.gz"):
        load_parallel_dataset("en", "de", data_dir=tmp_path)


@pytest.mark.parametrize(
    "sources, named",
    [
        ({}, "got none"),
        ({"data_dir": "d", "train_file": "t.jsonl"}, "got data_dir, train_file"),
        ({"data_dir": "d", "dataset_name": "wmt14"}, "got data_dir, dataset_name"),
        ({"validation_file": "v.jsonl", "dataset_name": "wmt14"}, "got train_file/validation_file/test_file, dat"),
    ],
)
def test_exactly_one_source_kind(sources, named):
    with pytest.raises(ValueError, match="exactly one source") as error:
        load_parallel_dataset("en", "de", **sources)
    assert named in str(error.value)


def test_same_language_is_an_error(multi30k_dir):
    with pytest.raises(ValueError, match="must differ"):
        load_parallel_dataset("en", "en", data_dir=multi30k_dir)


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def test_json_lines(tmp_path):
    train_rows = [{"translation": {"en": f"Dog {i}.", "de": f"Hund {i}.", "fr": "Chien."}, "id": i} for i in range(5)]
    train = _write_jsonl(tmp_path / "train.jsonl", train_rows)
    validation = _write_jsonl(tmp_path / "valid.json", [{"translation": {"de": "Katze \u00e4 ", "en": " Cat"}}])
    raw = load_parallel_dataset("en", "de", train_file=str(train), validation_file=str(validation))
    assert list(raw) == ["train", "validation"]
    assert raw["train"].column_names == ["translation"]
    assert [row["translation"]["de"] for row in raw["train"]] == [f"Hund {i}." for i in range(5)]
    assert raw["validation"][0]["translation"]["en"] == " Cat"
    assert list(iter_texts(raw["validation"], ("en", "de"))) == [" Cat", "Katze \u00e4 "]


@pytest.mark.parametrize(
    "bad_row, message",
    [
        ({"translation": {"en": "Dog."}}, "row 3 has no 'de' text"),
        ({"translation": {"en": "Dog.", "de": None}}, "row 3 has no 'de' text"),
        ({"text": "Dog."}, "row 3 has no 'translation' dict"),
    ],
    ids=["missing_language", "null_text", "no_translation"],
)
def test_json_lines_bad_rows(tmp_path, bad_row, message):
    good = {"translation": {"en": "Cat.", "de": "Katze."}}
    path = _write_jsonl(tmp_path / "train.jsonl", [good, good, bad_row, good])
    with pytest.raises(ValueError, match=message) as error:
        load_parallel_dataset("en", "de", train_file=str(path))
    assert str(path) in str(error.value)


def test_json_lines_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "absent.jsonl"))):
        load_parallel_dataset("en", "de", train_file=str(tmp_path / "absent.jsonl"))


def test_dataset_name_from_a_local_folder(tmp_path):
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    _write_jsonl(folder / "train.jsonl", [{"translation": {"en": "Cat.", "de": "Katze."}, "extra": 1}] * 3)
    _write_jsonl(folder / "test.jsonl", [{"translation": {"en": "Dog.", "de": "Hund."}}])
    raw = load_parallel_dataset("en", "de", dataset_name=str(folder))
    assert isinstance(raw, datasets.DatasetDict)
    assert {split: len(dataset) for split, dataset in raw.items()} == {"train": 3, "test": 1}
    assert raw["test"].column_names == ["translation"] and raw["test"][0]["translation"]["de"] == "Hund."


def _hub_layout_folder(folder: Path, rows: int) -> Path:
    """A dataset folder in the Hub layout of wmt14: de-en/{train,test}.parquet named by README.md `configs`."""
    for split, count in (("train", rows), ("test", 2)):
        pairs = [{"en": f"{folder.parent.name} {i}.", "de": f"{folder.parent.name} {i}."} for i in range(count)]
        datasets.Dataset.from_dict({"translation": pairs}).to_parquet(str(folder / "de-en" / f"{split}.parquet"))
    data_files = "".join(f"  - split: {split}\n    path: de-en/{split}.parquet\n" for split in ("train", "test"))
    (folder / "README.md").write_text(f"---\nconfigs:\n- config_name: de-en\n  data_files:\n{data_files}---\n")
    return folder


def test_local_folders_with_the_same_layout_do_not_share_a_cache_entry(tmp_path, monkeypatch):
    """Two local corpora in the same Hub layout and under the same folder name, loaded through one datasets cache:
    each must give its own rows (datasets 5.2 alone keys such a folder's cache by its name and README patterns and
    returns the first folder's rows for the second)."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    first, second = (_hub_layout_folder(tmp_path / name / "parquet", rows) for name, rows in (("a", 3), ("b", 5)))
    for folder, rows in ((first, 3), (second, 5), (first, 3)):
        raw = load_parallel_dataset("en", "de", dataset_name=str(folder), dataset_config_name="de-en")
        assert len(raw["train"]) == rows
        assert raw["train"][0]["translation"]["en"] == f"{folder.parent.name} 0."
    # The same folder read again comes from the cache (one Arrow copy per folder, not one per load).
    cached = {Path(f["filename"]).parent for f in raw["train"].cache_files}
    assert len(cached) == 1 and len(list((tmp_path / "cache").rglob("*-train.arrow"))) == 2


def test_source_and_target_texts_stay_aligned_and_respect_the_limit():
    from vaswani_transformer.training.data import source_and_target_texts

    dataset = datasets.Dataset.from_dict(
        {"translation": [{"en": "a", "de": "A"}, {"en": "b", "de": "B"}, {"en": "c", "de": "C"}]}
    )
    assert source_and_target_texts(dataset, "en", "de") == (["a", "b", "c"], ["A", "B", "C"])
    assert source_and_target_texts(dataset, "de", "en", limit=2) == (["A", "B"], ["a", "b"])


# --- any layout, any split names (training.dataset_layouts)

PAIRS = {
    "en": ["A dog runs.", "Two cats.", "A red car."],
    "de": ["Ein Hund rennt.", "Zwei Katzen.", "Ein rotes Auto."],
}


def _save(dataset: datasets.Dataset, path: Path) -> Path:
    """Write `dataset` as the file type its name says (datasets' own writers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = {".parquet": dataset.to_parquet, ".csv": dataset.to_csv}.get(path.suffix, dataset.to_json)
    writer(str(path))
    return path


def _layout(layout: str) -> tuple[datasets.Dataset, dict]:
    """The three pairs in a layout, and the load_parallel_dataset column arguments that layout needs."""
    if layout == "translation":
        pairs = [{"en": en, "de": de} for en, de in zip(PAIRS["en"], PAIRS["de"], strict=True)]
        return datasets.Dataset.from_dict({"translation": pairs, "id": [0, 1, 2]}), {}
    if layout == "language_columns":  # bentrevett/multi30k's layout: found by the language codes
        return datasets.Dataset.from_dict({"en": PAIRS["en"], "de": PAIRS["de"]}), {}
    named = {"english": PAIRS["en"], "german": PAIRS["de"], "score": [1.0, 0.5, 0.2]}
    return datasets.Dataset.from_dict(named), {"source_column": "english", "target_column": "german"}


def _assert_pairs(dataset: datasets.Dataset) -> None:
    assert dataset.column_names == ["translation"]
    assert dataset["translation"] == [{"en": en, "de": de} for en, de in zip(PAIRS["en"], PAIRS["de"], strict=True)]


LAYOUTS = ("translation", "language_columns", "named_columns")
FILE_CASES = [(suffix, layout) for suffix in (".jsonl", ".json", ".parquet", ".csv") for layout in LAYOUTS]


@pytest.mark.parametrize("suffix, layout", [case for case in FILE_CASES if case != (".csv", "translation")])
def test_data_files_in_each_layout(tmp_path, suffix, layout):  # CSV has no dict column: flat layouts only
    dataset, columns = _layout(layout)
    path = _save(dataset, tmp_path / f"train{suffix}")
    raw = load_parallel_dataset("en", "de", train_file=str(path), test_file=str(path), **columns)
    assert list(raw) == ["train", "test"]
    _assert_pairs(raw["train"])
    # Reversed direction from the same file: the columns are chosen by language, not by position.
    if not columns:
        reverse = load_parallel_dataset("de", "en", train_file=str(path))["train"]
        assert reverse[0]["translation"] == {"de": PAIRS["de"][0], "en": PAIRS["en"][0]}


def _dataset_folder(folder: Path, layout: str, splits: tuple[str, ...]) -> Path:
    """A local dataset folder in the Hub layout, one Parquet file per split named by README.md `configs`."""
    dataset, _ = _layout(layout)
    for split in splits:
        _save(dataset, folder / "data" / f"{split}.parquet")
    data_files = "".join(f"  - split: {split}\n    path: data/{split}.parquet\n" for split in splits)
    (folder / "README.md").write_text(f"---\nconfigs:\n- config_name: default\n  data_files:\n{data_files}---\n")
    return folder


@pytest.mark.parametrize("layout", LAYOUTS)
def test_dataset_folder_with_any_split_names(tmp_path, layout):
    folder = _dataset_folder(tmp_path / layout, layout, ("train", "dev", "newstest2014"))
    _, columns = _layout(layout)
    splits = {"train": "train", "validation": "dev", "test": "newstest2014"}
    raw = load_parallel_dataset("en", "de", dataset_name=str(folder), splits=splits, **columns)
    assert list(raw) == ["train", "validation", "test"]
    for split in raw.values():
        _assert_pairs(split)
    # Without `splits`, the Hub's names: this folder has only "train" of them.
    assert list(load_parallel_dataset("en", "de", dataset_name=str(folder), **columns)) == ["train"]


def test_training_honours_validation_and_test_split_of_a_dataset(tmp_path):
    from vaswani_transformer.training.arguments import DataArguments, TrainingArguments
    from vaswani_transformer.training.data import check_training_splits, load_training_splits

    folder = _dataset_folder(tmp_path / "corpus", "language_columns", ("train", "dev", "newstest2014"))
    args = DataArguments(dataset_name=str(folder), validation_split="dev", test_split="newstest2014")
    raw = load_training_splits(args)
    assert list(raw) == ["train", "validation", "test"]
    check_training_splits(raw, args, TrainingArguments(output_dir="x", eval_steps=10))
    # Unset split names become the Hub's (recorded in training_args.json); missing ones fail before training.
    args = DataArguments(dataset_name=str(folder))
    raw = load_training_splits(args)
    assert (args.validation_split, args.test_split, list(raw)) == ("validation", "test", ["train"])
    message = r"--test_split 'test': no split 'test' in .*corpus \(splits there: train, dev, newstest2014\)"
    with pytest.raises(ValueError, match=message):
        check_training_splits(raw, args, TrainingArguments(output_dir="x"))
    check_training_splits(raw, args, TrainingArguments(output_dir="x", do_test=False))


def test_dataset_revision_reaches_load_dataset(monkeypatch):
    calls = []

    def load_dataset(name, config=None, **kwargs):
        calls.append((name, config, kwargs))
        return datasets.DatasetDict({"train": _layout("language_columns")[0]})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    raw = load_parallel_dataset("en", "de", dataset_name="bentrevett/multi30k", dataset_revision="1a2b3c")
    _assert_pairs(raw["train"])
    assert calls == [("bentrevett/multi30k", None, {"revision": "1a2b3c"})]
    with pytest.raises(ValueError, match="dataset_revision need dataset_name"):
        load_parallel_dataset("en", "de", data_dir="d", dataset_revision="1a2b3c")


def test_layout_errors_name_the_columns(tmp_path):
    path = _save(_layout("named_columns")[0], tmp_path / "train.parquet")
    with pytest.raises(ValueError, match=r"no 'translation' column and no 'en'/'de' columns \(columns: \['english'"):
        load_parallel_dataset("en", "de", train_file=str(path))
    with pytest.raises(ValueError, match="--target_column 'deutsch' is not a column"):
        load_parallel_dataset("en", "de", train_file=str(path), source_column="english", target_column="deutsch")
    with pytest.raises(ValueError, match="--source_column 'score' holds"):
        load_parallel_dataset("en", "de", train_file=str(path), source_column="score", target_column="german")
    with pytest.raises(ValueError, match="unknown data file type '.txt'"):
        load_parallel_dataset("en", "de", train_file=str(_save(_layout("translation")[0], tmp_path / "t.txt")))
