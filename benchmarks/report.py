"""The report code every benchmark shares: the machine's name and environment, targets, the results files."""

from __future__ import annotations

import json
import operator
import os
import platform
import re
from pathlib import Path

import torch
import transformers

from vaswani_transformer.training.run_environment import cpu_name


__all__ = ["environment", "iqr", "machine_name", "target", "write_report"]

OPERATORS = {">=": operator.ge, "<=": operator.le, "==": operator.eq}


def machine_name(device: str) -> str:
    """The GPU's name, or `<architecture>-<cores>cpu`, lower-case with dashes: the stem of the result files."""
    if device == "cuda":
        name = torch.cuda.get_device_name()
    else:
        name = f"{platform.machine()}-{os.cpu_count()}cpu"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def environment(device: str) -> dict:
    """What a results file says about where it ran: the machine's name (`machine_name`), device, CPU or GPU name,
    platform, cores, torch threads and the versions of Python, torch and transformers."""
    return {
        "machine": machine_name(device),
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else cpu_name(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }


def target(value, op: str, bound, spec: str = "") -> dict:
    """A target as results files hold it: `{"value", "target", "holds"}`, where `target` reads "<op> <bound>" (the
    bound formatted with `spec`; "true" for `== True`) and `holds` is `value <op> bound` (False for a None value).

    Raises:
        KeyError: for an `op` other than ">=", "<=", "==".
    """
    shown = "true" if bound is True else f"{op} {bound:{spec}}"
    return {"value": value, "target": shown, "holds": value is not None and bool(OPERATORS[op](value, bound))}


def write_report(results: dict, output: str | Path, stem: str, report: str) -> Path:
    """Write `results` to `<output>/<stem>.json` and the markdown `report` to `<output>/<stem>.md` (creating
    `output`), print the report, and return `<output>/<stem>` (add suffixes with `f"{path}.png"`: a stem may hold
    dots, which `Path.with_suffix` would cut). Errors: OSError from the file system."""
    path = Path(output) / stem
    path.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{path}.json").write_text(json.dumps(results, indent=2) + "\n")
    Path(f"{path}.md").write_text(report)
    print(report)
    return path


def iqr(paired: dict) -> str:
    """`paired_speedup` as "median [q1, q3]"."""
    return f"{paired['median']:.3f} [{paired['q1']:.3f}, {paired['q3']:.3f}]"
