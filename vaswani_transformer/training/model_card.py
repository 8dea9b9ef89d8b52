"""The model card (`README.md`) of a trained model, rendered from what its training run wrote, and nothing else.

    vaswani-model-card outputs/multi30k_en_de_cpu
    vaswani-model-card outputs/multi30k_en_de_cpu --hub_model_id your-name/transformer-multi30k-en-de

`training/train.py` renders it at the end of every run (`render_model_card`), once `train_results.json` and the
test split's `results_<split>.json` are written; the command re-renders it, for example with the Hub repository id.
Reads, from the run's output directory: `config.json` (architecture), `generation_config.json` (decoding),
`training_args.json` (every argument of the run), `train_results.json` (steps, training time, averaged checkpoints),
`data_stats.json` (pairs kept per split), `log.jsonl` (throughput, last losses), `results_<split>.json` (sacreBLEU
BLEU/chrF with signatures, written by the run for its test split) and `model.safetensors` (parameter count, from the
header). `vaswani-evaluate` writes into a sub-folder (`eval/`), which the card does not read: it shows the run's own
scores. The list of deviations from the paper is `paper_deviations.md` beside this module (the repository README's
section of that name holds the same text; a test checks they agree). The layout is `model_card_template.md`
(Jinja), rendered with `huggingface_hub.ModelCard.from_template`; the YAML metadata (`ModelCardData`) carries
`model-index` with one `EvalResult` per evaluated split and metric. Both files ship with the package.

What a Hub visitor needs and nothing they cannot open: a link to the code (`project_url`, the one `[project.urls]`
entry of pyproject.toml, read from the installed package's metadata), the training data as a Hub dataset id where
one holds the run's language pair (`describe_dataset`) with its source and terms of use, the hardware, process
count and training time (`train_results.json`, `training.run_environment`), intended uses and limits, and links to
the uploaded test-set translations (`hyps_<split>.<lang>`). Snippets load `repo_id` when one is given (`vaswani-
push-to-hub` renders the uploaded card with its repository id, `build_model_card`), else the local directory. The
snippets need only torch and transformers (the model's code travels with it, `trust_remote_code=True`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any


__all__ = [
    "DEFAULT_LICENSE",
    "DEVIATIONS_PATH",
    "KNOWN_DATASETS",
    "TEMPLATE_PATH",
    "TRANSFORMERS_REQUIREMENT",
    "build_model_card",
    "describe_dataset",
    "paper_deviations",
    "project_url",
    "read_run",
    "render_model_card",
]

logger = logging.getLogger(__name__)

TEMPLATE_PATH = Path(__file__).resolve().parent / "model_card_template.md"
DEVIATIONS_PATH = Path(__file__).resolve().parent / "paper_deviations.md"
# The transformers releases the saved model's remote code (configuration, modeling, tokenization, pipeline) runs on.
TRANSFORMERS_REQUIREMENT = "transformers>=5.4,<6"
# The license of this code base (pyproject.toml), used for the weights it trains unless told otherwise.
DEFAULT_LICENSE = "apache-2.0"
# Data sets the training library knows, by the key `dataset_key` gives a run: its name, a Hub copy (the dataset id,
# and the language pairs it holds; None: every pair of the run's dataset), the source, the citation key the template
# prints, and its terms of use in one sentence, which the card repeats with what they mean for the model.
KNOWN_DATASETS = {
    "multi30k": {
        "name": "Multi30k (task 1)",
        "hub_id": "bentrevett/multi30k",
        "hub_pairs": [{"en", "de"}],  # the Hub copy has English and German only
        "url": "https://github.com/multi30k/dataset",
        "citation": "elliott-etal-2016-multi30k",
        "terms": "Multi30k's sentences describe the Flickr30k images, which are distributed for non-commercial "
        "research and educational use only",
    },
    "wmt/wmt14": {
        "name": "WMT 2014",
        "hub_id": "wmt/wmt14",
        "hub_pairs": None,
        "url": "https://www.statmt.org/wmt14/translation-task.html",
        "citation": None,
        "terms": "each WMT 2014 corpus (Europarl, Common Crawl, News Commentary, UN, Gigaword) keeps its own "
        "licence, listed on the task page; the task provides them for research",
    },
}
# The code's address, the `[project.urls]` label it is read from (pyproject.toml).
PROJECT_URL_LABEL = "Repository"
# Two sentences per source language for the usage snippets.
EXAMPLE_SENTENCES = {
    "en": ["A man in a blue shirt is riding a bicycle.", "Two dogs are playing in the snow."],
    "de": ["Ein Mann in einem blauen Hemd fährt Fahrrad.", "Zwei Hunde spielen im Schnee."],
    "fr": ["Un homme en chemise bleue fait du vélo.", "Deux chiens jouent dans la neige."],
}


def _read_json(path: Path, required: bool = True) -> Any:
    """JSON content of `path`; None if it is missing and not required.

    Raises:
        FileNotFoundError: if a required file is missing (naming it).
        ValueError: if the file is not valid JSON (naming it).
    """
    if not path.is_file():
        if required:
            raise FileNotFoundError(f"{path} not found: is {path.parent} the output_dir of a training run?")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


def _read_log(path: Path) -> list[dict]:
    """The records of `log.jsonl` ([] if it is missing). A line that is not a JSON object (a write cut short by a
    crash) is skipped with a warning naming the file and line: the card only needs the last records."""
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            logger.warning("%s, line %d: not a JSON object; left out of the model card", path, number)
    return records


def count_parameters(weights: Path) -> int:
    """Number of stored parameters in a safetensors file (tied matrices are stored, and counted, once)."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(weights), framework="pt") as handle:
        for name in handle.keys():
            size = 1
            for dim in handle.get_slice(name).get_shape():
                size *= dim
            total += size
    return total


