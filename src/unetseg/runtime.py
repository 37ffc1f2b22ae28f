"""Device, precision and thread choices shared by training and inference."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import statistics
import time
from dataclasses import dataclass

import torch

from .errors import ConfigError

log = logging.getLogger(__name__)


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


BF16_MIN_SPEEDUP = 1.2
"""How much faster than fp32 bf16 autocast must run to be chosen by ``precision: auto`` on a CPU:
it rounds activations to 8 mantissa bits, so it has to pay for itself."""
CHANNELS_LAST_MIN_SPEEDUP = 1.05
"""How much faster channels-last must run for fp32 training to use it under ``channels_last: auto``."""


@dataclass(frozen=True)
class CpuSpeed:
    """Seconds per forward and backward pass of a small convolution stack on this CPU.

    Measured by :func:`measure_cpu_speed`; ``bf16_channels_last`` is None where the CPU has no
    native bf16 (emulated bf16 runs about ten times slower than fp32, so it is not timed).

    Examples
    --------
    >>> speed = CpuSpeed(fp32=2.0, fp32_channels_last=1.6, bf16_channels_last=1.0)
    >>> round(speed.bf16_speedup, 2), round(speed.channels_last_speedup, 2)
    (1.6, 1.25)
    >>> CpuSpeed(fp32=1.0, fp32_channels_last=1.1).bf16_speedup
    0.0
    """

    fp32: float
    fp32_channels_last: float
    bf16_channels_last: float | None = None

    @property
    def bf16_speedup(self) -> float:
        """The faster fp32 layout's time over bf16's (0 where bf16 was not measured)."""
        if self.bf16_channels_last is None:
            return 0.0
        return min(self.fp32, self.fp32_channels_last) / self.bf16_channels_last

    @property
    def channels_last_speedup(self) -> float:
        """fp32 contiguous time over fp32 channels-last time."""
        return self.fp32 / self.fp32_channels_last


def _probe_network() -> torch.nn.Module:
    """A few layers shaped like the U-Net's: 3x3 convolutions, pooling and an up-convolution."""
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(16, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3), nn.ReLU(), nn.ConvTranspose2d(64, 32, 2, stride=2))


def measure_cpu_speed(*, size: int = 128, repeats: int = 5, bf16: bool | None = None) -> CpuSpeed:
    """Time a forward and backward pass of a small U-Net-like stack in fp32 (contiguous and
    channels-last) and, where the CPU has native bf16 (or ``bf16`` is True), in bf16 autocast
    channels-last, at the current thread count; the median of ``repeats`` after two warm-up
    passes, the layouts interleaved so that a change of machine speed affects all alike.

    Native bf16 flags do not make bf16 fast: on a 2-core AMD EPYC with AVX-512 BF16 the bf16
    matmul rate is 2.2x the fp32 rate (``benchmarks/speed_bounds.py``); on a 2-core Intel Xeon
    with the same flags and no AMX it is 0.56x (``benchmarks/model_speed.py``), and bf16 autocast
    trains the ISBI CPU recipe at 0.71x the fp32 step rate (``benchmarks/train_speed.py``).
    Which CPU is which can only be measured. The global random state is left untouched.

    Examples
    --------
    >>> speed = measure_cpu_speed(size=32, repeats=1, bf16=False)
    >>> speed.fp32 > 0 and speed.fp32_channels_last > 0 and speed.bf16_channels_last is None
    True
    """
    bf16 = cpu_supports_bf16() if bf16 is None else bf16
    cases = {"fp32": (False, torch.contiguous_format), "fp32_channels_last": (False, torch.channels_last)}
    if bf16:
        cases["bf16_channels_last"] = (True, torch.channels_last)
    with torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.enable_grad():
        torch.manual_seed(0)
        net, x = _probe_network(), torch.randn(1, 16, size, size)
        times: dict[str, list[float]] = {k: [] for k in cases}
        for i in range(repeats + 2):
            for name, (low, fmt) in cases.items():
                net, xf = net.to(memory_format=fmt), x.to(memory_format=fmt)
                t = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=low):
                    out = net(xf)
                out.float().sum().backward()
                if i >= 2:
                    times[name].append(time.perf_counter() - t)
    return CpuSpeed(**{k: statistics.median(v) for k, v in times.items()})


@functools.cache
def cpu_speed() -> CpuSpeed:
    """:func:`measure_cpu_speed` once per process (``benchmarks/train_speed.py`` prints its time), at the thread count of
    the first call."""
    speed = measure_cpu_speed()
    log.info("CPU speed probe: bf16 autocast %.2fx fp32, fp32 channels-last %.2fx contiguous",
             speed.bf16_speedup, speed.channels_last_speedup)
    return speed


def cpu_precision(speed: CpuSpeed) -> str:
    """``precision: auto`` on a CPU that measured ``speed``: bf16 where it runs at least
    :data:`BF16_MIN_SPEEDUP` times as fast as fp32, else fp32.

    Examples
    --------
    >>> cpu_precision(CpuSpeed(fp32=2.0, fp32_channels_last=1.8, bf16_channels_last=0.9))
    'bf16'
    >>> cpu_precision(CpuSpeed(fp32=2.0, fp32_channels_last=1.5, bf16_channels_last=2.1))
    'fp32'
    """
    return "bf16" if speed.bf16_speedup >= BF16_MIN_SPEEDUP else "fp32"


def resolve_precision(precision: str, device: torch.device) -> str:
    """Resolve ``"auto"`` to ``"bf16"`` where it is fast and to ``"fp32"`` elsewhere.

    On CUDA, ``auto`` means bf16 autocast when the GPU supports it, else fp16. On a CPU it means
    bf16 where the CPU has native bf16 *and* :func:`cpu_speed` measured it clearly faster than
    fp32 (:func:`cpu_precision`).

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
    return cpu_precision(cpu_speed()) if cpu_supports_bf16() else "fp32"


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

    ``"auto"``: yes on CUDA and under bf16/fp16 autocast; for fp32 on a CPU, yes where
    :func:`cpu_speed` measured channels-last at least :data:`CHANNELS_LAST_MIN_SPEEDUP` times as
    fast as contiguous tensors. oneDNN's fp32 *backward* convolutions decide it, and they differ
    between CPUs: one training step of the ISBI CPU recipe took 1.33x as long in channels-last on
    an AVX2 AMD Zen 3 and 0.88x as long on an Intel Xeon with AVX-512 (``benchmarks/train_speed.py``).

    Examples
    --------
    >>> training_channels_last("auto", torch.device("cpu"), "bf16")
    True
    >>> training_channels_last(False, torch.device("cpu"), "bf16")
    False
    >>> training_channels_last(True, torch.device("cpu"), "fp32", spatial_dims=1)
    False
    """
    if spatial_dims not in (2, 3):
        return False
    if setting != "auto":
        return bool(setting)
    if device.type == "cuda" or precision in ("bf16", "fp16"):
        return True
    return spatial_dims == 2 and cpu_speed().channels_last_speedup >= CHANNELS_LAST_MIN_SPEEDUP


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
