"""Validation during training: full-image overlap-tile prediction through one
:class:`~unetseg.inference.Predictor` (a copy of the weights, so the model being trained is
never touched) and the challenge metrics (:mod:`unetseg.metrics`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

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


def predict_probs(
    model: nn.Module, image: np.ndarray, *, tta: bool = False, tile=None, device=None, precision: str = "fp32", output_shift=None,
    channels_last: bool | str = "auto",
) -> np.ndarray:
    """Probabilities ``(num_classes, *spatial)`` by overlap-tile prediction (8-fold TTA and an
    output shift, :func:`unetseg.inference.shift_probabilities`, optional). ``model`` is a module
    or a :class:`~unetseg.inference.Predictor` (then reused as it is)."""
    from ..inference import predict_image

    return np.asarray(
        predict_image(model, image, tile_shape=tile, tta=tta, device=device, precision=precision, output_shift=output_shift,
                      channels_last=channels_last),
        dtype=np.float32,
    )


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
    output_shift: Sequence[float] | None = None,
    channels_last: bool | str = "auto",
) -> tuple[dict[str, float], list[np.ndarray]]:
    """Mean metrics over ``items`` (``name``, ``image``, ``target``, optional ``ignore``).

    With several ``thresholds`` each metric is reported at its best threshold (one threshold for
    all images, as the ISBI protocol does); ``output_shift`` moves the probabilities first;
    ``channels_last``: the memory format of the copy the predictions run on.
    Returns the metrics and the foreground probability maps of the first ``keep`` items.
    """
    from ..inference import as_predictor

    predictor = as_predictor(model, device=device, precision=precision, channels_last=channels_last)
    ths = list(thresholds) or [0.5]
    rows: list[list[dict[str, float]]] = [[] for _ in ths]
    kept = []
    for i, item in enumerate(items):
        probs = predict_probs(predictor, item.image, tta=tta, tile=tile, device=device, precision=precision, output_shift=output_shift)
        fg = probs[foreground_class]
        target = np.asarray(item.target)
        ignore = getattr(item, "ignore", None)
        for r, th in zip(rows, ths):
            r.append(binary_metrics(fg, target == foreground_class, ignore, threshold=th))
        if i < keep:
            kept.append(fg)
    if not rows[0]:
        return {}, kept
    means = [{k: float(np.nanmean([r[k] for r in rs])) for k in rs[0]} for rs in rows]
    out = {}
    for k in means[0]:
        values = [m[k] for m in means]
        out[k] = float(max(values) if metric_mode(k) == "max" else min(values))
    return out, kept
