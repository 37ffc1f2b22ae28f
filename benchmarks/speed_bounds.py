"""What this CPU's matrix units allow the paper network: the speed issue's targets against FLOP counts.

A network's convolutions run on the same multiply-add units as a large matrix product, and on
this kind of CPU oneDNN's convolutions reach about the matmul rate and not much more (as
``benchmarks/model_speed.py`` and (3) below print), so the FLOPs a computation needs divided by the measured matmul rate of its precision is
about the least time it can take, and the ratio of two computations' FLOPs is the speed ratio
they reach at equal FLOP rates.
Printed side by side in one run:

(0) the matmul rate of this CPU at fp32, bf16 and int8 (square ``--n`` matrices, ``torch.mm`` /
    ``torch._int_mm``, best of ``--repeats``), with the CPU's flags;
(1) one 512 x 512 image with the paper network (``--width``, valid convolutions): the tiles the
    Predictor would run for it, their FLOPs, and their time at each precision's matmul rate against the
    issue's 0.30 s (AVX-512 BF16/VNNI CPUs) and 1.0 s (AVX2 CPUs);
(2) a 2048 x 2048 image against MONAI's ``sliding_window_inference`` (roi 512, overlap 0.25 /
    0.5, the padded U-Net of the same width, as ``benchmarks/predict_speed.py`` runs it): the
    windows MONAI runs (counted by calling it), their FLOPs over unetseg's for output tiles of
    each ``--tiles`` side, for the whole image as one tile (the fewest FLOPs any tiling of the
    valid network spends) and with no halo at all (the padded network's FLOPs per pixel over the
    image), against the issue's 1.5x / 3.3x;
(3) one training step of the ISBI CPU recipe (``--config``: its network and tile, forward and
    backward): its FLOPs, the steps/s the bf16 and fp32 matmul rates would allow, and the time
    and share of the matmul rate its forward and its backward pass reach here (at ``precision:
    auto`` and the memory format training picks; a plain sum as the loss, no data loading).

FLOPs are counted by ``unetseg.models.model_flops`` (``torch.utils.flop_counter`` on the meta
device, multiply and add counted separately). Batch norm, pooling and activations are not
counted, which leaves out well under 1 % of MONAI's work. The matmuls are
``benchmarks/model_speed.py``'s. Ends with one JSON line.

    flock /tmp/unetseg-bench.lock .venv/bin/python benchmarks/speed_bounds.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402
from model_speed import matmul_case  # noqa: E402


from unetseg import runtime, tiling  # noqa: E402
from unetseg.models import UNet, build, model_flops  # noqa: E402
from unetseg.sizes import input_shape_for  # noqa: E402

PRECISIONS = ("fp32", "bf16", "int8")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.int8}


def matmul_rate(precision: str, n: int, repeats: int) -> float:
    """Best multiply-add rate (FLOP/s, or OP/s for int8) of one ``n x n`` matrix product."""
    run, flops = matmul_case(n, DTYPES[precision], torch.device("cpu"))
    run()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return flops / best


def tiled_flops(net: torch.nn.Module, shape, tile: int) -> tuple[float, int]:
    """FLOPs of unetseg's overlap-tile plan for an image of ``shape`` with output tiles of ``tile``."""
    plan = tiling.plan_tiles(shape, tile, depth=net.depth, padding=net.padding)
    cache: dict = {}
    total = 0.0
    for t in plan:
        if t.in_shape not in cache:
            cache[t.in_shape] = model_flops(net, t.in_shape)[0]
        total += cache[t.in_shape]
    return total, len(plan)


def monai_windows(size: int, roi: int, overlap: float) -> int:
    """How many windows MONAI's sliding window runs on a ``size`` x ``size`` image (by calling it)."""
    from monai.inferers import sliding_window_inference

    calls = []

    def count(x):
        calls.append(x.shape[0])
        return torch.zeros((x.shape[0], 1, *x.shape[2:]))

    with torch.inference_mode():
        sliding_window_inference(torch.zeros(1, 1, size, size), (roi, roi), 1, count, overlap=overlap, mode="constant")
    return sum(calls)


def image_512(net: torch.nn.Module, rates: dict, targets: tuple[float, float]) -> dict:
    """(1): FLOPs of a 512 x 512 image in one tile and their time at each precision's matmul rate."""
    tile = 516 if net.padding == "valid" else 512
    flops, n = tiled_flops(net, (512, 512), tile)
    at_rate = {p: flops / rates[p] for p in PRECISIONS}
    print(f"(1) 512x512, width {net.config['base_channels']}: {n} tile(s) {input_shape_for((tile, tile), net.depth, net.padding)} -> "
          f"{tile}x{tile}, {flops / 1e9:.0f} GFLOP; at the matmul rate " + ", ".join(f"{p} {at_rate[p]:.2f} s" for p in PRECISIONS)
          + f"; issue: <= {targets[0]:.2f} s with AVX-512 BF16/VNNI, <= {targets[1]:.2f} s with AVX2 only", flush=True)
    return {"gflop": round(flops / 1e9, 1), "at_matmul_rate_s": {p: round(v, 3) for p, v in at_rate.items()}}


