"""training/push_to_hub.py: what goes to the Hub, and clear one-line errors without a token or a network.

Nothing here reaches the network: the dry run needs none, the upload is checked with `huggingface_hub`'s own file
filter standing in for `upload_folder`, and the error cases run the CLI offline or against a closed local port.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, save_tiny_translation_model

from vaswani_transformer.training.hub import files_to_upload, push_to_hub


PUSH = str(REPO_ROOT / "training" / "push_to_hub.py")
# What a finished training run leaves beside the model: kept (results, arguments, card) and never uploaded.
RUN_FILES_KEPT = ["README.md", "results_test_2016_flickr.json", "train_results.json", "training_args.json"]
RUN_FILES_LEFT_OUT = ["log.jsonl", "train.log", "optimizer.pt", "pytorch_model.bin", "scheduler.pt", "data_stats.json"]
RUN_FILES_LEFT_OUT += ["hyps_test_2016_flickr.de", "events.out.tfevents.1700000000.host", "random_states_0.pkl"]
CHECKPOINT_FILES = ["model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl", "trainer_state.json"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, small_tokenizer) -> Path:
    """A saved tiny model plus everything else a training run writes into its output_dir."""
    directory = tmp_path_factory.mktemp("run")
    save_tiny_translation_model(directory, small_tokenizer)
    for name in RUN_FILES_KEPT + RUN_FILES_LEFT_OUT:
        (directory / name).write_text("{}\n")
    for checkpoint in ("checkpoint-2", "checkpoint-4"):
        (directory / checkpoint).mkdir()
        for name in CHECKPOINT_FILES:
            (directory / checkpoint / name).write_text("state\n")
    (directory / "runs" / "tensorboard").mkdir(parents=True)
    (directory / "runs" / "tensorboard" / "config.json").write_text("{}\n")
    return directory


def run_cli(*args: str, hf_home: Path, **env_overrides: str) -> subprocess.CompletedProcess:
    """Run push_to_hub.py with no token (HF_TOKEN unset, an empty HF_HOME) and offline, unless overridden."""
    env = {key: value for key, value in os.environ.items() if key not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update({"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", **env_overrides})
    return subprocess.run([sys.executable, PUSH, *args], env=env, capture_output=True, text=True, timeout=120)


def test_dry_run_lists_exactly_the_model_files(run_dir, tmp_path):
    expected = sorted(
        [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            "configuration_vaswani_transformer.py",
            "modeling_vaswani_transformer.py",
            "generation_vaswani_transformer.py",
            "batching_vaswani_transformer.py",
            "tokenization_vaswani_transformer_fast.py",
            "pipeline_translation.py",
            *RUN_FILES_KEPT,
        ]
    )
    assert files_to_upload(run_dir) == expected
    result = run_cli(str(run_dir), "--repo_id", "someone/tiny", "--dry_run", hf_home=tmp_path / "hf_home")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == expected


def test_upload_sends_what_the_dry_run_lists(run_dir, monkeypatch):
    """`upload_folder` is replaced by huggingface_hub's own allow/ignore filter over every file of the folder."""
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    calls = {}

    def fake_create_repo(repo_id, **kwargs):
        calls["create_repo"] = (repo_id, kwargs)

    def fake_upload_folder(*, folder_path, allow_patterns, ignore_patterns, **kwargs):
        every_file = [p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*") if p.is_file()]
        calls["uploaded"] = sorted(
            filter_repo_objects(every_file, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns)
        )
        calls["upload_folder"] = kwargs
        return type("Commit", (), {"commit_url": "https://huggingface.co/someone/tiny/commit/0"})()

    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setattr(huggingface_hub, "create_repo", fake_create_repo)
    monkeypatch.setattr(huggingface_hub, "upload_folder", fake_upload_folder)
    url = push_to_hub(run_dir, "someone/tiny", private=True, commit_message="tiny model")
    assert url.endswith("/commit/0")
    assert calls["uploaded"] == files_to_upload(run_dir)
    assert calls["create_repo"] == ("someone/tiny", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert calls["upload_folder"]["repo_id"] == "someone/tiny"
    assert calls["upload_folder"]["commit_message"] == "tiny model"


def test_missing_token_is_a_one_line_error(run_dir, tmp_path):
    result = run_cli(str(run_dir), "--repo_id", "someone/tiny", hf_home=tmp_path / "hf_home")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "push_to_hub.py: error: no Hugging Face token: set HF_TOKEN or run `hf auth login` (or use --dry_run) "
        "(run with --debug for the traceback)"
    ]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the socket is: connections are refused


@pytest.mark.parametrize("network", ["offline mode", "refused connection"])
def test_no_network_is_a_one_line_error(run_dir, tmp_path, network):
    env = {"HF_TOKEN": "hf_not_a_real_token"}
    if network == "refused connection":
        env.update(HF_HUB_OFFLINE="0", HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}")
    result = run_cli(str(run_dir), "--repo_id", "someone/tiny", hf_home=tmp_path / "hf_home", **env)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"push_to_hub.py: error: could not upload {run_dir} to someone/tiny: ")
    assert ("OfflineModeIsEnabled" if network == "offline mode" else "ConnectError") in line


def test_a_directory_without_a_model_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}\n")
    with pytest.raises(FileNotFoundError, match=r"no \*\.safetensors weights"):
        files_to_upload(tmp_path)
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        files_to_upload(tmp_path / "config.json")
    result = run_cli(str(tmp_path / "missing"), "--repo_id", "a/b", "--dry_run", hf_home=tmp_path / "hf_home")
    assert result.returncode == 2
    assert result.stderr.startswith(f"push_to_hub.py: error: {tmp_path / 'missing'} is not a directory (run with")
