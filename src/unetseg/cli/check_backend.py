"""``unetseg check-backend``: each backend's accuracy and speed on a run's validation images, and the choice."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from ..backend_check import CANDIDATES

    p = sub.add_parser(
        "check-backend",
        help="measure each backend against fp32 on a run's validation images; `predict --backend auto` uses the fastest that passes",
        description=(
            "Predict the run's validation images (its recipe's val_data) in fp32 and with each candidate backend (eager bf16 "
            "where the CPU has it, torch.compile, int8 calibrated on the run's training images, ONNX Runtime), score each "
            "with the ISBI 2012 (semantic) or CTC SEG (instances) protocol, time each warm, and write this machine's record "
            "to RUN/backends.json. A backend passes when V_rand moves by at most 0.002 and the warping error by at most "
            "0.0001 (SEG by 0.002); the choice is the fastest that passes."
        ),
    )
    p.add_argument("run", help="a run folder (model.safetensors + config.yaml with val_data)")
    p.add_argument("--backends", nargs="+", default=None, choices=list(CANDIDATES), metavar="NAME",
                   help=f"candidates to measure (default: those that run here of {', '.join(CANDIDATES)})")
    p.add_argument("--tta", action="store_true", help="score with 8-fold TTA (slower)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..backend_check import RESULTS, check_backends

    record = check_backends(args.run, args.backends, tta=args.tta)
    for name, entry in record["candidates"].items():
        metrics = ", ".join(f"{k} {entry['metrics'][k]:.5f}" for k in record["tolerance"])
        verdict = "reference" if name == "torch-fp32" else ("passes" if entry["passed"] else "fails")
        print(f"{name:12s} {verdict:9s} {metrics}; {entry['seconds']:.3f} s per image warm ({entry['first_seconds']:.1f} s first pass)")
    print(f"chosen: {record['choice']} (fastest within the accuracy rule on this CPU); wrote {args.run}/{RESULTS}")
    return 0
