"""What a training run reports while it runs: its log lines (`output_dir/log.jsonl` and the accelerate trackers), the
loss, throughput and memory of each logging interval, and the logging setup of the training command.

A log line of `Interval.record` holds: step, epoch (fractional), loss (label-smoothed, per target token), lr (Eq. 3),
tokens_per_second, elapsed_seconds, rss_mib and rss_file_mib, and on CUDA cuda_max_memory_mib.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import psutil  # a dependency of accelerate
import torch
from accelerate import Accelerator

from vaswani_transformer.training.checkpoints import TrainerState


__all__ = [
    "Interval",
    "JsonlLog",
    "configure_logging",
    "resident_file_memory_mib",
    "resident_memory_mib",
]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(accelerator: Accelerator) -> None:
    """INFO messages of this package on the main process (WARNING on the others), quiet `datasets`.

    `logging.basicConfig` adds its stderr handler only where the root logger has none, so a second run in the same
    process (tests) adds no second handler.
    """
    logging.basicConfig(format=LOG_FORMAT, level=logging.INFO)
    logging.getLogger("vaswani_transformer").setLevel(logging.INFO if accelerator.is_main_process else logging.WARNING)
    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()


class JsonlLog:
    """`output_dir/log.jsonl`, one JSON object a line (main process), also sent to the accelerate trackers.

    Only ever appended to: a resumed run continues the file, and a new run starts in an empty output_dir.
    """

    def __init__(self, accelerator: Accelerator, path: Path):
        self.accelerator, self.path = accelerator, path

    def write(self, record: dict) -> None:
        """Append `record` to the file and send its numbers to the trackers (`accelerator.log`)."""
        self.accelerator.log(
            {k: v for k, v in record.items() if k != "step" and not isinstance(v, dict)}, step=record.get("step")
        )
        if self.accelerator.is_main_process:
            with self.path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")


@dataclass
class Interval:
    """Sums since the last log line: label-smoothed loss over micro-batches (a 0-dim tensor on the training device
    once a micro-batch has run, so that reading it waits for the device only at log time), non-pad source + target
    tokens."""

    loss_sum: float | torch.Tensor = 0.0
    micro_batches: int = 0
    tokens: int = 0
    start: float = field(default_factory=time.perf_counter)

    def record(self, accelerator: Accelerator, state: TrainerState, epoch_length: int, lr: float) -> dict:
        """The log line: sums reduced over ranks. loss is per target token averaged over micro-batches and ranks,
        lr the rate of the step just taken (Eq. 3), tokens_per_second counts all ranks per wall-clock second,
        epoch is fractional, elapsed_seconds the training time across resumptions, rss_mib the largest resident
        memory of any rank (MiB, `resident_memory_mib`), rss_file_mib the largest file-backed part of it (MiB,
        `resident_file_memory_mib`: the memory-mapped Arrow cache and shared libraries); on CUDA also
        cuda_max_memory_mib, the largest `torch.cuda.max_memory_allocated` of any rank since the start (MiB:
        tensors, not the allocator's cache)."""
        sums = torch.tensor([float(self.loss_sum), self.micro_batches, self.tokens], dtype=torch.float64)
        loss_sum, micro_batches, tokens = accelerator.reduce(sums.to(accelerator.device), reduction="sum").tolist()
        memory = [resident_memory_mib(), resident_file_memory_mib()]
        if accelerator.device.type == "cuda":
            memory.append(torch.cuda.max_memory_allocated(accelerator.device) / 2**20)
        memory = accelerator.gather(torch.tensor([memory], dtype=torch.float64, device=accelerator.device))
        record = {
            "step": state.step,
            "epoch": round(state.epoch + state.batches_in_epoch / max(epoch_length, 1), 4),
            "loss": loss_sum / max(micro_batches, 1),
            "lr": lr,
            "tokens_per_second": round(tokens / max(time.perf_counter() - self.start, 1e-9), 1),
            "elapsed_seconds": round(state.elapsed_seconds, 2),
            "rss_mib": round(memory[:, 0].max().item(), 1),
            "rss_file_mib": round(memory[:, 1].max().item(), 1),
        }
        if accelerator.device.type == "cuda":
            record["cuda_max_memory_mib"] = round(memory[:, 2].max().item(), 1)
        return record


def resident_memory_mib() -> float:
    """This process's resident set size now (psutil's `memory_info().rss`), in MiB: the memory the operating system
    has given the process and not taken back, the quantity that runs a machine out of memory."""
    return psutil.Process().memory_info().rss / 2**20


def resident_file_memory_mib() -> float:
    """The file-backed part of `resident_memory_mib`, in MiB: pages of memory-mapped files (the datasets library's
    Arrow cache, which training reads through `mmap`, and shared libraries) that the operating system can drop and
    read again under memory pressure, unlike the process's own (anonymous) memory. psutil's `memory_info().shared`
    (Linux: RssFile + RssShmem of /proc/<pid>/statm); 0.0 where the platform does not report it."""
    return getattr(psutil.Process().memory_info(), "shared", 0) / 2**20
