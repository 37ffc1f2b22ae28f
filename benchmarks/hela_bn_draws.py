"""How much the tiles that batch-norm statistics are recomputed over move a DIC-HeLa fold model's SEG.

    .venv/bin/unetseg cv --config configs/hela.yaml --folds 3 --minutes 9 --out /tmp/cv-hela
    flock /tmp/unetseg-bench.lock .venv/bin/python benchmarks/hela_bn_draws.py --cv /tmp/cv-hela --fold 2 \\
        --augmented 256:12345 256:1 256:3 1024:4 --plain 256:12345 256:1 64:4 1024:3 --geometric 256:1 1024:4

Each fold model of an ``unetseg cv`` folder is scored on its held-out frames (8-fold TTA, the
post-processing its model card records, CTC SEG per frame) with the statistics as saved, then
with them recomputed (:func:`unetseg.train.recompute_statistics`) over each draw ``N:SEED``:
``N`` tiles of the fold's training frames from a tile sampler seeded ``SEED``: augmented as
training draws them (``--augmented``), the plain crops around the same centres (``--plain``,
:meth:`unetseg.data.TileDataset.unaugmented`, what training uses since the twenty-second
session), or with the recipe's geometric augmentation alone (``--geometric``: no brightness,
contrast, gamma or noise), which tells which part of the augmentation moves the statistics. A
draw that moves a frame's SEG a lot means the model depends on which tiles the statistics came
from. Ends with one JSON line per fold (each frame's SEG range over each kind of draw) with the
CPU's flags.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from hela_postprocess import fold_predictor  # noqa: E402

from unetseg.inference import predict_array  # noqa: E402
from unetseg.io import read_image  # noqa: E402
from unetseg.metrics.ctc import seg_score  # noqa: E402
from unetseg.runtime import cpu_flags  # noqa: E402


def parse_draw(text: str) -> tuple[int, int]:
    """``"N:SEED"`` -> (N, SEED).

    >>> parse_draw("256:12345")
    (256, 12345)
    """
    n, _, seed = text.partition(":")
    if not (n.isdigit() and seed.isdigit()) or int(n) == 0:
        raise argparse.ArgumentTypeError(f"a draw is TILES:SEED with TILES > 0, got {text!r}")
    return int(n), int(seed)


def held_out_frames(fold: Path, data: Path, sequence: str) -> dict[str, tuple]:
    """Frame -> (image, reference labels) of ``fold``'s held-out frames, read once per fold."""
    frames = [f.stem.split("_t")[-1] for f in sorted((fold / "held_out").glob("*.tif"))]
    return {k: (read_image(data / sequence / f"t{k}.tif"), read_image(data / f"{sequence}_GT" / "SEG" / f"man_seg{k}.tif")) for k in frames}


def frame_segs(fold: Path, data: Path, frames: dict[str, tuple], draw: tuple[int, int] | None, tiles: str) -> dict[str, float]:
    """SEG of each held-out frame of ``fold`` with the statistics of ``draw`` (None: as saved)."""
    n, seed = draw if draw is not None else (0, 0)
    predictor = fold_predictor(fold, data, n, tiles=tiles, seed=seed)
    return {k: round(seg_score(gt, predict_array(predictor, image, output="labels", tta=True)), 4) for k, (image, gt) in frames.items()}


def ranges(rows: list[dict[str, float]]) -> dict[str, list[float]]:
    """Each frame's [min, max] over ``rows``.

    >>> ranges([{"a": 0.5}, {"a": 0.75}])
    {'a': [0.5, 0.75]}
    """
    return {k: [min(r[k] for r in rows), max(r[k] for r in rows)] for k in rows[0]} if rows else {}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cv", type=Path, required=True, help="an `unetseg cv` folder of a HeLa recipe with batch norm")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "DIC-C2DH-HeLa")
    ap.add_argument("--sequence", default="01")
    ap.add_argument("--fold", type=int, nargs="*", help="folds to score (default: all)")
    ap.add_argument("--augmented", type=parse_draw, nargs="*", default=[], help="draws TILES:SEED of augmented tiles")
    ap.add_argument("--plain", type=parse_draw, nargs="*", default=[], help="draws TILES:SEED of plain crops")
    ap.add_argument("--geometric", type=parse_draw, nargs="*", default=[], help="draws TILES:SEED of tiles with the geometric augmentation alone")
    args = ap.parse_args(argv)
    folds = [f for f in sorted(args.cv.glob("fold*")) if not args.fold or int(f.name[4:]) in args.fold]
    if not folds or not (args.data / args.sequence).is_dir():
        print(f"no fold folders in {args.cv} or no HeLa data at {args.data}; nothing to do")
        return 0
    for fold in folds:
        frames = held_out_frames(fold, args.data, args.sequence)
        print(f"{fold.name}: as saved {frame_segs(fold, args.data, frames, None, 'plain')}", flush=True)
        by_kind: dict[str, list[dict[str, float]]] = {"augmented": [], "plain": [], "geometric": []}
        for kind, draws in (("augmented", args.augmented), ("plain", args.plain), ("geometric", args.geometric)):
            for draw in draws:
                by_kind[kind].append(frame_segs(fold, args.data, frames, draw, kind))
                print(f"{fold.name}: {kind} {draw[0]} tiles, seed {draw[1]}: {by_kind[kind][-1]}", flush=True)
        print(json.dumps({"fold": int(fold.name[4:]), **{f"{k}_draws": len(v) for k, v in by_kind.items()},
                          **{f"{k}_seg_range": ranges(v) for k, v in by_kind.items()}, "cpu_flags": cpu_flags()}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
