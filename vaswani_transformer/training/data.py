"""Reading parallel text: the one place that loads sentence pairs, for tokenizer training and model training alike.

Three kinds of source, exactly one per call (the flags of transformers' `run_translation_no_trainer.py`):

- `data_dir`: a folder of line-aligned plain-text files `{split}.{lang}` or `{split}.{lang}.gz` (Multi30k, the WMT
  `newstest` files after `sacrebleu --echo`), one sentence per line, UTF-8;
- `train_file` / `validation_file` / `test_file`: JSON lines, one `{"translation": {"en": ..., "de": ...}}` a line;
- `dataset_name` (+ `dataset_config_name`): any dataset `datasets.load_dataset` can open with a `translation`
  column, e.g. `wmt14` `de-en` (the paper's data, §5.1).

Every kind gives a `datasets.DatasetDict` with the splits "train", "validation", "test" that exist and one column
"translation" = {source_lang: str, target_lang: str}. Lines are never dropped or changed here; filtering empty or
over-long pairs is the training code's job.
"""

from __future__ import annotations

import functools
import gzip
import itertools
import os
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.compute as pc

from vaswani_transformer.training.arguments import DataArguments, TrainingArguments


__all__ = [
    "DEFAULT_SPLITS",
    "available_splits",
    "check_training_splits",
    "default_data_dir",
    "iter_texts",
    "load_parallel_dataset",
    "load_training_splits",
    "missing_data_dir_message",
    "read_lines",
    "source_and_target_texts",
]

# Our split name -> the file-name stem of that split in a data_dir (Multi30k's names; test = Flickr test 2016).
DEFAULT_SPLITS = {"train": "train", "validation": "val", "test": "test_2016_flickr"}
# Where a source checkout keeps Multi30k: beside the checkout, in ../shared/data (this project's layout). REPO_ROOT is
# the folder above the package; it is a checkout when it holds pyproject.toml (an installed package sits in
# site-packages, which does not).
REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR_VARIABLE = "VASWANI_DATA_DIR"
MULTI30K_SOURCE = "github.com/multi30k/dataset, folder data/task1/raw"


def default_data_dir() -> Path:
    """The Multi30k folder the presets read when no `--data_dir`, `--dataset_name` or `--train_file` is given.

    The rule, first match wins:

    1. `$VASWANI_DATA_DIR/multi30k` when the variable is set (the folder is not checked);
    2. `./data/multi30k` in the working directory, when it exists;
    3. `<checkout>/../shared/data/multi30k`, when the package runs from a source checkout and that folder exists;
    4. otherwise `./data/multi30k`, the place the error message then names.

    The folder holds Multi30k task 1's `{train,val,test_2016_flickr}.{en,de,fr,cs}.gz` (`MULTI30K_SOURCE`).

    Returns:
        The path (existence is checked by the loader, `missing_data_dir_message`).
    """
    if DATA_DIR_VARIABLE in os.environ:
        return Path(os.environ[DATA_DIR_VARIABLE]) / "multi30k"
    working = Path("data") / "multi30k"
    checkout = REPO_ROOT.parent / "shared" / "data" / "multi30k"
    if not working.is_dir() and (REPO_ROOT / "pyproject.toml").is_file() and checkout.is_dir():
        return checkout
    return working


def missing_data_dir_message(data_dir: str | os.PathLike) -> str:
    """The one-line error for a data folder that does not exist: where Multi30k comes from and how to point at it."""
    return (
        f"data_dir not found: {data_dir}. Multi30k comes from {MULTI30K_SOURCE} (git clone --depth 1 "
        f"https://github.com/multi30k/dataset); give that folder with --data_dir DIR, copy it to ./data/multi30k, "
        f"or set {DATA_DIR_VARIABLE} to a folder holding multi30k/"
    )


