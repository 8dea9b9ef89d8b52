"""training/push_to_hub.py: what goes to the Hub, and clear one-line errors without a token or a network.

Nothing here reaches the network: the dry run needs none, the upload is checked with `huggingface_hub`'s own file
filter standing in for `upload_folder`, and the error cases run the CLI offline or against a closed local port.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
from conftest import REPO_ROOT, save_tiny_translation_model

from vaswani_transformer.training.arguments import parse_arguments
from vaswani_transformer.training.hub import files_to_upload, push_to_hub


PUSH = str(REPO_ROOT / "training" / "push_to_hub.py")
# What a finished training run leaves beside the model: kept (results, arguments, card) and never uploaded.
RUN_FILES_KEPT = ["README.md", "results_test_2016_flickr.json", "train_results.json", "training_args.json"]
RUN_FILES_KEPT += ["hyps_test_2016_flickr.de"]  # the test translations the card links
RUN_FILES_LEFT_OUT = ["log.jsonl", "train.log", "optimizer.pt", "pytorch_model.bin", "scheduler.pt", "data_stats.json"]
RUN_FILES_LEFT_OUT += ["events.out.tfevents.1700000000.host", "random_states_0.pkl"]
CHECKPOINT_FILES = ["model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl", "trainer_state.json"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, small_tokenizer) -> Path:
    """A saved tiny model plus everything else a training run writes into its output_dir."""
    directory = tmp_path_factory.mktemp("run")
    save_tiny_translation_model(directory, small_tokenizer)
    for name in RUN_FILES_KEPT + RUN_FILES_LEFT_OUT:
        (directory / name).write_text("{}\n")
    # What the model card reads: the run's arguments (a preset's) and its test scores.
    arguments = {
        key: value
        for part in parse_arguments(["--config", "multi30k_en_de_cpu"])
        for key, value in asdict(part).items()
    }
    (directory / "training_args.json").write_text(json.dumps(arguments))
    scores = {"num_sentences": 2, "bleu": 1.0, "chrf": 2.0, "bleu_signature": "nrefs:1", "chrf_signature": "nc:6"}
    (directory / "results_test_2016_flickr.json").write_text(json.dumps(scores))
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
    # The code save_pretrained copies beside the weights (configuration, modeling and the files they import).
    remote_code = [path.name for path in run_dir.glob("*.py")]
    assert {"configuration_vaswani_transformer.py", "modeling_vaswani_transformer.py"} <= set(remote_code)
    expected = sorted(
        [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            *remote_code,
            *RUN_FILES_KEPT,
        ]
    )
    assert files_to_upload(run_dir) == expected
    result = run_cli(str(run_dir), "--hub_model_id", "someone/tiny", "--dry_run", hf_home=tmp_path / "hf_home")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == expected


def test_upload_sends_what_the_dry_run_lists(run_dir, tmp_path, monkeypatch):
    """`create_commit` is replaced by a recorder of its operations: one commit, the dry run's files, in this folder
    without training_args.json (not a training run's: its README.md goes up as it is; test_model_card.py checks the
    card a training run uploads)."""
    import huggingface_hub

    folder = Path(shutil.copytree(run_dir, tmp_path / "model"))
    (folder / "training_args.json").unlink()
    calls = {}

    def fake_create_repo(repo_id, **kwargs):
        calls["create_repo"] = (repo_id, kwargs)

    def fake_create_commit(repo_id, *, operations, commit_message, repo_type):
        calls["commit"] = (repo_id, commit_message, repo_type)
        calls["uploaded"] = {op.path_in_repo: Path(op.path_or_fileobj).read_bytes() for op in operations}
        return type("Commit", (), {"commit_url": "https://huggingface.co/someone/tiny/commit/0"})()

    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setattr(huggingface_hub, "create_repo", fake_create_repo)
    monkeypatch.setattr(huggingface_hub, "create_commit", fake_create_commit)
    url = push_to_hub(folder, "someone/tiny", private=True, commit_message="tiny model")
    assert url.endswith("/commit/0")
    assert sorted(calls["uploaded"]) == files_to_upload(folder)
    assert all(content == (folder / name).read_bytes() for name, content in calls["uploaded"].items())
    assert calls["create_repo"] == ("someone/tiny", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert calls["commit"] == ("someone/tiny", "tiny model", "model")


def test_missing_token_is_a_one_line_error(run_dir, tmp_path):
    result = run_cli(str(run_dir), "--hub_model_id", "someone/tiny", hf_home=tmp_path / "hf_home")
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
    result = run_cli(str(run_dir), "--hub_model_id", "someone/tiny", hf_home=tmp_path / "hf_home", **env)
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
    result = run_cli(str(tmp_path / "missing"), "--hub_model_id", "a/b", "--dry_run", hf_home=tmp_path / "hf_home")
    assert result.returncode == 2
    assert result.stderr.startswith(f"push_to_hub.py: error: {tmp_path / 'missing'} is not a directory (run with")
