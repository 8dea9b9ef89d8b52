"""Shared fixtures: where the real data lives, and the tiny model configuration used across the suite."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from vaswani_transformer import (
    VaswaniTransformerConfig,
    VaswaniTransformerForConditionalGeneration,
    save_translation_pipeline,
)
from vaswani_transformer.training.data import default_data_dir


REPO_ROOT = Path(__file__).resolve().parent.parent
# One setting finds the real data (`default_data_dir`): VASWANI_DATA_DIR, defaulting to ../shared/data.
MULTI30K_DIR = default_data_dir()
END_TO_END_DIR = Path(__file__).resolve().parent / "end_to_end"


# The fixtures of tests/end_to_end/ that train (in this process or launched) or save a model for the example scripts.
END_TO_END_RUNS = frozenset({"smoke", "finished_run", "run_copy", "fsdp_run", "run_dir", "card", "corpora", "saved"})


def pytest_collection_modifyitems(items):
    """Tests under tests/end_to_end/ that use a run (`END_TO_END_RUNS`) are marked `slow`: CI runs them all;
    `pytest -m "not slow"` is the quick loop while editing, which keeps that folder's checks of errors raised before
    any training and of files (README, configs)."""
    for item in items:
        if END_TO_END_DIR in Path(item.path).parents and END_TO_END_RUNS & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)


# Prepended to scripts run in a fresh interpreter: `sys.modules[name] = None` makes `import vaswani_transformer` fail
# even where the package is pip-installed (as in CI), so every class must come from files saved next to the weights.
BLOCK_PACKAGE_IMPORT = """
import sys
sys.modules["vaswani_transformer"] = None
try:
    import vaswani_transformer  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("the package is importable; the test would prove nothing")
