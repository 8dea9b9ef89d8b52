"""The model card (`README.md`) of a trained model, rendered from what its training run wrote, and nothing else.

    vaswani-model-card outputs/multi30k_en_de_cpu
    vaswani-model-card outputs/multi30k_en_de_cpu --repo_id your-name/transformer-multi30k-en-de

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
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any


__all__ = [
    "DEFAULT_LICENSE",
    "DEVIATIONS_PATH",
    "TEMPLATE_PATH",
    "TRANSFORMERS_REQUIREMENT",
    "paper_deviations",
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
# Data sets the training scripts know, by the name a run records (data_dir folder name or datasets id).
KNOWN_DATASETS = {
    "multi30k": {"name": "Multi30k", "citation": "elliott-etal-2016-multi30k"},
    "wmt/wmt14": {"name": "WMT 2014", "citation": None},
}
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


def dataset_id(args: dict) -> str:
    """The data set a run trained on: `--dataset_name`, else the `--data_dir` folder name, else the train file stem.

    With none of them set, `training/data.py` reads Multi30k (`default_data_dir()`), hence "multi30k".
    """
    if args.get("dataset_name"):
        return args["dataset_name"]
    if args.get("data_dir"):
        return Path(args["data_dir"]).name
    if args.get("train_file"):
        return Path(args["train_file"]).stem
    return "multi30k"


def read_run(output_dir: str | Path) -> dict[str, Any]:
    """Everything the card shows, read from `output_dir` (see the module docstring for the files).

    Works on a run without a test split or validation (`--do_test false`, `--eval_steps 0`): no results file and no
    evaluation records in the log give an empty `evaluations` list and no last validation loss.

    Returns:
        A dict: config, generation, args, train_results, data_stats, log (list of records), evaluations (one dict
        per `results_<split>.json`, sorted by split, with `split` set from the file name), num_parameters.
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


def render_model_card(
    output_dir: str | Path,
    repo_id: str | None = None,
    *,
    license: str = DEFAULT_LICENSE,
    template_path: str | Path = TEMPLATE_PATH,
) -> Any:
    """Render the card of the run in `output_dir`, write it to `output_dir/README.md` and return it.

    Args:
        output_dir: the `--output_dir` of a training run, once its model, `train_results.json` and (with a test
            split) `results_<split>.json` are written.
        repo_id: the Hub repository the model goes to; used as model name and in the usage snippets (default: the
            directory's name and its path).
        license: SPDX-style license id for the metadata (default: the code base's, apache-2.0).
        template_path: the Jinja template (default: `model_card_template.md` beside this module).
    Returns:
        The `huggingface_hub.ModelCard` (also saved as README.md, replacing an earlier card).
    Raises:
        FileNotFoundError, ValueError: from `read_run`, naming the file at fault.
    """
    from huggingface_hub import ModelCard, ModelCardData

    output_dir = Path(output_dir)
    run = read_run(output_dir)
    args, config = run["args"], run["config"]
    dataset = dataset_id(args)
    known = KNOWN_DATASETS.get(dataset.lower(), {})
    dataset_name = known.get("name", dataset)
    model_name = repo_id or output_dir.resolve().name
    card_data = ModelCardData(
        language=[args["source_lang"], args["target_lang"]],
        license=license,
        library_name="transformers",
        pipeline_tag="translation",
        tags=["translation", "transformer", "vaswani2017", "seq2seq", "custom_code", dataset.split("/")[-1]],
        datasets=[dataset],
        metrics=["sacrebleu", "chrf"],
        model_name=model_name,
        eval_results=eval_results(run, dataset, dataset_name) or None,
    )
    train_log = [record for record in run["log"] if "loss" in record]
    eval_log = [record for record in run["log"] if "eval_loss" in record]
    card = ModelCard.from_template(
        card_data,
        template_path=str(template_path),
        model_name=model_name,
        model_ref=repo_id or str(output_dir),
        examples=EXAMPLE_SENTENCES.get(args["source_lang"], ["Hello.", "Good morning."]),
        dataset=dataset,
        dataset_name=dataset_name,
        cite_multi30k=known.get("citation") == "elliott-etal-2016-multi30k",
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
    card.save(output_dir / "README.md")
    return card
