"""ISBI 2012 side by side: the unetseg CPU recipe vs what a MONAI user would do in the same time.

    flock /tmp/unetseg-bench.lock .venv/bin/python benchmarks/isbi_vs_monai.py --minutes 30

Both train on sections 00-19 of ``../shared/data/isbi2012`` for the same wall-clock time (each
``--minutes``, one after the other, same threads) and predict sections 20-23 with the same
8-fold test-time augmentation (rotations x flips); both inputs use the same percentile
normalisation. Scored with the ISBI 2012 protocol (:func:`unetseg.evaluate.evaluate_isbi2012`):
pixel error, V_rand after thinning, warping error (and its splits-and-mergers part).

unetseg: the recipe in ``--config`` (a valid U-Net with the paper's weight maps and elastic
deformation); a recipe with ``schedule.fit_time_limit`` fits its learning-rate schedule to
``--minutes`` as it trains, otherwise the schedule length is set from a short speed probe
(``--ours-steps`` fixes it instead); training stops at the time limit in any case. The final weights are
scored (no model selection on 20-23).

MONAI baseline, as the issue defines it: ``BasicUNet(features=(32, 32, 64, 128, 256, 32))``,
Adam 1e-3, ``DiceCELoss``, random 256x256 crops in batches of 4 with flips and 90-degree
rotations, bf16 autocast, ``sliding_window_inference`` (overlap 0.25, Gaussian).

Cross-validation (``--cv 4 --ours-cv DIR``): ours is read from an ``unetseg cv --folds 4`` folder
of the recipe (each section predicted by the fold model that never saw it); MONAI trains the same
folds here for ``--minutes`` each; both are scored per fold and pooled over all 24 sections::

    unetseg cv --config configs/isbi2012-cpu.yaml --folds 4 --minutes 7 --out /tmp/cv
    flock /tmp/unetseg-bench.lock .venv/bin/python benchmarks/isbi_vs_monai.py --cv 4 --ours-cv /tmp/cv --minutes 7

MONAI is needed for the baseline only (``pip install -e '.[bench]'``); ``--skip-monai`` runs ours.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from unetseg import runtime  # noqa: E402
from unetseg.data import DataConfig, TargetConfig, load_dataset  # noqa: E402
from unetseg.evaluate import evaluate_isbi2012  # noqa: E402
from unetseg.cv import predict_held_out  # noqa: E402
from unetseg.inference import Predictor  # noqa: E402
from unetseg.train.config import load_train_config  # noqa: E402
from unetseg.train.setup import steps_for_budget, train_from_config  # noqa: E402

from monai_baseline import predict_monai, train_monai  # noqa: E402

KEYS = ("pixel_error", "v_rand", "warping_error", "warping_error_splits_mergers", "pixel_error_f1", "v_info")
# the quality issue's targets on 20-23 (trained on 00-19, <= 30 min): the four ranking metrics
TARGETS = {"v_rand": 0.985, "pixel_error": 0.065, "warping_error": 0.0012, "warping_error_splits_mergers": 0.0006}


def load_split(data: Path, names: set[str]):
    cfg = DataConfig(target=TargetConfig(kind="binary", foreground_value=255), weights=dataclasses.replace(DataConfig().weights, enabled=False))
    return [it for it in load_dataset(data, cfg) if it.name in names]


def score(probs: list[np.ndarray], items) -> dict:
    gt = np.stack([(it.target > 0).astype(np.uint8) * 255 for it in items])
    res = evaluate_isbi2012(np.stack(probs).astype(np.float32), gt)
    return {k: res[k]["value"] if isinstance(res[k], dict) else res[k] for k in KEYS if k in res}


# ------------------------------------------------------------------------------------- ours


def run_ours(args, val_items) -> dict:
    budget = args.minutes * 60
    cfg = load_train_config(args.config, args.overrides)
    cfg = dataclasses.replace(
        cfg,
        val_data=None,
        validation=dataclasses.replace(cfg.validation, every=0),
        # no checkpoints in the timed run unless asked for (--set checkpoint.every=N keeps them)
        checkpoint=cfg.checkpoint if any(o.startswith("checkpoint.") for o in args.overrides)
        else dataclasses.replace(cfg.checkpoint, every=10**9),
        runtime=dataclasses.replace(cfg.runtime, log_every=25),
    )
    out = Path(args.out) / "ours"
    steps = args.ours_steps
    t_setup = time.perf_counter()
    if steps is None and cfg.schedule.fit_time_limit:
        steps = cfg.schedule.steps  # the recipe fits its schedule to the time limit itself
        print(f"[ours] schedule of at most {steps} steps, fitted to {args.minutes:g} min as it runs", flush=True)
    elif steps is None:
        steps, rate = steps_for_budget(cfg, args.minutes, config_path=args.config,
                                       probe_steps=args.probe_steps, warmup=args.probe_warmup)
        print(f"[ours] speed probe: {rate:.3f} steps/s -> schedule of {steps} steps for {args.minutes:g} min", flush=True)
    cfg = dataclasses.replace(cfg, schedule=dataclasses.replace(cfg.schedule, steps=steps))
    t0 = time.perf_counter()
    result = train_from_config(cfg, out, config_path=args.config, time_limit_s=budget, progress=True)
    train_s = time.perf_counter() - t0
    print(f"[ours] {result.status} after {result.step} steps in {train_s / 60:.1f} min ({result.steps_per_s:.3f} steps/s)", flush=True)
    predictor = Predictor.from_path(out / "model-last.safetensors", device="cpu", precision="fp32", backend="torch")
    shift = predictor.card.output_shift  # estimated on the training sections (calibration.output_shift)
    if shift:
        print(f"[ours] output shift {list(shift)} px (from the training sections)", flush=True)
    t1 = time.perf_counter()
    probs = predict_held_out(predictor, val_items, "isbi2012")  # 8-fold TTA, the card's shift and post-processing
    pred_s = time.perf_counter() - t1
    res = score(probs, val_items)
    res.update(train_minutes=train_s / 60, steps=result.step, predict_s=pred_s, setup_s=t0 - t_setup, output_shift=shift)
    np.save(Path(args.out) / "ours_probs.npy", np.stack(probs))
    return res


# ------------------------------------------------------------------------------------ MONAI


def run_monai(args, train_items, val_items, tag: str | None = None) -> dict:
    model, train_s, step = train_monai(args, train_items)
    t1 = time.perf_counter()
    probs = predict_monai(model, val_items, args.monai_precision)
    pred_s = time.perf_counter() - t1
    res = score(probs, val_items)
    res.update(train_minutes=train_s / 60, steps=step, predict_s=pred_s)
    np.save(Path(args.out) / f"monai_probs{'_' + tag if tag else ''}.npy", np.stack(probs))
    if tag:
        res["probs"] = probs
    return res


def run_cv(args) -> int:
    """Both contenders by K-fold CV over 00-23: ours from an `unetseg cv` folder, MONAI trained here per fold."""
    from unetseg.cv import fold_groups
    from unetseg.io import read_image

    if args.ours_cv is None:
        raise SystemExit("--cv needs --ours-cv DIR (run `unetseg cv --folds K` of the recipe first)")
    runtime.configure_threads(args.threads)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    names = [f"{i:02d}" for i in range(24)]
    items = {it.name: it for it in load_split(Path(args.data), set(names))}
    groups = fold_groups(names, args.cv)
    print(f"ISBI 2012, {args.cv}-fold CV over 00-23; MONAI {args.minutes:g} min per fold, autocast {args.monai_precision}; "
          f"{torch.get_num_threads()} threads; native bf16 CPU: {runtime.cpu_supports_bf16()}; ours from {args.ours_cv}", flush=True)
    ours, monai, per_fold = [], [], []
    for k, held in enumerate(groups):
        folder = args.ours_cv / f"fold{k}" / "held_out"
        if sorted(p.stem for p in folder.glob("*.tif")) != held:
            raise SystemExit(f"{folder}: expected the held-out maps of {held} (same K and order as unetseg cv)")
        ours += [read_image(folder / f"{n}.tif").astype(np.float32) for n in held]
        res = run_monai(args, [items[n] for n in names if n not in held], [items[n] for n in held], tag=f"fold{k}")
        monai += list(res.pop("probs"))
        ours_fold = score(ours[-len(held):], [items[n] for n in held])
        per_fold.append({"fold": k, "held_out": held, "monai": res, "unetseg": ours_fold})
        print(json.dumps(per_fold[-1]), flush=True)
    ordered = [items[n] for g in groups for n in g]
    results = {"unetseg": score(ours, ordered), "monai": score(monai, ordered)}
    print(f"{'metric (pooled out-of-fold, 8-fold TTA)':40s}{'unetseg':>12s}{'monai':>12s}")
    for key in KEYS:
        print(f"{key:40s}{results['unetseg'][key]:12.5f}{results['monai'][key]:12.5f}")
    better = {k: (results["unetseg"][k] > results["monai"][k]) if k in ("v_rand", "v_info") else
              (results["unetseg"][k] < results["monai"][k]) for k in KEYS}
    print("unetseg ahead on:", ", ".join(k for k, v in better.items() if v) or "none")
    (Path(args.out) / "cv_results.json").write_text(json.dumps({"pooled": results, "folds": per_fold}, indent=1))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0, help="training wall-clock time of EACH method")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "isbi2012"))
    ap.add_argument("--config", default=str(REPO / "configs" / "isbi2012-cpu.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="override in our recipe (KEY=VALUE)")
    ap.add_argument("--ours-steps", type=int, default=None, help="schedule length of ours (default: from a speed probe)")
    ap.add_argument("--probe-steps", type=int, default=25)
    ap.add_argument("--probe-warmup", type=int, default=8)
    ap.add_argument("--monai-precision", default="auto", choices=["auto", "bf16", "fp32"],
                    help="autocast of the baseline (the issue's definition: bf16; auto: bf16 where this CPU measures it "
                         "faster, as for ours; emulated bf16 is ~10x slower)")
    ap.add_argument("--out", default="/tmp/isbi_vs_monai")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-monai", action="store_true")
    ap.add_argument("--skip-ours", action="store_true")
    ap.add_argument("--cv", type=int, default=0, metavar="K",
                    help="K-fold cross-validation over 00-23 instead: MONAI trains K times (--minutes each) and is "
                         "scored with --ours-cv's out-of-fold maps on the same sections")
    ap.add_argument("--ours-cv", type=Path, default=None, help="an `unetseg cv --folds K` folder of the same recipe (held-out maps)")
    args = ap.parse_args()
    args.monai_precision = runtime.resolve_precision(args.monai_precision, torch.device("cpu"))
    if args.cv:
        return run_cv(args)
    runtime.configure_threads(args.threads)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    train_names = {f"{i:02d}" for i in range(20)}
    val_names = {f"{i:02d}" for i in range(20, 24)}
    val_items = load_split(Path(args.data), val_names)
    print(f"ISBI 2012: train 00-19, evaluate 20-23 ({len(val_items)} sections); {args.minutes:g} min each; "
          f"{torch.get_num_threads()} threads; native bf16 CPU: {runtime.cpu_supports_bf16()}; MONAI autocast {args.monai_precision}", flush=True)
    results: dict[str, dict] = {}
    if not args.skip_ours:
        results["unetseg"] = run_ours(args, val_items)
    if not args.skip_monai:
        results["monai"] = run_monai(args, load_split(Path(args.data), train_names), val_items)
    print()
    names = list(results)
    print(f"{'metric (20-23, 8-fold TTA)':34s}" + "".join(f"{n:>14s}" for n in names))
    for k in KEYS + ("train_minutes", "steps", "predict_s"):
        print(f"{k:34s}" + "".join(f"{results[n].get(k, float('nan')):14.5f}" for n in names))
    if len(names) == 2:
        a, b = results["unetseg"], results["monai"]
        print(f"unetseg/monai ratios: pixel error {a['pixel_error'] / b['pixel_error']:.3f}, "
              f"1-V_rand {(1 - a['v_rand']) / max(1e-12, 1 - b['v_rand']):.3f}, warping error {a['warping_error'] / max(1e-12, b['warping_error']):.3f}")
        ahead = {k: a[k] > b[k] if k == "v_rand" else a[k] < b[k] for k in TARGETS}
        print("unetseg ahead of MONAI on:", ", ".join(k for k, v in ahead.items() if v) or "none",
              f"(all four ranking metrics: {all(ahead.values())})")
    if "unetseg" in results:
        r = results["unetseg"]
        met = {k: r[k] >= t if k == "v_rand" else r[k] <= t for k, t in TARGETS.items()}
        print("issue targets (20-23):", "; ".join(f"{k} {'>=' if k == 'v_rand' else '<='} {t}: {met[k]}" for k, t in TARGETS.items()))
    print(json.dumps({"summary": True, "results": {n: {k: results[n][k] for k in KEYS + ("steps",)} for n in names},
                      "minutes": args.minutes, **runtime.cpu_flags()}), flush=True)
    (Path(args.out) / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
