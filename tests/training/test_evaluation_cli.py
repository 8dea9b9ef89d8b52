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
import sacrebleu
import torch
from conftest import generate_texts, read_multi30k, save_tiny_translation_model, save_trained_translation_model
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

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
    assert results["device"] == ("cuda" if torch.cuda.is_available() else "cpu")  # --device auto
    assert results["arguments"]["output_dir"] == str(out) and results["arguments"]["max_samples"] == 5
    assert len((out / "hyps_test_2016_flickr.de").read_text(encoding="utf-8").splitlines()) == 5


def test_case3_default_folder_is_named_after_the_split_and_settings(run_dir):
    args = evaluate_cli.EvaluationArguments(model=str(run_dir), test_split="val", max_source_length=64)
    expected = run_dir / "eval" / "val-en-de-beam4-max_source_length64"
    assert evaluate_cli.default_output_dir(args, num_beams=[4]) == expected
    hub = evaluate_cli.EvaluationArguments(model="org/name", max_samples=5)
    assert evaluate_cli.default_output_dir(hub, [4]) == Path(
        "eval/org--name/test_2016_flickr-en-de-beam4-max_samples5"
    )
    sweep = evaluate_cli.EvaluationArguments(model="org/name", length_penalty=[0.6, 1.0])
    assert evaluate_cli.default_output_dir(sweep, [1, 4], "wmt--wmt14-de-en-test") == Path(
        "eval/org--name/wmt--wmt14-de-en-test-en-de-beam1,4-lp0.6,1"
    )


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
        f"--test_split test_2099: no test_2099.en[.gz] / .de[.gz] in {multi30k_dir} "
        "(splits there: test_2016_flickr, train, val)"
    )
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=rf"^cannot load --model {missing}: no such folder, nor a Hub model"):
        evaluate_cli.main(["--model", str(missing), *quick])
    with pytest.raises(ValueError, match="^--max_samples must be at least 1, got 0$"):
        evaluate_cli.main(["--model", str(run_dir), "--data_dir", str(multi30k_dir), "--max_samples", "0"])
    with pytest.raises(ValueError, match="^--max_tokens must be at least 1, got 0$"):
        evaluate_cli.main(["--model", str(run_dir), "--data_dir", str(multi30k_dir), "--max_tokens", "0"])
    with pytest.raises(ValueError, match="^--num_beams must be at least 1, got 0$"):
        evaluate_cli.main(["--model", str(run_dir), *quick, "--num_beams", "4", "0"])
    with pytest.raises(ValueError, match="^give one of --data_dir, --test_file, --dataset_name"):
        evaluate_cli.main(["--model", str(run_dir), *quick, "--test_file", str(tmp_path / "x.jsonl")])
    with pytest.raises(ValueError, match="^--device gpu: Expected one of cpu, cuda"):
        evaluate_cli.main(["--model", str(run_dir), *quick, "--device", "gpu"])
    if not torch.cuda.is_available():  # a device this machine lacks is named before the model is loaded
        with pytest.raises(ValueError, match="^--device cuda: "):
            evaluate_cli.main(["--model", str(run_dir), *quick, "--device", "cuda"])
    assert snapshot(run_dir) == before and not (run_dir / "eval").exists() and not missing.exists()


def test_write_results_still_writes_into_the_run_directory(tmp_path):
    """train.py's use: the test split's results and hypotheses beside the model."""
    evaluation.write_results({"bleu": 1.0}, ["a\nb", "c"], str(tmp_path / "run"), "test_2016_flickr", "de")
    assert json.loads((tmp_path / "run" / "results_test_2016_flickr.json").read_text()) == {"bleu": 1.0}
    assert (tmp_path / "run" / "hyps_test_2016_flickr.de").read_text(encoding="utf-8") == "a b\nc\n"


# Issue 34: any data layout, any device, sweeps of the beam settings -------------------------------------------------


@pytest.fixture(scope="module")
def trained_dir(trained, tmp_path_factory) -> Path:
    """The suite's `trained` model, saved with the paper's decoding (beam 4, alpha 0.6)."""
    return save_trained_translation_model(tmp_path_factory.mktemp("trained") / "model", trained)


@pytest.fixture(scope="module")
def pairs(multi30k_dir) -> dict[str, list[str]]:
    """Six real test pairs of Multi30k."""
    return {lang: read_multi30k(multi30k_dir, "test_2016_flickr", lang, 6) for lang in ("en", "de")}


@pytest.fixture(scope="module")
def layouts(pairs, tmp_path_factory) -> Path:
    """The six pairs in each layout a user brings: JSON lines and Parquet, each with a `translation` dict column or
    flat `src`/`ref` columns (and an extra column), and a local dataset folder in the Hub layout whose README names
    a split `newstest` (not train/validation/test)."""
    import datasets

    folder = tmp_path_factory.mktemp("layouts")
    nested = datasets.Dataset.from_dict(
        {"translation": [{"en": e, "de": d} for e, d in zip(pairs["en"], pairs["de"], strict=True)]}
    )
    flat = datasets.Dataset.from_dict({"id": list(range(6)), "src": pairs["en"], "ref": pairs["de"]})
    for name, dataset in (("nested", nested), ("flat", flat)):
        dataset.to_json(folder / f"{name}.jsonl", lines=True, force_ascii=False)
        dataset.to_parquet(folder / f"{name}.parquet")
    hub = folder / "hub_layout"
    hub.mkdir()
    flat.to_parquet(hub / "newstest.parquet")
    readme = (
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: newstest\n    path: newstest.parquet\n---\n"
    )
    (hub / "README.md").write_text(readme, encoding="utf-8")
    return folder


