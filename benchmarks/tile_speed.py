"""Throughput of overlap-tile prediction against the output tile size, per precision, and the tile
the Predictor picks by itself (its CPU memory budget), in one run.

    flock /tmp/unetseg-bench.lock .venv/bin/python benchmarks/tile_speed.py [--width 64] [--size 2048]
        [--tiles 500 772 1028 1188 1492] [--precisions bf16 fp32]

The paper network (depth 4, valid convolutions, random weights) segments one random
``--size`` x ``--size`` image once per tile size (after a warm-up on a small image). Larger tiles
recompute less of the 92-px halo but run each convolution on bigger tensors; the default budget
(``unetseg.inference.DEFAULT_CPU_BUDGET``) should land near the fastest. Prints a line per
tile and a JSON line with the CPU's flags. bf16 is only measured where the CPU has it natively.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from unetseg import runtime  # noqa: E402
from unetseg.inference import Predictor  # noqa: E402
from unetseg.models import UNet  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--tiles", type=int, nargs="+", default=[500, 772, 1028, 1188, 1492])
    ap.add_argument("--precisions", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp32"])
    args = ap.parse_args()
    torch.manual_seed(0)
    net = UNet(1, 2, depth=4, base_channels=args.width).eval()
    image = np.random.default_rng(0).random((args.size, args.size), dtype=np.float32)
    native = runtime.cpu_supports_bf16()
    results: dict[str, dict[str, float]] = {}
    for precision in [p for p in args.precisions if p == "fp32" or native]:
        predictor = Predictor(net, device="cpu", precision=precision)
        auto = int(predictor.tile_shape_for(None)[0])
        predictor.predict(image[:600, :600], tile_shape=388)  # warm-up
        times = {}
        for tile in sorted(set(args.tiles + [auto])):
            t0 = time.perf_counter()
            predictor.predict(image, tile_shape=tile)
            times[str(tile)] = round(time.perf_counter() - t0, 2)
            print(f"{precision} tile {tile}{' (auto)' if tile == auto else ''}: {times[str(tile)]:.2f} s", flush=True)
        results[precision] = {"auto_tile": auto, "seconds": times}
    print(json.dumps({"benchmark": "tile_speed", "width": args.width, "size": args.size, "results": results,
                      "threads": torch.get_num_threads(), **runtime.cpu_flags()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
