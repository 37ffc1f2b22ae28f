"""``unetseg predict``: segment images of any size with a trained model (overlap-tile)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from ..errors import ConfigError, InputError
from ..io import IMAGE_SUFFIXES, list_images
from ..omezarr import label_image_path, ngff_multiscale
from ..store import is_zarr_path

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="segment images (files, folders, stacks) with a trained model",
        description="Overlap-tile segmentation of images of any size, out of core for TIFF/npy/zarr.",
    )
    p.add_argument("--model", required=True, action="append",
                   help="run folder, model .safetensors file, bioimage.io .zip exported by unetseg, or a `unetseg cv` folder (its fold models are ensembled); "
                        "repeat to ensemble several models (mean probability)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders of images, stacks, zarr arrays")
    p.add_argument("--out", required=True, help="output folder (created if missing); writes OUT/NAME.tif")
    p.add_argument("--tile", type=int, default=None, help="largest output tile side (default: from the memory budget)")
    p.add_argument("--tta", action="store_true", help="average over the 8 rotations/flips")
    p.add_argument("--output", default=None, choices=["prob", "mask", "labels"],
                   help="probabilities (default), mask, or instance labels (the only output of --format ctc)")
    p.add_argument("--threshold", type=float, default=None, help="foreground threshold for mask/labels (default: the model card's, 0.5)")
    p.add_argument("--split", default=None, choices=["none", "distance", "border"],
                   help="labels: watershed split of touching objects (default: the model card's postprocess)")
    p.add_argument("--rois", action="store_true", help="labels: also write OUT/NAME_rois.zip, one ImageJ ROI per object (Fiji's ROI Manager)")
    p.add_argument("--min-size", type=int, default=None, help="labels: remove objects smaller than this many pixels (default: the card's)")
    p.add_argument("--edge-min-size", type=int, default=None, metavar="PIXELS",
                   help="labels: remove objects touching the image's edge smaller than this (cells cut by the frame; 0 = off; default: the card's)")
    p.add_argument("--fill-holes", type=int, default=None, metavar="PIXELS",
                   help="2-class models: fill dark structures of the foreground map smaller than this (area closing; 0 = off; default: the card's)")
    p.add_argument("--agglomerate", type=float, default=None, metavar="AFFINITY",
                   help="2-class models: close the foreground map's boundaries, merging regions whose boundary's median "
                        "probability is above this (waterz; 0 = off; default: the card's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch", type=int, default=1, help="tiles per forward pass")
    p.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16"],
                   help="autocast precision (default fp32; with --backend auto, what the run's check chose)")
    p.add_argument("--backend", default="auto", choices=["torch", "compile", "int8", "onnxruntime", "auto"],
                   help="forward pass: PyTorch; torch.compile (inductor, compiles once per tile shape); int8 (CPU, quantised "
                        "after calibration on the run's training images, or the first inputs; needs the fast extra); ONNX Runtime "
                        "(CPU, fp32; needs the export extra); auto (default): the fastest backend within the accuracy rule that "
                        "`unetseg check-backend RUN` measured on this CPU, else PyTorch in fp32")
    p.add_argument("--channel", type=int, default=None, metavar="K",
                   help="single-channel model, multi-channel image: segment channel K (0-based)")
    p.add_argument("--format", default="tif", choices=["tif", "zarr", "npy", "ome-zarr", "ctc"],
                   help="output file format; ome-zarr: NAME.ome.zarr, an NGFF multiscale pyramid (labels of an OME-Zarr input: its label image INPUT/labels/unetseg); ctc: Cell Tracking Challenge results, INPUT sequence folders NN/ (tTTT.tif) "
                        "give OUT/NN_RES/maskTTT.tif (uint16 instance labels)")
    p.add_argument("--no-output-shift", action="store_true",
                   help="ignore the output shift calibrated in training (the model card's output_shift)")
    p.add_argument("--dask-scheduler", default=None, metavar="ADDRESS", help="segment with Dask: 'threads' or a distributed scheduler address")
    p.set_defaults(func=run)


def _calibration(predictor, models: list[Path], files: list[Path], channel: int | None) -> list:
    """What int8 calibrates on: the run's training images where they can be read (as its accuracy
    check did), else the first inputs (a model file holds no images)."""
    from ..backend_check import training_images
    from ..errors import UnetsegError
    from ..inference.files import calibration_images

    if len(models) == 1 and Path(models[0]).is_dir() and (Path(models[0]) / "config.yaml").is_file():
        try:
            return training_images(models[0])
        except UnetsegError as exc:
            log.info("int8 calibrates on the inputs: the run's training images cannot be read (%s)", exc)
    return calibration_images(predictor, files[:2], channel=channel)


def _collect(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if is_zarr_path(path):
            files.append(path)
        elif path.is_dir():
            found = list_images(path) + sorted(p for p in path.iterdir() if p.suffix.lower() == ".zarr")
            if not found:
                raise InputError(f"{path}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise InputError(f"{path}: file not found")
    return files


def _output_name(path: Path, fmt: str) -> str:
    name = path.name.rstrip("/")
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".png", ".jpeg", ".jpg", ".npy", ".ome.zarr", ".zarr"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return f"{name}.{fmt}"


def _label_image(image: Path) -> Path:
    """Labels of an OME-Zarr input go beside their source, as its NGFF label image."""
    if not os.access(image, os.W_OK):
        raise InputError(f"{image}: --format ome-zarr writes the labels into this OME-Zarr image's labels/ group, "
                         "and the folder is not writable; copy it, or use --format tif")
    return label_image_path(image)


def _output_kind(args: argparse.Namespace) -> str:
    if args.format == "ctc" and args.output not in (None, "labels"):
        raise ConfigError(f"--format ctc writes instance labels; --output {args.output} cannot be written as CTC results")
    return args.output or ("labels" if args.format == "ctc" else "prob")


def _targets(args: argparse.Namespace, output: str) -> tuple[list[Path], list[Path]]:
    """Input files and their output paths (``OUT/NAME.fmt``, or ``OUT/NN_RES/maskTTT.tif`` for ctc)."""
    out = Path(args.out)
    if args.format == "ctc":
        from ..ctc import result_path, sequence_frames

        files = [f for item in args.inputs for f in (sequence_frames(item) if Path(item).is_dir() else [Path(item)])]
        targets = [result_path(out, f) for f in files]
    else:
        files = _collect(args.inputs)
        fmt = {"ome-zarr": "ome.zarr"}.get(args.format, args.format)
        fmt = "tif" if output == "labels" and fmt != "ome.zarr" else fmt
        targets = [_label_image(f) if fmt == "ome.zarr" and output == "labels" and ngff_multiscale(f) else out / _output_name(f, fmt)
                   for f in files]
    dupes = sorted({str(t) for t in targets if targets.count(t) > 1})
    if dupes:
        raise InputError(f"several inputs would write the same output {dupes[0]}; give them distinct names")
    out.mkdir(parents=True, exist_ok=True)
    return files, targets


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..inference import EnsemblePredictor, Predictor, model_paths

    if args.tile is not None and args.tile < 1:
        raise ConfigError(f"--tile {args.tile}: expected a positive size")
    if args.batch < 1:
        raise ConfigError(f"--batch {args.batch}: expected a positive number")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise ConfigError(f"--threshold {args.threshold}: expected a probability in [0, 1]")
    output = _output_kind(args)
    files, targets = _targets(args, output)
    if args.channel is not None and args.channel < 0:
        raise ConfigError(f"--channel {args.channel}: expected a channel index >= 0")
    paths = [p for m in args.model for p in model_paths(m)]
    precision = args.precision or ("auto" if args.backend == "auto" else "fp32")
    if len(paths) == 1:
        predictor = Predictor.from_path(paths[0], device=args.device, precision=precision, backend=args.backend)
    else:
        predictor = EnsemblePredictor(paths, device=args.device, precision=precision, backend=args.backend)
    if predictor.backend == "int8":
        predictor.calibrate(_calibration(predictor, paths, files, args.channel))
    tile_bar = tqdm(total=0, unit="tile", desc="tiles", leave=False, position=1, disable=None)
    try:
        for path, target in tqdm(list(zip(files, targets)), unit="file", desc="files", position=0, disable=None):
            target.parent.mkdir(parents=True, exist_ok=True)
            predictor.predict_file(
                path, target, output=output, threshold=args.threshold, split=args.split, min_size=args.min_size,
                edge_min_size=args.edge_min_size, fill_holes=args.fill_holes, agglomerate=args.agglomerate,
                channel=args.channel, rois=args.rois, tile_shape=args.tile, tta=args.tta, batch_size=args.batch, progress=tile_bar,
                dask_scheduler=args.dask_scheduler,
                **({"output_shift": None} if args.no_output_shift else {}),
            )
            log.debug("%s -> %s", path, target)
    finally:
        tile_bar.close()
    beside = sum(not t.is_relative_to(Path(args.out)) for t in targets)
    into = f" and {beside} label image(s) into their OME-Zarr inputs (labels/unetseg)" if beside else ""
    print(f"wrote {len(files) - beside} file(s) to {args.out}{into} (backend {predictor.backend}, precision {predictor.precision}, {predictor.device})")
    return 0
