"""Which forward-pass backend is fastest for the paper U-Net on this CPU, and what it costs in accuracy.

The speed issue's first question, measured side by side in one process on one tile (default: the
700 x 700 input whose 516 x 516 output covers a 512 x 512 image in one piece):

* ``eager-fp32`` (the reference), ``eager-fp32-cl`` (channels-last), ``eager-bf16-cl`` (bf16
  autocast, channels-last: what ``precision: auto`` runs where bf16 is native);
* ``compiled-fp32`` / ``compiled-bf16``: ``torch.compile`` (inductor, weights frozen, static shapes);
* ``onnxruntime``: the exported graph in ONNX Runtime (fp32; needs the ``export`` extra);
* ``int8``: static post-training quantisation with PyTorch 2 export and torchao's x86 inductor
  quantizer (per-channel int8 weights, int8 activations calibrated on other tiles of the same
  kind of image), compiled by inductor: VNNI where the CPU has it (needs ``torchao``).

Each backend's first call (export, compile, calibration) and best steady forward time are printed
with its speed relative to ``eager-fp32``, and its agreement with ``eager-fp32`` on a synthetic EM
tile: largest probability difference and share of pixels whose mask (p > 0.5) agrees. With the
default random weights the agreement figures only bound the numerics; ``--model RUN`` measures
a trained model (whose width then replaces ``--width``). Ends with one JSON line with the CPU's
flags.

    .venv/bin/python benchmarks/backend_speed.py [--width 64] [--tile 700] [--repeats 3] [--backends ...]

``--predictor SIZE`` measures the product path instead: ``Predictor(network, backend=...,
precision=...).predict`` of a SIZE x SIZE synthetic EM image (overlap-tile, the tile from the
memory budget) for the Predictor's backends (``torch`` fp32, ``torch`` at ``precision: auto``,
``compile`` at ``auto``, ``int8`` calibrated on two other synthetic images), with the same
first-call / best-time / agreement columns against ``torch`` fp32.

    .venv/bin/python benchmarks/backend_speed.py --predictor 512
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch

from unetseg import runtime
from unetseg.models import UNet, load
from unetseg.synthetic import em_membranes

BACKENDS = ("eager-fp32", "eager-fp32-cl", "eager-bf16-cl", "compiled-fp32", "compiled-bf16", "onnxruntime", "int8")


def em_tiles(side: int, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` synthetic EM tiles ``(n, 1, side, side)``, scaled to [0, 1] as the card's percentiles would."""
    rng = np.random.default_rng(seed)
    tiles = [em_membranes((side, side), rng)[0].astype(np.float32) for _ in range(n)]
    return torch.from_numpy(np.stack([(t - t.min()) / max(float(t.max() - t.min()), 1e-6) for t in tiles])[:, None])


def _channels_last(net):
    return net.to(memory_format=torch.channels_last)


