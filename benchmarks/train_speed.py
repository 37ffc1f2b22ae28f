"""Training speed of the ISBI CPU recipe: steps/s with bf16 autocast vs fp32, in one run.

    flock /tmp/unetseg-bench.lock .venv/bin/python benchmarks/train_speed.py [--steps 30] [--config configs/isbi2012-cpu.yaml]

Each precision trains ``--steps`` steps of the recipe (same data, seed, tiles) after
``--warmup`` untimed steps; the order alternates over ``--rounds`` to even out the load of a
shared machine. Prints steps/s of each and the bf16/fp32 ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
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


def timed_run(cfg, config_path: Path, precision: str, steps: int, warmup: int) -> float:
    rt = dataclasses.replace(cfg.runtime, precision=precision, log_every=10**6)
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
    rates: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for r in range(args.rounds):
        order = ("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32")
        for prec in order:
            rate = timed_run(cfg, Path(args.config), prec, args.steps, args.warmup)
            rates[prec].append(rate)
            print(f"round {r + 1} {prec}: {rate:.3f} steps/s")
    fp32 = max(rates["fp32"])
    bf16 = max(rates["bf16"])
    print(f"fp32 {fp32:.3f} steps/s | bf16 {bf16:.3f} steps/s | bf16/fp32 = {bf16 / fp32:.2f}x (best of {args.rounds})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
