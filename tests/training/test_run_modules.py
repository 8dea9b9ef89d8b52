"""The library modules train.py is built from: the run's vocabulary (cached BPE), its log lines and memory, the
resume safety checks, and a run that ends early but leaves the process ready for the next (tests run main twice)."""

from __future__ import annotations

import json

import datasets
import pytest
import torch
from accelerate import Accelerator
from conftest import fresh_process

from vaswani_transformer.training.arguments import ModelArguments
from vaswani_transformer.training.checkpoints import TRAINER_STATE_NAME, TrainerState, resolve_checkpoint
from vaswani_transformer.training.distributed import on_any_rank
from vaswani_transformer.training.telemetry import Interval, JsonlLog, resident_memory_mib
from vaswani_transformer.training.vocabulary import BPE_CACHE_FOLDER, run_tokenizer


@pytest.fixture
def accelerator():
    return Accelerator(cpu=True)


def test_the_bpe_vocabulary_is_trained_once_per_split_and_settings(tmp_path, monkeypatch, accelerator, caplog):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    pairs = [{"en": f"a dog number {i} runs", "de": f"ein Hund Nummer {i} läuft"} for i in range(200)]
    train = datasets.Dataset.from_dict({"translation": pairs})
    args = ModelArguments(vocab_size=300, min_frequency=1)
    with caplog.at_level("INFO", logger="vaswani_transformer"):
        first = run_tokenizer(accelerator, args, train, ("en", "de"), run_dir=None)
        second = run_tokenizer(accelerator, args, train, ("en", "de"), run_dir=None)
    messages = [record.getMessage() for record in caplog.records]
    assert sum(message.startswith("training a 300-token shared BPE") for message in messages) == 1
    assert sum("found in" in message for message in messages) == 1
    assert first.get_vocab() == second.get_vocab() and len(first) <= 300
    assert len(list((tmp_path / "cache" / BPE_CACHE_FOLDER).iterdir())) == 1  # one folder, no staging left
    run_dir = tmp_path / "run"
    first.save_pretrained(run_dir)
    resumed = run_tokenizer(accelerator, ModelArguments(vocab_size=999), train, ("en", "de"), run_dir=run_dir)
    assert resumed.get_vocab() == first.get_vocab()  # a resumed run keeps its own vocabulary


def test_log_lines_go_to_log_jsonl_with_loss_per_micro_batch_and_memory(tmp_path, accelerator):
    log = JsonlLog(accelerator, tmp_path / "log.jsonl")
    interval = Interval(loss_sum=torch.tensor(6.0), micro_batches=3, tokens=1000)
    record = interval.record(accelerator, TrainerState(step=4, epoch=1, batches_in_epoch=5), epoch_length=10, lr=0.5)
    log.write(record)
    log.write({"step": 4, "test_bleu": 1.5})
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert lines[0]["loss"] == 2.0 and lines[0]["epoch"] == 1.5 and lines[0]["lr"] == 0.5
    assert lines[0]["rss_mib"] >= lines[0]["rss_file_mib"] > 0 and resident_memory_mib() > 0
    assert lines[1] == {"step": 4, "test_bleu": 1.5}
    assert on_any_rank(accelerator, True, 0) == [True, False]


def test_resume_refuses_another_runs_directory(tmp_path):
    run, other = tmp_path / "run", tmp_path / "other"
    checkpoint = run / "checkpoint-10"
    checkpoint.mkdir(parents=True)
    TrainerState(step=10).save(checkpoint)
    assert resolve_checkpoint(str(checkpoint), run) == checkpoint
    assert resolve_checkpoint(str(checkpoint), tmp_path / "empty") == checkpoint
    assert resolve_checkpoint("latest", run) == checkpoint
    other.mkdir()
    (other / "notes.txt").write_text("a user's file")
    with pytest.raises(FileExistsError, match="is not empty and is not the run of --resume_from_checkpoint"):
        resolve_checkpoint(str(checkpoint), other)
    with pytest.raises(FileExistsError, match="holds no complete checkpoint-<step> to continue"):
        resolve_checkpoint("latest", other)
    assert resolve_checkpoint("latest", tmp_path / "new") is None  # nothing to continue, nothing to lose
    (checkpoint / TRAINER_STATE_NAME).unlink()
    with pytest.raises(FileNotFoundError, match="is not a complete checkpoint"):
        resolve_checkpoint(str(checkpoint), run)


def test_main_runs_again_in_the_same_process_with_other_accelerate_settings(tmp_path):
    from vaswani_transformer.training.train import main

    data = tmp_path / "data"
    data.mkdir()
    (data / "train.en").write_text("a dog\n")
    (data / "train.de").write_text("ein Hund\n")
    with fresh_process():  # one process for both runs, logging and accelerate's state restored afterwards
        for precision in ("bf16", "no"):  # accelerate refuses a second precision unless main forgets the first's
            argv = ["--data_dir", str(data), "--output_dir", str(tmp_path / "out"), "--mixed_precision", precision]
            with pytest.raises(ValueError, match="--test_split 'test_2016_flickr': no test_2016_flickr.en"):
                main([*argv, "--use_cpu", "true"])
    assert not (tmp_path / "out").exists()  # a failed check writes nothing
