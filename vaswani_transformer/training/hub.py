"""Upload a trained model directory to the Hugging Face Hub: weights, configs, tokenizer, code, model card, results.

    vaswani-push-to-hub outputs/multi30k_en_de_cpu --hub_model_id your-name/transformer-multi30k-en-de --dry_run
    vaswani-push-to-hub outputs/multi30k_en_de_cpu --hub_model_id your-name/transformer-multi30k-en-de

Only the files that make the repository usable go up (`files_to_upload`): `*.safetensors`, `config.json`,
`generation_config.json`, the tokenizer files, the remote-code `*.py` files (configuration, modeling, tokenization,
pipeline), `README.md`, the run's JSON results and arguments and its test translations (`hyps_<split>.<lang>`). Never
the training state: `checkpoint-*/` folders, optimizer/scheduler/RNG state, `*.bin`/`*.pt`/`*.pth`/`*.pkl`, logs and
tracker folders. `--dry_run` prints exactly the list the upload sends (the same function lists the upload's files),
needs no token and no network. The model card of a training run is rendered again with the repository id for the upload
(`hub_model_card`), so that its snippets load the Hub repository; the local `README.md` keeps the local path, and a
README edited by hand goes up as it is. Built on `huggingface_hub.create_repo` + `create_commit` (one commit); the
token comes from `HF_TOKEN` or `hf auth login`. The command (`vaswani-push-to-hub`, `training/push_to_hub.py`) is
`training.cli.push_to_hub_main`; train.py's `--push_to_hub` calls `push_to_hub`.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from huggingface_hub import get_token


__all__ = [
    "ALLOW_PATTERNS",
    "IGNORE_PATTERNS",
    "check_hub_access",
    "files_to_upload",
    "hub_model_card",
    "push_to_hub",
]

# Top-level files of a save_pretrained directory that belong on the Hub (fnmatch patterns on the file name).
ALLOW_PATTERNS = (
    "*.safetensors",  # weights (model.safetensors, or shards model-0000x-of-0000y.safetensors)
    "model.safetensors.index.json",  # the shard index, if sharded
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "*.py",  # remote code: configuration_*, modeling_*, tokenization_*, pipeline_* (trust_remote_code=True)
    "README.md",  # the model card every training run renders (training.model_card)
    "results_*.json",  # sacreBLEU/chrF of the test split, written by the training run
    "hyps_*",  # the test split's translations, one a line (the model card links them)
    "train_results.json",  # steps, time, averaged checkpoints, test scores (training/train.py)
    "training_args.json",  # every argument of the run (training/train.py)
)
# Never uploaded, even if a pattern above matched: training state, pickles, logs.
IGNORE_PATTERNS = (
    "checkpoint-*",
    "*.bin",
    "*.pt",
    "*.pth",
    "*.pkl",
    "*.ckpt",
    "optimizer*",
    "scheduler*",
    "rng_state*",
    "random_states*",
    "*.log",
    "log.jsonl",
    "events.out.tfevents*",
)


def files_to_upload(directory: str | Path) -> list[str]:
    """The files of `directory` that the upload sends: top-level files matching `ALLOW_PATTERNS` and no
    `IGNORE_PATTERNS` pattern, sorted by name. Sub-folders (checkpoints, tracker logs) are never included.

    Returns:
        File names relative to `directory` (e.g. `["README.md", "config.json", ...]`).
    Raises:
        NotADirectoryError: if `directory` is not a directory (naming it).
        FileNotFoundError: if it holds no `config.json` or no `*.safetensors` weights (naming what is missing).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} is not a directory")
    names = sorted(
        path.name
        for path in directory.iterdir()
        if path.is_file()
        and any(fnmatch.fnmatch(path.name, pattern) for pattern in ALLOW_PATTERNS)
        and not any(fnmatch.fnmatch(path.name, pattern) for pattern in IGNORE_PATTERNS)
    )
    if "config.json" not in names:
        raise FileNotFoundError(f"{directory} has no config.json: not a save_pretrained model directory")
    if not any(name.endswith(".safetensors") for name in names):
        raise FileNotFoundError(f"{directory} has no *.safetensors weights: save the model with save_pretrained")
    return names


def check_hub_access(args) -> None:
    """Fail before training if `--push_to_hub` cannot work (`args`: the training script's TrainingArguments).

    Raises:
        ValueError: without `--hub_model_id` or without a Hugging Face token, saying how to fix it.
    """
    if not args.push_to_hub:
        return
    if not args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id (e.g. your-name/transformer-multi30k-en-de)")
    if get_token() is None:
        raise ValueError("--push_to_hub needs a Hugging Face token: run `hf auth login` or set HF_TOKEN")


def hub_model_card(directory: str | Path, repo_id: str) -> bytes | None:
    """The `README.md` to upload: a training run's card rendered with `repo_id` (snippets load the Hub repository).

    None (the README goes up as it is) for a directory that is not a training run's (no `training_args.json`), and
    for a README.md that is neither the card the run renders for its folder nor for `repo_id`: one edited by hand is
    the user's, and is never replaced.

    Raises:
        FileNotFoundError, ValueError: from `model_card.read_run`, naming a run file that is missing or unreadable.
    """
    from vaswani_transformer.training.model_card import build_model_card

    directory = Path(directory)
    if not (directory / "training_args.json").is_file():
        return None
    card = str(build_model_card(directory, repo_id))
    readme = directory / "README.md"
    if readme.is_file() and readme.read_text(encoding="utf-8") not in (card, str(build_model_card(directory))):
        return None
    return card.encode("utf-8")


def push_to_hub(
    directory: str | Path, repo_id: str, *, private: bool = False, commit_message: str | None = None
) -> str:
    """Create `repo_id` (if needed) and upload `files_to_upload(directory)` in one commit, the model card of a
    training run rendered with `repo_id` (`hub_model_card`).

    Returns:
        The URL of the commit.
    Raises:
        PermissionError: when there is no token.
        FileNotFoundError, ValueError: a training run whose card cannot be rendered (names the file).
        OSError: one line naming the cause, when the repo id is invalid, the Hub cannot be reached (offline mode
            included) or refuses the upload.
    """
    from huggingface_hub import CommitOperationAdd, create_commit, create_repo

    directory = Path(directory)
    names = files_to_upload(directory)
    if get_token() is None:
        raise PermissionError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (or use --dry_run)")
    card = hub_model_card(directory, repo_id)
    contents = {name: str(directory / name) for name in names} | ({"README.md": card} if card is not None else {})
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=content) for name, content in contents.items()]
    try:
        create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = create_commit(
            repo_id,
            operations=operations,
            commit_message=commit_message or f"Upload {directory.name}",
            repo_type="model",
        )
    except Exception as error:  # invalid id (ValueError), offline mode, HTTP status and transport errors
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise OSError(f"could not upload {directory} to {repo_id}: {type(error).__name__}: {first_line}") from None
    return commit.commit_url
