"""Fully sharded data parallelism (FSDP2, `torch.distributed.fsdp.fully_shard`) through accelerate.

`accelerate launch --config_file vaswani_transformer/training/presets/accelerate_fsdp2.yaml training/train.py ...`
makes accelerate shard every encoder/decoder layer (`_no_split_modules`), the shared embedding + output projection,
and the rest of the model over the processes; its `save_state` / `load_state` then write and read sharded checkpoints
(`pytorch_model_fsdp_0/`, `optimizer_0/`: torch.distributed.checkpoint). What this module adds:

- `enable_fsdp_on_cpu`: accelerate (1.x, `AcceleratorState.__init__`) selects FSDP only for accelerator devices
  (CUDA, XPU, NPU, ...): a CPU run launched with an FSDP config silently trains with DDP instead. torch's
  `fully_shard` runs on CPU over gloo, so with `--use_cpu true` train.py switches accelerate's state to FSDP
  before `prepare`: the same accelerate code paths (sharding, gradient reduce-scatter, sharded checkpoints) then run
  on CPU processes, which is how the FSDP tests run on CPU-only CI.
- `full_model`: the whole model on every rank (all-gathered), for what must not run sharded: beam-search
  validation and the test translation, where ranks decode different sentences for different numbers of steps and
  a sharded forward would wait forever on collectives the other ranks never join.
`training.checkpoints.save_checkpoint` also writes the whole state dict (accelerate's `get_state_dict`) as
`model.safetensors` into every FSDP checkpoint, so that checkpoint averaging and `vaswani-average-checkpoints` read
FSDP runs exactly like DDP runs.
"""

from __future__ import annotations

import logging
import os

import torch
from accelerate import Accelerator, FullyShardedDataParallelPlugin
from accelerate.utils import DistributedType


__all__ = ["enable_fsdp_on_cpu", "fsdp_requested", "full_model", "is_fsdp"]

logger = logging.getLogger(__name__)


def fsdp_requested() -> bool:
    """Whether the launcher asked for FSDP: `accelerate launch` with `distributed_type: FSDP` sets
    ACCELERATE_USE_FSDP=true (and the FSDP_* settings) in every process's environment."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def is_fsdp(accelerator: Accelerator) -> bool:
    """Whether the run's model is sharded (accelerate's distributed type is FSDP)."""
    return accelerator.distributed_type == DistributedType.FSDP


def enable_fsdp_on_cpu(accelerator: Accelerator) -> bool:
    """Run accelerate's FSDP on CPU processes (gloo) when the launcher asked for FSDP; returns whether it did.

    accelerate picks DistributedType.MULTI_CPU for `Accelerator(cpu=True)` in a multi-process launch and ignores the
    FSDP plugin there (its state selects FSDP only in the branch for accelerator devices). This sets the shared
    `PartialState` / `AcceleratorState` to FSDP with the plugin accelerate builds from the launcher's FSDP_*
    settings (and the run's mixed precision), as accelerate does itself on GPUs. Call right after building the
    Accelerator, before `prepare`.

    Raises:
        ValueError: FSDP version 1 on CPU (only FSDP2, `fully_shard`, runs on CPU; FSDP1 needs CUDA streams).
    """
    if not (fsdp_requested() and accelerator.distributed_type == DistributedType.MULTI_CPU):
        return False
    from accelerate.state import AcceleratorState, PartialState

    plugin = FullyShardedDataParallelPlugin()  # reads FSDP_VERSION, FSDP_AUTO_WRAP_POLICY, ... from the environment
    if plugin.fsdp_version != 2:
        raise ValueError(
            f"FSDP on CPU needs fsdp_version: 2 in the accelerate config (got {plugin.fsdp_version}): FSDP1 runs on "
            "CUDA devices only"
        )
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    # Later AcceleratorState() calls copy PartialState's distributed type: both shared states must say FSDP.
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    AcceleratorState._shared_state["distributed_type"] = DistributedType.FSDP
    AcceleratorState._shared_state["fsdp_plugin"] = plugin
    logger.info("FSDP2 on %d CPU processes (gloo)", accelerator.num_processes)
    return True


def full_model(accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module:
    """The model to translate and score with on this rank: the unwrapped model itself when it is whole on every
    rank (one process, DDP), or, under FSDP, a copy holding the all-gathered weights (call on every rank).

    The copy is built from the model's config, gets its generation config, the trained weights, the run's device
    and eval-or-train mode; it costs one unsharded model's memory per rank while it lives.
    """
    unwrapped = accelerator.unwrap_model(model)
    if not is_fsdp(accelerator):
        return unwrapped
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    # full_state_dict without cpu_offload: every rank receives the whole tensors (all-gather).
    state_dict = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    copy = type(unwrapped)(unwrapped.config)
    copy.generation_config = unwrapped.generation_config
    copy.load_state_dict(state_dict)
    return copy.to(accelerator.device).train(unwrapped.training)