def against_monai(net: torch.nn.Module, size: int, tiles: list[int]) -> dict:
    """(2): MONAI's window FLOPs over unetseg's tile FLOPs on a ``size`` x ``size`` image."""
    padded = UNet(net.config["in_channels"], net.config["num_classes"], base_channels=net.config["base_channels"],
                  padding="same", norm="batch", dropout=0.0)
    per_window = model_flops(padded, (512, 512))[0]
    monai = {ov: monai_windows(size, 512, ov) * per_window for ov in (0.25, 0.5)}
    ours = {str(t): tiled_flops(net, (size, size), t) for t in tiles}
    ours["one tile"] = tiled_flops(net, (size, size), size + 2**net.depth)
    ours["no halo"] = (per_window * (size / 512) ** 2, 0)
    out = {}
    for name, (flops, n) in ours.items():
        r = {str(ov): monai[ov] / flops for ov in monai}
        out[name] = {"tiles": n, "gflop": round(flops / 1e9), "flop_ratio": {k: round(v, 3) for k, v in r.items()}}
        print(f"(2) {size}^2 output tiles {name} ({n}): {flops / 1e9:.0f} GFLOP; MONAI/unetseg FLOPs "
              f"{r['0.25']:.2f}x at overlap 0.25, {r['0.5']:.2f}x at 0.5 (issue: 1.5x / 3.3x)", flush=True)
    print(f"    MONAI: {monai[0.25] / per_window:.0f} / {monai[0.5] / per_window:.0f} windows of {per_window / 1e9:.0f} GFLOP; "
          "'no halo': the padded network's FLOPs per pixel over the image, a bound no valid tiling reaches", flush=True)
    return out


def timed_passes(net: torch.nn.Module, x: torch.Tensor, precision: str, repeats: int) -> tuple[float, float]:
    """Best forward and best backward time of ``net`` on ``x`` (a plain sum as the loss)."""
    device = torch.device("cpu")
    fwd, bwd = float("inf"), float("inf")
    for _ in range(repeats + 1):  # the first round builds oneDNN's primitives
        net.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        with runtime.autocast(device, precision):
            y = net(x)
        t1 = time.perf_counter()
        y.float().sum().backward()
        t2 = time.perf_counter()
        fwd, bwd = min(fwd, t1 - t0), min(bwd, t2 - t1)
    return fwd, bwd


def training_step(config: Path, rates: dict, repeats: int) -> dict:
    """(3): FLOPs of one training step of the recipe, the steps/s the matmul rates allow, and the
    rate its forward and backward passes reach (``precision: auto``, the recipe's memory format)."""
    from unetseg.train.config import load_train_config

    cfg = load_train_config(config)
    net = build(cfg.model.arch, {**cfg.model.args, "in_channels": 1, "num_classes": 2})
    in_shape = input_shape_for(tuple(cfg.tile), net.depth, net.padding)
    total = model_flops(net, in_shape, backward=True)[0] * cfg.batch_size
    forward = model_flops(net, in_shape)[0] * cfg.batch_size
    ceil = {p: rates[p] / total for p in ("fp32", "bf16")}
    precision = runtime.resolve_precision("auto", torch.device("cpu"))
    fmt = torch.channels_last if runtime.training_channels_last("auto", torch.device("cpu"), precision) else torch.contiguous_format
    net = net.train().to(memory_format=fmt)
    x = torch.rand(cfg.batch_size, 1, *in_shape).contiguous(memory_format=fmt)
    t_fwd, t_bwd = timed_passes(net, x, precision, repeats)
    achieved = {"forward": forward / t_fwd, "backward": (total - forward) / t_bwd}
    key = "bf16" if precision == "bf16" else "fp32"
    print(f"(3) training step of {config.name} ({cfg.batch_size} x {in_shape}, forward + backward): {total / 1e9:.1f} GFLOP "
          f"({forward / 1e9:.1f} forward); at most {ceil['bf16']:.1f} steps/s in bf16, {ceil['fp32']:.1f} in fp32", flush=True)
    print(f"    measured at precision {precision}: forward {t_fwd * 1e3:.0f} ms ({achieved['forward'] / rates[key]:.0%} of the {key} "
          f"matmul rate), backward {t_bwd * 1e3:.0f} ms ({achieved['backward'] / rates[key]:.0%}) -> {1 / (t_fwd + t_bwd):.2f} "
          "steps/s for the network alone", flush=True)
    return {"gflop": round(total / 1e9, 2), "forward_gflop": round(forward / 1e9, 2),
            "max_steps_s": {p: round(v, 2) for p, v in ceil.items()}, "precision": precision,
            "forward_s": round(t_fwd, 4), "backward_s": round(t_bwd, 4),
            "share_of_matmul_rate": {k: round(v / rates[key], 3) for k, v in achieved.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=64, help="base channels of the paper network (the paper's: 64)")
    ap.add_argument("--tiles", type=int, nargs="+", default=[772, 1028, 1188], help="(2): unetseg output tile sides")
    ap.add_argument("--size", type=int, default=2048, help="(2): side of the image compared with MONAI")
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "isbi2012-cpu.yaml", help="(3): the training recipe")
    ap.add_argument("--n", type=int, default=4096, help="(0): side of the square matrices")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    runtime.configure_threads()
    flags = runtime.cpu_flags()
    rates = {p: matmul_rate(p, args.n, args.repeats) for p in PRECISIONS}
    print(f"threads {torch.get_num_threads()}  torch {torch.__version__}  {flags}", flush=True)
    print("(0) matmul rate: " + ", ".join(f"{p} {rates[p] / 1e9:.0f} G{'OP' if p == 'int8' else 'FLOP'}/s" for p in PRECISIONS), flush=True)
    net = UNet(1, 2, base_channels=args.width, dropout=0.0)
    result = {
        "matmul_gflop_s": {p: round(v / 1e9, 1) for p, v in rates.items()},
        "image_512": image_512(net, rates, (0.30, 1.0)),
        "vs_monai": against_monai(net, args.size, args.tiles),
        "training_step": training_step(args.config, rates, args.repeats),
        "width": args.width,
        "cpu_flags": flags,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
