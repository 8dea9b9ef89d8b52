"""Crash-safe training checkpoints on top of `accelerate` (`save_state` / `load_state`), with exact resumption.

Layout of `output_dir`:
    checkpoint-{step}/         complete: model.safetensors, optimizer.bin, scheduler.bin, random_states_{rank}.pkl
                               (accelerate's files) and trainer_state.json (ours, written last); under FSDP
                               accelerate writes pytorch_model_fsdp_0/ and optimizer_0/ (sharded, one file per rank)
                               and we add the consolidated model.safetensors
    checkpoint-{step}.tmp/     being written; never loaded, removed by the next save of that step

A checkpoint becomes visible only through `os.replace(checkpoint-{step}.tmp, checkpoint-{step})`, an atomic rename
on POSIX file systems, so a run killed while saving never leaves a directory that `latest_checkpoint` would pick.
Resumption restores model, optimizer, scheduler and every rank's RNG states (accelerate) plus the position in the
data (`TrainerState`): the loop sets the sampler to `state.epoch` and skips the `state.batches_in_epoch` batches
already consumed with `accelerate.skip_first_batches`, so a resumed run sees the same batches and dropout masks as
an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import zipfile
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import SAFE_WEIGHTS_NAME, save
from safetensors import SafetensorError, safe_open

from vaswani_transformer.configuration_vaswani_transformer import VaswaniTransformerConfig
from vaswani_transformer.output_dir import resume_differences
from vaswani_transformer.training.arguments import ARCHITECTURE_FIELDS
from vaswani_transformer.training.fsdp import is_fsdp


__all__ = [
    "MODEL_FILE",
    "TRAINER_STATE_NAME",
    "TrainerState",
    "check_checkpoint_files",
    "check_resume",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "previous_checkpoint",
    "resolve_checkpoint",
    "rotate_checkpoints",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

TRAINER_STATE_NAME = "trainer_state.json"
MODEL_FILE = SAFE_WEIGHTS_NAME  # "model.safetensors": the name accelerate's save_state gives the weights
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


@dataclasses.dataclass
class TrainerState:
    """Where training stands: enough to continue exactly.

    Attributes:
        step: optimizer steps completed (the paper's step_num of the last update).
        epoch: the epoch in progress (0-based), i.e. the epoch passed to `TokenBatchSampler.set_epoch` on resume.
        batches_in_epoch: micro-batches of `epoch` this rank has consumed (all ranks consume the same number).
        elapsed_seconds: training wall-clock time so far (seconds), for logs and time limits.
        best_metric, best_step: the best validation value of `--metric_for_best_model` so far and its step.
        validations_without_improvement: validations since then (early stopping, `training.loop.early_stopping`).
    """

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    elapsed_seconds: float = 0.0
    best_metric: float | None = None
    best_step: int | None = None
    validations_without_improvement: int = 0

    def save(self, directory: str | os.PathLike) -> None:
        """Write `trainer_state.json` into `directory`."""
        Path(directory, TRAINER_STATE_NAME).write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | os.PathLike) -> TrainerState:
        """Read `trainer_state.json` from `directory`. Raises FileNotFoundError naming the file if it is missing."""
        path = Path(directory, TRAINER_STATE_NAME)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: {directory} is not a complete checkpoint")
        try:
            return cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as error:
            raise ValueError(f"{path}: not a trainer state written by this package ({error})") from error


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints in `output_dir` (`checkpoint-{step}` holding trainer_state.json), oldest step first.

    `.tmp` directories (saves interrupted by a kill) and directories without trainer_state.json are ignored.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.iterdir():
        match = _CHECKPOINT_RE.match(path.name)
        if match and path.is_dir() and (path / TRAINER_STATE_NAME).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the highest step in `output_dir`, or None if there is none."""
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def rotate_checkpoints(output_dir: str | os.PathLike, keep: int | None) -> list[Path]:
    """Delete all but the newest `keep` complete checkpoints (None or <= 0: keep all). Returns the deleted paths."""
    if keep is None or keep <= 0:
        return []
    stale = list_checkpoints(output_dir)[:-keep]
    for path in stale:
        shutil.rmtree(path)
    return stale


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str | os.PathLike,
    state: TrainerState,
    keep: int | None = None,
    model: torch.nn.Module | None = None,
) -> Path:
    """Save an atomic `checkpoint-{state.step}` and keep only the newest `keep` checkpoints.

    Must be called on every process (accelerate writes one RNG-state file per rank). Order: remove a stale
    `.tmp` of the same step, `accelerator.save_state(tmp)`, write trainer_state.json last, `os.replace` to the final
    name, rotate. Under FSDP, whose `save_state` writes sharded files, the prepared `model` is also consolidated
    into `model.safetensors` (accelerate's `get_state_dict`), the file checkpoint averaging reads.
    Returns the final path.
    """
    final = Path(output_dir, f"checkpoint-{state.step}")
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if model is not None and is_fsdp(accelerator):
        save(accelerator.get_state_dict(model), tmp / MODEL_FILE, safe_serialization=True)  # written by main only
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state.save(tmp)
        if final.exists():  # a rerun writing the same step again: older checkpoints stay valid meanwhile
            shutil.rmtree(final)
        os.replace(tmp, final)
        deleted = rotate_checkpoints(output_dir, keep)
        logger.info("saved %s%s", final, f" (deleted {', '.join(p.name for p in deleted)})" if deleted else "")
    accelerator.wait_for_everyone()
    return final


