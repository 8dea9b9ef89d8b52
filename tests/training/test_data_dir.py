"""Where the presets find Multi30k (`default_data_dir`'s documented rule) and the error when it is not there."""

from pathlib import Path

import pytest
from conftest import REPO_ROOT

from vaswani_transformer.training import data
from vaswani_transformer.training.data import default_data_dir, load_parallel_dataset


def test_the_variable_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("VASWANI_DATA_DIR", str(tmp_path))
    (tmp_path / "data" / "multi30k").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert default_data_dir() == tmp_path / "multi30k"


def test_then_the_working_directory_then_the_checkout(monkeypatch, tmp_path):
    monkeypatch.delenv("VASWANI_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    checkout = tmp_path / "checkout"
    (checkout / "vaswani_transformer").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text("")
    (tmp_path / "shared" / "data" / "multi30k").mkdir(parents=True)
    monkeypatch.setattr(data, "REPO_ROOT", checkout)
    assert default_data_dir() == tmp_path / "shared" / "data" / "multi30k"  # a source checkout's layout
    (tmp_path / "data" / "multi30k").mkdir(parents=True)
    assert default_data_dir() == Path("data") / "multi30k"  # ./data/multi30k comes first


def test_an_installed_package_reads_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("VASWANI_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shared" / "data" / "multi30k").mkdir(parents=True)  # site-packages/../shared is not looked at
    monkeypatch.setattr(data, "REPO_ROOT", tmp_path / "site-packages")
    assert default_data_dir() == Path("data") / "multi30k"


def test_this_checkout_reads_shared_data(monkeypatch, tmp_path):
    monkeypatch.delenv("VASWANI_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    if not (REPO_ROOT.parent / "shared" / "data" / "multi30k").is_dir():
        pytest.fail(f"Multi30k not found at {REPO_ROOT.parent / 'shared' / 'data' / 'multi30k'}")
    assert default_data_dir() == REPO_ROOT.parent / "shared" / "data" / "multi30k"


def test_a_missing_folder_names_the_source_and_the_ways_to_point_at_it(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_parallel_dataset("en", "de", data_dir=tmp_path / "multi30k")
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"data_dir not found: {tmp_path / 'multi30k'}")
    for needed in ("github.com/multi30k/dataset", "data/task1/raw", "--data_dir", "VASWANI_DATA_DIR"):
        assert needed in message
