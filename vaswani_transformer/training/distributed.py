"""What the data-parallel ranks of a training run must agree on: decisions taken from the wall clock, and the weights.

With several processes (DDP or FSDP through accelerate) every rank runs the same loop; a decision that one rank takes
alone (stop now, save now) would leave the others waiting in a collective that never comes. One process: no
communication at all.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator


__all__ = ["check_ranks_identical", "on_any_rank"]


def on_any_rank(accelerator: Accelerator, *flags: bool) -> list[bool]:
    """Make wall-clock decisions identical on every rank: each flag is true if it is true on any rank."""
    if accelerator.num_processes == 1:
        return [bool(flag) for flag in flags]
    values = torch.tensor([float(bool(flag)) for flag in flags], device=accelerator.device)
    return [bool(value) for value in accelerator.reduce(values, reduction="sum").tolist()]


def check_ranks_identical(accelerator: Accelerator, model: torch.nn.Module) -> None:
    """Data parallelism keeps one model: compare a float64 checksum of every rank's parameters (exact equality).

    Raises:
        RuntimeError: if two ranks hold different weights (names the checksums).
    """
    params = list(accelerator.unwrap_model(model).parameters())
    checksum = torch.stack([p.detach().double().sum() + p.detach().double().abs().sum() for p in params]).sum()
    gathered = accelerator.gather(checksum.reshape(1).to(accelerator.device))
    if not bool((gathered == gathered[0]).all()):
        raise RuntimeError(f"data-parallel ranks hold different weights (checksums {gathered.tolist()})")
