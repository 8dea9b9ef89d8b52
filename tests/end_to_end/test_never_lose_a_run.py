"""Issue 11, "never lose a run": each numbered case of the issue that concerns a training run's directory.

One finished tiny run (4 steps, a checkpoint every 2) is copied per test; every refused command must leave the copy
byte-identical (`snapshot`), and its error must name what is wrong. Runs call `main(argv)` in this process
(`conftest.train_in_process`); case 1 runs the script training/train.py itself (its one-line error and exit
status 2). The cases:
1. re-running into an existing output_dir; 2. resuming with a different model size; 5. a misspelled --test_split;
6. a resume that changes the vocabulary or the languages; 8. a truncated checkpoint file.
"""

from __future__ import annotations

import hashlib
import runpy
import shutil
import sys
from pathlib import Path

import pytest
from conftest import fresh_process, train_in_process
from test_training import TRAIN, tiny_args

from vaswani_transformer.training.train import main


FINISHED_RUN = "--max_steps 4 --save_steps 2 --save_total_limit 0 --eval_steps 0".split()


def snapshot(directory: Path) -> dict[str, str]:
    """Every file under `directory` (relative path) -> sha256 of its bytes."""
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, multi30k_dir) -> Path:
    """A finished run: model, tokenizer, results, log.jsonl, checkpoint-2 and checkpoint-4."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train_in_process(tiny_args(multi30k_dir, out, *FINISHED_RUN))
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def test_case1_rerun_into_a_finished_run_is_refused_in_one_line(run_copy, multi30k_dir, monkeypatch, capsys):
    before = snapshot(run_copy)
    # `python training/train.py ...`: the script runs as __main__ (an uncaught traceback would fail the test here)
    monkeypatch.setattr(sys, "argv", [TRAIN, *tiny_args(multi30k_dir, run_copy, *FINISHED_RUN)])
    with fresh_process(), pytest.raises(SystemExit) as exit_status:
        runpy.run_path(TRAIN, run_name="__main__")
    stderr = capsys.readouterr().err
    assert exit_status.value.code == 2, stderr
    assert "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if "error:" in line]
    assert line.startswith(f"train.py: error: --output_dir {run_copy} is not empty (")
    assert "--overwrite_output_dir" in line and "--resume_from_checkpoint latest" in line
    assert snapshot(run_copy) == before


def test_case1_overwrite_output_dir_replaces_the_old_run_entirely(run_copy, multi30k_dir):
    (run_copy / "checkpoint-999").mkdir()  # a stale checkpoint of the old run, newer than the new run's
    (run_copy / "checkpoint-999" / "trainer_state.json").write_text('{"step": 999}')
    old_log = (run_copy / "log.jsonl").read_text()
    extra = (
        "--max_steps 2 --save_steps 2 --save_total_limit 2 --average_last_k 2 --do_test false --overwrite_output_dir"
    )
    train_in_process(tiny_args(multi30k_dir, run_copy, *extra.split()))
    assert sorted(p.name for p in run_copy.glob("checkpoint-*")) == ["checkpoint-2"]
    assert not (run_copy / "results_test_2016_flickr.json").exists()  # the old run's results are gone, not kept
    new_log = (run_copy / "log.jsonl").read_text()
    assert new_log != old_log and '"step": 4' not in new_log
    results = (run_copy / "train_results.json").read_text()
    assert '"checkpoint-2"' in results and "999" not in results  # averaged its own checkpoint only


def test_case2_resume_with_another_model_size_names_the_fields_and_changes_nothing(run_copy, multi30k_dir):
    before = snapshot(run_copy)
    args = tiny_args(multi30k_dir, run_copy, "--max_steps", "6", "--resume_from_checkpoint", "latest")
    args[args.index("--d_model") + 1] = "64"
    args[args.index("--encoder_ffn_dim") + 1] = "128"
    with pytest.raises(ValueError, match="belongs to a different run") as error:
        main(args)
    assert "d_model: the run has 32, this command asks for 64" in str(error.value)
    assert "encoder_ffn_dim: the run has 64, this command asks for 128" in str(error.value)
    assert snapshot(run_copy) == before


def test_case5_misspelled_test_split_fails_before_training(multi30k_dir, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="--test_split 'test_2016_flickrr': no test_2016_flickrr.en") as error:
        main(tiny_args(multi30k_dir, out, "--test_split", "test_2016_flickrr"))
    assert "test_2016_flickr" in str(error.value).split("splits there:")[1]  # lists the real ones
    assert not out.exists()


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--vocab_size", "500", "vocab_size: the run has 1000, this command asks for 500"),
        ("--target_lang", "fr", "target_lang: the run has 'de', this command asks for 'fr'"),
    ],
)
def test_case6_resume_never_reuses_a_tokenizer_for_another_vocabulary(run_copy, multi30k_dir, flag, value, expected):
    before = snapshot(run_copy)
    args = tiny_args(multi30k_dir, run_copy, "--max_steps", "6", "--resume_from_checkpoint", "latest")
    args += [flag, value]
    with pytest.raises(ValueError, match="belongs to a different run") as error:
        main(args)
    assert expected in str(error.value)
    assert snapshot(run_copy) == before


def test_case6_a_new_run_trains_its_own_vocabulary(run_copy, multi30k_dir):
    from vaswani_transformer.tokenization_vaswani_transformer_fast import VaswaniTransformerTokenizerFast

    old = len(VaswaniTransformerTokenizerFast.from_pretrained(run_copy))
    extra = "--max_steps 1 --do_test false --overwrite_output_dir --vocab_size 600".split()
    train_in_process(tiny_args(multi30k_dir, run_copy, *extra))
    assert len(VaswaniTransformerTokenizerFast.from_pretrained(run_copy)) == 600 != old


def test_case8_truncated_checkpoint_names_the_file_and_the_checkpoint_before_it(run_copy, multi30k_dir):
    weights = run_copy / "checkpoint-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    before = snapshot(run_copy)
    args = tiny_args(multi30k_dir, run_copy, "--max_steps", "6", "--resume_from_checkpoint", "latest")
    with pytest.raises(ValueError) as error:
        main(args)
    message = str(error.value)
    assert f"{weights}: " in message and "incomplete metadata" in message
    assert f"resume with --resume_from_checkpoint {run_copy / 'checkpoint-2'}" in message
    assert snapshot(run_copy) == before
    # The offered checkpoint is accepted and the run continues from it.
    explicit = tiny_args(multi30k_dir, run_copy, "--max_steps", "3", "--do_test", "false")
    train_in_process([*explicit, "--resume_from_checkpoint", str(run_copy / "checkpoint-2")])
    assert '"step": 3' in (run_copy / "train_results.json").read_text()


def test_case8_resume_latest_in_a_run_without_checkpoints_is_refused(run_copy, multi30k_dir):
    for checkpoint in run_copy.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)
    before = snapshot(run_copy)
    with pytest.raises(FileExistsError, match="holds no complete checkpoint-<step> to continue"):
        main(tiny_args(multi30k_dir, run_copy, "--resume_from_checkpoint", "latest"))
    with pytest.raises(ValueError, match="would delete the checkpoints"):
        main(tiny_args(multi30k_dir, run_copy, "--resume_from_checkpoint", "latest", "--overwrite_output_dir"))
    assert snapshot(run_copy) == before


def test_case8_empty_train_file_names_the_file(run_copy, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for lang in ("en", "de"):
        (data / f"train.{lang}").write_text("")
    args = ["--data_dir", str(data), "--tokenizer_name", str(run_copy), "--output_dir", str(tmp_path / "out")]
    with pytest.raises(ValueError, match=rf"the train split is empty: {data / 'train.en'}\[\.gz\] has no line"):
        main([*args, "--do_test", "false"])
    assert not (tmp_path / "out").exists()


def test_case8_truncated_gzip_names_the_file(tmp_path):
    import gzip

    data = tmp_path / "data"
    data.mkdir()
    for lang in ("en", "de"):
        packed = gzip.compress(("a sentence of some words\n" * 3000).encode())
        (data / f"train.{lang}.gz").write_bytes(packed[: len(packed) // 2] if lang == "de" else packed)
    with pytest.raises(ValueError, match=rf"{data / 'train.de.gz'}: truncated or corrupt gzip file after \d+"):
        main(["--data_dir", str(data), "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
