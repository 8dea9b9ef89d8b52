"""§6.1 checkpoint averaging: the parameters of the last K checkpoints, averaged element-wise.

§6.1: "For the base models, we used a single model obtained by averaging the last 5 checkpoints, which were written
at 10-minute intervals. For the big models, we averaged the last 20 checkpoints."

    python training/average_checkpoints.py --checkpoint_dir outputs/run --last_k 5 --output outputs/run-avg5
    python training/average_checkpoints.py --inputs a/checkpoint-100 a/checkpoint-200 --output avg --config a

Reads `model.safetensors` from each checkpoint (a `checkpoint-{step}` directory written by accelerate, a
`save_pretrained` directory, or the `.safetensors` file itself). Tied parameters (shared embeddings / output
projection) are stored once by safetensors; averaging the stored tensor and loading it into a model whose weights
are tied keeps them tied. The command (`vaswani-average-checkpoints`) is `training.cli.average_checkpoints_main`;
train.py averages its own run with `average_last_checkpoints`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from vaswani_transformer.training.checkpoints import MODEL_FILE, list_checkpoints


__all__ = ["average_checkpoints", "average_last_checkpoints", "load_averaged_into", "model_file", "save_averaged"]

logger = logging.getLogger(__name__)


def model_file(path: str | os.PathLike) -> Path:
    """The model safetensors file of a checkpoint directory (or `path` itself if it is a file).

    Raises:
        FileNotFoundError: naming the missing file.
    """
    path = Path(path)
    file = path if path.is_file() else path / MODEL_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found (expected a checkpoint directory holding {MODEL_FILE})")
    return file


def average_checkpoints(paths: Sequence[str | os.PathLike]) -> dict[str, torch.Tensor]:
    """§6.1: theta_avg = (1/K) * sum_k theta_k, per tensor, for K checkpoints.

    Floating tensors are summed in float64 and the mean is returned as float32 (the training dtype); non-floating
    tensors (integer buffers) must be identical and are copied from the first checkpoint.

    Args:
        paths: K >= 1 checkpoint directories or `.safetensors` files (see `model_file`).

    Returns:
        {parameter name: averaged tensor} with the first checkpoint's keys and shapes, on CPU.

    Raises:
        ValueError: if `paths` is empty, a model file is truncated or corrupt (names it), or a checkpoint's keys,
            shapes or integer buffers differ from the first checkpoint's (names the file and the offending keys).
        FileNotFoundError: if a checkpoint has no model file.
    """
    if not paths:
        raise ValueError("average_checkpoints needs at least one checkpoint")
    files = [model_file(path) for path in paths]
    for file in files:  # a truncated or corrupt file fails here, named, before any tensor is read
        try:
            with safe_open(str(file), framework="pt") as handle:
                handle.keys()
        except SafetensorError as error:
            raise ValueError(f"{file}: not a readable safetensors file ({error})") from error
    totals: dict[str, torch.Tensor] = {}
    with safe_open(str(files[0]), framework="pt") as reference:
        for key in reference.keys():
            tensor = reference.get_tensor(key)
            totals[key] = tensor.to(torch.float64) if tensor.is_floating_point() else tensor
    for file in files[1:]:
        with safe_open(str(file), framework="pt") as checkpoint:
            keys = set(checkpoint.keys())
            if keys != set(totals):
                missing, extra = sorted(set(totals) - keys), sorted(keys - set(totals))
                raise ValueError(f"{file}: keys differ from {files[0]} (missing {missing}, unexpected {extra})")
            for key in keys:
                tensor = checkpoint.get_tensor(key)
                if tensor.shape != totals[key].shape:
                    raise ValueError(
                        f"{file}: {key} has shape {tuple(tensor.shape)}, {files[0]} has {tuple(totals[key].shape)}"
                    )
                if tensor.is_floating_point():
                    totals[key] += tensor.to(torch.float64)
                elif not torch.equal(tensor, totals[key]):
                    raise ValueError(f"{file}: integer buffer {key} differs from {files[0]}")
    return {key: (t / len(files)).to(torch.float32) if t.is_floating_point() else t for key, t in totals.items()}


def load_averaged_into(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Copy averaged tensors into `model` in place, keeping its tied parameters tied.

    Keys absent from `state_dict` are allowed only if they are tied to (share storage with) a loaded parameter,
    as safetensors stores tied tensors once.

    Raises:
        ValueError: on unexpected keys, or missing keys that are not tied to a loaded parameter.
    """
    result = model.load_state_dict(state_dict, strict=False)
    if result.unexpected_keys:
        raise ValueError(f"averaged checkpoint has keys the model lacks: {result.unexpected_keys}")
    model_state = model.state_dict()
    loaded_storage = {model_state[key].data_ptr() for key in state_dict}
    untied = [key for key in result.missing_keys if model_state[key].data_ptr() not in loaded_storage]
    if untied:
        raise ValueError(f"averaged checkpoint lacks parameters that are not tied to loaded ones: {untied}")
    return model


def average_last_checkpoints(
    model: torch.nn.Module, output_dir: str | os.PathLike, last_k: int, device: torch.device | str = "cpu"
) -> list[str]:
    """§6.1: load the mean of the newest `last_k` checkpoints of `output_dir` into `model` (weights moved to
    `device`); returns the checkpoints' names. Warns when fewer than `last_k` exist."""
    paths = list_checkpoints(output_dir)[-last_k:]
    if len(paths) < last_k:
        logger.warning("averaging only %d checkpoints (asked for %d)", len(paths), last_k)
    load_averaged_into(model, {k: v.to(device) for k, v in average_checkpoints(paths).items()})
    logger.info("averaged %s (§6.1)", ", ".join(path.name for path in paths))
    return [path.name for path in paths]


def save_averaged(state_dict: dict[str, torch.Tensor], output: str | os.PathLike, config_dir: str | None) -> Path:
    """Write the average: with `config_dir` (a run's output dir or a saved model), `save_pretrained` of a
    `VaswaniTransformerForConditionalGeneration` built from its config; otherwise a bare `model.safetensors`."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    if config_dir is None:
        save_file(state_dict, str(output / MODEL_FILE), metadata={"format": "pt"})
        return output / MODEL_FILE
    from vaswani_transformer import VaswaniTransformerConfig, VaswaniTransformerForConditionalGeneration

    model = VaswaniTransformerForConditionalGeneration(VaswaniTransformerConfig.from_pretrained(config_dir))
    load_averaged_into(model, state_dict).save_pretrained(output)
    return output