"""


def run_without_package(
    command: list[str], cwd, hf_home, timeout: int = 300, **env_overrides: str
) -> subprocess.CompletedProcess:
    """Run `command` as a user without this package would: no PYTHONPATH, no HF token, offline, an empty HF_HOME.

    One OpenMP thread, as this process runs torch (`_one_torch_thread`), so that tensors computed there and here are
    bit-identical. `env_overrides` are set last. Fails the test with the end of stderr if the command exits non-zero.
    Scripts run with `-c` should start with `BLOCK_PACKAGE_IMPORT` (the editable install would make the package
    importable).
    """
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "HF_TOKEN")}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    env.update(TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    env.update(env_overrides)
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command[:3]} failed:\n{result.stderr[-3000:]}"
    return result


# What the subprocesses of the end-to-end tests got in their environment: nothing reaches the Hub.
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def reset_accelerate_state() -> None:
    """Forget accelerate's process-wide singletons (`PartialState`, `AcceleratorState`, `GradientState`), as a new
    process starts without them; a no-op if accelerate was never imported."""
    if "accelerate.state" not in sys.modules:
        return
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """The suite's models are tiny: every test and fixture runs with one torch thread (`torch_threads`), as the
    subprocesses do with OMP_NUM_THREADS=1. With two on a 2-core machine doing other work, test_modeling's
    test_tiny_model_learns_to_copy took 58 s instead of 5 s."""
    with torch_threads(1):
        yield


@pytest.fixture(autouse=True)
def _fresh_process_state(request):
    """Every test starts and ends without accelerate state: an `Accelerator` built by one test's in-process
    `main(argv)` (mixed precision, `cpu=True`) would otherwise refuse the next test's different settings. Tests under
    tests/end_to_end/ run whole inside `fresh_process`, so that what their direct `main(argv)` calls set (logging
    levels, datasets' verbosity, random states) does not reach later tests."""
    if END_TO_END_DIR in Path(request.node.path).parents:
        with fresh_process():
            yield
        return
    reset_accelerate_state()
    with torch_threads(1):
        yield
    reset_accelerate_state()


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """`count` torch intra-op threads inside, the previous count afterwards. One thread for a tiny model: on a 2-core
    machine with any other work running, two OpenMP threads wait on each other (measured under load: a training step
    of the `trained` fixture's model 0.05 s with 1 thread, 0.8 s with 2)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@contextlib.contextmanager
def fresh_process(threads: int = 1, **env: str) -> Iterator[None]:
    """Run a command's `main(argv)` in this process as a new interpreter would start it, then undo what it changed.

    Inside: no accelerate state, `threads` torch threads (what OMP_NUM_THREADS=1 gave the subprocesses: on a busy
    2-core machine, threads of a tiny model only wait on each other), the Hub offline, `TOKENIZERS_PARALLELISM=false`
    and `env` set. Afterwards: accelerate state reset; the environment, torch's thread count, the Python, NumPy and
    torch random states, the root logger's handlers and level, the level of the `vaswani_transformer` logger and
    `datasets`' verbosity and progress bars as they were. Not undone: glibc's malloc settings of
    `--keep_freed_memory` (they only keep freed memory for reuse).
    """
    import datasets
    import huggingface_hub.constants

    saved_env = dict(os.environ)
    saved_rng = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    root, package = logging.getLogger(), logging.getLogger("vaswani_transformer")
    saved_logging = list(root.handlers), root.level, package.level
    saved_datasets = datasets.utils.logging.get_verbosity(), datasets.utils.is_progress_bar_enabled()
    # Read from the environment when huggingface_hub and datasets are imported, which this process did long ago.
    offline = [(huggingface_hub.constants, "HF_HUB_OFFLINE"), (datasets.config, "HF_HUB_OFFLINE")]
    saved_offline = [getattr(module, name) for module, name in offline]
    reset_accelerate_state()
    os.environ.update(OFFLINE, TOKENIZERS_PARALLELISM="false", **env)
    for module, name in offline:
        setattr(module, name, True)
    try:
        with torch_threads(threads):
            yield
    finally:
        reset_accelerate_state()
        for (module, name), value in zip(offline, saved_offline, strict=True):
            setattr(module, name, value)
        os.environ.clear()
        os.environ.update(saved_env)
        random.setstate(saved_rng[0])
        np.random.set_state(saved_rng[1])
        torch.random.set_rng_state(saved_rng[2])
        for handler in set(root.handlers) - set(saved_logging[0]):
            root.removeHandler(handler)
        root.setLevel(saved_logging[1])
        package.setLevel(saved_logging[2])
        datasets.utils.logging.set_verbosity(saved_datasets[0])
        (datasets.enable_progress_bars if saved_datasets[1] else datasets.disable_progress_bars)()


def run_in_process(main: Callable[[list[str]], object], argv: Sequence[str], threads: int = 1, **env: str) -> str:
    """`main(argv)` under `fresh_process(threads, **env)`; returns what the `vaswani_transformer` loggers said at
    INFO and above (one record a line, the stderr of the same command run as a script). Exceptions propagate."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.INFO)
    package = logging.getLogger("vaswani_transformer")
    package.addHandler(handler)
    try:
        with fresh_process(threads, **env):
            main(list(argv))
    finally:
        package.removeHandler(handler)
    return stream.getvalue()


def train_in_process(argv: Sequence[str], threads: int = 1, **env: str) -> str:
    """`training/train.py` in this process: `vaswani_transformer.training.train.main` through `run_in_process`;
    returns its log (INFO and above)."""
    from vaswani_transformer.training.train import main

    return run_in_process(main, argv, threads, **env)


@pytest.fixture(scope="session")
def multi30k_dir() -> Path:
    """The Multi30k folder (`{split}.{lang}.gz`). Missing data fails the run in CI and skips elsewhere."""
    if not (MULTI30K_DIR / "train.en.gz").is_file():
        message = f"Multi30k not found at {MULTI30K_DIR} (set VASWANI_DATA_DIR to the folder holding multi30k/)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return MULTI30K_DIR


def read_multi30k(directory: Path, split: str, lang: str, limit: int | None = None) -> list[str]:
    """The first `limit` lines of `{split}.{lang}.gz`, newline stripped (a test helper, not the training reader)."""
    import gzip
    import itertools

    with gzip.open(directory / f"{split}.{lang}.gz", "rt", encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in itertools.islice(handle, limit)]


@pytest.fixture(scope="session")
def small_tokenizer(multi30k_dir):
    """A 1000-token shared BPE vocabulary learnt from 4000 EN+DE training sentences of Multi30k."""
    from vaswani_transformer.tokenization_vaswani_transformer_fast import VaswaniTransformerTokenizerFast

    texts = read_multi30k(multi30k_dir, "train", "en", 2000) + read_multi30k(multi30k_dir, "train", "de", 2000)
    return VaswaniTransformerTokenizerFast.train_from_iterator(texts, vocab_size=1000)


@pytest.fixture(scope="session")
def real_sentences(multi30k_dir) -> dict[str, list[str]]:
    """Eight real EN->DE sentence pairs from Multi30k test_2016_flickr, of different lengths."""
    return {
        "en": read_multi30k(multi30k_dir, "test_2016_flickr", "en", 8),
        "de": read_multi30k(multi30k_dir, "test_2016_flickr", "de", 8),
    }


def tiny_config(**overrides):
    """The suite's tiny model: d_model 16, 2 + 2 layers, 4 heads, d_ff 32, no dropout unless overridden."""
    values = dict(
        vocab_size=1000,
        d_model=16,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        dropout=0.0,
        max_position_embeddings=64,
    )
    values.update(overrides)
    return VaswaniTransformerConfig(**values)


@pytest.fixture(scope="session")
def trained(multi30k_dir, small_tokenizer) -> tuple[VaswaniTransformerForConditionalGeneration, object, list[str]]:
    """(model, tokenizer, 48 real validation sentences): 2+2 layers, d_model 32, 300 Adam steps on 2,000 pairs.

    Trained so that its outputs are not degenerate (beams end at different steps, greedy output is not one token
    repeated): the reference for tests of decoding (our beam search, the CTranslate2 export). Do not modify it."""
    torch.manual_seed(0)
    tokenizer = small_tokenizer
    model = VaswaniTransformerForConditionalGeneration(
        tiny_config(vocab_size=len(tokenizer), d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64)
    )
    sources = read_multi30k(multi30k_dir, "train", "en", 2000)
    targets = read_multi30k(multi30k_dir, "train", "de", 2000)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.98), eps=1e-9)
    rng = random.Random(0)
    model.train()
    with torch_threads(1):
        for _ in range(300):
            picked = rng.sample(range(len(sources)), 32)
            sources_picked, targets_picked = [sources[i] for i in picked], [targets[i] for i in picked]
            batch = tokenizer(sources_picked, text_target=targets_picked, padding=True, return_tensors="pt")
            batch["labels"] = batch["labels"].masked_fill(batch["labels"] == tokenizer.pad_token_id, -100)
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    return model.eval(), tokenizer, read_multi30k(multi30k_dir, "val", "en", 48)


