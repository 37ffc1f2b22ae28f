"""Validation during training: full-image overlap-tile prediction and the challenge metrics.

Prediction uses :func:`unetseg.predict.predict_image` when that module is installed and a small
built-in overlap-tile predictor (mirror padding by the network's halo, output tiles stitched
without overlap, which is exact for valid convolutions) otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import runtime
from ..errors import ConfigError

MAXIMISED = ("v_rand", "dice", "v_info", "f1")
MINIMISED = ("pixel_error", "loss", "warping_error", "rand_error")


def metric_mode(name: str, mode: str = "auto") -> str:
    """``"max"`` or ``"min"``: whether larger values of metric ``name`` are better.

    Examples
    --------
    >>> metric_mode("v_rand"), metric_mode("pixel_error")
    ('max', 'min')
    """
    if mode in ("max", "min"):
        return mode
    if name in MAXIMISED:
        return "max"
    if name in MINIMISED:
        return "min"
    raise ConfigError(f"validation.metric {name!r}: set validation.mode to max or min for this metric")


def _dihedral(x: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 rotations/flips of the last two axes (k in 0..7)."""
    y = np.rot90(x, k % 4, axes=(-2, -1))
    return np.flip(y, -1) if k >= 4 else y


def _undihedral(x: np.ndarray, k: int) -> np.ndarray:
    y = np.flip(x, -1) if k >= 4 else x
    return np.rot90(y, -(k % 4), axes=(-2, -1))


@torch.no_grad()
def predict_tiles(
    model: nn.Module,
    image: np.ndarray,
    *,
    tile: Sequence[int] | None = None,
    device: torch.device | None = None,
    precision: str = "fp32",
) -> np.ndarray:
    """Soft-max probabilities ``(num_classes, *spatial)`` of a 2D/3D image ``(C, *spatial)``.

    The output plane is cut into tiles of ``tile`` (default: up to 388 per axis, rounded to a
    valid size); each input tile adds the model's halo, taken from the mirror-padded image.
    """
    device = device or next(model.parameters()).device
    img = np.asarray(image, dtype=np.float32)
    spatial = img.shape[1:]
    halo = int(getattr(model, "halo", 0))
    if tile is None:
        tile = [min(388, s) for s in spatial]
    out_tile = []
    for t, s in zip(tile, spatial):
        t = min(int(t), max(s, 1))
        in_size = model.input_shape_for((t,) * len(spatial))[0] if hasattr(model, "input_shape_for") else t
        out_tile.append(model.output_shape((in_size,) * len(spatial))[0] if hasattr(model, "output_shape") else t)
    counts = [int(np.ceil(s / t)) for s, t in zip(spatial, out_tile)]
    padded_out = [c * t for c, t in zip(counts, out_tile)]
    pad = [(0, 0)] + [(halo, halo + po - s) for s, po in zip(spatial, padded_out)]
    mode = "reflect" if all(s > halo + po - s and s > halo for s, po in zip(spatial, padded_out)) else "symmetric"
    big = np.pad(img, pad, mode=mode)
    result = None
    model.eval()
    for idx in np.ndindex(*counts):
        starts = [i * t for i, t in zip(idx, out_tile)]
        sl = (slice(None),) + tuple(slice(st, st + t + 2 * halo) for st, t in zip(starts, out_tile))
        x = torch.from_numpy(np.ascontiguousarray(big[sl]))[None].to(device)
        with runtime.autocast(device, precision):
            logits = model(x)
        probs = torch.softmax(logits.float(), 1)[0].cpu().numpy()
        if result is None:
            result = np.zeros((probs.shape[0], *padded_out), dtype=np.float32)
        osl = (slice(None),) + tuple(slice(st, st + p) for st, p in zip(starts, probs.shape[1:]))
        result[osl] = probs
    return result[(slice(None),) + tuple(slice(0, s) for s in spatial)]


