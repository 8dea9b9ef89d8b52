"""The model card (`vaswani_transformer.training.model_card`) of a real (tiny) training run, from the run's own files.

One `training/train.py` run on 200 Multi30k pairs with a tiny model, in this process as in test_training.py; then the
card is rendered, reloaded with `huggingface_hub.ModelCard.load`, and compared with the run's files: the metadata and
`model-index` with the results JSON, the tables with config.json and training_args.json, the deviations with the
package's list (which must equal README.md's section); the usage snippets are executed where the package cannot be
imported; the code link, hardware, data terms and linked translations are checked, and the card uploaded by
`push_to_hub` is rendered with the repository id. The card also renders from what a run without a test split or
validation leaves.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import OFFLINE, REPO_ROOT, train_in_process

from vaswani_transformer.pipeline_translation import save_translation_pipeline
from vaswani_transformer.training.model_card import (
    DEVIATIONS_PATH,
    TRANSFORMERS_REQUIREMENT,
    paper_deviations,
    render_model_card,
)


RENDER = str(REPO_ROOT / "model_cards" / "render.py")
DEVIATIONS_HEADING = "## Deviations from the paper"
TINY_MODEL = (
    "--model custom --d_model 16 --encoder_layers 2 --decoder_layers 2 --encoder_attention_heads 2 "
    "--decoder_attention_heads 2 --encoder_ffn_dim 32 --decoder_ffn_dim 32 --max_position_embeddings 128"
).split()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, multi30k_dir) -> Path:
    """A finished 6-step run (validation every 3 steps, 8 test sentences), with the pipeline added to the model."""
    out = tmp_path_factory.mktemp("card_run")
    args = [
        *TINY_MODEL,
        *f"--data_dir {multi30k_dir} --output_dir {out} --max_train_samples 200 --max_tokens 400".split(),
        *"--vocab_size 400 --warmup_steps 4 --seed 3 --logging_steps 3 --max_steps 6 --eval_steps 3".split(),
        *"--max_eval_samples 8 --max_test_samples 8 --eval_batch_size 8 --num_beams 2".split(),
        *"--max_source_length 40 --max_target_length 40".split(),
    ]
    train_in_process(args)
    save_translation_pipeline(out)  # what a run should end with (see the pipeline module)
    return out


@pytest.fixture(scope="module")
def card(run_dir):
    from huggingface_hub import ModelCard

    rendered = render_model_card(run_dir)
    loaded = ModelCard.load(run_dir / "README.md")
    assert loaded.content == rendered.content
    return loaded


def read(run_dir: Path, name: str) -> dict:
    return json.loads((run_dir / name).read_text())


def test_metadata_comes_from_the_run(card, run_dir):
    args = read(run_dir, "training_args.json")
    data = card.data
    assert data.language == [args["source_lang"], args["target_lang"]] == ["en", "de"]
    assert data.license == "apache-2.0" and data.library_name == "transformers"
    assert data.pipeline_tag == "translation"
    assert {"translation", "transformer", "vaswani2017"} <= set(data.tags)
    assert Path(args["data_dir"]).name == "multi30k" and data.datasets == ["bentrevett/multi30k"]  # the Hub copy
    assert data.metrics == ["sacrebleu", "chrf"]
    assert data.model_name == run_dir.name


def test_eval_results_equal_the_results_json(card, run_dir):
    results_files = sorted(run_dir.glob("results_*.json"))
    assert [path.name for path in results_files] == ["results_test_2016_flickr.json"]
    expected = []
    for path in results_files:
        results, split = json.loads(path.read_text()), path.stem.removeprefix("results_")
        expected += [
            (split, "sacrebleu", results["bleu"], results["bleu_signature"]),
            (split, "chrf", results["chrf"], results["chrf_signature"]),
        ]
    got = [(r.dataset_split, r.metric_type, r.metric_value, r.metric_config) for r in card.data.eval_results]
    assert got == expected
    assert all(
        r.task_type == "translation" and r.dataset_type == "bentrevett/multi30k" for r in card.data.eval_results
    )
    # The table shows the same numbers, rounded.
    results = read(run_dir, "results_test_2016_flickr.json")
    row = f"| test_2016_flickr | {results['num_sentences']} | {results['bleu']:.2f} | {results['chrf']:.2f} |"
    assert row in card.text
    assert results["bleu_signature"] in card.text and results["chrf_signature"] in card.text


def test_body_shows_the_config_training_arguments_and_run(card, run_dir):
    config, args = read(run_dir, "config.json"), read(run_dir, "training_args.json")
    train_results, stats = read(run_dir, "train_results.json"), read(run_dir, "data_stats.json")
    text = card.text
    assert f"| d_model | `d_model` | {config['d_model']} |" in text
    assert f"| {config['encoder_layers']} / {config['decoder_layers']} |" in text
    assert f"| ε_ls | `label_smoothing` | {config['label_smoothing']} |" in text
    assert f"`max_tokens` = {args['max_tokens']}" in text
    assert f"| warmup steps (Eq. 3) | {args['warmup_steps']} |" in text
    assert f"{stats['train']['kept']} of {stats['train']['pairs']} training pairs kept" in text
    assert f"**Run.** {train_results['step']} optimizer steps" in text
    assert f"({train_results['elapsed_seconds']} s)" in text
    generation = read(run_dir, "generation_config.json")
    assert f"beam size {generation['num_beams']}, length penalty α = {generation['length_penalty']}" in text


def readme_deviations() -> str:
    """The body of README.md's "Deviations from the paper" section (heading excluded), stripped."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.count(f"\n{DEVIATIONS_HEADING}\n") == 1
    return readme.split(f"\n{DEVIATIONS_HEADING}\n", 1)[1].split("\n## ", 1)[0].strip()


