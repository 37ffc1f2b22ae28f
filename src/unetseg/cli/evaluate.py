"""``unetseg evaluate``: score predictions against ground truth with a challenge protocol."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import InputError
from ..evaluate import PROTOCOLS, check_label_inputs, evaluate_to_folder, format_table, load_stack, stack_names


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score predictions against ground truth (ISBI 2012, CTC SEG, Dice/IoU, object F1/AP)",
        description=(
            "Evaluate predictions against ground truth. PRED and GT are each a single image, a "
            "multi-page TIFF or a folder of slices. isbi2012: PRED is a float map in [0,1], high "
            "inside cells; GT the 0/255 labels. ctc/instances: instance label images. binary: masks "
            "or probability maps. Writes metrics.json, metrics.csv and report.html to --out."
        ),
    )
    p.add_argument("--pred", required=True, help="predictions: image, multi-page TIFF or folder (ctc: a NN_RES folder of maskTTT.tif)")
    p.add_argument("--gt", required=True, help="ground truth: image, multi-page TIFF or folder (ctc: NN_GT or NN_GT/SEG)")
    p.add_argument("--protocol", required=True, choices=PROTOCOLS)
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--image", help="raw images shown under the contours in the report (same layout as --pred)")
    p.add_argument("--no-report", action="store_true", help="write metrics.json and metrics.csv only")
    p.add_argument("--max-report-images", type=int, default=12, help="draw figures for at most this many images (default 12)")
    p.set_defaults(func=run)


def _inputs(args: argparse.Namespace):
    """``(pred, gt, names)``: a CTC results folder paired frame by frame with its NN_GT, else two stacks."""
    from ..ctc import ground_truth_folder, is_results_folder, load_results

    if args.protocol == "ctc" and is_results_folder(args.pred) and ground_truth_folder(args.gt) is not None:
        return load_results(args.pred, args.gt)
    pred, gt = load_stack(args.pred), load_stack(args.gt)
    return pred, gt, stack_names(args.pred, len(pred))


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    pred, gt, names = _inputs(args)
    if pred.shape != gt.shape:
        raise InputError(f"{args.pred} and {args.gt} differ in shape: {pred.shape} vs {gt.shape} (Z, Y, X)")
    check_label_inputs(args.protocol, pred, gt, pred_name=str(args.pred), gt_name=str(args.gt))
    images = load_stack(args.image) if (args.image and not args.no_report) else None
    if images is not None and images.shape != pred.shape:
        raise InputError(f"{args.image}: shape {images.shape} differs from the predictions' {pred.shape} (Z, Y, X)")
    if args.max_report_images < 0:
        raise InputError(f"--max-report-images must be >= 0, got {args.max_report_images}")
    out = Path(args.out)
    metrics = evaluate_to_folder(
        args.protocol,
        pred,
        gt,
        out,
        images=images,
        names=names,
        report=not args.no_report,
        max_report_images=args.max_report_images,
        progress=True,
        extra={"inputs": {"pred": str(args.pred), "gt": str(args.gt), "image": args.image}},
    )
    print(format_table(metrics))
    written = ["metrics.json", "metrics.csv"] + ([] if args.no_report else ["report.html"])
    print(f"wrote {', '.join(str(out / w) for w in written)} in {time.perf_counter() - start:.1f} s")
    return 0
