"""Sentence pairs from `datasets`: data files (JSON lines, JSON, Parquet, CSV) and Hub or local dataset folders, in
any of the two layouts parallel corpora come in.

- a `translation` dict column, {source_lang: text, target_lang: text} (wmt/wmt14, opus_books, transformers'
  `run_translation.py`);
- two flat text columns, one per language (bentrevett/multi30k's `en` and `de`): named by `--source_column` /
  `--target_column`, or found by the language codes when there is no `translation` column.

Either becomes the one column "translation" that the rest of the training library reads (`training.data`). Split
names are the dataset's own: `splits` maps our names (train, validation, test) to them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.compute as pc


__all__ = [
    "DATASET_SPLITS",
    "FILE_BUILDERS",
    "dataset_split_names",
    "load_from_files",
    "load_from_hub",
    "translation_features",
    "translation_pairs",
]

# Our split name -> the split of a dataset read when --validation_split / --test_split are not given (the Hub's names).
DATASET_SPLITS = {"train": "train", "validation": "validation", "test": "test"}
# A data file's extension -> the `datasets` builder that reads it (transformers' run_translation.py takes json/csv).
FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
_STRINGS = (pa.string(), pa.large_string())


def translation_features(source_lang: str, target_lang: str) -> datasets.Features:
    """The features of a pairs dataset: one column "translation" = {source_lang: string, target_lang: string}."""
    return datasets.Features({"translation": datasets.Translation(languages=[source_lang, target_lang])})


def translation_pairs(
    dataset: datasets.Dataset,
    source_lang: str,
    target_lang: str,
    columns: tuple[str, str] | None,
    origin: str,
) -> datasets.Dataset:
    """`dataset` as the one column "translation" = {source_lang: text, target_lang: text}, every row checked.

    Args:
        columns: (source column, target column) of a flat layout; None: the `translation` column if there is one,
            else the columns named `source_lang` and `target_lang`.
        origin: the file or dataset and split, for error messages.

    Raises:
        ValueError: naming `origin`: a column that is not there (lists the columns), a text column that is not
            strings, or the 1-based row of the first missing text.
    """
    names = dataset.column_names
    if columns is None and "translation" in names:
        _validate_translations(dataset, (source_lang, target_lang), origin)
        return dataset.select_columns(["translation"])
    if columns is None and not {source_lang, target_lang} <= set(names):
        raise ValueError(
            f"{origin}: no 'translation' column and no {source_lang!r}/{target_lang!r} columns (columns: {names}); "
            "name the text columns with --source_column and --target_column"
        )
    source_column, target_column = columns or (source_lang, target_lang)
    for flag, column in (("--source_column", source_column), ("--target_column", target_column)):
        if column not in names:
            raise ValueError(f"{origin}: {flag} {column!r} is not a column (columns: {names})")
        if getattr(dataset.features[column], "dtype", None) not in ("string", "large_string"):
            raise ValueError(f"{origin}: {flag} {column!r} holds {dataset.features[column]}, not text")

    def to_translation(batch: pa.Table) -> pa.Table:
        texts = [batch.column(column).combine_chunks().cast(pa.string()) for column in (source_column, target_column)]
        return pa.table({"translation": pa.StructArray.from_arrays(texts, names=[source_lang, target_lang])})

    pairs = (
        dataset.with_format("arrow")
        .map(
            to_translation,
            batched=True,
            batch_size=10_000,
            remove_columns=names,
            features=translation_features(source_lang, target_lang),
            desc="pairs",
        )
        .with_format(None)
    )
    _validate_translations(pairs, (source_lang, target_lang), origin)
    return pairs


def _validate_translations(dataset: datasets.Dataset, languages: Sequence[str], origin: str) -> None:
    """Check that every row has a `translation` dict holding a string for each language.

    When the column is an Arrow struct of strings (what JSON lines and Hub datasets give), the check runs on the
    Arrow columns (nulls mark missing texts), without a Python object per row; other layouts are checked row by row.

    Raises:
        ValueError: naming `origin` (file or dataset) and the 1-based row of the first bad row.
    """
    column = dataset.data.column("translation")
    kind = column.type
    if dataset._indices is None and pa.types.is_struct(kind):
        if all(kind.get_field_index(lang) >= 0 and kind.field(lang).type in _STRINGS for lang in languages):
            missing = functools.reduce(pc.or_, [pc.is_null(pc.struct_field(column, lang)) for lang in languages])
            first = pc.index(missing, True).as_py()
            if first >= 0:
                _check_pair(dataset[first]["translation"], languages, origin, first + 1)
            return
    for row, pair in enumerate(dataset["translation"], start=1):
        _check_pair(pair, languages, origin, row)


def _check_pair(pair, languages: Sequence[str], origin: str, row: int) -> None:
    """Raise ValueError naming `origin` and the 1-based `row` unless `pair` is a dict with a string per language."""
    if not isinstance(pair, dict):
        raise ValueError(f"{origin}: row {row} has no 'translation' dict (found {pair!r})")
    for lang in languages:
        if not isinstance(pair.get(lang), str):
            raise ValueError(f"{origin}: row {row} has no {lang!r} text in 'translation' (found {pair!r})")


def load_from_files(
    files: dict[str, str], source_lang: str, target_lang: str, columns: tuple[str, str] | None = None
) -> datasets.DatasetDict:
    """Data files (our split -> path) through `datasets.load_dataset(builder, data_files=...)`, the builder chosen by
    each file's extension (`FILE_BUILDERS`), as pairs (`translation_pairs`).

    Raises:
        FileNotFoundError: a file that does not exist (names it).
        ValueError: an extension no builder reads, or files of two kinds (names them); bad rows (names the file).
    """
    builders = {}
    for path in files.values():
        if not Path(path).is_file():
            raise FileNotFoundError(f"data file not found: {path}")
        suffix = Path(path).suffix.lower()
        if suffix not in FILE_BUILDERS:
            raise ValueError(f"{path}: unknown data file type {suffix!r}; use one of {sorted(FILE_BUILDERS)}")
        builders[FILE_BUILDERS[suffix]] = path
    if len(builders) > 1:
        raise ValueError(f"data files of different kinds: {sorted(builders.values())}; convert them to one")
    raw = datasets.load_dataset(next(iter(builders)), data_files={split: str(path) for split, path in files.items()})
    return datasets.DatasetDict(
        {
            split: translation_pairs(raw[split], source_lang, target_lang, columns, path)
            for split, path in files.items()
        }
    )


def load_from_hub(
    dataset_name: str,
    dataset_config_name: str | None,
    source_lang: str,
    target_lang: str,
    splits: dict[str, str] | None = None,
    revision: str | None = None,
    columns: tuple[str, str] | None = None,
) -> datasets.DatasetDict:
    """A `datasets.load_dataset(dataset_name, dataset_config_name, revision=revision)` dataset, keeping the splits
    named in `splits` (our name -> the dataset's split; default `DATASET_SPLITS`) that it has, under our names.

    A local folder (a dataset saved in the Hub layout, a README.md whose `configs` name its files) is loaded with
    its configuration's data files resolved (`load_dataset_builder(...).config.data_files`, which carry each file's
    modification time) and passed back as `data_files`: datasets 5.2 keys the cache of such a folder by the
    README's file *patterns*, so two folders with the same layout (two corpora made by one script) share one cache
    entry and the second silently loads the first one's rows. Passing the resolved files keys the cache by the files.

    Raises:
        ValueError: bad rows or columns (`translation_pairs`, naming the dataset and split).
    """
    kwargs = {}
    if Path(dataset_name).is_dir():
        kwargs["data_files"] = datasets.load_dataset_builder(dataset_name, dataset_config_name).config.data_files
    raw = datasets.load_dataset(dataset_name, dataset_config_name, revision=revision, **kwargs)
    result = {}
    for ours, theirs in (splits or DATASET_SPLITS).items():
        if theirs in raw:
            origin = f"{dataset_name} [{theirs}]"
            result[ours] = translation_pairs(raw[theirs], source_lang, target_lang, columns, origin)
    return datasets.DatasetDict(result)


def dataset_split_names(dataset_name: str, dataset_config_name: str | None, revision: str | None) -> list[str]:
    """The splits a dataset has (`datasets.get_dataset_split_names`), for error messages; [] if they cannot be read."""
    try:
        return list(datasets.get_dataset_split_names(dataset_name, dataset_config_name, revision=revision))
    except Exception:  # noqa: BLE001 (only an error message's detail depends on it)
        return []
