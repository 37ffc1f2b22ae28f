"""Process-level runtime settings: the allocator tuning that keeps activations out of page faults."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from unetseg import runtime

_CHILD = """
import resource, sys, torch
from unetseg import runtime
applied = runtime.configure_allocator()
def churn():
    for _ in range(16):  # activations of 16 layers, each allocated, written and freed
        torch.ones(16 << 20)  # 64 MiB
churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn()
print(int(applied), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's"
)


def _faults(tune: str) -> tuple[int, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env["UNETSEG_TUNE_MALLOC"] = tune
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return int(applied), int(faults)


@glibc_only
def test_tuned_allocator_reuses_large_buffers_without_page_faults():
    applied, faults = _faults("1")
    assert applied == 1
    # 16 x 64 MiB = 262k pages of 4 KiB if each buffer came from a fresh mmap; reused, at most
    # the odd buffer is faulted in again (heap fragmentation by small allocations in between).
    assert faults < 3 * 16384


@glibc_only
def test_untuned_allocator_page_faults_every_large_buffer():
    """The control: without the setting the same loop faults every page in again."""
    applied, faults = _faults("0")
    assert applied == 0
    assert faults > 200_000


def test_configure_allocator_is_a_cached_bool():
    assert runtime.configure_allocator() is runtime.configure_allocator()
    assert isinstance(runtime.configure_allocator(), bool)