def test_the_package_deviations_equal_the_readme_section():
    """The installed package carries the list (no repository README there); the README shows the same text."""
    assert DEVIATIONS_PATH.parent.name == "training" and DEVIATIONS_PATH.suffix == ".md"  # package data ("*.md")
    deviations = paper_deviations()
    assert [line for line in deviations.splitlines() if line.startswith("- ")]
    assert deviations == readme_deviations()


def test_deviations_requirements_and_citations_are_there(card):
    section = card.text.split(f"\n{DEVIATIONS_HEADING}\n", 1)[1].split("\n## ", 1)[0].strip()
    assert section == paper_deviations()
    assert TRANSFORMERS_REQUIREMENT == "transformers>=5.4,<6"
    assert f'pip install torch "{TRANSFORMERS_REQUIREMENT}"' in card.text
    assert "@inproceedings{vaswani2017attention," in card.text
    assert "@inproceedings{elliott-etal-2016-multi30k," in card.text


def test_usage_snippets_run_without_the_package(card, run_dir, tmp_path):
    snippets = re.findall(r"```python\n(.*?)```", card.text, flags=re.S)
    assert len(snippets) == 2 and all(f'"{run_dir}"' in snippet for snippet in snippets)
    guard = 'import sys\nsys.modules["vaswani_transformer"] = None\n'
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(OFFLINE, HF_HOME=str(tmp_path / "hf_home"), TOKENIZERS_PARALLELISM="false")
    env.setdefault("OMP_NUM_THREADS", "1")  # a tiny model: threads only contend on a busy machine
    script = "\n".join(guard + textwrap.dedent(snippet) for snippet in snippets)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("[{'translation_text': ") and lines[-1].startswith("[")


