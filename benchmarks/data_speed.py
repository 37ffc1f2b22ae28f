"""Data pipeline speed: weight maps, one augmented training sample, and loading hidden behind training.

Prints three figures and a final JSON line:

1. the paper's weight map of a 512x512 label image with 100+ instances (target < 100 ms),
2. one augmented 572x572 training tile (elastic + rotation + gray values, labels, weight map and
   mask resampled too) on ONE core (target < 30 ms),
3. side by side in this run: the same training loop fed by the real pipeline (TileDataset +
   the training loader, unetseg.data.train_loader, with background workers) and fed pre-made tensors; the pipeline loop must run at
   >= 0.9x the speed of the pre-made one (loading hidden behind compute).

Run it under the shared lock so two benchmarks never compete::

    flock /tmp/unetseg-bench.lock .venv/bin/python benchmarks/data_speed.py

Uses ``../shared/data`` (DSB 2018 sample for the weight map, ISBI 2012 for training tiles) when
present and synthetic data otherwise.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from unetseg.augment import AugmentConfig  # noqa: E402
from unetseg.data import LabeledImage, TileDataset, load_dataset, train_loader  # noqa: E402
from unetseg.io import read_image  # noqa: E402
from unetseg.models import UNet  # noqa: E402
from unetseg.weights import carve_borders, weight_map  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def synthetic_instances(rng: np.random.Generator, n: int = 120, shape=(512, 512)) -> np.ndarray:
    lab = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for i in range(1, n + 1):
        cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        r = rng.integers(6, 16)
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    return lab


def bench_weight_map(repeats: int) -> dict:
    mask = SHARED / "dsb2018-stardist-sample" / "mask2d.tif"
    if mask.is_file():
        lab, source = read_image(mask).astype(np.int32), "dsb2018 mask2d.tif"
    else:
        lab, source = synthetic_instances(np.random.default_rng(0)), "synthetic disks"
    carved, _ = carve_borders(lab)
    n = len(np.unique(carved)) - 1
    ms = median_ms(lambda: weight_map(carved), repeats)
    out = {"ms": ms, "instances": n, "shape": list(lab.shape), "source": source}
    isbi = SHARED / "isbi2012" / "labels" / "00.png"
    if isbi.is_file():  # large cells: bigger windows per instance
        from unetseg.weights import instances_from_mask

        inst = instances_from_mask(read_image(isbi) == 255)
        out["isbi_ms"] = median_ms(lambda: weight_map(inst), repeats)
        out["isbi_instances"] = int(inst.max())
    return out


def training_images(rng: np.random.Generator) -> tuple[list[LabeledImage], str]:
    isbi = SHARED / "isbi2012"
    if isbi.is_dir():
        return load_dataset(isbi), "isbi2012"
    images = []
    for i in range(4):
        inst = synthetic_instances(rng, 80)
        carved, _ = carve_borders(inst)
        img = (carved > 0).astype(np.float32)[None] + rng.normal(0, 0.2, (1, 512, 512)).astype(np.float32)
        images.append(LabeledImage(f"syn{i}", img, (carved > 0).astype(np.int64), weight_map(carved), np.zeros((512, 512), bool), carved))
    return images, "synthetic"


def bench_sample(images: list[LabeledImage], repeats: int) -> dict:
    torch.set_num_threads(1)
    cfg = AugmentConfig(
        elastic_p=1.0, rotation_p=1.0, scale_p=0.0, shift_p=1.0, flip_p=0.5,
        brightness_p=1.0, contrast_p=1.0, gamma_p=1.0, noise_p=1.0,
    )  # fmt: skip
    ds = TileDataset(images, (572, 572), (388, 388), augment=cfg)
    rng = np.random.default_rng(0)
    ms = median_ms(lambda: ds.sample(rng), repeats)
    return {"ms": ms, "input": [572, 572], "output": [388, 388], "threads": torch.get_num_threads()}


def bench_loop(images, args, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = UNet(1, 2, base_channels=args.base_channels).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.99)
    in_shape = (args.tile, args.tile)
    out_shape = tuple(model.output_shape(in_shape))
    total = args.warmup + args.rounds * args.steps
    ds = TileDataset(images, in_shape, out_shape, augment=AugmentConfig(), samples_per_epoch=total * args.batch, seed=1)

    def step(batch) -> None:
        x = batch["image"].to(device, non_blocking=True)
        y = batch["target"].to(device, non_blocking=True)
        w = batch["weight"].to(device, non_blocking=True)
        m = batch["mask"].to(device, non_blocking=True)
        logits = model(x)
        loss = (torch.nn.functional.cross_entropy(logits, y, reduction="none") * w * m).sum() / m.sum().clamp(min=1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    # Pre-made tensors: the same kind of batches, made before the clock starts.
    premade_ds = TileDataset(images, in_shape, out_shape, augment=AugmentConfig(), seed=2)
    premade = list(train_loader(premade_ds, batch_size=args.batch, start=0, stop=args.steps))
    loader = train_loader(ds, batch_size=args.batch, start=0, stop=total, num_workers=args.workers, prefetch_depth=args.prefetch)
    it = iter(loader)
    for _ in range(args.warmup):  # start workers, warm caches and allocator in both paths
        step(next(it))
        step(premade[0])
    t_pre, t_pipe = 0.0, 0.0
    for _ in range(args.rounds):
        t = time.perf_counter()
        for b in premade:
            step(b)
        t_pre += time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(args.steps):
            step(next(it))
        t_pipe += time.perf_counter() - t
    del it, loader
    n = args.rounds * args.steps
    return {
        "premade_s_per_step": t_pre / n,
        "pipeline_s_per_step": t_pipe / n,
        "ratio": t_pre / t_pipe,
        "steps": n,
        "batch": args.batch,
        "tile": [args.tile, args.tile],
        "base_channels": args.base_channels,
        "workers": args.workers,
        "train_threads": torch.get_num_threads(),
        "device": str(device),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--tile", type=int, default=572)
    ap.add_argument("--base-channels", type=int, default=None, help="U-Net width (default: 64 on GPU, 8 on CPU)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--workers", type=int, default=None, help="loader worker processes (default: 1 on CPU, 6 on GPU)")
    ap.add_argument("--prefetch", type=int, default=2)
    ap.add_argument("--train-threads", type=int, default=None, help="torch threads of the training loop (default: cores - workers)")
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu")
    gpu = device.type == "cuda"
    args.base_channels = args.base_channels or (64 if gpu else 8)
    args.workers = args.workers if args.workers is not None else (6 if gpu else 1)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

    wm = bench_weight_map(args.repeats)
    print(f"weight map: {wm['ms']:.1f} ms for a {wm['shape'][0]}x{wm['shape'][1]} label image with {wm['instances']} instances ({wm['source']}); target < 100 ms")
    if "isbi_ms" in wm:
        print(f"  (for reference: ISBI 2012 labels/00.png, {wm['isbi_instances']} large 4-connected cells: {wm['isbi_ms']:.1f} ms)")
    images, source = training_images(np.random.default_rng(0))
    sm = bench_sample(images, max(args.repeats, 20))
    print(f"augmented sample: {sm['ms']:.1f} ms per 572x572 tile (elastic + rotation + flips + gray values + noise, labels/weight/mask to 388x388) on 1 core; target < 30 ms")
    torch.set_num_threads(max(1, args.train_threads or (cores - args.workers)))
    lp = bench_loop(images, args, device)
    print(
        f"training loop ({source}, U-Net base {lp['base_channels']}, {args.tile}px tiles, batch {args.batch}, {device}, "
        f"{lp['train_threads']} training thread(s), {args.workers} loader worker(s), {cores} cores): "
        f"pre-made tensors {lp['premade_s_per_step'] * 1000:.0f} ms/step, real pipeline {lp['pipeline_s_per_step'] * 1000:.0f} ms/step, "
        f"speed ratio {lp['ratio']:.3f}; target >= 0.9"
    )
    result = {
        "benchmark": "data_speed",
        "weight_map": wm,
        "augmented_sample": sm,
        "training_loop": lp,
        "cores": cores,
        "pass": {"weight_map_lt_100ms": wm["ms"] < 100, "sample_lt_30ms": sm["ms"] < 30, "loop_ratio_ge_0.9": lp["ratio"] >= 0.9},
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
