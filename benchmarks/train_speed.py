"""Training speed of the ISBI CPU recipe: steps/s with bf16 autocast vs fp32, of the two memory
formats in fp32, of the training step through torch.compile (``runtime.compile``), and of the
recipe fed pre-made tiles (what making the data costs the step rate), and with the Skeleton
Recall term's skeletons made in the training step instead of by the loader, in one run.

    flock /tmp/unetseg-bench.lock .venv/bin/python benchmarks/train_speed.py [--steps 30] [--config configs/isbi2012-cpu.yaml]

Each variant (fp32 contiguous, fp32 channels-last, bf16 autocast channels-last, and the faster
of the two precisions on this CPU compiled) trains
``--steps`` steps of the recipe (same data, seed, tiles) after ``--warmup`` untimed steps; the
order rotates over ``--rounds`` to even out the load of a shared machine. Prints steps/s of each
(best of the rounds), the share of its time the loop waited for data (``data_wait`` of the run's
``metrics.jsonl``: loading not hidden behind the step), the bf16/fp32 ratio and the channels-last/contiguous ratio in fp32 (what
``runtime.channels_last: auto`` decides on).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from unetseg import runtime  # noqa: E402
from unetseg.train.config import load_train_config  # noqa: E402
from unetseg.train.setup import train_from_config  # noqa: E402


class Variant(NamedTuple):
    precision: str
    channels_last: bool
    compiled: bool = False
    premade: bool = False  # the recipe's tiles made before the clock starts
    workers: int | None = None  # runtime.num_workers (None: the recipe's)
    skeletons_in_step: bool = False  # the Skeleton Recall term's skeletons made in the training step, not by the loader


def variants() -> dict[str, Variant]:
    """The variants by name; the compiled one, the one fed pre-made tiles and the one loading in a
    worker process at ``precision: auto``."""
    auto = runtime.resolve_precision("auto", torch.device("cpu"))
    return {"fp32": Variant("fp32", False), "fp32 channels-last": Variant("fp32", True), "bf16 channels-last": Variant("bf16", True),
            f"{auto} channels-last compiled": Variant(auto, True, compiled=True),
            f"{auto} channels-last, pre-made tiles": Variant(auto, True, premade=True),
            f"{auto} channels-last, one loader process": Variant(auto, True, workers=1),
            f"{auto} channels-last, skeletons in the step": Variant(auto, True, skeletons_in_step=True)}


class PremadeTiles(torch.utils.data.Dataset):
    """The recipe's own tiles, drawn before the clock starts and served from memory (index mod
    ``count``): the training loop without the cost of making its data."""

    def __init__(self, tiles, count: int = 16):
        self.items = [tiles[i] for i in range(count)]

    def __len__(self) -> int:
        return 10**12

    def __getitem__(self, index: int):
        return self.items[index % len(self.items)]


@contextlib.contextmanager
def patched_tiles(premade: bool, skeletons_in_step: bool):
    """While open, ``train_from_config`` trains on :class:`PremadeTiles` of the tiles it would draw
    (``premade``), or on tiles without skeletons, so that the loss makes them in the step."""
    if not (premade or skeletons_in_step):
        yield
        return
    from unetseg.train import setup

    real = setup.TileDataset
    if premade:
        setup.TileDataset = lambda *a, **kw: PremadeTiles(real(*a, **kw))
    else:
        setup.TileDataset = lambda *a, **kw: real(*a, **{**kw, "skeleton_classes": ()})
    try:
        yield
    finally:
        setup.TileDataset = real


def timed_run(cfg, config_path: Path, variant: Variant, steps: int, warmup: int) -> tuple[float, float]:
    """Steps/s of the timed steps and the share of their time the loop waited for data."""
    workers = cfg.runtime.num_workers if variant.workers is None else variant.workers
    rt = dataclasses.replace(cfg.runtime, precision=variant.precision, channels_last=variant.channels_last, compile=variant.compiled,
                             log_every=1, num_workers=workers)
    val = dataclasses.replace(cfg.validation, every=0)
    ck = dataclasses.replace(cfg.checkpoint, every=10**9)
    sch = dataclasses.replace(cfg.schedule, steps=warmup + steps + 1)
    c = dataclasses.replace(cfg, runtime=rt, validation=val, checkpoint=ck, schedule=sch, val_data=None)
    stamps: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp, patched_tiles(variant.premade, variant.skeletons_in_step):
        train_from_config(
            c,
            Path(tmp) / "run",
            config_path=config_path,
            device="cpu",
            stop_after=warmup + steps,
            on_step=lambda s, v: stamps.__setitem__(s, time.perf_counter()),
        )
        lines = [json.loads(t) for t in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    waits = [r["data_wait"] / r["steps_per_s"] for r in lines if r.get("kind") == "train" and r["step"] > warmup]
    seconds = stamps[warmup + steps] - stamps[warmup]
    return steps / seconds, sum(waits) / seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs" / "isbi2012-cpu.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--only", nargs="+", default=None, help="run only these variants (names as printed)")
    args = ap.parse_args()
    runtime.configure_threads(args.threads)
    cfg = load_train_config(args.config, args.overrides)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU bf16 native: {runtime.cpu_supports_bf16()}")
    t0 = time.perf_counter()
    probe = runtime.cpu_speed()  # what precision/channels_last: auto decide from, once per process
    print(f"CPU probe ({time.perf_counter() - t0:.2f} s): bf16 {probe.bf16_speedup:.2f}x fp32, fp32 channels-last "
          f"{probe.channels_last_speedup:.2f}x contiguous -> precision: auto = {runtime.resolve_precision('auto', torch.device('cpu'))}, "
          f"fp32 channels_last: auto = {runtime.training_channels_last('auto', torch.device('cpu'), 'fp32')}")
    print(f"recipe {args.config}: {cfg.model.arch} {cfg.model.args}, tile {cfg.tile}, batch {cfg.batch_size}")
    variant = variants()
    names = list(variant)
    compiled = next(n for n, v in variant.items() if v.compiled)
    premade = next(n for n, v in variant.items() if v.premade)
    process = next(n for n, v in variant.items() if v.workers)
    in_step = next(n for n, v in variant.items() if v.skeletons_in_step)
    names = [n for n in names if not args.only or n in args.only]
    rates: dict[str, list[float]] = {name: [] for name in names}
    waits: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            rate, wait = timed_run(cfg, Path(args.config), variant[name], args.steps, args.warmup)
            rates[name].append(rate)
            waits[name].append(wait)
            print(f"round {r + 1} {name}: {rate:.3f} steps/s, waiting for data {100 * wait:.1f} % of the time", flush=True)
    best = {name: max(v) for name, v in rates.items() if v}
    wait_best = {name: waits[name][rates[name].index(best[name])] for name in names}
    print(" | ".join(f"{name} {v:.3f} steps/s" for name, v in best.items()) + f" (best of {args.rounds})")
    print(" | ".join(f"{name} {sum(v) / len(v):.3f} steps/s" for name, v in rates.items() if v) + f" (mean of {args.rounds})")
    ratios = {"bf16/fp32 (both channels-last)": ("bf16 channels-last", "fp32 channels-last"),
              "fp32 channels-last/contiguous": ("fp32 channels-last", "fp32"),
              "compiled/eager": (compiled, f"{variant[compiled][0]} channels-last"),
              "pre-made tiles/real pipeline (the cost of making the data)": (premade, f"{variant[premade][0]} channels-last"),
              "pre-made tiles/loading in one worker process": (premade, process),
              "skeletons made by the loader/in the step": (f"{variant[in_step][0]} channels-last", in_step)}
    print("; ".join(f"{k} = {best[a] / best[b]:.3f}x" for k, (a, b) in ratios.items() if a in best and b in best))
    print("waiting for data (share of the step time, same runs): " + " | ".join(f"{n} {100 * v:.1f} %" for n, v in wait_best.items()))
    print(json.dumps({"benchmark": "train_speed", "steps_per_s": {k: round(v, 3) for k, v in best.items()},
                      "data_wait": {k: round(v, 4) for k, v in wait_best.items()}, **runtime.cpu_flags()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
