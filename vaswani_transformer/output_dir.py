"""The output-directory rules of every command that writes a run, a model or results: never lose a user's files.

The transformers convention (`Trainer`'s `--overwrite_output_dir`): a non-empty output directory is refused unless
the user asks to replace it (`--overwrite_output_dir`, which empties it first) or, for training, to continue the run
it holds (`--resume_from_checkpoint`). The commands check everything they can (data, splits, tokenizer, model
config, checkpoint files) before `prepare_output_dir` empties or creates the directory, and write only after it.

A resumed run must be the same run: `resume_differences` compares what the run directory recorded when it started
(`config.json`, `training_args.json`) with what the resuming command asks for and names every field that differs.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path


__all__ = [
    "RESUME_MUST_MATCH",
    "check_output_dir",
    "check_not_model_dir",
    "prepare_output_dir",
    "resume_differences",
]

# Arguments a resumed run cannot change: they decide the vocabulary the checkpoint's embeddings index. The
# architecture is compared through config.json (`resume_differences`), which holds the preset's values too.
RESUME_MUST_MATCH = ("source_lang", "target_lang", "tokenizer_name", "vocab_size", "min_frequency")


def _listing(path: Path, limit: int = 4) -> str:
    names = sorted(child.name for child in path.iterdir())
    return ", ".join(names[:limit]) + (f", ... ({len(names)} entries)" if len(names) > limit else "")


def check_output_dir(output_dir: str | os.PathLike, overwrite: bool, resume: bool | None = None) -> None:
    """Refuse to write into a non-empty `output_dir` unless told to replace it or to continue the run in it.

    Call before anything else is done; the directory is not touched here (see `prepare_output_dir`).

    Args:
        output_dir: the `--output_dir` of the command.
        overwrite: `--overwrite_output_dir`: its contents will be deleted once every check has passed.
        resume: `--resume_from_checkpoint` was given: the run in it is continued. None for commands that cannot
            resume (the error then does not suggest it).

    Raises:
        FileExistsError: `output_dir` holds files and neither flag is given (names the directory, some entries and
            the flags), or it is a file.
        ValueError: both flags are given: emptying the directory would delete the checkpoints to resume from.
    """
    path = Path(output_dir)
    if overwrite and resume:
        raise ValueError(
            "--overwrite_output_dir would delete the checkpoints --resume_from_checkpoint continues from: give one"
        )
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"--output_dir {path} is a file, not a directory")
    if overwrite or resume or not path.is_dir() or not any(path.iterdir()):
        return
    raise FileExistsError(
        f"--output_dir {path} is not empty ({_listing(path)}); pass --overwrite_output_dir to replace it"
        + (" or --resume_from_checkpoint latest to continue the run in it" if resume is not None else "")
    )


def check_not_model_dir(output_dir: str | os.PathLike, model: str | os.PathLike, command: str) -> None:
    """Refuse an `--output_dir` that is the `--model` directory or a folder holding it, whatever
    `--overwrite_output_dir` says: replacing it would delete the model the command reads.

    Args:
        output_dir: the folder the command would write (or replace).
        model: the `--model` argument; a Hub id (no such local folder) is never refused.
        command: what the command does, for the message ("evaluation", "the export").

    Raises:
        FileExistsError: naming both folders and what to do.
    """
    model_dir, output = Path(model).resolve(), Path(output_dir).resolve()
    if Path(model).is_dir() and (model_dir == output or output in model_dir.parents):
        raise FileExistsError(
            f"--output_dir {output_dir} is or holds the --model directory {model}; {command} never writes over a "
            "model or training run: choose another --output_dir"
        )


def prepare_output_dir(output_dir: str | os.PathLike, overwrite: bool) -> Path:
    """Create `output_dir`; with `overwrite`, delete its contents first (the directory itself stays: it may be a
    mount point). Call on one process, after every check has passed. Returns the path."""
    path = Path(output_dir)
    if overwrite and path.is_dir():
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _differences(recorded: Mapping, requested: Mapping, names: Iterable[str]) -> list[str]:
    return [
        f"{name}: the run has {recorded.get(name)!r}, this command asks for {requested.get(name)!r}"
        for name in names
        if recorded.get(name) != requested.get(name)
    ]


def resume_differences(
    run_dir: str | os.PathLike, config: Mapping, arguments: Mapping, config_fields: Iterable[str]
) -> list[str]:
    """What a resuming command changes that the run in `run_dir` cannot take, one line per field.

    Args:
        run_dir: the directory holding the checkpoint being resumed (its `config.json` and `training_args.json`,
            written when the run started).
        config: the model config the command builds (`VaswaniTransformerConfig.to_dict()`).
        arguments: the command's arguments (all three dataclasses, as a dict).
        config_fields: the config fields that must match (the architecture, vocabulary size and special tokens).

    Returns:
        ["d_model: the run has 32, this command asks for 64", ...]; empty if the run can be continued.

    Raises:
        FileNotFoundError: if `run_dir` has no config.json (it is not the output_dir of a training run).
        ValueError: if config.json or training_args.json is not valid JSON (names the file).
    """
    run_dir = Path(run_dir)
    recorded = {}
    for name in ("config.json", "training_args.json"):
        file = run_dir / name
        if not file.is_file():
            if name == "config.json":
                raise FileNotFoundError(f"{file} not found: {run_dir} is not the output_dir of a training run")
            recorded[name] = None
            continue
        try:
            recorded[name] = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{file}: not valid JSON ({error})") from error
    differences = _differences(recorded["config.json"], config, config_fields)
    if recorded["training_args.json"] is not None:
        differences += _differences(recorded["training_args.json"], arguments, RESUME_MUST_MATCH)
    return differences