def written(out: Path, name: str) -> tuple[dict, list[str]]:
    """The results and hypotheses `vaswani-evaluate` wrote for `name`."""
    results = json.loads((out / f"results_{name}.json").read_text(encoding="utf-8"))
    return results, (out / f"hyps_{name}.de").read_text(encoding="utf-8").splitlines()


def assert_sacrebleu_scores(results: dict, hypotheses: list[str], references: list[str]) -> None:
    """The written scores are sacrebleu's own on the written hypotheses (computed here, without the library)."""
    bleu, chrf = sacrebleu.corpus_bleu(hypotheses, [references]), sacrebleu.corpus_chrf(hypotheses, [references])
    assert results["chrf"] > 0 and results["num_sentences"] == len(references) == len(hypotheses)
    assert (results["bleu"], results["chrf"]) == (bleu.score, chrf.score)


@pytest.mark.parametrize(
    ("file_name", "flags"),
    [
        ("nested.jsonl", []),
        ("flat.jsonl", ["--source_column", "src", "--target_column", "ref"]),
        ("nested.parquet", []),
        ("flat.parquet", ["--source_column", "src", "--target_column", "ref"]),
    ],
)
def test_evaluate_reads_json_lines_and_parquet_files(trained_dir, layouts, pairs, tmp_path, file_name, flags):
    out = tmp_path / "scores"
    test_file = layouts / file_name
    argv = ["--model", str(trained_dir), "--test_file", str(test_file), *flags, "--device", "cpu"]
    evaluate_cli.main([*argv, "--num_beams", "1", "--output_dir", str(out)])
    split = file_name.split(".")[0]  # named after the file
    results, hypotheses = written(out, split)
    assert_sacrebleu_scores(results, hypotheses, pairs["de"])
    assert results["test_file"] == str(test_file) and results["device"] == "cpu" and results["split"] == split
    model = AutoModelForSeq2SeqLM.from_pretrained(trained_dir, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(trained_dir, trust_remote_code=True)
    longest = max(len(ids) for ids in tokenizer(pairs["en"])["input_ids"])
    expected = generate_texts(model, tokenizer, pairs["en"], num_beams=1, max_new_tokens=longest + 50)
    assert hypotheses == [text.strip() for text in expected]


def test_evaluate_reads_a_dataset_folder_split_and_sweeps_beams_and_length_penalties(trained_dir, layouts, pairs):
    argv = ["--model", str(trained_dir), "--dataset_name", str(layouts / "hub_layout"), "--test_split", "newstest"]
    argv += ["--source_column", "src", "--target_column", "ref", "--num_beams", "1", "2", "--length_penalty", "0", "2"]
    evaluate_cli.main(argv)
    out = trained_dir / "eval" / "hub_layout-newstest-en-de-beam1,2-lp0,2"
    names = ["newstest-beam1", "newstest-beam2-lp0", "newstest-beam2-lp2"]  # greedy search once: alpha cannot act
    assert sorted(path.name for path in out.iterdir()) == sorted(
        [f"hyps_{name}.de" for name in names] + [f"results_{name}.json" for name in names] + ["sweep_newstest.md"]
    )
    model = AutoModelForSeq2SeqLM.from_pretrained(trained_dir, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(trained_dir, trust_remote_code=True)
    longest = max(len(ids) for ids in tokenizer(pairs["en"])["input_ids"])
    table = (out / "sweep_newstest.md").read_text(encoding="utf-8").splitlines()
    assert table[0].startswith("| num_beams | length_penalty | BLEU | chrF |")
    outputs = {}
    for name, row, (beams, alpha) in zip(names, table[2:5], [(1, None), (2, 0.0), (2, 2.0)], strict=True):
        results, hypotheses = written(out, name)
        outputs[alpha] = hypotheses
        assert_sacrebleu_scores(results, hypotheses, pairs["de"])
        assert (results["num_beams"], results["length_penalty"], results["split"]) == (beams, alpha, "newstest")
        assert row.startswith(f"| {beams} | {'-' if alpha is None else alpha} | {results['bleu']:.2f} |")
        settings = {"num_beams": beams} | ({"length_penalty": alpha} if alpha is not None else {})
        expected = generate_texts(model, tokenizer, pairs["en"], max_new_tokens=longest + 50, **settings)
        assert hypotheses == [text.strip() for text in expected]
    assert outputs[0.0] != outputs[2.0]  # the length penalty reached the beam search
    # A finished sweep is never written over without --overwrite_output_dir; a split that is not there is named.
    with pytest.raises(FileExistsError, match="pass --overwrite_output_dir"):
        evaluate_cli.main(argv)
    with pytest.raises(FileNotFoundError) as missing:
        evaluate_cli.main([*argv[:4], "--test_split", "test"])
    assert str(missing.value) == (
        f"--test_split test: no such split in --dataset_name {layouts / 'hub_layout'} (splits there: newstest)"
    )
