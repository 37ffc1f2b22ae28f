"""Training speed of the ISBI CPU recipe: steps/s with bf16 autocast vs fp32, of the two memory
formats in fp32, and of the training step through torch.compile (``runtime.compile``), in one run.

    flock /tmp/unetseg-bench.lock .venv/bin/python benchmarks/train_speed.py [--steps 30] [--config configs/isbi2012-cpu.yaml]

Each variant (fp32 contiguous, fp32 channels-last, bf16 autocast channels-last, and the faster
of the two precisions on this CPU compiled) trains
``--steps`` steps of the recipe (same data, seed, tiles) after ``--warmup`` untimed steps; the
order rotates over ``--rounds`` to even out the load of a shared machine. Prints steps/s of each
(best of the rounds), the bf16/fp32 ratio and the channels-last/contiguous ratio in fp32 (what
``runtime.channels_last: auto`` decides on).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from unetseg import runtime  # noqa: E402
from unetseg.train.config import load_train_config  # noqa: E402
from unetseg.train.setup import train_from_config  # noqa: E402


def variants() -> dict[str, tuple[str, bool, bool]]:
    """name -> (precision, channels-last, compiled); the compiled one at ``precision: auto``."""
    auto = runtime.resolve_precision("auto", torch.device("cpu"))
    return {"fp32": ("fp32", False, False), "fp32 channels-last": ("fp32", True, False),
            "bf16 channels-last": ("bf16", True, False), f"{auto} channels-last compiled": (auto, True, True)}


def timed_run(cfg, config_path: Path, variant: tuple[str, bool, bool], steps: int, warmup: int) -> float:
    precision, channels_last, compiled = variant
    rt = dataclasses.replace(cfg.runtime, precision=precision, channels_last=channels_last, compile=compiled, log_every=10**6)
    val = dataclasses.replace(cfg.validation, every=0)
    ck = dataclasses.replace(cfg.checkpoint, every=10**9)
    sch = dataclasses.replace(cfg.schedule, steps=warmup + steps + 1)
    c = dataclasses.replace(cfg, runtime=rt, validation=val, checkpoint=ck, schedule=sch, val_data=None)
    stamps: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        train_from_config(
            c,
            Path(tmp) / "run",
            config_path=config_path,
            device="cpu",
            stop_after=warmup + steps,
            on_step=lambda s, v: stamps.__setitem__(s, time.perf_counter()),
        )
    return steps / (stamps[warmup + steps] - stamps[warmup])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs" / "isbi2012-cpu.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    runtime.configure_threads(args.threads)
    cfg = load_train_config(args.config, args.overrides)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU bf16 native: {runtime.cpu_supports_bf16()}")
    print(f"recipe {args.config}: {cfg.model.arch} {cfg.model.args}, tile {cfg.tile}, batch {cfg.batch_size}")
    variant = variants()
    names = list(variant)
    compiled = next(n for n, v in variant.items() if v[2])
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            rate = timed_run(cfg, Path(args.config), variant[name], args.steps, args.warmup)
            rates[name].append(rate)
            print(f"round {r + 1} {name}: {rate:.3f} steps/s", flush=True)
    best = {name: max(v) for name, v in rates.items()}
    print(" | ".join(f"{name} {v:.3f} steps/s" for name, v in best.items()) + f" (best of {args.rounds})")
    print(f"bf16/fp32 = {best['bf16 channels-last'] / best['fp32 channels-last']:.2f}x (both channels-last); "
          f"fp32 channels-last/contiguous = {best['fp32 channels-last'] / best['fp32']:.2f}x; "
          f"compiled/eager = {best[compiled] / best[f'{variant[compiled][0]} channels-last']:.2f}x")
    print(json.dumps({"benchmark": "train_speed", "steps_per_s": {k: round(v, 3) for k, v in best.items()}, **runtime.cpu_flags()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
