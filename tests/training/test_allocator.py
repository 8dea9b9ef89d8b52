"""`training.allocator.keep_freed_memory`: glibc keeps a freed large tensor for reuse (no page faults for it again)."""

import json
import platform
import subprocess
import sys

import pytest

from vaswani_transformer.training.allocator import keep_freed_memory


# Run in a fresh interpreter: training tests call the training script in this process, which applies the setting.
_PROBE = """
import json, os, resource, sys, torch
from vaswani_transformer.training.allocator import keep_freed_memory

def resident():  # bytes of resident memory, /proc/self/statm
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def probe(nbytes):  # (bytes still resident after a written tensor of nbytes is freed, minor faults of 16 later ones)
    before = resident()
    torch.ones(nbytes // 4)
    kept = resident() - before
    # Warm-up: a small allocation made between two tensors may take the start of the freed top chunk, so that the
    # next tensor grows the heap above it; the tensors then alternate between the regions already faulted in (seen
    # with up to two such growths, so four warm-ups). A training step reaches that steady state in its first steps.
    for _ in range(4):
        torch.ones(nbytes // 4)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(16):
        torch.ones(nbytes // 4)
    return kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults

nbytes = int(sys.argv[1])
default = probe(nbytes)
accepted = keep_freed_memory()
print(json.dumps({"default": default, "accepted": accepted, "kept": probe(nbytes), "page": resource.getpagesize()}))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_keeps_a_freed_64_mib_tensor_for_reuse():
    """By default glibc unmaps a freed 64 MiB tensor (above its largest dynamic mmap threshold, 32 MiB); with the
    setting the memory stays resident and, once warm, later tensors of that size reuse it without page faults."""
    nbytes = 64 << 20
    result = json.loads(
        subprocess.run([sys.executable, "-c", _PROBE, str(nbytes)], capture_output=True, text=True, check=True).stdout
    )
    pages = nbytes // result["page"]
    assert result["default"][0] < nbytes // 4, result  # returned to the kernel on free
    assert result["accepted"]
    kept_bytes, faults = result["kept"]
    assert kept_bytes > nbytes // 2, result  # still resident after the free: kept for reuse
    # and reused: 16 later tensors fault in under a quarter of what they fault in with malloc's defaults, which map
    # and fault every one afresh (in 60 trial runs: 0 new pages with the setting, 16 x 16,385 without).
    assert result["default"][1] > 15 * pages, result
    assert faults < result["default"][1] // 4, result


@pytest.mark.parametrize("bad", [{"mmap_threshold": 0}, {"trim_threshold": 1 << 31}, {"mmap_threshold": -5}])
def test_keep_freed_memory_rejects_thresholds_outside_a_c_int(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        keep_freed_memory(**bad)
