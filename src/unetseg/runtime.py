"""Device, precision and thread choices shared by training and inference."""

from __future__ import annotations

import contextlib
import functools
import os

import torch

from .errors import ConfigError


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``None`` into a device.

    ``"auto"`` and ``None`` pick CUDA when available, else the CPU.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        return device
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device {device!r}: expected auto, cpu or cuda[:N]") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: CUDA is not available on this machine")
    return dev


@functools.cache
def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (AVX-512 BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


CPU_FLAGS = ("avx512_bf16", "amx_bf16", "avx512_vnni", "avx512f", "avx2")


def cpu_flags(cpuinfo: str | None = None) -> dict:
    """The CPU's model name and the flags that decide speed here (bf16, VNNI, AVX-512, AVX2).

    ``cpuinfo`` is the text of ``/proc/cpuinfo`` (read when ``None``; empty where there is none).

    Examples
    --------
    >>> info = cpu_flags("flags : fpu avx2 avx512f")
    >>> info["avx512f"], info["avx512_bf16"], info["cpu"]
    (True, False, 'unknown')
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
                cpuinfo = fh.read()
        except OSError:
            cpuinfo = ""
    lines = cpuinfo.splitlines()
    flags = set(next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), []))
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "unknown")
    return {"cpu": model, **{f: f in flags for f in CPU_FLAGS}}


def resolve_precision(precision: str, device: torch.device) -> str:
    """Resolve ``"auto"`` to ``"bf16"`` where it is fast and to ``"fp32"`` elsewhere.

    On CUDA, ``auto`` means bf16 autocast when the GPU supports it, else fp16.

    Examples
    --------
    >>> resolve_precision("fp32", torch.device("cpu"))
    'fp32'
    """
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ConfigError(f"precision {precision!r}: expected auto, fp32, bf16 or fp16")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_supports_bf16() else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast context for ``precision`` (``fp32``, and ``int8`` whose network casts itself, give a no-op context)."""
    if precision in ("fp32", "int8"):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def memory_format(device: torch.device, spatial_dims: int = 2) -> torch.memory_format:
    """channels_last for 2D convolutions (faster with oneDNN and cuDNN), contiguous otherwise."""
    if spatial_dims == 2:
        return torch.channels_last
    return torch.channels_last_3d if spatial_dims == 3 else torch.contiguous_format


def training_channels_last(setting: bool | str, device: torch.device, precision: str, spatial_dims: int = 2) -> bool:
    """Whether training runs in the channels-last memory format.

    ``"auto"``: yes on CUDA and under bf16/fp16 autocast, no for fp32 on a CPU. oneDNN's
    *backward* convolutions in fp32 are slower in channels-last on the development CPU: one
    training step of the ISBI CPU recipe takes 1.33x as long as with contiguous tensors
    (``benchmarks/train_speed.py``), although the forward pass alone is faster in channels-last.

    Examples
    --------
    >>> training_channels_last("auto", torch.device("cpu"), "fp32")
    False
    >>> training_channels_last("auto", torch.device("cpu"), "bf16")
    True
    >>> training_channels_last(True, torch.device("cpu"), "fp32", spatial_dims=1)
    False
    """
    if spatial_dims not in (2, 3):
        return False
    if setting == "auto":
        return device.type == "cuda" or precision in ("bf16", "fp16")
    return bool(setting)


def configure_threads(num_threads: int | None = None) -> int:
    """Set PyTorch intra-op threads (default: the CPUs this process may use) and return it."""
    if num_threads is None:
        num_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(max(1, int(num_threads)))
    return torch.get_num_threads()


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


@functools.cache
def configure_allocator() -> bool:
    """Keep large CPU buffers in the heap between uses instead of returning them to the OS.

    glibc serves every allocation above ``M_MMAP_THRESHOLD`` (at most 32 MiB by its dynamic
    rule) with a fresh ``mmap`` and unmaps it on ``free``. A U-Net allocates and frees tens of
    megabytes per layer, so every layer of every tile page-faults its activations back in: on the
    2-core development CPU that cost 25-40 % of overlap-tile inference time and about 3 % of
    training time. Raising the mmap threshold to
    1 GiB and the trim threshold to 2 GiB makes freed activations reusable, the remedy Intel's
    PyTorch guides reach with jemalloc or tcmalloc. Peak resident memory is unchanged; memory
    freed at the end is kept by the process (up to 2 GiB) for the next tile.

    Applied once per process, on Linux with glibc only; skipped when ``UNETSEG_TUNE_MALLOC=0``,
    when the user already set glibc's ``MALLOC_*`` variables, or when another allocator is
    preloaded. Returns whether the setting was applied.

    Examples
    --------
    >>> isinstance(configure_allocator(), bool)
    True
    """
    if os.environ.get("UNETSEG_TUNE_MALLOC", "1") == "0":
        return False
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")):
        return False
    if "malloc" in os.environ.get("LD_PRELOAD", ""):  # jemalloc / tcmalloc: already a caching allocator
        return False
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1
    ok = libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1) == 1 and ok
    return ok
