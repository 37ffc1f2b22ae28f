"""``unetseg check-backend``: the accuracy rule of a lossy backend on a run's validation images."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check-backend",
        help="score int8 against fp32 on a run's validation images; `predict --backend auto` uses int8 only where it passed",
        description=(
            "Predict the run's validation images (its recipe's val_data) in fp32 and with the lossy backend (int8, "
            "calibrated on the run's training images), score both with the ISBI 2012 (semantic) or CTC SEG (instances) "
            "protocol and write RUN/backends.json. The backend passes when V_rand moves by at most 0.002 and the "
            "warping error by at most 0.0001 (SEG by 0.002)."
        ),
    )
    p.add_argument("run", help="a run folder (model.safetensors + config.yaml with val_data)")
    p.add_argument("--backend", default="int8", choices=["int8"], help="the lossy backend to check")
    p.add_argument("--tta", action="store_true", help="score with 8-fold TTA (slower)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..backend_check import RESULTS, check_backend

    entry = check_backend(args.run, args.backend, tta=args.tta)
    changes = ", ".join(f"{k} {entry['metrics'][k]:.5f} (fp32 {entry['reference'][k]:.5f})" for k in entry["tolerance"])
    verdict = "passes" if entry["passed"] else "fails"
    print(f"{args.backend} {verdict} the accuracy rule on {len(entry['images'])} validation image(s): {changes}; wrote {args.run}/{RESULTS}")
    return 0