def build(name: str, net: torch.nn.Module, calibration: torch.Tensor):
    """A callable ``x -> logits`` for backend ``name`` (its set-up is part of the first call's time)."""
    if name == "eager-fp32":
        return net
    if name == "eager-fp32-cl":
        cl = _channels_last(copy.deepcopy(net))
        return lambda x: cl(x.contiguous(memory_format=torch.channels_last))
    if name == "eager-bf16-cl":
        cl = _channels_last(copy.deepcopy(net))

        def run(x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return cl(x.contiguous(memory_format=torch.channels_last)).float()
        return run
    if name.startswith("compiled"):
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        compiled = torch.compile(copy.deepcopy(net), dynamic=False)
        if name == "compiled-fp32":
            return compiled

        def run_bf16(x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return compiled(x).float()
        return run_bf16
    if name == "onnxruntime":
        from unetseg.inference.backends import OnnxRuntimeNetwork

        return OnnxRuntimeNetwork(net, threads=torch.get_num_threads())
    if name == "int8":
        return _int8(net, calibration)
    raise SystemExit(f"unknown backend {name}")


def _int8(net: torch.nn.Module, calibration: torch.Tensor):
    import torch._inductor.config as inductor_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    quantizer = X86InductorQuantizer()
    quantizer.set_global(get_default_x86_inductor_quantization_config())
    exported = torch.export.export(copy.deepcopy(net), (calibration[:1],)).module()
    prepared = prepare_pt2e(exported, quantizer)
    for i in range(calibration.shape[0]):
        prepared(calibration[i : i + 1])
    inductor_config.freezing = True
    return torch.compile(convert_pt2e(prepared), dynamic=False)


def measure(name: str, net, tile: torch.Tensor, calibration: torch.Tensor, repeats: int, reference):
    t = time.perf_counter()
    fn = build(name, net, calibration)
    out = fn(tile)
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(tile)
        times.append(time.perf_counter() - t)
    prob = torch.softmax(out.float(), 1)[:, -1]
    diff = None if reference is None else float((prob - reference).abs().max())
    agree = None if reference is None else float(((prob > 0.5) == (reference > 0.5)).float().mean())
    return {"first_s": round(first, 2), "best_s": round(min(times), 4), "max_prob_diff": diff, "mask_agreement": agree}, prob


PREDICTOR_BACKENDS = {"torch-fp32": ("torch", "fp32"), "torch-auto": ("torch", "auto"), "compile-auto": ("compile", "auto"),
                      "int8": ("int8", "fp32")}


def predictor_mode(net: torch.nn.Module, size: int, repeats: int) -> dict:
    """End-to-end ``Predictor.predict`` of a ``size`` x ``size`` image with each Predictor backend."""
    from unetseg.inference import Predictor

    images = em_tiles(size, 3, seed=1)[:, 0].numpy()
    image, calibration = images[0], [im[None] for im in images[1:]]
    results, reference = {}, None
    for name, (backend, precision) in PREDICTOR_BACKENDS.items():
        t = time.perf_counter()
        predictor = Predictor(net, device="cpu", precision=precision, backend=backend,
                              calibration=calibration if backend == "int8" else None)
        prob = predictor.predict(image)[-1]
        first = time.perf_counter() - t
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            predictor.predict(image)
            times.append(time.perf_counter() - t)
        reference = prob if reference is None else reference
        results[name] = {"precision": predictor.precision, "first_s": round(first, 2), "best_s": round(min(times), 4),
                         "max_prob_diff": float(np.abs(prob - reference).max()),
                         "mask_agreement": float(((prob > 0.5) == (reference > 0.5)).mean())}
        r = results[name]
        print(f"{name:13s} ({r['precision']}) first call {r['first_s']:7.2f} s   predict {r['best_s']:.3f} s   "
              f"{results['torch-fp32']['best_s'] / r['best_s']:.2f}x torch fp32   max |dp| {r['max_prob_diff']:.4f}   "
              f"mask agreement {r['mask_agreement']:.5f}", flush=True)
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=64, help="base channels of the random-weight network (the paper's: 64)")
    ap.add_argument("--model", default=None, help="a trained run folder or model file instead of random weights")
    ap.add_argument("--tile", type=int, default=700, help="input tile side (700: the 516 output that covers 512 x 512)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--calibration-tiles", type=int, default=4)
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    ap.add_argument("--predictor", type=int, default=0, metavar="SIZE", help="measure Predictor.predict of a SIZE x SIZE image per backend")
    args = ap.parse_args(argv)
    runtime.configure_threads()
    runtime.configure_allocator()
    torch.manual_seed(0)
    net = load(args.model) if args.model else UNet(1, 2, base_channels=args.width, dropout=0.0)
    net = net.eval()
    if args.predictor:
        print(f"threads {torch.get_num_threads()}  torch {torch.__version__}  cpu {runtime.cpu_flags()}", flush=True)
        results = predictor_mode(net, args.predictor, args.repeats)
        print(json.dumps({"predictor_image": args.predictor, "width": None if args.model else args.width, "model": args.model,
                          "cpu_flags": runtime.cpu_flags(), "results": results}))
        return 0
    tiles = em_tiles(args.tile, 1 + args.calibration_tiles)
    tile, calibration = tiles[:1], tiles[1:]
    flags = runtime.cpu_flags()
    print(f"threads {torch.get_num_threads()}  torch {torch.__version__}  cpu {flags}", flush=True)
    results, reference = {}, None
    with torch.inference_mode():
        for name in args.backends:
            if name == "int8":
                torch.set_grad_enabled(False)
            try:
                results[name], prob = measure(name, net, tile, calibration, args.repeats, reference)
            except ImportError as exc:
                print(f"{name:15s} skipped: {exc}", flush=True)
                continue
            if name == "eager-fp32":
                reference = prob
            base = results.get("eager-fp32", {}).get("best_s")
            r = results[name]
            speed = f"{base / r['best_s']:.2f}x eager fp32" if base else ""
            print(f"{name:15s} first call {r['first_s']:7.2f} s   forward {r['best_s']:.3f} s   {speed}   "
                  f"max |dp| {r['max_prob_diff']}   mask agreement {r['mask_agreement']}", flush=True)
    base = results["eager-fp32"]["best_s"] if "eager-fp32" in results else None
    print(json.dumps({"tile": args.tile, "width": None if args.model else args.width, "model": args.model, "cpu_flags": flags,
                      "speedup_vs_eager_fp32": {k: round(base / v["best_s"], 3) for k, v in results.items()} if base else None,
                      "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