def predict_probs(model: nn.Module, image: np.ndarray, *, tta: bool = False, tile=None, device=None, precision: str = "fp32") -> np.ndarray:
    """Probabilities ``(num_classes, *spatial)``; 8-fold dihedral TTA averages (2D only)."""
    try:
        from ..predict import predict_image  # issue 3's overlap-tile predictor
    except ImportError:
        predict_image = None
    if predict_image is not None:
        kwargs: dict[str, Any] = {"tile_shape": tile, "tta": tta, "device": device, "precision": precision}
        return np.asarray(predict_image(model, image, **kwargs), dtype=np.float32)
    if not tta or np.asarray(image).ndim != 3:
        return predict_tiles(model, image, tile=tile, device=device, precision=precision)
    acc = None
    for k in range(8):
        p = _undihedral(predict_tiles(model, np.ascontiguousarray(_dihedral(image, k)), tile=tile, device=device, precision=precision), k)
        acc = p if acc is None else acc + p
    return acc / 8


def binary_metrics(prob: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None, threshold: float = 0.5) -> dict[str, float]:
    """Pixel error, Dice and V_rand (after thinning) of one foreground map at ``threshold``.

    ``gt`` is the binary foreground (cells); V_rand uses its 4-connected components as segments.

    Examples
    --------
    >>> gt = np.zeros((6, 6), bool); gt[1:3, 1:5] = True; gt[4:6, 1:5] = True
    >>> m = binary_metrics(gt.astype(float), gt)
    >>> m["pixel_error"], m["dice"], m["v_rand"]
    (0.0, 1.0, 1.0)
    """
    from ..metrics import dice, label4, pixel_error, rand_scores, thin_boundaries

    pred = np.asarray(prob, dtype=np.float64) > threshold
    g = np.asarray(gt) != 0
    if ignore is not None and np.any(ignore):
        keep = ~np.asarray(ignore, bool)
        pe = float(np.mean(pred[keep] != g[keep])) if keep.any() else 0.0
        dc = dice(g[keep], pred[keep])
    else:
        pe = pixel_error(g, pred)
        dc = dice(g, pred)
    gt_labels, _ = label4(g)
    vr = rand_scores(gt_labels, thin_boundaries(pred)).v_rand if g.ndim == 2 else float("nan")
    return {"pixel_error": float(pe), "dice": float(dc), "v_rand": float(vr)}


def validate(
    model: nn.Module,
    items: Sequence[Any],
    *,
    device: torch.device,
    precision: str = "fp32",
    foreground_class: int = 1,
    tta: bool = False,
    tile=None,
    keep: int = 0,
    thresholds: Sequence[float] = (0.5,),
) -> tuple[dict[str, float], list[np.ndarray]]:
    """Mean metrics over ``items`` (``name``, ``image``, ``target``, optional ``ignore``).

    With several ``thresholds`` each metric is reported at its best threshold (one threshold for
    all images, as the ISBI protocol does). Returns the metrics and the foreground probability
    maps of the first ``keep`` items.
    """
    was_training = model.training
    model.eval()
    ths = list(thresholds) or [0.5]
    rows: list[list[dict[str, float]]] = [[] for _ in ths]
    kept = []
    for i, item in enumerate(items):
        probs = predict_probs(model, item.image, tta=tta, tile=tile, device=device, precision=precision)
        fg = probs[foreground_class]
        target = np.asarray(item.target)
        ignore = getattr(item, "ignore", None)
        for r, th in zip(rows, ths):
            r.append(binary_metrics(fg, target == foreground_class, ignore, threshold=th))
        if i < keep:
            kept.append(fg)
    if was_training:
        model.train()
    if not rows[0]:
        return {}, kept
    means = [{k: float(np.nanmean([r[k] for r in rs])) for k in rs[0]} for rs in rows]
    out = {}
    for k in means[0]:
        values = [m[k] for m in means]
        out[k] = float(max(values) if metric_mode(k) == "max" else min(values))
    return out, kept
