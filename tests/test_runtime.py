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


# --- precision and memory format decided by measurement -------------------------------------------

@pytest.fixture
def measured(monkeypatch):
    """Make this process's CPU look like one with native bf16 that measured ``speed``."""
    def use(speed: runtime.CpuSpeed, native: bool = True) -> None:
        monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: native)
        monkeypatch.setattr(runtime, "cpu_speed", lambda: speed)
    return use


def test_auto_picks_bf16_only_where_it_measured_clearly_faster(measured):
    import torch

    cpu = torch.device("cpu")
    measured(runtime.CpuSpeed(fp32=2.0, fp32_channels_last=1.5, bf16_channels_last=0.7))  # an AMD EPYC's kind
    assert runtime.resolve_precision("auto", cpu) == "bf16"
    measured(runtime.CpuSpeed(fp32=2.0, fp32_channels_last=1.5, bf16_channels_last=2.1))  # native flags, slower
    assert runtime.resolve_precision("auto", cpu) == "fp32"
    measured(runtime.CpuSpeed(fp32=2.0, fp32_channels_last=1.5, bf16_channels_last=1.4))  # 1.07x: not worth the rounding
    assert runtime.resolve_precision("auto", cpu) == "fp32"
    measured(runtime.CpuSpeed(fp32=2.0, fp32_channels_last=1.5, bf16_channels_last=0.1), native=False)  # never emulated
    assert runtime.resolve_precision("auto", cpu) == "fp32"
    assert runtime.resolve_precision("bf16", cpu) == "bf16"  # an explicit choice is kept


def test_fp32_training_uses_channels_last_where_it_measured_faster(measured):
    import torch

    cpu = torch.device("cpu")
    measured(runtime.CpuSpeed(fp32=1.0, fp32_channels_last=1.33))  # AVX2 Zen 3: backward slower in channels-last
    assert runtime.training_channels_last("auto", cpu, "fp32") is False
    measured(runtime.CpuSpeed(fp32=1.0, fp32_channels_last=0.88))  # an AVX-512 Xeon
    assert runtime.training_channels_last("auto", cpu, "fp32") is True
    assert runtime.training_channels_last("auto", cpu, "fp32", spatial_dims=3) is False
    assert runtime.training_channels_last(False, cpu, "fp32") is False


def test_probe_measures_every_layout_and_leaves_the_random_state_alone():
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    speed = runtime.measure_cpu_speed(size=24, repeats=1, bf16=True)
    assert torch.equal(torch.rand(3), expected)
    assert min(speed.fp32, speed.fp32_channels_last, speed.bf16_channels_last) > 0
    with torch.inference_mode():  # as a Predictor may be built
        assert runtime.measure_cpu_speed(size=24, repeats=1, bf16=False).bf16_channels_last is None