def iter_lines(path: str | os.PathLike) -> Iterator[str]:
    """Yield the lines of a plain or gzip-compressed (`.gz`) UTF-8 text file strictly, one at a time.

    Lines are split on "\\n" only (not on the other Unicode line breaks that `str.splitlines` knows); the "\\n"
    and a "\\r" before it are removed; nothing else is changed, empty lines are kept. Nothing but the current
    line is held in memory, so files of any size stream through.

    Args:
        path: the file; a name ending in ".gz" is decompressed.

    Yields:
        The lines, in file order (a final "\\n" does not add an empty line).

    Raises:
        FileNotFoundError: if `path` does not exist (the message names it).
        ValueError: on a byte sequence that is not UTF-8, naming the file and the 1-based line number; on a
            truncated or corrupt `.gz` file, naming the file and the lines read before the damage.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"parallel-text file not found: {path}")
    opener = gzip.open if path.name.endswith(".gz") else open
    line_number = 0
    try:
        with opener(path, "rb") as handle:
            for line_number, raw in enumerate(handle, start=1):  # noqa: B007 (the error below names it)
                try:
                    text = raw.decode("utf-8", errors="strict")
                except UnicodeDecodeError as error:
                    raise ValueError(
                        f"{path}: line {line_number} is not valid UTF-8 (bytes {raw[error.start : error.end]!r} "
                        f"at byte offset {error.start} of the line: {error.reason})"
                    ) from error
                yield text.removesuffix("\n").removesuffix("\r")
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise ValueError(  # line_number: the last line read whole
            f"{path}: truncated or corrupt gzip file after {line_number} complete lines ({error}); "
            "re-download or re-compress it"
        ) from error


def read_lines(path: str | os.PathLike) -> list[str]:
    """All lines of a text file as a list (`iter_lines`, same rules and errors): for small files only."""
    return list(iter_lines(path))


def _split_file(data_dir: Path, stem: str, lang: str) -> Path | None:
    """The file `{stem}.{lang}` or `{stem}.{lang}.gz` in `data_dir`, None if neither exists.

    Raises:
        ValueError: if both exist (which one to read would be a guess).
    """
    plain, packed = data_dir / f"{stem}.{lang}", data_dir / f"{stem}.{lang}.gz"
    if plain.is_file() and packed.is_file():
        raise ValueError(f"both {plain} and {packed} exist; keep one")
    return plain if plain.is_file() else packed if packed.is_file() else None


def available_splits(data_dir: str | os.PathLike, source_lang: str, target_lang: str) -> list[str]:
    """The split names (file stems) in `data_dir` that have both a `.{source_lang}[.gz]` and a `.{target_lang}[.gz]`
    file, sorted; for error messages that name the splits there are when a requested one is missing."""
    stems: dict[str, set[str]] = {}
    for path in Path(data_dir).iterdir():
        name = path.name.removesuffix(".gz")
        for lang in (source_lang, target_lang):
            if name.endswith(f".{lang}"):
                stems.setdefault(name.removesuffix(f".{lang}"), set()).add(lang)
    return sorted(stem for stem, langs in stems.items() if len(langs) == 2)


def _translation_features(source_lang: str, target_lang: str) -> datasets.Features:
    return datasets.Features({"translation": datasets.Translation(languages=[source_lang, target_lang])})


def _load_split_from_dir(data_dir: Path, stem: str, source_lang: str, target_lang: str) -> datasets.Dataset | None:
    """One split of a data_dir as a Dataset, or None if neither language file of the split exists.

    Raises:
        FileNotFoundError: if only one of the two language files exists (names the missing path).
        ValueError: if the two files have different line counts (names both files and counts), or on bad UTF-8.
    """
    source_file = _split_file(data_dir, stem, source_lang)
    target_file = _split_file(data_dir, stem, target_lang)
    if source_file is None and target_file is None:
        return None
    if source_file is None or target_file is None:
        lang = source_lang if source_file is None else target_lang
        raise FileNotFoundError(f"parallel-text file not found: {data_dir / f'{stem}.{lang}'}[.gz]")
    features = _translation_features(source_lang, target_lang)
    if next(iter_lines(source_file), None) is None and next(iter_lines(target_file), None) is None:
        return datasets.Dataset.from_dict({"translation": []}, features=features)  # `from_generator` needs a row
    # Scalars only: `from_generator` splits list arguments into shards.
    stamp = " ".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in (source_file, target_file))
    try:
        # Written once to an Arrow file in the datasets cache (memory-mapped, not held in Python objects), and
        # found there again by the next run: the cache key is the generator and its arguments, which include each
        # file's size and modification time, so an edited file is read again.
        return datasets.Dataset.from_generator(
            _pairs_from_files,
            features=features,
            gen_kwargs={"source_file": str(source_file), "target_file": str(target_file),
                        "source_lang": source_lang, "target_lang": target_lang, "stamp": stamp},
        )  # fmt: skip
    except datasets.exceptions.DatasetGenerationError as error:  # our own errors name the file: raise those
        if isinstance(error.__cause__, ValueError | OSError):
            raise error.__cause__ from None
        raise


def _pairs_from_files(
    source_file: str, target_file: str, source_lang: str, target_lang: str, stamp: str
) -> Iterator[dict]:
    """Yield {"translation": {source_lang: line, target_lang: line}} for the aligned lines of two files, streaming.

    `stamp` (paths, sizes, modification times) only enters `datasets`' cache key. Raises ValueError naming both
    files and their line counts when one file ends before the other (and `iter_lines`' errors)."""
    end = object()
    lines = [iter_lines(source_file), iter_lines(target_file)]
    count = 0
    for source, target in itertools.zip_longest(*lines, fillvalue=end):
        if source is end or target is end:
            longer = 0 if target is end else 1
            counts = [count, count]
            counts[longer] += 1 + sum(1 for _ in lines[longer])
            raise ValueError(
                f"line counts differ: {source_file} has {counts[0]} lines, {target_file} has {counts[1]} lines"
            )
        count += 1
        yield {"translation": {source_lang: source, target_lang: target}}


def _load_from_dir(
    data_dir: str | os.PathLike, splits: dict[str, str], source_lang: str, target_lang: str
) -> datasets.DatasetDict:
    """All splits of `splits` found in `data_dir`; "train" must exist if it is asked for."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(missing_data_dir_message(data_dir))
    result = {}
    for split, stem in splits.items():
        dataset = _load_split_from_dir(data_dir, stem, source_lang, target_lang)
        if dataset is None and split == "train":
            raise FileNotFoundError(f"parallel-text file not found: {data_dir / f'{stem}.{source_lang}'}[.gz]")
        if dataset is not None:
            result[split] = dataset
    return datasets.DatasetDict(result)


def _validate_translations(dataset: datasets.Dataset, languages: Sequence[str], origin: str) -> None:
    """Check that every row has a `translation` dict holding a string for each language.

    When the column is an Arrow struct of strings (what JSON lines and Hub datasets give), the check runs on the
    Arrow columns (nulls mark missing texts), without a Python object per row; other layouts are checked row by row.

    Raises:
        ValueError: naming `origin` (file or dataset) and the 1-based row of the first bad row.
    """
    if "translation" not in dataset.column_names:
        raise ValueError(f"{origin}: no 'translation' column (columns: {dataset.column_names})")
    column = dataset.data.column("translation")
    kind = column.type
    strings = (pa.string(), pa.large_string())
    if dataset._indices is None and pa.types.is_struct(kind):
        if all(kind.get_field_index(lang) >= 0 and kind.field(lang).type in strings for lang in languages):
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


def _load_from_json(files: dict[str, str], source_lang: str, target_lang: str) -> datasets.DatasetDict:
    """JSON-lines files (split -> path) through `datasets.load_dataset("json")`, validated row by row."""
    for path in files.values():
        if not Path(path).is_file():
            raise FileNotFoundError(f"JSON-lines file not found: {path}")
    raw = datasets.load_dataset("json", data_files={split: str(path) for split, path in files.items()})
    for split, dataset in raw.items():
        _validate_translations(dataset, (source_lang, target_lang), files[split])
    return datasets.DatasetDict({split: raw[split].select_columns(["translation"]) for split in files})


def _load_from_hub(
    dataset_name: str, dataset_config_name: str | None, source_lang: str, target_lang: str
) -> datasets.DatasetDict:
    """A `datasets.load_dataset(dataset_name, dataset_config_name)` dataset, keeping train/validation/test.

    A local folder (a dataset saved in the Hub layout, a README.md whose `configs` name its files) is loaded with
    its configuration's data files resolved (`load_dataset_builder(...).config.data_files`, which carry each file's
    modification time) and passed back as `data_files`: datasets 5.2 keys the cache of such a folder by the
    README's file *patterns*, so two folders with the same layout (two corpora made by one script) share one cache
    entry and the second silently loads the first one's rows. Passing the resolved files keys the cache by the files.
    """
    kwargs = {}
    if Path(dataset_name).is_dir():
        kwargs["data_files"] = datasets.load_dataset_builder(dataset_name, dataset_config_name).config.data_files
    raw = datasets.load_dataset(dataset_name, dataset_config_name, **kwargs)
    result = {}
    for split in ("train", "validation", "test"):
        if split in raw:
            _validate_translations(raw[split], (source_lang, target_lang), f"{dataset_name} [{split}]")
            result[split] = raw[split].select_columns(["translation"])
    return datasets.DatasetDict(result)


def load_parallel_dataset(
    source_lang: str,
    target_lang: str,
    *,
    data_dir: str | os.PathLike | None = None,
    train_file: str | None = None,
    validation_file: str | None = None,
    test_file: str | None = None,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    splits: dict[str, str] | None = None,
) -> datasets.DatasetDict:
    """Load sentence pairs from exactly one source kind: a data_dir, JSON-lines files, or a `datasets` dataset.

    Args:
        source_lang, target_lang: language codes, the file suffixes / `translation` keys (e.g. "en", "de").
        data_dir: folder of line-aligned files `{split}.{lang}` or `{split}.{lang}.gz` (UTF-8, one sentence a line).
        train_file, validation_file, test_file: JSON-lines files, one `{"translation": {lang: text, ...}}` a line.
        dataset_name, dataset_config_name: a dataset for `datasets.load_dataset` (Hub name or local path).
        splits: for data_dir only, our split name -> file stem (default `DEFAULT_SPLITS`: train, val,
            test_2016_flickr).

    Returns:
        A `datasets.DatasetDict` with those of "train", "validation", "test" that exist, each with one column
        "translation" = {source_lang: str, target_lang: str}, one row per line / record, none dropped.

    Raises:
        ValueError: no source or more than one source kind (names the arguments); source_lang == target_lang;
            two files of a split with different line counts (names both files and counts); a non-UTF-8 byte
            (names the file and 1-based line); a JSON row without a `translation` dict holding both languages
            (names the file and 1-based row).
        FileNotFoundError: a missing data_dir, train file, one of a split's two language files, or JSON file
            (names the path).
    """
    json_files = {
        split: path
        for split, path in (("train", train_file), ("validation", validation_file), ("test", test_file))
        if path is not None
    }
    given = [
        name
        for name, present in (
            ("data_dir", data_dir is not None),
            ("train_file/validation_file/test_file", bool(json_files)),
            ("dataset_name", dataset_name is not None),
        )
        if present
    ]
    if len(given) != 1:
        raise ValueError(
            "give exactly one source of parallel text: data_dir, train_file/validation_file/test_file or "
            f"dataset_name (got {', '.join(given) if given else 'none'})"
        )
    if source_lang == target_lang:
        raise ValueError(f"source_lang and target_lang must differ (both are {source_lang!r})")
    if splits is not None and data_dir is None:
        raise ValueError("splits applies to data_dir only")
    if dataset_config_name is not None and dataset_name is None:
        raise ValueError("dataset_config_name needs dataset_name")
    if data_dir is not None:
        return _load_from_dir(data_dir, splits or DEFAULT_SPLITS, source_lang, target_lang)
    if json_files:
        return _load_from_json(json_files, source_lang, target_lang)
    return _load_from_hub(dataset_name, dataset_config_name, source_lang, target_lang)


def load_training_splits(args: DataArguments) -> datasets.DatasetDict:
    """The train/validation/test pairs a training run reads (`load_parallel_dataset`); Multi30k if no source is
    given, train and test cut to `--max_train_samples` / `--max_test_samples`.

    Sets `args.data_dir` to the folder read in that case, so that `training_args.json` records it.

    Raises:
        ValueError, FileNotFoundError: from `load_parallel_dataset` (names the file); no or an empty train split
            (names its source).
    """
    if args.data_dir is None and args.dataset_name is None and args.train_file is None:
        args.data_dir = str(default_data_dir())
    splits = {"train": "train", "validation": args.validation_split, "test": args.test_split}
    raw = load_parallel_dataset(
        args.source_lang,
        args.target_lang,
        data_dir=args.data_dir,
        train_file=args.train_file,
        validation_file=args.validation_file,
        test_file=args.test_file,
        dataset_name=args.dataset_name,
        dataset_config_name=args.dataset_config_name,
        splits=splits if args.data_dir else None,
    )
    origin = (
        f"{Path(args.data_dir) / f'train.{args.source_lang}'}[.gz]"
        if args.data_dir
        else args.train_file or f"{args.dataset_name} [train]"
    )
    if "train" not in raw:
        raise ValueError(f"no train split in the data: {origin} (splits: {list(raw)})")
    if len(raw["train"]) == 0:
        raise ValueError(f"the train split is empty: {origin} has no line")
    for split, limit in (("train", args.max_train_samples), ("test", args.max_test_samples)):
        if limit is not None and split in raw:
            raw[split] = raw[split].select(range(min(limit, len(raw[split]))))
    return raw


def check_training_splits(raw: datasets.DatasetDict, args: DataArguments, train_args: TrainingArguments) -> None:
    """The splits of a data_dir that the run will use must exist: the test split unless `--do_test false`, the
    validation split when `--eval_steps` > 0. A misspelled `--test_split` fails here, before training, not after.

    Raises:
        ValueError: naming the flag, the two files looked for and the splits that are there.
    """
    if not args.data_dir:
        return
    needed = {
        "test": ("--test_split", args.test_split, train_args.do_test, "--do_test false"),
        "validation": ("--validation_split", args.validation_split, train_args.eval_steps > 0, "--eval_steps 0"),
    }
    for split, (flag, stem, used, way_out) in needed.items():
        if used and split not in raw:
            there = ", ".join(available_splits(args.data_dir, args.source_lang, args.target_lang)) or "none"
            raise ValueError(
                f"{flag} {stem!r}: no {stem}.{args.source_lang}[.gz] and {stem}.{args.target_lang}[.gz] in "
                f"{args.data_dir} (splits there: {there}); or pass {way_out}"
            )


def iter_texts(
    dataset: datasets.Dataset | datasets.IterableDataset, languages: Sequence[str], batch_size: int = 1000
) -> Iterator[str]:
    """Yield the text of every requested side of every pair, row by row (for joint BPE training, §5.1).

    Args:
        dataset: one split with a "translation" column.
        languages: the sides to yield, in this order within each row (e.g. ("en", "de")).
        batch_size: rows read from Arrow at a time (a speed setting, no effect on the output).

    Returns:
        An iterator over `len(dataset) * len(languages)` strings: row 0 in each language, then row 1, ...

    Raises:
        ValueError: if `languages` is empty, or a row lacks one of them (names the language and the row).
    """
    if not languages:
        raise ValueError("languages must name at least one language")
    row = 0
    for batch in dataset.iter(batch_size=batch_size):
        for pair in batch["translation"]:
            for lang in languages:
                text = pair.get(lang) if isinstance(pair, dict) else None
                if not isinstance(text, str):
                    raise ValueError(f"row {row + 1} has no {lang!r} text in 'translation' (found {pair!r})")
                yield text
            row += 1


def source_and_target_texts(
    dataset: datasets.Dataset, source_lang: str, target_lang: str, limit: int | None = None
) -> tuple[list[str], list[str]]:
    """The source sentences and their references of the first `limit` pairs (all if None), as two aligned lists."""
    pairs = dataset["translation"][:limit]
    return [pair[source_lang] for pair in pairs], [pair[target_lang] for pair in pairs]
