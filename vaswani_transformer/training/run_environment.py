"""The machine a training run ran on, recorded in `train_results.json` so that its model card can say it.

`environment(accelerator)` gives: `hardware` (the GPU's name, or the CPU's model name with its logical CPU count),
`device_type` (cuda, cpu, mps, xpu, ...), `num_machines` (torchrun's WORLD_SIZE / LOCAL_WORLD_SIZE; 1 without it),
and the versions of Python, torch and transformers. The process count and distributed type are train.py's own keys.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch
import transformers
from accelerate import Accelerator


__all__ = ["cpu_name", "environment"]


def cpu_name() -> str:
    """The CPU's model name (`/proc/cpuinfo` on Linux, else `platform.processor()`), or the machine type."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def environment(accelerator: Accelerator) -> dict:
    """What `train_results.json` records of the hardware and software (keys in the module docstring)."""
    device = accelerator.device
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = f"{cpu_name()}, {os.cpu_count()} logical CPUs" if device.type == "cpu" else device.type
    local = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
    return {
        "hardware": hardware,
        "device_type": device.type,
        "num_machines": max(1, accelerator.num_processes // max(1, local)),
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
    }