def save_tiny_translation_model(
    directory: Path, tokenizer, seed: int = 0, **config_overrides
) -> VaswaniTransformerForConditionalGeneration:
    """Save a random tiny model (the suite's `tiny_config`), its tokenizer and the pipeline into `directory`.

    The generation config is greedy with `max_new_tokens=6`, so that the pipeline's defaults are visible in tests;
    `config_overrides` go to `tiny_config`. Returns the model in eval mode.
    """
    torch.manual_seed(seed)
    model = VaswaniTransformerForConditionalGeneration(
        tiny_config(vocab_size=len(tokenizer), **config_overrides)
    ).eval()
    model.generation_config.max_new_tokens = 6
    model.generation_config.num_beams = 1
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    save_translation_pipeline(directory)
    return model


def save_trained_translation_model(directory: Path, trained) -> Path:
    """Save the `trained` fixture's model, tokenizer and pipeline into `directory` with the generation config that
    `vaswani-train` saves (`recipe.build_generation_config` with the default arguments: beam 4, alpha 0.6, early
    stopping, §6.1), leaving the fixture unchanged. Its translations are real words, so scores are not 0 and a wrong
    reference shows. Returns `directory`."""
    from vaswani_transformer.training.arguments import DataArguments, TrainingArguments
    from vaswani_transformer.training.recipe import build_generation_config

    model, tokenizer, _ = trained
    model.save_pretrained(directory)
    build_generation_config(model.config, TrainingArguments(), DataArguments()).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    save_translation_pipeline(directory)
    return directory


def generate_texts(model, tokenizer, sentences: list[str], **generate_kwargs) -> list[str]:
    """The reference: one padded batch through `generate` and `batch_decode`."""
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        return tokenizer.batch_decode(model.generate(**batch, **generate_kwargs), skip_special_tokens=True)