def test_a_hub_visitor_gets_the_code_hardware_terms_and_translations(card, run_dir):
    """What issue 33 asks of a card: the code's address (pyproject's [project.urls], from the package metadata), the
    hardware, process count and training time of train_results.json, intended uses, the data's terms, the test
    translations linked and uploaded, no install line for this unpublished package and no link to a file that
    the Hub repository lacks."""
    from importlib.metadata import metadata

    from vaswani_transformer.training.hub import files_to_upload

    (url,) = [e.split(", ", 1)[1] for e in metadata("vaswani_transformer").get_all("Project-URL")]
    text, results = card.text, read(run_dir, "train_results.json")
    assert f"**Code:** [{url}]({url})" in text
    assert f"**Hardware.** {results['hardware']} ({results['device_type']}),\n1 training process;" in text
    assert results["hardware"] and results["num_processes"] == 1 and results["torch_version"] in text
    assert f"training time {results['elapsed_seconds'] / 60:.1f} minutes" in text
    assert "## Intended uses and limitations" in text and "**Intended uses:** research and teaching" in text
    assert "non-commercial research and educational use only (https://github.com/multi30k/dataset)" in text
    assert "[`hyps_test_2016_flickr.de`](hyps_test_2016_flickr.de)" in text
    assert "pip install vaswani_transformer" not in text and "vaswani_transformer[" not in text
    uploaded = set(files_to_upload(run_dir))
    assert "hyps_test_2016_flickr.de" in uploaded
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert links and all(link.startswith("https://") or link in uploaded for link in links), links


def test_the_uploaded_card_loads_the_repository_and_the_local_one_the_folder(run_dir, tmp_path, monkeypatch):
    """`vaswani-push-to-hub --repo_id` renders the card it uploads with the repository id (one commit, recorded
    here instead of sent); the local README.md keeps the local path."""
    import huggingface_hub

    from vaswani_transformer.training.hub import push_to_hub

    local = (run_dir / "README.md").read_text(encoding="utf-8")
    commits = []
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setattr(huggingface_hub, "create_repo", lambda *args, **kwargs: None)
    monkeypatch.setattr(
        huggingface_hub,
        "create_commit",
        lambda repo_id, *, operations, **kwargs: commits.append(operations) or type("C", (), {"commit_url": "u"})(),
    )
    push_to_hub(run_dir, "someone/transformer-multi30k")
    (operations,) = commits[-1:]
    (readme,) = [op.path_or_fileobj for op in operations if op.path_in_repo == "README.md"]
    uploaded = readme.decode("utf-8")
    assert 'from_pretrained("someone/transformer-multi30k", trust_remote_code=True)' in uploaded
    assert str(run_dir) not in uploaded and "- name: someone/transformer-multi30k" in uploaded
    assert (run_dir / "README.md").read_text(encoding="utf-8") == local and f'"{run_dir}"' in local
    # A card edited by hand is the user's: it goes up as it is.
    edited = Path(shutil.copytree(run_dir, tmp_path / "edited"))
    (edited / "README.md").write_text(local + "\nMy notes.\n", encoding="utf-8")
    push_to_hub(edited, "someone/transformer-multi30k")
    (readme,) = [op.path_or_fileobj for op in commits[-1] if op.path_in_repo == "README.md"]
    assert Path(readme).read_text(encoding="utf-8") == local + "\nMy notes.\n"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"data_dir": "m30k/data/task1/raw", "test_split": "test_2016_flickr"}, ("multi30k", "bentrevett/multi30k")),
        ({"data_dir": "multi30k-dataset/data/task1/raw", "target_lang": "fr"}, ("multi30k", None)),  # Hub: en-de
        ({}, ("multi30k", "bentrevett/multi30k")),  # default_data_dir()
        ({"dataset_name": "wmt14"}, ("wmt/wmt14", "wmt/wmt14")),
        ({"dataset_name": "someone/parallel"}, ("someone/parallel", "someone/parallel")),
        ({"data_dir": "corpus/news", "test_split": "newstest"}, ("news", None)),
        ({"train_file": "pairs/train.jsonl"}, ("train", None)),
    ],
)
def test_the_data_is_named_by_its_hub_id_where_one_holds_the_pair(args, expected):
    from vaswani_transformer.training.model_card import describe_dataset

    described = describe_dataset({"source_lang": "en", "target_lang": "de", **args})
    assert (described["key"], described["hub_id"]) == expected
    assert (described["terms"] is not None) == (described["key"] in ("multi30k", "wmt/wmt14"))


