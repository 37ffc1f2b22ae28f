"""How fast the paper U-Net runs on this machine, against the machine's own matmul peak.

Measures, in one run and interleaved round-robin (so that noise from other processes hits every
variant alike):

* fp32 and bf16 matrix-multiply FLOP/s (square matmuls: the practical peak of this CPU/GPU);
* forward and forward+backward throughput of ``UNet(1, 2)`` (the paper network, 31M parameters)
  on one 572x572 tile in fp32, fp32 + channels_last, and bf16 autocast + channels_last;

and prints each variant's achieved FLOP/s as a fraction of the matmul figure of its precision.
FLOPs are counted by ``torch.utils.flop_counter`` (multiply and add counted separately).

Usage::

    .venv/bin/python benchmarks/model_speed.py [--size 572] [--repeats 3] [--device cpu]

It ends with one JSON line (ratios as plain numbers) for tracking over time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from unetseg.models import UNet, model_flops
from unetseg.runtime import configure_threads, cpu_supports_bf16, resolve_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_case(n: int, dtype: torch.dtype, device: torch.device):
    """One ``n x n`` matrix product at ``dtype`` (``torch.int8``: ``torch._int_mm``, int32
    accumulation, VNNI where the CPU has it) and its multiply-add count."""
    if dtype == torch.int8:
        a = torch.randint(-128, 127, (n, n), device=device, dtype=dtype)
        b = torch.randint(-128, 127, (n, n), device=device, dtype=dtype)
        product = torch._int_mm
    else:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        product = torch.mm

    def run() -> None:
        product(a, b)

    return run, 2.0 * n**3


def _unet_step(model: torch.nn.Module, x: torch.Tensor, backward: bool):
    if backward:

        def step() -> None:
            model.zero_grad(set_to_none=True)
            model(x).float().square().mean().backward()
    else:

        def step() -> None:
            with torch.no_grad():
                model(x)

    return step


def unet_case(size: int, variant: str, backward: bool, device: torch.device):
    """One call of the paper U-Net; FLOPs counted on the meta device (no compute)."""
    torch.manual_seed(0)
    model = UNet(1, 2, dropout=0.0).to(device).train(backward)
    x = torch.randn(1, 1, size, size, device=device)
    if variant != "fp32":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    step = _unet_step(model, x, backward)

    def run() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=variant == "bf16+cl"):
            step()

    return run, model_flops(model, (size, size), backward=backward)[0]


def measure(cases: dict, repeats: int, device: torch.device, once: frozenset = frozenset()) -> dict[str, float]:
    """Median seconds per call of each case, interleaved round-robin after one warm-up each.

    Cases named in ``once`` are timed in the first round only (emulated bf16 is very slow).
    """
    for run, _ in cases.values():
        run()  # warm-up: oneDNN primitive creation, allocator
        _sync(device)
    times: dict[str, list[float]] = {k: [] for k in cases}
    for i in range(repeats):
        for name, (run, _) in cases.items():
            if i and name in once:
                continue
            _sync(device)
            t0 = time.perf_counter()
            run()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=572, help="input tile side (572 in the paper)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--matmul-n", type=int, default=4096)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = resolve_device(args.device)
    threads = configure_threads() if device.type == "cpu" else None
    native_bf16 = device.type == "cuda" or cpu_supports_bf16()
    if not native_bf16:
        # Without AVX-512 BF16 / AMX, PyTorch emulates bf16: a 4096^3 matmul would take ~20 min.
        print("note: this CPU has no native bf16 (no avx512_bf16 or amx_bf16 flag in /proc/cpuinfo); bf16 is "
              "emulated here, so bf16 figures are measured on a smaller matmul and the bf16 targets cannot be met "
              "on this machine. unetseg's precision 'auto' picks fp32 on such CPUs.")
    bf16_n = args.matmul_n if native_bf16 else min(args.matmul_n, 512)

    cases = {
        "matmul fp32": matmul_case(args.matmul_n, torch.float32, device),
        "matmul bf16": matmul_case(bf16_n, torch.bfloat16, device),
    }
    for backward in (False, True):
        for variant in ("fp32", "fp32+cl", "bf16+cl"):
            kind = "fwd+bwd" if backward else "fwd"
            cases[f"unet {kind} {variant}"] = unet_case(args.size, variant, backward, device)
    slow = frozenset() if native_bf16 else frozenset(k for k in cases if "bf16" in k and "unet" in k)
    secs = measure(cases, args.repeats, device, once=slow)
    rate = {k: cases[k][1] / secs[k] for k in cases}
    peak = {"fp32": rate["matmul fp32"], "bf16": rate["matmul bf16"]}

    print(f"device {device}" + (f", {threads} threads" if threads else "") + f", UNet(1, 2) on {args.size}x{args.size}, median of {args.repeats}")
    print(f"{'case':<24}{'s/call':>10}{'GFLOP/s':>10}{'of matmul peak':>16}")
    for name in cases:
        precision = "bf16" if "bf16" in name else "fp32"
        frac = rate[name] / peak[precision]
        print(f"{name:<24}{secs[name]:>10.3f}{rate[name] / 1e9:>10.1f}{frac:>15.0%} ({precision})")
    out_px = (args.size - 184) ** 2
    summary = {
        "device": str(device),
        "native_bf16": native_bf16,
        "matmul_bf16_over_fp32": rate["matmul bf16"] / rate["matmul fp32"],
        "fwd_bf16cl_frac_of_bf16_matmul": rate["unet fwd bf16+cl"] / peak["bf16"],
        "fwd_bf16cl_speedup_vs_fp32": secs["unet fwd fp32"] / secs["unet fwd bf16+cl"],
        "fwd_fp32cl_speedup_vs_fp32": secs["unet fwd fp32"] / secs["unet fwd fp32+cl"],
        "fwdbwd_bf16cl_speedup_vs_fp32": secs["unet fwd+bwd fp32"] / secs["unet fwd+bwd bf16+cl"],
        "fwd_bf16cl_output_mpx_per_s": out_px / secs["unet fwd bf16+cl"] / 1e6,
    }
    print(f"bf16+channels_last forward: {summary['fwd_bf16cl_frac_of_bf16_matmul']:.0%} of bf16 matmul FLOP/s "
          f"(target >= 80%), {summary['fwd_bf16cl_speedup_vs_fp32']:.2f}x fp32 forward (target >= 1.8x)")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}))


if __name__ == "__main__":
    main()
