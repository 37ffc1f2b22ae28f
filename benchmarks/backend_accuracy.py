"""Does a lossy backend keep a trained ISBI model's scores? fp32, bf16 and int8 side by side.

    .venv/bin/unetseg cv --config configs/isbi2012-cpu.yaml --folds 4 --minutes 7 --out /tmp/cv
    flock /tmp/unetseg-bench.lock .venv/bin/python benchmarks/backend_accuracy.py --cv /tmp/cv

For every fold of an ``unetseg cv`` folder, the fold model predicts its held-out sections (which
it never trained on) with each backend (``torch`` fp32, ``torch`` bf16 autocast, ``compile`` at
the precision the CPU runs natively, ``int8`` calibrated on 8 tiles of the fold's *training*
sections), with the card's output shift; all held-out sections are then scored together with
the full ISBI 2012 protocol. Prints one JSON line per backend: the four ranking metrics, their
change against fp32 (the speed issue's accuracy rule: V_rand within 0.002, warping error within
0.0001), the seconds per section after the first (warm) and the first section's seconds
(compilation, calibration), with the CPU's flags.
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

from unetseg.data import DataConfig, TargetConfig, load_dataset  # noqa: E402
from unetseg.evaluate import evaluate_isbi2012  # noqa: E402
from unetseg.inference import Predictor  # noqa: E402
from unetseg.runtime import cpu_flags  # noqa: E402

KEYS = ("v_rand", "pixel_error", "warping_error", "warping_error_splits_mergers")
BACKENDS = {"fp32": ("torch", "fp32"), "bf16": ("torch", "bf16"), "compile": ("compile", "auto"), "int8": ("int8", "fp32")}


def sections(data: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (normalised image (1, Y, X), 0/255 labels) of every labelled section."""
    cfg = DataConfig(target=TargetConfig(kind="binary", foreground_value=255),
                     weights=dataclasses.replace(DataConfig().weights, enabled=False))
    return {it.name: (it.image, (np.asarray(it.target) > 0).astype(np.uint8) * 255) for it in load_dataset(data, cfg)}


def run_backend(name: str, cv: Path, data: dict, tta: bool) -> tuple[np.ndarray, np.ndarray, list[float]]:
    backend, precision = BACKENDS[name]
    maps, truth, seconds = [], [], []
    for fold in sorted(cv.glob("fold*"), key=lambda p: int(p.name[4:])):
        held = sorted(p.stem for p in (fold / "held_out").glob("*.tif"))
        train = [data[n][0] for n in sorted(data) if n not in held]
        predictor = Predictor.from_path(fold, device="cpu", precision=precision, backend=backend,
                                        calibration=train[:: max(1, len(train) // 2)][:2] if backend == "int8" else None)
        for n in held:
            t = time.perf_counter()
            maps.append(predictor.predict(data[n][0], tta=tta)[1])
            seconds.append(time.perf_counter() - t)
            truth.append(data[n][1])
    return np.stack(maps), np.stack(truth), seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cv", type=Path, required=True, help="an unetseg cv folder of an ISBI recipe")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "isbi2012")
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS), help="fp32 always runs first, as the reference")
    ap.add_argument("--tta", action="store_true", help="8-fold TTA (the cv scores use it; slower)")
    args = ap.parse_args(argv)
    if not args.data.exists():
        print(json.dumps({"skipped": f"{args.data} not found"}))
        return 0
    data = sections(args.data)
    reference: dict = {}
    for name in ["fp32"] + [b for b in args.backends if b != "fp32"]:  # fp32 first: the reference
        maps, truth, seconds = run_backend(name, args.cv, data, args.tta)
        res = evaluate_isbi2012(maps, truth)
        scores = {k: round(float(res[k]["value"]), 5) for k in KEYS}
        reference = scores if name == "fp32" else reference
        delta = {k: round(scores[k] - reference[k], 5) for k in KEYS}
        print(json.dumps({"backend": name, **scores, "change_vs_fp32": delta, "first_section_s": round(seconds[0], 2),
                          "warm_s_per_section": round(float(np.median(seconds[1:])), 3), "sections": len(seconds),
                          "tta": args.tta, **cpu_flags()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