def test_a_fine_tune_names_its_start(run_dir, tmp_path):
    """`--model_name_or_path`: a Hub id becomes the `base_model` metadata and a link; a local folder is only named."""
    run = Path(shutil.copytree(run_dir, tmp_path / "fine_tune"))
    args = read(run, "training_args.json")
    for start, base_model in (("Helsinki-NLP/opus-mt-en-de", "Helsinki-NLP/opus-mt-en-de"), (str(run_dir), None)):
        (run / "training_args.json").write_text(json.dumps({**args, "model_name_or_path": start}) + "\n")
        card = render_model_card(run)
        assert card.data.base_model == base_model
        link = f"[`{start}`](https://huggingface.co/{start})" if base_model else f"a local model (`{run_dir.name}`)"
        assert f"Fine-tuned from {link}." in card.text


def test_card_of_a_run_without_test_split_or_validation(run_dir, tmp_path):
    """What `--do_test false --eval_steps 0` leaves when train.py renders the card: no results_<split>.json, no
    evaluation record in log.jsonl, train_results.json without scores."""
    run = Path(shutil.copytree(run_dir, tmp_path / "no_test"))
    for path in [*run.glob("results_*.json"), *run.glob("hyps_*"), run / "README.md"]:
        path.unlink(missing_ok=True)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    train_records = [record for record in records if "loss" in record]
    (run / "log.jsonl").write_text("".join(json.dumps(record) + "\n" for record in train_records))
    args = {**read(run, "training_args.json"), "do_test": False}
    (run / "training_args.json").write_text(json.dumps(args) + "\n")
    results = read(run, "train_results.json")
    (run / "train_results.json").write_text(
        json.dumps({key: results[key] for key in ("step", "epoch", "elapsed_seconds")}) + "\n"
    )
    card = render_model_card(run, "org/name")
    assert (run / "README.md").read_text(encoding="utf-8") == str(card)
    assert card.data.eval_results is None and card.data.model_name == "org/name"
    assert "No `results_<split>.json` in the run directory: the model has not been evaluated." in card.text
    assert f"test split\n`{args['test_split']}` (not scored: `do_test` was false)." in card.text
    assert f"**Run.** {results['step']} optimizer steps" in card.text and "validation loss" not in card.text
    assert 'from_pretrained("org/name", trust_remote_code=True)' in card.text
    # Nor does it need a log at all.
    (run / "log.jsonl").unlink()
    assert "**Run.**" in render_model_card(run).text


def test_the_example_copy_holds_the_card_and_the_files_it_links(run_dir, tmp_path, monkeypatch, capsys):
    """model_cards/render.py, as the committed example was made: the card and the run files it links, copied."""
    monkeypatch.setattr(sys, "argv", [RENDER, str(run_dir), "--into", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_status:
        runpy.run_path(RENDER, run_name="__main__")
    assert exit_status.value.code == 0
    example = tmp_path / run_dir.name
    assert capsys.readouterr().out.strip() == str(example)
    names = sorted(path.name for path in example.iterdir())
    assert names == ["README.md", "hyps_test_2016_flickr.de", "results_test_2016_flickr.json", "training_args.json"]
    assert all((example / name).read_bytes() == (run_dir / name).read_bytes() for name in names)


def test_missing_run_files_are_clear_errors(tmp_path, monkeypatch, capsys):
    """The library's error, and the one line of model_cards/render.py and of the `vaswani-model-card` console
    script (its entry point in the installed metadata), run in this process with the command line they would get."""
    from importlib.metadata import entry_points

    with pytest.raises(FileNotFoundError, match=r"config\.json not found"):
        render_model_card(tmp_path)
    config = tmp_path / "config.json"
    (console_script,) = entry_points(group="console_scripts", name="vaswani-model-card")
    programs = {
        RENDER: lambda: runpy.run_path(RENDER, run_name="__main__"),
        str(Path(sys.executable).parent / "vaswani-model-card"): lambda: sys.exit(console_script.load()()),
    }
    for program, run_program in programs.items():
        monkeypatch.setattr(sys, "argv", [program, str(tmp_path)])
        with pytest.raises(SystemExit) as exit_status:
            run_program()
        assert exit_status.value.code == 2
        assert capsys.readouterr().err == (
            f"{Path(program).name}: error: {config} not found: is {tmp_path} the output_dir of a training run? "
            "(run with --debug for the traceback)\n"
        )
