"""The shared source-target vocabulary of a training run (§5.1): given, the run's own, or trained once and cached.

§5.1: "Sentences were encoded using byte-pair encoding, which has a shared source-target vocabulary of about 37000
tokens." `run_tokenizer` decides where a run's tokenizer comes from, and makes every data-parallel rank hold the same
one: the main process trains (or finds) it, and the others receive its files.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import datasets
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from datasets.fingerprint import Hasher

from vaswani_transformer.tokenization_vaswani_transformer_fast import VaswaniTransformerTokenizerFast
from vaswani_transformer.training.arguments import ModelArguments
from vaswani_transformer.training.tokenizer_training import train_tokenizer


__all__ = ["BPE_CACHE_FOLDER", "cached_bpe_vocabulary", "run_tokenizer"]

logger = logging.getLogger(__name__)

BPE_CACHE_FOLDER = "vaswani_transformer_bpe"  # under HF_DATASETS_CACHE


def cached_bpe_vocabulary(
    raw_train: datasets.Dataset, languages: tuple[str, str], vocab_size: int, min_frequency: int
) -> Path:
    """The folder of the shared BPE vocabulary of `raw_train` (§5.1), trained now unless it is cached already.

    Kept beside the datasets cache, keyed like it: `HF_DATASETS_CACHE/vaswani_transformer_bpe/<key>`, key: the
    split's fingerprint, the languages, `vocab_size` and `min_frequency`. A second run on the same data finds the
    vocabulary instead of learning it again (~30 s per million pairs). The folder is written whole and renamed into
    place, so a run killed while writing it leaves no half vocabulary; of two runs storing the same key at once, the
    first rename wins. Call on one process.

    Returns:
        the folder holding the tokenizer's `save_pretrained` files.
    """
    key = Hasher.hash((raw_train._fingerprint, languages, vocab_size, min_frequency, "bpe/1"))
    cached = Path(datasets.config.HF_DATASETS_CACHE, BPE_CACHE_FOLDER, key)
    if (cached / "tokenizer.json").is_file():
        logger.info("shared BPE vocabulary of this train split and settings found in %s", cached)
        return cached
    logger.info("training a %d-token shared BPE vocabulary on %d pairs", vocab_size, len(raw_train))
    started = time.perf_counter()
    tokenizer = train_tokenizer(raw_train, languages, vocab_size, min_frequency=min_frequency)
    logger.info("trained the shared BPE vocabulary in %.1f s", time.perf_counter() - started)
    cached.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cached.parent))  # written whole, then renamed into place
    tokenizer.save_pretrained(staging)
    try:
        os.replace(staging, cached)
    except OSError:  # another run stored the same vocabulary meanwhile: keep that one
        shutil.rmtree(staging)
    return cached


def run_tokenizer(
    accelerator: Accelerator,
    args: ModelArguments,
    raw_train: datasets.Dataset,
    languages: tuple[str, str],
    run_dir: Path | None,
) -> VaswaniTransformerTokenizerFast:
    """`--tokenizer_name` if given; else the run's own tokenizer in `run_dir` (a resumed run); else the shared BPE
    vocabulary of the train split (§5.1, `cached_bpe_vocabulary`) from the main process, handed to the others.

    Writes nothing into output_dir (the training command saves the tokenizer once every check has passed). The
    vocabulary travels to the other ranks as its `save_pretrained` files through
    `accelerate.utils.broadcast_object_list`, and every rank loads those same files, so all ranks (and a 1-process
    run) hold an identical tokenizer.

    Raises:
        OSError, ValueError: a `--tokenizer_name` or run directory without a usable tokenizer (names the directory).
    """
    if args.tokenizer_name:
        return VaswaniTransformerTokenizerFast.from_pretrained(args.tokenizer_name)
    if run_dir is not None:
        return VaswaniTransformerTokenizerFast.from_pretrained(run_dir)
    files = [None]
    if accelerator.is_main_process:
        cached = cached_bpe_vocabulary(raw_train, languages, args.vocab_size, args.min_frequency)
        files = [{path.name: path.read_bytes() for path in cached.iterdir()}]
    files = broadcast_object_list(files) if accelerator.num_processes > 1 else files
    with tempfile.TemporaryDirectory() as folder:
        for name, content in files[0].items():
            Path(folder, name).write_bytes(content)
        return VaswaniTransformerTokenizerFast.from_pretrained(folder)
