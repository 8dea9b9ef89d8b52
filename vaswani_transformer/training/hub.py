"""Upload a trained model directory to the Hugging Face Hub: weights, configs, tokenizer, code, model card, results.

    python training/push_to_hub.py outputs/multi30k_en_de_cpu --repo_id your-name/transformer-multi30k-en-de --dry_run
    python model_cards/render.py outputs/multi30k_en_de_cpu   # writes README.md, the model card, first
    python training/push_to_hub.py outputs/multi30k_en_de_cpu --repo_id your-name/transformer-multi30k-en-de

Only the files that make the repository usable go up (`files_to_upload`): `*.safetensors`, `config.json`,
`generation_config.json`, the tokenizer files, the remote-code `*.py` files (configuration, modeling, tokenization,
pipeline), `README.md` and the run's JSON results and arguments. Never the training state: `checkpoint-*/` folders,
optimizer/scheduler/RNG state, `*.bin`/`*.pt`/`*.pth`/`*.pkl`, logs and tracker folders. `--dry_run` prints exactly
the list the upload would send (the same function builds the upload's `allow_patterns`), needs no token and no
network. Built on `huggingface_hub.create_repo` + `upload_folder`; the token comes from `HF_TOKEN` or `hf auth login`.
The command (`vaswani-push-to-hub`) is `training.cli.push_to_hub_main`; train.py's `--push_to_hub` calls `push_to_hub`.
"""

from __future__ import annotations

import fnmatch
import glob
from pathlib import Path

from huggingface_hub import get_token


__all__ = [
    "ALLOW_PATTERNS",
    "IGNORE_PATTERNS",
    "check_hub_access",
    "files_to_upload",
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


def push_to_hub(
    directory: str | Path, repo_id: str, *, private: bool = False, commit_message: str | None = None
) -> str:
    """Create `repo_id` (if needed) and upload `files_to_upload(directory)` in one commit.

    Returns:
        The URL of the commit.
    Raises:
        PermissionError: when there is no token.
        OSError: one line naming the cause, when the repo id is invalid, the Hub cannot be reached (offline mode
            included) or refuses the upload.
    """
    from huggingface_hub import create_repo, upload_folder

    names = files_to_upload(directory)
    if get_token() is None:
        raise PermissionError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (or use --dry_run)")
    try:
        create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = upload_folder(
            repo_id=repo_id,
            folder_path=str(directory),
            commit_message=commit_message or f"Upload {Path(directory).name}",
            allow_patterns=[glob.escape(name) for name in names],
            ignore_patterns=list(IGNORE_PATTERNS),
        )
    except Exception as error:  # invalid id (ValueError), offline mode, HTTP status and transport errors
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise OSError(f"could not upload {directory} to {repo_id}: {type(error).__name__}: {first_line}") from None
    return commit.commit_url
