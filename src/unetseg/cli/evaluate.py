"""``unetseg evaluate``: score predictions against ground truth with a challenge protocol."""

from __future__ import annotations

import argparse
import time

from ..evaluate import PROTOCOLS, format_table, isbi_error_maps, load_stack, run_protocol, stack_names, write_metrics
from ..errors import InputError


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
    p.add_argument("--pred", required=True, help="predictions: image, multi-page TIFF or folder")
    p.add_argument("--gt", required=True, help="ground truth: image, multi-page TIFF or folder")
    p.add_argument("--protocol", required=True, choices=PROTOCOLS)
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--image", help="raw images shown under the contours in the report (same layout as --pred)")
    p.add_argument("--no-report", action="store_true", help="write metrics.json and metrics.csv only")
    p.add_argument("--max-report-images", type=int, default=12, help="draw figures for at most this many images (default 12)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    start = time.perf_counter()
    pred = load_stack(args.pred)
    gt = load_stack(args.gt)
    if pred.shape != gt.shape:
        raise InputError(f"{args.pred} and {args.gt} differ in shape: {pred.shape} vs {gt.shape} (Z, Y, X)")
    images = load_stack(args.image) if (args.image and not args.no_report) else None
    if images is not None and images.shape != pred.shape:
        raise InputError(f"{args.image}: shape {images.shape} differs from the predictions' {pred.shape} (Z, Y, X)")
    metrics = run_protocol(args.protocol, pred, gt, progress=True)
    metrics["inputs"] = {"pred": str(args.pred), "gt": str(args.gt), "image": args.image}
    out = Path(args.out)
    json_path, csv_path = write_metrics(out, metrics)
    report = None
    if not args.no_report:
        from ..report import write_report

        error_maps, th = None, None
        if args.protocol == "isbi2012":
            th = metrics["warping_error_splits_mergers"]["threshold"]
            n = min(len(pred), args.max_report_images)
            error_maps = isbi_error_maps(pred[:n], gt[:n], th)
        elif args.protocol == "binary":
            th = metrics["dice"]["threshold"]
        elif args.protocol == "instances":
            th = metrics["f1"]["threshold"]
        report = write_report(
            out,
            metrics,
            images,
            gt,
            pred,
            names=stack_names(args.pred, len(pred)),
            error_maps=error_maps,
            pred_threshold=th,
            title=f"unetseg evaluate ({args.protocol})",
            max_images=args.max_report_images,
        )
    print(format_table(metrics))
    print(f"wrote {json_path}, {csv_path}" + (f", {report}" if report else "") + f" in {time.perf_counter() - start:.1f} s")
    return 0
