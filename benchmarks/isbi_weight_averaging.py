"""Does averaging the weights of the last part of training help the ISBI 2012 recipe?

    flock /tmp/unetseg-bench.lock .venv/bin/python -u benchmarks/isbi_vs_monai.py --skip-monai \\
        --minutes 28 --set checkpoint.every=50 --set checkpoint.keep_last=40 --out RUNS
    .venv/bin/python -u benchmarks/isbi_weight_averaging.py --run RUNS/ours

The run keeps a checkpoint every 50 steps. This script scores, with the ISBI 2012 protocol on
sections 20-23 (8-fold TTA, the output shift estimated on the training sections 00-19 for each
weight set as training does), the final weights and averages of the checkpoints of the last part
of training: uniform means of the last K checkpoints (stochastic weight averaging) and
exponentially weighted ones (what an exponential moving average of the weights with that decay
would hold, sampled every 50 steps). Batch-norm statistics are averaged like the weights;
``--bn-refresh N`` also scores each average with its batch-norm statistics recomputed on N
augmented training tiles instead (what stochastic weight averaging does).

The averages are chosen here on 20-23, so the best row of this table is an optimistic estimate;
it decides what a recipe uses, and only a fresh run of that recipe measures it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from unetseg.models import load_with_config  # noqa: E402
from unetseg.train.batchnorm import recompute_statistics  # noqa: E402
from unetseg.train.calibrate import calibrate_model  # noqa: E402
from unetseg.train.checkpoint import list_checkpoints, read_checkpoint  # noqa: E402
from unetseg.train.config import load_train_config  # noqa: E402
from unetseg.train.validate import predict_probs  # noqa: E402

TRAIN = {f"{i:02d}" for i in range(20)}
VAL = {"20", "21", "22", "23"}


def average_states(states: list[dict[str, torch.Tensor]], weights: np.ndarray) -> dict[str, torch.Tensor]:
    """Weighted mean of floating-point tensors; other tensors (counters) from the last state."""
    w = np.asarray(weights, dtype=np.float64) / np.sum(weights)
    out = {}
    for key, last in states[-1].items():
        if last.is_floating_point():
            out[key] = sum(float(wi) * s[key].double() for wi, s in zip(w, states)).to(last.dtype)
        else:
            out[key] = last
    return out


def training_tiles(run: Path, data: Path, model: torch.nn.Module, n: int, *, tiles: str = "augmented", seed: int = 12345) -> list[torch.Tensor]:
    """``n`` input tiles of the run's training split, drawn as its recipe draws them: ``augmented``
    as it trains on them, ``plain`` crops around the same centres (what training's batch-norm refresh
    uses), or ``geometric``: the recipe's augmentation without its intensity part (brightness,
    contrast, gamma, noise)."""
    import dataclasses

    from unetseg.data import TileDataset

    if tiles not in ("augmented", "plain", "geometric"):
        raise ValueError(f"tiles={tiles!r}: expected augmented, plain or geometric")
    from unetseg.train.setup import load_split as load_train_split

    cfg = load_train_config(run / "config.yaml")
    split = dataclasses.replace(cfg.train_data, path=str(data))
    items = load_train_split(split, cfg, None, "train_data").items
    out_shape = tuple(cfg.tile)
    samp = cfg.sampling
    augment = cfg.augment if samp.augment else None
    if augment is not None and tiles == "geometric":
        augment = dataclasses.replace(augment, brightness_p=0.0, contrast_p=0.0, gamma_p=0.0, noise_p=0.0)
    ds = TileDataset(items, model.input_shape_for(out_shape), out_shape, augment=augment,
                     foreground_bias=samp.foreground_bias, border_bias=samp.border_bias,
                     border_threshold=samp.border_threshold, seed=seed)
    ds = ds.unaugmented() if tiles == "plain" else ds
    return [ds[i]["image"][None] for i in range(n)]


def main() -> int:
    from isbi_vs_monai import load_split, score

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="run folder with checkpoints every 50 steps")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "isbi2012"))
    ap.add_argument("--uniform", type=int, nargs="+", default=[2, 4, 8, 16], help="K: mean of the last K checkpoints")
    ap.add_argument("--ema", type=float, nargs="+", default=[0.995, 0.998], help="decays of the exponential averages")
    ap.add_argument("--bn-refresh", type=int, default=0, help="also score with batch-norm statistics from N training tiles")
    args = ap.parse_args()
    data = Path(args.data)
    if not (data / "labels").is_dir():
        print(f"no ISBI 2012 data at {data}; nothing to do")
        return 0
    run = Path(args.run)
    found = list_checkpoints(run / "checkpoints")
    if not found:
        print(f"{run}/checkpoints: no checkpoint; train with --set checkpoint.every=50 --set checkpoint.keep_last=40")
        return 1
    torch.set_num_threads(2)
    steps = np.array([s for s, _ in found], dtype=np.float64)
    states = [read_checkpoint(p)[0] for _, p in found]
    model, meta = load_with_config(run / "model-last.safetensors")
    saved_state = {k: v.clone() for k, v in model.state_dict().items()}
    calib = load_train_config(run / "config.yaml").calibration
    train_items = load_split(data, TRAIN)
    val_items = sorted(load_split(data, VAL), key=lambda it: it.name)
    print(f"{run}: {len(found)} checkpoints, steps {int(steps[0])}..{int(steps[-1])}")

    # (name, checkpoint weights or None for the saved model, recompute batch-norm statistics)
    candidates: list[tuple[str, np.ndarray | None, bool]] = [("final weights", np.eye(len(states))[-1], False)]
    if meta["card"].training.averaged_steps is not None:  # trained with averaging: its saved average too
        candidates.append((f"saved average of {meta['card'].training.averaged_steps} steps", None, False))
    for k in args.uniform:
        if 1 < k <= len(states):
            w = np.zeros(len(states))
            w[-k:] = 1.0
            candidates.append((f"uniform, last {k} (from step {int(steps[-k])})", w, False))
    for d in args.ema if len(states) > 1 else ():
        candidates.append((f"exponential, decay {d}", d ** (steps[-1] - steps), False))

    print(f"{'weights':<38} {'shift':>14} {'pixel error':>11} {'V_rand':>7} {'warping':>8} {'s+m':>8} {'PE(1-F1)':>8}")
    tiles = training_tiles(run, data, model, args.bn_refresh) if args.bn_refresh else []
    if tiles:
        candidates += [(f"{name}, BN from {len(tiles)} tiles", w, True) for name, w, _ in candidates]
    for name, w, refresh in candidates:
        t0 = time.perf_counter()
        model.load_state_dict(saved_state if w is None else average_states(states, w))
        model.eval()
        if refresh:
            recompute_statistics(model, tiles)
        shift, _ = calibrate_model(model, train_items, calib, device=torch.device("cpu"))
        probs = [predict_probs(model, it.image, tta=True, device=torch.device("cpu"), precision="fp32", output_shift=shift)[1]
                 for it in val_items]
        res = score(probs, val_items)
        print(f"{name:<38} {str(list(shift)):>14} {res['pixel_error']:>11.4f} {res['v_rand']:>7.4f} "
              f"{res['warping_error']:>8.5f} {res['warping_error_splits_mergers']:>8.5f} {res['pixel_error_f1']:>8.4f}"
              f"   ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
