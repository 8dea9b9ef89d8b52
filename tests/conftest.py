"""Shared fixtures: where the real data lives, and the tiny model configuration used across the suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


REPO_ROOT = Path(__file__).resolve().parent.parent
# One setting finds the real data: VASWANI_DATA_DIR, defaulting to ../shared/data beside the checkout.
DATA_DIR = Path(os.environ.get("VASWANI_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
MULTI30K_DIR = DATA_DIR / "multi30k"


@pytest.fixture(scope="session")
def multi30k_dir() -> Path:
    """The Multi30k folder (`{split}.{lang}.gz`). Missing data fails the run in CI and skips elsewhere."""
    if not (MULTI30K_DIR / "train.en.gz").is_file():
        message = f"Multi30k not found at {MULTI30K_DIR} (set VASWANI_DATA_DIR to the folder holding multi30k/)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return MULTI30K_DIR
