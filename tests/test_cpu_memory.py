"""On a CPU the kit tells glibc to keep the memory a training step frees (kit.device.keep_freed_memory):
otherwise every block over 32 MiB is unmapped when freed and faulted in again, zeroed, at the next step.
An allocator setting lasts for the process, so each case runs in a child process and counts the page
faults of a 64 MiB block malloc'd and filled a second time (a training step's page faults and its speed:
scripts/bench_allocator.py, where they fell from 3.3 million a step to 18 thousand).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")

CHILD = """
import ctypes, resource, sys
from kit import device, models
if sys.argv[1] == "keep":
    print("applied", device.keep_freed_memory())
elif sys.argv[1] == "place":  # what training and prediction call on a CPU
    device.place(models.create_model("test_efficientnet", 2, pretrained=False))
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def fill():
    block = libc.malloc(64 << 20)  # 64 MiB: over glibc's largest mmap threshold, as a batch's activations
    ctypes.memset(block, 1, 64 << 20)
    libc.free(block)
fill()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
fill()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES = (64 << 20) // 4096  # a fault per 4 KiB page touched for the first time


def second_fill_faults(case: str) -> tuple[int, str]:
    output = subprocess.run(
        [sys.executable, "-c", CHILD, case], check=True, capture_output=True, text=True
    ).stdout.split()
    return int(output[-1]), " ".join(output[:-1])


def test_freed_memory_is_kept_for_the_next_step_on_a_cpu():
    default, _ = second_fill_faults("default")
    kept, printed = second_fill_faults("keep")
    placed, _ = second_fill_faults("place")
    assert printed == "applied True"
    assert default > PAGES // 2  # glibc unmapped the block and maps it again: every page faults anew
    assert kept < PAGES // 20 and placed < PAGES // 20  # the same memory again, already mapped
