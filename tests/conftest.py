"""Shared fixtures: where the real data lives, and the tiny model configuration used across the suite."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

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


def pytest_collection_modifyitems(items):
    """Tests under tests/end_to_end/ (real training runs in subprocesses) are marked `slow`: CI runs them all;
    `pytest -m "not slow"` is the quick loop while editing."""
    for item in items:
        if END_TO_END_DIR in Path(item.path).parents:
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

    `env_overrides` are set last. Fails the test with the end of stderr if the command exits non-zero. Scripts run
    with `-c` should start with `BLOCK_PACKAGE_IMPORT` (the editable install would make the package importable).
    """
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "HF_TOKEN")}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    env["TOKENIZERS_PARALLELISM"] = "false"
    env.update(env_overrides)
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command[:3]} failed:\n{result.stderr[-3000:]}"
    return result


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
    for _ in range(300):
        picked = rng.sample(range(len(sources)), 32)
        batch = tokenizer(
            [sources[i] for i in picked], text_target=[targets[i] for i in picked], padding=True, return_tensors="pt"
        )
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


def generate_texts(model, tokenizer, sentences: list[str], **generate_kwargs) -> list[str]:
    """The reference: one padded batch through `generate` and `batch_decode`."""
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        return tokenizer.batch_decode(model.generate(**batch, **generate_kwargs), skip_special_tokens=True)
