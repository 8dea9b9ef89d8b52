"""Issue 11, case 3: `vaswani-evaluate` (training/evaluate_model.py) never writes over a training run.

A tiny saved model stands in for a finished run: its directory also holds the files a run writes (results and
hypotheses of the test split, train_results.json, training_args.json, log.jsonl). `evaluate_cli.main` is called
directly on 5 real Multi30k pairs; `command_line.run` shows what a user sees (one line on stderr, exit status 2).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import save_tiny_translation_model

from vaswani_transformer.command_line import run
from vaswani_transformer.training import evaluate_cli, evaluation


RUN_FILES = {
    "results_test_2016_flickr.json": '{"bleu": 37.29, "num_sentences": 1000}\n',
    "hyps_test_2016_flickr.de": "Ein Mann fährt Fahrrad.\n" * 3,
    "train_results.json": '{"step": 4638}\n',
    "training_args.json": '{"output_dir": "outputs/run"}\n',
    "log.jsonl": '{"step": 1, "loss": 9.0}\n',
}
# The default folder for the tiny model (greedy generation config: beam 1) with --max_samples 5.
DEFAULT_NAME = "test_2016_flickr-en-de-beam1-max_samples5"


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory, small_tokenizer) -> Path:
    directory = tmp_path_factory.mktemp("saved") / "run"
    save_tiny_translation_model(directory, small_tokenizer)
    for name, text in RUN_FILES.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


@pytest.fixture
def run_dir(saved_run, tmp_path) -> Path:
    """A fresh copy of the finished run for each test."""
    return Path(shutil.copytree(saved_run, tmp_path / "run"))


@pytest.fixture
def quick(multi30k_dir) -> list[str]:
    """The arguments of a quick look: 5 test pairs, the real data folder."""
    return ["--data_dir", str(multi30k_dir), "--max_samples", "5"]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(path.relative_to(directory)): path.read_bytes() for path in directory.rglob("*") if path.is_file()}


def test_case3_evaluate_never_writes_over_the_training_run(run_dir, quick):
    before = snapshot(run_dir)
    evaluate_cli.main(["--model", str(run_dir), *quick])
    after = snapshot(run_dir)
    assert {name: after[name] for name in before} == before  # every file of the run byte-identical
    out = run_dir / "eval" / DEFAULT_NAME
    assert sorted(set(after) - set(before)) == [
        f"eval/{DEFAULT_NAME}/hyps_test_2016_flickr.de",
        f"eval/{DEFAULT_NAME}/results_test_2016_flickr.json",
    ]
    results = json.loads((out / "results_test_2016_flickr.json").read_text(encoding="utf-8"))
    assert results["split"] == "test_2016_flickr" and results["num_sentences"] == 5 and results["num_beams"] == 1
    assert results["arguments"]["output_dir"] == str(out) and results["arguments"]["max_samples"] == 5
    assert len((out / "hyps_test_2016_flickr.de").read_text(encoding="utf-8").splitlines()) == 5


def test_case3_default_folder_is_named_after_the_split_and_settings(run_dir):
    args = evaluate_cli.EvaluationArguments(model=str(run_dir), split="val", max_source_length=64)
    expected = run_dir / "eval" / "val-en-de-beam4-max_source_length64"
    assert evaluate_cli.default_output_dir(args, num_beams=4) == expected
    hub = evaluate_cli.EvaluationArguments(model="org/name", max_samples=5)
    assert evaluate_cli.default_output_dir(hub, 4) == Path("eval/org--name/test_2016_flickr-en-de-beam4-max_samples5")


def test_case3_evaluate_refuses_non_empty_output_dir(run_dir, quick, tmp_path, capsys):
    out = tmp_path / "scores"
    evaluate_cli.main(["--model", str(run_dir), *quick, "--output_dir", str(out)])
    first = snapshot(out)
    message = (
        f"--output_dir {out} is not empty (hyps_test_2016_flickr.de, results_test_2016_flickr.json); "
        "pass --overwrite_output_dir to replace it"
    )
    with pytest.raises(FileExistsError) as refused:
        evaluate_cli.main(["--model", str(run_dir), *quick, "--output_dir", str(out), "--num_beams", "2"])
    assert str(refused.value) == message
    assert snapshot(out) == first
    # What the user sees: one line on stderr, exit status 2.
    capsys.readouterr()
    assert run(evaluate_cli.main, ["--model", str(run_dir), *quick, "--output_dir", str(out)], prog="eval") == 2
    stderr = capsys.readouterr().err  # transformers' weight-loading progress bar, then the error line
    assert stderr.endswith(f"\neval: error: {message} (run with --debug for the traceback)\n")
    # --overwrite_output_dir empties the folder first: a stale file of another split goes too.
    (out / "hyps_val.de").write_text("stale\n", encoding="utf-8")
    evaluate_cli.main(
        ["--model", str(run_dir), *quick, "--output_dir", str(out), "--overwrite_output_dir", "--num_beams", "2"]
    )
    assert sorted(snapshot(out)) == ["hyps_test_2016_flickr.de", "results_test_2016_flickr.json"]
    assert json.loads((out / "results_test_2016_flickr.json").read_text(encoding="utf-8"))["num_beams"] == 2


def test_case3_overwrite_never_clears_a_run_or_foreign_files(run_dir, quick, tmp_path):
    before = snapshot(run_dir)
    for output_dir in (run_dir, run_dir.parent):
        with pytest.raises(FileExistsError, match="is or holds the --model directory"):
            evaluate_cli.main(
                ["--model", str(run_dir), *quick, "--output_dir", str(output_dir), "--overwrite_output_dir"]
            )
    other = tmp_path / "other_run"
    other.mkdir()
    (other / "config.json").write_text("{}\n", encoding="utf-8")
    (other / "results_val.json").write_text("{}\n", encoding="utf-8")
    with pytest.raises(FileExistsError) as refused:
        evaluate_cli.main(["--model", str(run_dir), *quick, "--output_dir", str(other), "--overwrite_output_dir"])
    assert str(refused.value) == (
        f"--output_dir {other} holds entries that evaluation did not write (config.json); it never writes over them, "
        "--overwrite_output_dir included: choose another --output_dir"
    )
    assert snapshot(run_dir) == before and sorted(snapshot(other)) == ["config.json", "results_val.json"]


def test_case3_evaluate_checks_everything_before_writing(run_dir, quick, multi30k_dir, tmp_path):
    before = snapshot(run_dir)
    with pytest.raises(FileNotFoundError) as no_split:
        evaluate_cli.main(["--model", str(run_dir), *quick, "--split", "test_2099"])
    assert str(no_split.value) == (
        f"--split test_2099: no test_2099.en[.gz] / .de[.gz] in {multi30k_dir} "
        "(splits there: test_2016_flickr, train, val)"
    )
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=rf"^cannot load --model {missing}: no such folder, nor a Hub model"):
        evaluate_cli.main(["--model", str(missing), *quick])
    with pytest.raises(ValueError, match="^--max_samples must be at least 1, got 0$"):
        evaluate_cli.main(["--model", str(run_dir), "--data_dir", str(multi30k_dir), "--max_samples", "0"])
    with pytest.raises(ValueError, match="^--max_tokens must be at least 1, got 0$"):
        evaluate_cli.main(["--model", str(run_dir), "--data_dir", str(multi30k_dir), "--max_tokens", "0"])
    assert snapshot(run_dir) == before and not (run_dir / "eval").exists() and not missing.exists()


def test_write_results_still_writes_into_the_run_directory(tmp_path):
    """train.py's use: the test split's results and hypotheses beside the model."""
    evaluation.write_results({"bleu": 1.0}, ["a\nb", "c"], str(tmp_path / "run"), "test_2016_flickr", "de")
    assert json.loads((tmp_path / "run" / "results_test_2016_flickr.json").read_text()) == {"bleu": 1.0}
    assert (tmp_path / "run" / "hyps_test_2016_flickr.de").read_text(encoding="utf-8") == "a b\nc\n"
