"""glibc's malloc told to keep freed memory for reuse, so that a CPU training step stops page-faulting.

PyTorch's CPU tensors come from `malloc`. glibc serves an allocation above its mmap threshold (128 KiB, raised
dynamically up to 32 MiB) with a fresh `mmap` and returns it to the kernel on `free`, and it trims the top of its heap
once more than twice that threshold lies free there. A training step allocates and frees the same large tensors every
time (the logits and their gradient: 2,040 target tokens x 8,000 x 2 bytes = 33 MB in bf16 on the Multi30k preset;
every activation of a bigger batch), so each step page-faults them in again: ~20k minor faults a step for our model,
~116k for MarianMT (measured with `resource.getrusage` over 15 bf16 steps), about 8% of the CPU time in the kernel.

`keep_freed_memory()` calls `mallopt(3)` (glibc's documented tuning interface; the same settings as the
`MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` environment variables and `GLIBC_TUNABLES`, which must be set
before the process starts) so that allocations below `mmap_threshold` come from the heap and freed memory stays there.
The process's resident memory then stays at its peak instead of rising and falling each step; so that this peak is
the training step's and not that of data preparation before it, the call first returns the heap's free memory to the
kernel (`malloc_trim(3)`), and the training script makes it just before the first step. Intel's and PyTorch's
CPU performance guides get the same effect by preloading jemalloc or tcmalloc. Only on Linux with glibc; elsewhere it
does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform


logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_MMAP_THRESHOLD", "DEFAULT_TRIM_THRESHOLD", "keep_freed_memory"]

# mallopt(3) parameter numbers, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

DEFAULT_MMAP_THRESHOLD = 256 << 20  # bytes: a tensor up to 256 MiB comes from (and returns to) the heap
DEFAULT_TRIM_THRESHOLD = 1 << 30  # bytes: up to 1 GiB free at the heap's top is kept, not returned to the kernel


def keep_freed_memory(
    mmap_threshold: int = DEFAULT_MMAP_THRESHOLD, trim_threshold: int = DEFAULT_TRIM_THRESHOLD
) -> bool:
    """Return free heap memory to the kernel (`malloc_trim(0)`), then set glibc's `M_MMAP_THRESHOLD` and
    `M_TRIM_THRESHOLD` (bytes) with `mallopt(3)` for this process.

    Affects allocations made after the call; setting either threshold also turns off glibc's dynamic adjustment of
    the mmap threshold. Returns True if glibc accepted both values, False (and logs why) on a system without glibc
    or if `mallopt` refused a value. Raises ValueError for a threshold that is not a positive number of bytes below
    2 GiB (mallopt takes a C int).
    """
    for name, value in (("mmap_threshold", mmap_threshold), ("trim_threshold", trim_threshold)):
        if not 0 < value < 1 << 31:
            raise ValueError(f"{name} must be a positive number of bytes below 2 GiB, got {value}")
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        logger.info("keep_freed_memory: not Linux with glibc (%s), malloc left as it is", platform.platform())
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.malloc_trim(0)
    accepted = [libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold), libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold)]
    if accepted != [1, 1]:
        logger.warning(
            "keep_freed_memory: mallopt refused M_MMAP_THRESHOLD=%d or M_TRIM_THRESHOLD=%d (returned %s)",
            mmap_threshold,
            trim_threshold,
            accepted,
        )
        return False
    logger.info(
        "glibc malloc keeps freed memory: M_MMAP_THRESHOLD %d MiB, M_TRIM_THRESHOLD %d MiB",
        mmap_threshold >> 20,
        trim_threshold >> 20,
    )
    return True