def paper_deviations(path: Path = DEVIATIONS_PATH) -> str:
    """The deviations from the paper (Markdown: an opening sentence and one bullet per deviation), as the card shows
    them; the repository README's "## Deviations from the paper" section holds the same text.

    Raises:
        FileNotFoundError: if `path` is missing (an installation without the package data).
    """
    return path.read_text(encoding="utf-8").strip()


def project_url() -> str | None:
    """The code's address: the `Repository` entry of pyproject.toml's `[project.urls]`, from the installed package's
    metadata (None when the metadata lacks it, e.g. an install older than the entry)."""
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        entries = metadata("vaswani_transformer").get_all("Project-URL") or []
    except PackageNotFoundError:
        return None
    urls = dict(entry.split(", ", 1) for entry in entries if ", " in entry)
    return urls.get(PROJECT_URL_LABEL)


def package_version() -> str | None:
    """The installed version of this package (None when it is not installed, only on `sys.path`)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vaswani_transformer")
    except PackageNotFoundError:
        return None


def _is_multi30k_folder(data_dir: str) -> bool:
    """Multi30k's own folder: "multi30k" in its path (any case), or holding its test set's files (`test_2016_flickr.*`,
    the name Multi30k's data/task1/raw folder gives them)."""
    folder = Path(data_dir)
    return "multi30k" in folder.as_posix().lower() or any(folder.glob("test_2016_flickr.*"))


def dataset_key(args: dict) -> str:
    """The data set a run trained on: `--dataset_name`; for a `--data_dir`, "multi30k" when it is Multi30k's folder
    (`_is_multi30k_folder`, or the run tested on `test_2016_flickr`), else the folder's name; else the train file's
    stem. With none of them set, `training/data.py` reads Multi30k (`default_data_dir()`), hence "multi30k"."""
    if args.get("dataset_name"):
        name = args["dataset_name"]
        hub_ids = {known["hub_id"].lower(): key for key, known in KNOWN_DATASETS.items()} | {"wmt14": "wmt/wmt14"}
        return hub_ids.get(name.lower(), name)
    if args.get("data_dir"):
        if _is_multi30k_folder(args["data_dir"]) or args.get("test_split") == "test_2016_flickr":
            return "multi30k"
        return Path(args["data_dir"]).name
    if args.get("train_file"):
        return Path(args["train_file"]).stem
    return "multi30k"


def describe_dataset(args: dict) -> dict[str, Any]:
    """What the card says of a run's data: key, name, Hub id (or None), source URL, citation key and terms of use.

    The Hub id is the known data set's Hub copy when that copy holds the run's language pair, else a
    `--dataset_name` that names a Hub dataset (not a local folder), else None (the card then names the source only).
    """
    key = dataset_key(args)
    known = KNOWN_DATASETS.get(key.lower(), {})
    pair = {args.get("source_lang"), args.get("target_lang")}
    hub_id = None
    if known.get("hub_id") and (known["hub_pairs"] is None or pair in known["hub_pairs"]):
        hub_id = known["hub_id"]
    elif not known and args.get("dataset_name") and not Path(args["dataset_name"]).exists():
        hub_id = args["dataset_name"]
    return {
        "key": key,
        "name": known.get("name", key),
        "hub_id": hub_id,
        "url": known.get("url") or (f"https://huggingface.co/datasets/{hub_id}" if hub_id else None),
        "citation": known.get("citation"),
        "terms": known.get("terms"),
    }


def read_run(output_dir: str | Path) -> dict[str, Any]:
    """Everything the card shows, read from `output_dir` (see the module docstring for the files).

    Works on a run without a test split or validation (`--do_test false`, `--eval_steps 0`): no results file and no
    evaluation records in the log give an empty `evaluations` list and no last validation loss.

    Returns:
        A dict: config, generation, args, train_results, data_stats, log (list of records), evaluations (one dict
        per `results_<split>.json`, sorted by split, with `split` set from the file name and `hypotheses_file`, the
        name of `hyps_<split>.<target_lang>` or None), num_parameters.
    Raises:
        FileNotFoundError: naming the first required file that is missing (config.json, generation_config.json,
            training_args.json, model.safetensors).
        ValueError: naming a JSON file that cannot be read.
    """
    output_dir = Path(output_dir)
    config = _read_json(output_dir / "config.json")
    generation = _read_json(output_dir / "generation_config.json")
    args = _read_json(output_dir / "training_args.json")
    weights = output_dir / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found: is {output_dir} the output_dir of a training run?")
    evaluations = []
    for path in sorted(output_dir.glob("results_*.json")):
        results = _read_json(path)
        results["split"] = path.stem.removeprefix("results_")
        hypotheses = output_dir / f"hyps_{results['split']}.{args.get('target_lang')}"
        results["hypotheses_file"] = hypotheses.name if hypotheses.is_file() else None
        evaluations.append(results)
    return {
        "config": config,
        "generation": generation,
        "args": args,
        "train_results": _read_json(output_dir / "train_results.json", required=False) or {},
        "data_stats": _read_json(output_dir / "data_stats.json", required=False) or {},
        "log": _read_log(output_dir / "log.jsonl"),
        "evaluations": evaluations,
        "num_parameters": count_parameters(weights),
    }


def eval_results(run: dict, dataset: str, dataset_name: str) -> list:
    # `dataset`: the Hub id (or the key of a data set without one); `dataset_name`: its human name.
    """One `huggingface_hub.EvalResult` per split and metric (sacreBLEU BLEU and chrF), values as measured."""
    from huggingface_hub import EvalResult

    direction = f"{run['args']['source_lang']}-{run['args']['target_lang']}"
    results = []
    for evaluation in run["evaluations"]:
        for metric, label in (("bleu", "BLEU"), ("chrf", "chrF")):
            if metric not in evaluation:
                continue
            results.append(
                EvalResult(
                    task_type="translation",
                    task_name=f"Translation {direction}",
                    dataset_type=dataset,
                    dataset_name=f"{dataset_name} {evaluation['split']}",
                    dataset_config=direction,
                    dataset_split=evaluation["split"],
                    metric_type="sacrebleu" if metric == "bleu" else "chrf",
                    metric_name=f"{label} (sacreBLEU)",
                    metric_value=evaluation[metric],
                    metric_config=evaluation.get(f"{metric}_signature"),
                )
            )
    return results


def build_model_card(
    output_dir: str | Path,
    repo_id: str | None = None,
    *,
    license: str = DEFAULT_LICENSE,
    template_path: str | Path = TEMPLATE_PATH,
) -> Any:
    """The card of the run in `output_dir`, rendered but not written (`render_model_card` writes it).

    Args:
        output_dir: the `--output_dir` of a training run, once its model, `train_results.json` and (with a test
            split) `results_<split>.json` are written.
        repo_id: the Hub repository the model goes to; used as model name and in the usage snippets (default: the
            directory's name and its path).
        license: SPDX-style license id of the code and weights for the metadata (default: the code base's,
            apache-2.0); the data's own terms are stated beside it (`describe_dataset`).
        template_path: the Jinja template (default: `model_card_template.md` beside this module).
    Returns:
        The `huggingface_hub.ModelCard`.
    Raises:
        FileNotFoundError, ValueError: from `read_run`, naming the file at fault.
    """
    from huggingface_hub import ModelCard, ModelCardData

    output_dir = Path(output_dir)
    run = read_run(output_dir)
    args, config = run["args"], run["config"]
    dataset = describe_dataset(args)
    model_name = repo_id or output_dir.resolve().name
    start = args.get("model_name_or_path")  # a fine-tune's starting model: Hub metadata `base_model` if on the Hub
    base_model = start if start and not Path(start).exists() and not Path(start).is_absolute() else None
    card_data = ModelCardData(
        base_model=base_model,
        language=[args["source_lang"], args["target_lang"]],
        license=license,
        library_name="transformers",
        pipeline_tag="translation",
        tags=["translation", "transformer", "vaswani2017", "seq2seq", "custom_code", dataset["key"].split("/")[-1]],
        datasets=[dataset["hub_id"]] if dataset["hub_id"] else None,
        metrics=["sacrebleu", "chrf"],
        model_name=model_name,
        eval_results=eval_results(run, dataset["hub_id"] or dataset["key"], dataset["name"]) or None,
    )
    train_log = [record for record in run["log"] if "loss" in record]
    eval_log = [record for record in run["log"] if "eval_loss" in record]
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path),
        model_name=model_name,
        model_ref=repo_id or str(output_dir),
        examples=EXAMPLE_SENTENCES.get(args["source_lang"], ["Hello.", "Good morning."]),
        dataset=dataset,
        start_model=start and Path(start).name,  # a local folder by its name: the card goes public
        base_model=base_model,
        license=license,
        project_url=project_url(),
        package_version=package_version(),
        config=config,
        generation=run["generation"],
        args=args,
        train_results=run["train_results"],
        data_stats=run["data_stats"],
        last_train=train_log[-1] if train_log else None,
        last_eval=eval_log[-1] if eval_log else None,
        evaluations=run["evaluations"],
        num_parameters=run["num_parameters"],
        has_pipeline="translation" in (config.get("custom_pipelines") or {}),
        transformers_requirement=TRANSFORMERS_REQUIREMENT,
        deviations=paper_deviations(),
    )


def render_model_card(output_dir: str | Path, repo_id: str | None = None, **options: Any) -> Any:
    """Render the card of the run in `output_dir` (`build_model_card`, which takes `options`: `license`,
    `template_path`), write it to `output_dir/README.md`, replacing an earlier card, and return it.

    Raises:
        FileNotFoundError, ValueError: from `read_run`, naming the file at fault.
    """
    card = build_model_card(output_dir, repo_id, **options)
    card.save(Path(output_dir) / "README.md")
    return card
