"""Reading parallel text: the one place that loads sentence pairs, for tokenizer training and model training alike.

Three kinds of source, exactly one per call (the flags of transformers' `run_translation_no_trainer.py`):

- `data_dir`: a folder of line-aligned plain-text files `{split}.{lang}` or `{split}.{lang}.gz` (Multi30k, the WMT
  `newstest` files after `sacrebleu --echo`), one sentence per line, UTF-8;
- `train_file` / `validation_file` / `test_file`: data files, JSON lines, JSON, Parquet or CSV;
- `dataset_name` (+ `dataset_config_name`, `dataset_revision`): any dataset `datasets.load_dataset` can open, from
  the Hub or a local folder, e.g. `wmt/wmt14` `de-en` (the paper's data, §5.1).

Files and datasets come in either layout, a `translation` dict column or one text column per language
(`training.dataset_layouts`), with any split names (`splits`).

Every kind gives a `datasets.DatasetDict` with the splits "train", "validation", "test" that exist and one column
"translation" = {source_lang: str, target_lang: str}. Lines are never dropped or changed here; filtering empty or
over-long pairs is the training code's job.
"""

from __future__ import annotations

import gzip
import itertools
import os
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import datasets

from vaswani_transformer.training.arguments import DataArguments, TrainingArguments
from vaswani_transformer.training.dataset_layouts import (
    DATASET_SPLITS,
    dataset_split_names,
    load_from_files,
    load_from_hub,
    translation_features,
)


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
    "resolve_split_names",
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
    features = translation_features(source_lang, target_lang)
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
    source_column: str | None = None,
    target_column: str | None = None,
    dataset_revision: str | None = None,
) -> datasets.DatasetDict:
    """Load sentence pairs from exactly one source kind: a data_dir, data files, or a `datasets` dataset.

    Args:
        source_lang, target_lang: language codes, the file suffixes / `translation` keys (e.g. "en", "de").
        data_dir: folder of line-aligned files `{split}.{lang}` or `{split}.{lang}.gz` (UTF-8, one sentence a line).
        train_file, validation_file, test_file: data files (JSON lines, JSON, Parquet or CSV, by extension).
        dataset_name, dataset_config_name: a dataset for `datasets.load_dataset` (Hub name or local folder).
        splits: our split name -> the data_dir file stem (default `DEFAULT_SPLITS`: train, val, test_2016_flickr)
            or the dataset's split name (default `DATASET_SPLITS`: train, validation, test).
        source_column, target_column: the text columns of a flat layout (files and datasets); default: a
            `translation` dict column, else the columns named by the language codes (`training.dataset_layouts`).
        dataset_revision: the dataset's Git revision (branch, tag or commit), with `dataset_name`.

    Returns:
        A `datasets.DatasetDict` with those of "train", "validation", "test" that exist, each with one column
        "translation" = {source_lang: str, target_lang: str}, one row per line / record, none dropped.

    Raises:
        ValueError: no source or more than one source kind (names the arguments); source_lang == target_lang;
            two files of a split with different line counts (names both files and counts); a non-UTF-8 byte
            (names the file and 1-based line); a row without both texts, or a column that is not there (names the
            file or dataset, the row or the columns there).
        FileNotFoundError: a missing data_dir, train file, one of a split's two language files, or data file
            (names the path).
    """
    files = {
        split: path
        for split, path in (("train", train_file), ("validation", validation_file), ("test", test_file))
        if path is not None
    }
    given = [
        name
        for name, present in (
            ("data_dir", data_dir is not None),
            ("train_file/validation_file/test_file", bool(files)),
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
    if splits is not None and files:
        raise ValueError("splits applies to data_dir and dataset_name (data files name their split themselves)")
    if (dataset_config_name is not None or dataset_revision is not None) and dataset_name is None:
        raise ValueError("dataset_config_name and dataset_revision need dataset_name")
    columns = None if source_column is None and target_column is None else (source_column, target_column)
    if columns is not None and (None in columns or data_dir is not None):
        raise ValueError("source_column and target_column go together, with data files or dataset_name")
    if data_dir is not None:
        return _load_from_dir(data_dir, splits or DEFAULT_SPLITS, source_lang, target_lang)
    if files:
        return load_from_files(files, source_lang, target_lang, columns)
    return load_from_hub(
        dataset_name, dataset_config_name, source_lang, target_lang, splits, dataset_revision, columns
    )


def resolve_split_names(args: DataArguments) -> dict[str, str]:
    """Our split name -> the data_dir stem or dataset split a run reads; fills in `args.validation_split` and
    `args.test_split` when unset (`DEFAULT_SPLITS` for a data_dir, else `DATASET_SPLITS`) so that
    `training_args.json` records them and results files are named by them."""
    defaults = DEFAULT_SPLITS if args.data_dir else DATASET_SPLITS
    args.validation_split = args.validation_split or defaults["validation"]
    args.test_split = args.test_split or defaults["test"]
    return {"train": args.train_split, "validation": args.validation_split, "test": args.test_split}


def load_training_splits(args: DataArguments) -> datasets.DatasetDict:
    """The train/validation/test pairs a training run reads (`load_parallel_dataset`); Multi30k if no source is
    given, train and test cut to `--max_train_samples` / `--max_test_samples`.

    Sets `args.data_dir` to the folder read in that case, and the split names (`resolve_split_names`), so that
    `training_args.json` records them.

    Raises:
        ValueError, FileNotFoundError: from `load_parallel_dataset` (names the file); no or an empty train split
            (names its source and the splits there).
    """
    if args.data_dir is None and args.dataset_name is None and args.train_file is None:
        args.data_dir = str(default_data_dir())
    splits = resolve_split_names(args)
    raw = load_parallel_dataset(
        args.source_lang,
        args.target_lang,
        data_dir=args.data_dir,
        train_file=args.train_file,
        validation_file=args.validation_file,
        test_file=args.test_file,
        dataset_name=args.dataset_name,
        dataset_config_name=args.dataset_config_name,
        splits=None if args.train_file else splits,
        source_column=args.source_column,
        target_column=args.target_column,
        dataset_revision=args.dataset_revision,
    )
    if "train" not in raw:
        there = ", ".join(_splits_there(args)) or "none"
        raise ValueError(f"no train split in the data: {_origin(args, args.train_split)} (splits there: {there})")
    if len(raw["train"]) == 0:
        raise ValueError(f"the train split is empty: {_origin(args, args.train_split)} has no line")
    for split, limit in (("train", args.max_train_samples), ("test", args.max_test_samples)):
        if limit is not None and split in raw:
            raw[split] = raw[split].select(range(min(limit, len(raw[split]))))
    return raw


def _origin(args: DataArguments, split: str) -> str:
    """Where a split of the run's data is read from, for error messages."""
    if args.data_dir:
        return f"{Path(args.data_dir) / f'{split}.{args.source_lang}'}[.gz]"
    return args.train_file or f"{args.dataset_name} [{split}]"


def _splits_there(args: DataArguments) -> list[str]:
    """The splits of the run's data_dir or dataset (for error messages)."""
    if args.data_dir:
        return available_splits(args.data_dir, args.source_lang, args.target_lang)
    if args.dataset_name:
        return dataset_split_names(args.dataset_name, args.dataset_config_name, args.dataset_revision)
    return []


def check_training_splits(raw: datasets.DatasetDict, args: DataArguments, train_args: TrainingArguments) -> None:
    """The splits of a data_dir or dataset that the run will use must exist: the test split unless `--do_test
    false`, the validation split when `--eval_steps` > 0. A misspelled `--test_split` fails here, before training,
    not after.

    Raises:
        ValueError: naming the flag, what was looked for and the splits that are there.
    """
    if not (args.data_dir or args.dataset_name):
        return
    needed = {
        "test": ("--test_split", args.test_split, train_args.do_test, "--do_test false"),
        "validation": ("--validation_split", args.validation_split, train_args.eval_steps > 0, "--eval_steps 0"),
    }
    for split, (flag, name, used, way_out) in needed.items():
        if used and split not in raw:
            there = ", ".join(_splits_there(args)) or "none"
            if args.data_dir:
                looked_for = f"no {name}.{args.source_lang}[.gz] and {name}.{args.target_lang}[.gz] in {args.data_dir}"
            else:
                looked_for = f"no split {name!r} in {args.dataset_name}"
            raise ValueError(f"{flag} {name!r}: {looked_for} (splits there: {there}); or pass {way_out}")


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
