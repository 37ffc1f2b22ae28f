"""Writing an evaluation: ``metrics.json``, ``metrics.csv``, a text table and the HTML report."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from .isbi import isbi_error_maps
from .protocols import run_protocol
from .stacks import _as_stack, _check_pair, _name, check_label_inputs


def headline(metrics: dict) -> list[tuple[str, float, float | None]]:
    """``(name, value, threshold)`` rows of the top-level ``{"value", "threshold"}`` entries."""
    rows = []
    for key, val in metrics.items():
        if isinstance(val, dict) and "value" in val and "threshold" in val:
            rows.append((key, val["value"], val["threshold"]))
    return rows


def jsonable(obj):
    """A copy of ``obj`` with NaN/Inf replaced by ``None`` and NumPy scalars as Python numbers."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if np.isfinite(f) else None
    return obj


def write_metrics(out_dir, metrics: dict) -> tuple[Path, Path]:
    """Write ``metrics.json`` and ``metrics.csv`` (metric, value, threshold) atomically.

    Examples
    --------
    >>> import tempfile, json
    >>> d = tempfile.mkdtemp()
    >>> j, c = write_metrics(d, {"seg": {"value": 0.5, "threshold": None}})
    >>> json.loads(j.read_text())["seg"]["value"], c.read_text().splitlines()[1]
    (0.5, 'seg,0.5,')
    """
    import csv
    import io
    import json

    from ..atomic import atomic_path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean = jsonable(metrics)
    json_path = out / "metrics.json"
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(clean, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["metric", "value", "threshold"])
    for name, value, threshold in headline(clean):
        writer.writerow([name, "" if value is None else repr(float(value)), "" if threshold is None else repr(float(threshold))])
    csv_path = out / "metrics.csv"
    with atomic_path(csv_path) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
    return json_path, csv_path


def format_table(metrics: dict) -> str:
    """The headline metrics as an aligned text table."""
    rows = headline(metrics)
    width = max([len(r[0]) for r in rows] + [6])
    lines = [f"{'metric':<{width}}  {'value':>12}  threshold"]
    for name, value, threshold in rows:
        v = "nan" if value is None or not np.isfinite(value) else f"{value:.6g}"
        t = "" if threshold is None or not np.isfinite(threshold) else f"{threshold:.6g}"
        lines.append(f"{name:<{width}}  {v:>12}  {t}")
    return "\n".join(lines)


def evaluate_to_folder(
    protocol: str,
    pred,
    gt,
    out_dir,
    *,
    images=None,
    names: Sequence[str] | None = None,
    report: bool = True,
    max_report_images: int = 12,
    progress: bool = False,
    extra: dict | None = None,
) -> dict:
    """Evaluate and write ``metrics.json``, ``metrics.csv`` and (optionally) ``report.html``.

    What ``unetseg evaluate`` does, as one call for the demo and for training. ``pred``,
    ``gt`` and ``images`` are arrays (``(Z, Y, X)`` or 2D) or paths; ``extra`` is merged
    into the metrics dictionary before writing (for example the inputs' names).

    Returns
    -------
    dict
        The metrics, as written to ``metrics.json`` (before NaN became ``null``).
    """
    pred_arr = _as_stack(pred, "prediction")
    gt_arr = _as_stack(gt, "ground truth")
    _check_pair(pred_arr, gt_arr)
    check_label_inputs(protocol, pred_arr, gt_arr, pred_name=_name(pred, "prediction"), gt_name=_name(gt, "ground truth"))
    img_arr = None
    if images is not None and report:
        img_arr = _as_stack(images, "images")
        if img_arr.shape != pred_arr.shape:
            raise InputError(f"images: shape {img_arr.shape} differs from the predictions' {pred_arr.shape} (Z, Y, X)")
    metrics = run_protocol(protocol, pred_arr, gt_arr, progress=progress)
    if extra:
        metrics.update(extra)
    write_metrics(out_dir, metrics)
    if report:
        _write_report(protocol, metrics, out_dir, img_arr, gt_arr, pred_arr, names, max_report_images)
    return metrics


def _write_report(protocol: str, metrics: dict, out_dir, images, gt, pred, names, max_images: int) -> None:
    """The HTML report, with the protocol's threshold and (ISBI) the warping error maps."""
    from ..report import write_report

    error_maps, th = None, None
    if protocol == "isbi2012":
        th = metrics["warping_error_splits_mergers"]["threshold"]
        n = min(len(pred), max_images)
        if np.isfinite(th):
            error_maps = isbi_error_maps(pred[:n], gt[:n], th)
    elif protocol in ("binary", "instances"):
        th = metrics["dice" if protocol == "binary" else "f1"]["threshold"]
    write_report(out_dir, metrics, images, gt, pred, names=names, error_maps=error_maps, pred_threshold=th,
                 title=f"unetseg evaluate ({protocol})", max_images=max_images)
