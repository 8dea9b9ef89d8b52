"""A WMT-size parallel corpus made from Multi30k: the stand-in for WMT 2014 EN-DE (4.5M pairs) that this machine can
build without the network (the formats it writes and how to load each: benchmarks/README.md).

Each synthetic training pair joins 1 + min(Poisson(`EXTRA_PIECES_MEAN`), `MAX_PIECES` - 1) random aligned Multi30k
training pairs with a space, source with source and target with target, so a pair stays a translation and has
WMT-like lengths. Validation and test are Multi30k's own. Pairs are generated in chunks from
`numpy.random.default_rng(seed)`, so memory stays bounded and the same seed gives the same corpus in every format.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import datasets
import numpy as np
import yaml
from transformers import HfArgumentParser

from vaswani_transformer.training.data import DEFAULT_SPLITS, default_data_dir, load_parallel_dataset


__all__ = ["EXTRA_PIECES_MEAN", "FORMATS", "MAX_PIECES", "build_corpus", "hub_config_name", "main", "synthetic_chunks"]

EXTRA_PIECES_MEAN = 0.85  # mean Multi30k sentences joined beyond the first (Poisson): ~1.85 a pair, ~22 EN words
MAX_PIECES = 6  # at most this many Multi30k sentences in one pair (~80 words, WMT's long tail)
FORMATS = ("text", "jsonl", "parquet", "arrow")
SPLIT_STEMS = {split: stem for split, stem in DEFAULT_SPLITS.items() if split != "train"}  # held-out Multi30k files


def synthetic_chunks(
    sources: list[str], targets: list[str], pairs: int, seed: int = 0, chunk: int = 250_000
) -> Iterator[tuple[list[str], list[str]]]:
    """Joined pairs (see the module docstring) in chunks of at most `chunk` pairs: `(sources, targets)` lists.

    Args:
        sources, targets: aligned sentences (Multi30k train), the same length.
        pairs: synthetic pairs to make in all.

    Raises:
        ValueError: if `sources` and `targets` differ in length or are empty, or `pairs` or `chunk` is not positive.
    """
    if len(sources) != len(targets) or not sources:
        raise ValueError(f"need aligned, non-empty sentences, got {len(sources)} sources and {len(targets)} targets")
    if pairs <= 0 or chunk <= 0:
        raise ValueError(f"pairs and chunk must be positive, got pairs={pairs}, chunk={chunk}")
    source_array, target_array = np.array(sources, dtype=object), np.array(targets, dtype=object)
    rng = np.random.default_rng(seed)
    for start in range(0, pairs, chunk):
        count = min(chunk, pairs - start)
        pieces = 1 + np.minimum(rng.poisson(EXTRA_PIECES_MEAN, count), MAX_PIECES - 1)
        groups = np.split(rng.integers(0, len(sources), int(pieces.sum())), np.cumsum(pieces)[:-1])
        yield [" ".join(source_array[g]) for g in groups], [" ".join(target_array[g]) for g in groups]


def hub_config_name(languages: tuple[str, str]) -> str:
    """The configuration name WMT datasets on the Hub give a language pair: the non-English language first
    ("de-en" for en->de and de->en, as `load_dataset("wmt14", "de-en")`)."""
    return "-".join(sorted(languages, key=lambda lang: (lang == "en", lang)))


def _bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def build_corpus(
    output: str | Path,
    pairs: int,
    *,
    multi30k_dir: str | Path | None = None,
    languages: tuple[str, str] = ("en", "de"),
    formats: tuple[str, ...] = FORMATS,
    seed: int = 0,
    chunk: int = 250_000,
) -> dict:
    """Write the corpus of `pairs` training pairs in `formats` under `output` (see the module docstring).

    Args:
        output: a folder that must not exist yet (it is created; nothing is overwritten).
        multi30k_dir: where Multi30k is (default `training.data.default_data_dir()`).
        languages: (source, target) language codes present in Multi30k (en, de, fr, cs).

    Returns:
        The statistics also written to `<output>/corpus.json`.

    Raises:
        FileExistsError: if `output` exists.
        ValueError: for an unknown format, or `pairs` or `chunk` not positive (before anything is written).
        FileNotFoundError: if Multi30k is missing (names the file).
    """
    output = Path(output)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown formats {unknown}: choose from {list(FORMATS)}")
    if pairs <= 0 or chunk <= 0:
        raise ValueError(f"pairs and chunk must be positive, got pairs={pairs}, chunk={chunk}")
    if output.exists():
        raise FileExistsError(f"{output} exists: give a new folder (the corpus never overwrites one)")
    source_lang, target_lang = languages
    multi30k_dir = Path(multi30k_dir or default_data_dir())
    started = time.perf_counter()
    multi30k = load_parallel_dataset(source_lang, target_lang, data_dir=multi30k_dir)
    train = multi30k["train"]["translation"]
    sources, targets = [pair[source_lang] for pair in train], [pair[target_lang] for pair in train]
    output.mkdir(parents=True)

    words: dict[str, list[np.ndarray]] = {source_lang: [], target_lang: []}  # per chunk, from the first pass

    def chunks() -> Iterator[tuple[list[str], list[str]]]:
        first_pass = not words[source_lang]
        for chunk_sources, chunk_targets in synthetic_chunks(sources, targets, pairs, seed, chunk):
            if first_pass:
                for lang, texts in ((source_lang, chunk_sources), (target_lang, chunk_targets)):
                    words[lang].append(np.array([len(text.split()) for text in texts], dtype=np.int32))
            yield chunk_sources, chunk_targets

    if "text" in formats:
        text = output / "text"
        text.mkdir()
        with (
            (text / f"train.{source_lang}").open("w", encoding="utf-8") as source_file,
            (text / f"train.{target_lang}").open("w", encoding="utf-8") as target_file,
        ):
            for chunk_sources, chunk_targets in chunks():
                source_file.write("\n".join(chunk_sources) + "\n")
                target_file.write("\n".join(chunk_targets) + "\n")
        for stem in SPLIT_STEMS.values():
            for lang in languages:
                shutil.copyfile(multi30k_dir / f"{stem}.{lang}.gz", text / f"{stem}.{lang}.gz")

    def rows() -> Iterator[dict]:
        for chunk_sources, chunk_targets in chunks():
            for source, target in zip(chunk_sources, chunk_targets, strict=True):
                yield {"translation": {source_lang: source, target_lang: target}}

    if set(formats) - {"text"}:
        # The training split is written once to Arrow (datasets' cache, in `output`), then exported from there.
        features = datasets.Features({"translation": datasets.Translation(languages=list(languages))})
        cache = output / ".cache"
        corpus = datasets.DatasetDict(
            {
                "train": datasets.Dataset.from_generator(rows, features=features, cache_dir=str(cache)),
                **{split: multi30k[split].cast(features) for split in SPLIT_STEMS},
            }
        )
        if "jsonl" in formats:
            for split, dataset in corpus.items():
                dataset.to_json(output / "jsonl" / f"{split}.jsonl", lines=True, force_ascii=False)
        if "parquet" in formats:
            config = hub_config_name(languages)
            for split, dataset in corpus.items():
                dataset.to_parquet(output / "parquet" / config / f"{split}.parquet")
            files = [{"split": split, "path": f"{config}/{split}.parquet"} for split in corpus]
            card = yaml.safe_dump({"configs": [{"config_name": config, "data_files": files}]}, sort_keys=False)
            (output / "parquet" / "README.md").write_text(f"---\n{card}---\nSynthetic corpus (benchmarks/scale).\n")
        if "arrow" in formats:
            corpus.save_to_disk(output / "arrow")
        del corpus
        shutil.rmtree(cache)
    counts = {lang: np.concatenate(arrays) for lang, arrays in words.items()}
    stats = {
        "pairs": pairs,
        "languages": list(languages),
        "seed": seed,
        "multi30k_train_pairs": len(sources),
        "words_per_sentence": {
            lang: {"mean": round(float(count.mean()), 2), "p99": float(np.percentile(count, 99))}
            for lang, count in counts.items()
        },
        "bytes": {name: _bytes(output / name) for name in formats},
        "seconds": round(time.perf_counter() - started, 1),
    }
    (output / "corpus.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


@dataclasses.dataclass
class CorpusArguments:
    """`python -m benchmarks.scale.corpus` (benchmarks/README.md)."""

    output: Path = dataclasses.field(metadata={"help": "A new folder (a temp folder, not the repo)."})
    pairs: int = dataclasses.field(default=1_000_000, metadata={"help": "Training pairs (1M; WMT14 EN-DE has 4.5M)."})
    formats: list[str] = dataclasses.field(default_factory=lambda: list(FORMATS), metadata={"choices": FORMATS})
    source_lang: str = "en"
    target_lang: str = "de"
    data_dir: Path = dataclasses.field(default_factory=default_data_dir, metadata={"help": "The Multi30k folder."})
    seed: int = 0


def main(argv: list[str] | None = None) -> None:
    """CLI (benchmarks/README.md): build the corpus, print its statistics."""
    parser = HfArgumentParser(CorpusArguments, description=__doc__.split("\n\n")[0])
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    try:  # build_corpus checks every argument before it writes anything
        stats = build_corpus(
            args.output,
            args.pairs,
            multi30k_dir=args.data_dir,
            languages=(args.source_lang, args.target_lang),
            formats=tuple(args.formats),
            seed=args.seed,
        )
    except (ValueError, OSError) as error:
        parser.error(str(error))
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    main()