def resolve_checkpoint(spec: str | None, output_dir: str | os.PathLike) -> Path | None:
    """Turn `--resume_from_checkpoint` into a checkpoint directory that continues the run in `output_dir`.

    Args:
        spec: None or "" (start fresh), "latest" (the newest complete checkpoint in `output_dir`, or start fresh if
            there is none: convenient for preemptible jobs), or a path to a `checkpoint-{step}` directory.

    Raises:
        FileNotFoundError: if an explicit path is not a complete checkpoint (names the missing file).
        FileExistsError: a non-empty `output_dir` that is not the checkpoint's run, or that holds no complete
            checkpoint for "latest" to continue (never write over another run).
    """
    if not spec:
        return None
    output_dir = Path(output_dir)
    non_empty = output_dir.is_dir() and any(output_dir.iterdir())
    if spec == "latest":
        path = latest_checkpoint(output_dir)
        if path is None and non_empty:
            raise FileExistsError(
                f"--resume_from_checkpoint latest: {output_dir} holds no complete checkpoint-<step> to continue, but "
                "is not empty; pass --overwrite_output_dir (without --resume_from_checkpoint) to replace it"
            )
        if path is None:
            logger.warning("--resume_from_checkpoint latest: no checkpoint in %s, starting from scratch", output_dir)
        return path
    path = Path(spec)
    if not (path / TRAINER_STATE_NAME).is_file():
        raise FileNotFoundError(f"{path / TRAINER_STATE_NAME} not found: {path} is not a complete checkpoint")
    if non_empty and path.resolve().parent != output_dir.resolve():
        raise FileExistsError(
            f"--output_dir {output_dir} is not empty and is not the run of --resume_from_checkpoint {path}; resume "
            f"into {path.parent} or an empty --output_dir"
        )
    return path


def check_resume(checkpoint: Path, model_config: VaswaniTransformerConfig, arguments: dict) -> None:
    """A resumed run must be the run its checkpoint belongs to: same architecture, vocabulary and languages.

    Args:
        checkpoint: the `checkpoint-{step}` directory, in the run directory that recorded the run's settings.
        model_config: the config the resuming command builds; arguments: its three argument dataclasses as a dict.

    Raises:
        ValueError: naming every field in which the command differs from the run (`output_dir.resume_differences`).
        FileNotFoundError: if the checkpoint's directory has no config.json.
    """
    fields = (*ARCHITECTURE_FIELDS, "vocab_size", "pad_token_id", "bos_token_id", "eos_token_id")
    differences = resume_differences(checkpoint.parent, model_config.to_dict(), arguments, fields)
    if differences:
        raise ValueError(
            f"--resume_from_checkpoint {checkpoint} belongs to a different run: {'; '.join(differences)}. "
            "Resume with the run's own settings, or train into a new --output_dir"
        )


def previous_checkpoint(path: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the highest step below `path`'s step in the same directory, or None."""
    path = Path(path)
    match = _CHECKPOINT_RE.match(path.name)
    step = int(match.group(1)) if match else None
    earlier = [p for p in list_checkpoints(path.parent) if step is None or int(p.name.split("-")[1]) < step]
    return earlier[-1] if earlier else None


def check_checkpoint_files(path: str | os.PathLike) -> None:
    """Check that every file of a checkpoint is whole before any is loaded, so that an error names the file.

    safetensors files must open with a header that covers the whole file (`safe_open` checks it); torch's `.bin`
    files are zip archives whose central directory, at the end, is missing from a truncated file.

    Raises:
        ValueError: naming the truncated or corrupt file.
    """
    for file in sorted(Path(path).iterdir()):
        try:
            if file.suffix == ".safetensors":
                with safe_open(str(file), framework="pt") as handle:
                    handle.keys()
            elif file.suffix in (".bin", ".pt") and not zipfile.is_zipfile(file):
                raise ValueError("not a complete torch.save archive (truncated?)")
        except (SafetensorError, ValueError, OSError) as error:
            raise ValueError(f"{file}: {error}") from error


def load_checkpoint(accelerator: Accelerator, path: str | os.PathLike) -> TrainerState:
    """Restore model, optimizer, scheduler and RNG states with `accelerator.load_state`; return the TrainerState.

    Call after `accelerator.prepare`. The caller then continues from `state.epoch`, skipping
    `state.batches_in_epoch` batches (see the module docstring).

    Raises:
        ValueError: if a file of the checkpoint is truncated or unreadable: names the file and the complete
            checkpoint before it (`--resume_from_checkpoint` accepts that path), or says there is none.
    """
    try:
        state = TrainerState.load(path)
        check_checkpoint_files(path)
        accelerator.load_state(str(path))
    except (ValueError, OSError, RuntimeError, EOFError) as error:
        previous = previous_checkpoint(path)
        advice = (
            f"the complete checkpoint before it is {previous}: resume with --resume_from_checkpoint {previous}"
            if previous
            else f"there is no earlier checkpoint in {Path(path).parent}"
        )
        raise ValueError(f"cannot resume from {path}: {error}; {advice}") from error
    logger.info(
        "resumed from %s at step %d (epoch %d, batch %d)", path, state.step, state.epoch, state.batches_in_epoch
    )
    return state
