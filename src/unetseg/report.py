"""HTML evaluation report with PNG figures: overlays, error maps and metric-vs-threshold curves.

:func:`write_report` is the entry point used by ``unetseg evaluate``, the demo and training.
Figures are plain PNGs next to ``report.html`` (relative links, so the folder can be moved).
Every file is written atomically; matplotlib runs with the Agg backend.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .io import write_image

log = logging.getLogger(__name__)

GT_COLOUR = np.array([0, 220, 0], dtype=np.uint8)
PRED_COLOUR = np.array([255, 0, 255], dtype=np.uint8)
#: Colours of the warping mismatch classes (class code -> RGB) in ISBI error maps.
CLASS_COLOURS = {
    1: (255, 40, 40),  # merge
    2: (40, 120, 255),  # split
    4: (255, 200, 0),  # hole addition
    8: (255, 140, 0),  # object deletion
    16: (255, 230, 120),  # object addition
    32: (200, 170, 0),  # hole deletion
}
MAX_SIDE = 1024


def _to_grey_uint8(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3:
        img = img[..., :3].mean(axis=-1) if img.shape[-1] in (3, 4) else img[0]
    finite = img[np.isfinite(img)]
    if finite.size == 0:
        return np.zeros(img.shape, dtype=np.uint8)
    lo, hi = np.percentile(finite, (0.5, 99.5))
    if hi <= lo:
        hi = lo + 1.0
    return (np.clip((img - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def _boundaries(labels: np.ndarray) -> np.ndarray:
    from skimage.segmentation import find_boundaries

    return find_boundaries(np.asarray(labels), mode="inner")


def _stride(shape: tuple[int, ...]) -> int:
    return max(1, int(np.ceil(max(shape[:2]) / MAX_SIDE)))


def overlay(image: np.ndarray, gt_labels: np.ndarray | None, pred_labels: np.ndarray | None) -> np.ndarray:
    """RGB uint8: ``image`` in grey with GT contours (green) and prediction contours (magenta).

    Examples
    --------
    >>> lab = np.zeros((6, 6), int); lab[1:4, 1:4] = 1
    >>> rgb = overlay(np.zeros((6, 6)), lab, None)
    >>> rgb.shape, rgb[1, 1].tolist()
    ((6, 6, 3), [0, 220, 0])
    """
    grey = _to_grey_uint8(image)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    if gt_labels is not None:
        rgb[_boundaries(gt_labels)] = GT_COLOUR
    if pred_labels is not None:
        rgb[_boundaries(pred_labels)] = PRED_COLOUR
    return rgb


def binary_error_map(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """RGB uint8: true positives grey, false positives red, false negatives blue."""
    g = np.asarray(gt) != 0
    p = np.asarray(pred) != 0
    rgb = np.zeros(g.shape + (3,), dtype=np.uint8)
    rgb[g & p] = (110, 110, 110)
    rgb[~g & p] = (255, 40, 40)
    rgb[g & ~p] = (40, 120, 255)
    return rgb


def class_error_map(gt: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """RGB uint8 of warping mismatches over a dim ground truth (merges red, splits blue)."""
    g = np.asarray(gt) != 0
    rgb = np.where(g[..., None], np.uint8(70), np.uint8(15)).astype(np.uint8).repeat(3, axis=-1)
    for code, colour in CLASS_COLOURS.items():
        rgb[classes == code] = colour
    # make isolated merge/split pixels visible at report size
    from scipy import ndimage

    for code in (1, 2):
        grown = ndimage.binary_dilation(classes == code, iterations=1) & (classes == 0)
        rgb[grown] = CLASS_COLOURS[code]
    return rgb


def plot_curves(path: Path, metrics: dict) -> Path | None:
    """Plot every curve of ``metrics["curves"]`` against its threshold list into one PNG."""
    curves = metrics.get("curves") or {}
    groups = []
    for xkey in ("thresholds", "thresholds_thinned", "iou_thresholds"):
        xs = curves.get(xkey)
        if not xs:
            continue
        ys = {
            k: v
            for k, v in curves.items()
            if k not in ("thresholds", "thresholds_thinned", "iou_thresholds")
            and isinstance(v, list)
            and len(v) == len(xs)
            and (k.startswith("ap") == (xkey == "iou_thresholds"))
        }
        if ys:
            groups.append((xkey, xs, ys))
    if not groups:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels = []
    for xkey, xs, ys in groups:
        ys = {k: v for k, v in ys.items() if not k.endswith("_pixels")}  # counts: in metrics.json only
        small = {k: v for k, v in ys.items() if "warping" in k}
        rest = {k: v for k, v in ys.items() if k not in small}
        for sub in (rest, small):
            if sub:
                panels.append((xkey, xs, sub))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    for ax, (xkey, xs, ys) in zip(axes[0], panels):
        for name, vals in ys.items():
            arr = np.array([np.nan if v is None else v for v in vals], dtype=float)
            ax.plot(xs, arr, marker="o", ms=3, label=name)
        ax.set_xlabel("IoU threshold" if xkey == "iou_thresholds" else "probability threshold")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if not np.isfinite(v):
            return "nan"
        return f"{v:.6g}"
    return html.escape(str(v))


def _as_items(x) -> list[np.ndarray] | None:
    """A stack, one 2D image or a sequence of them as a list of 2D arrays."""
    if x is None:
        return None
    arr = x if isinstance(x, (list, tuple)) else list(np.asarray(x) if np.asarray(x).ndim == 3 else [np.asarray(x)])
    return [np.asarray(a) for a in arr]


def _gt_labels(g: np.ndarray) -> np.ndarray:
    from .metrics import label4

    g = np.asarray(g)
    return label4(g != 0)[0] if g.dtype == bool or len(np.unique(g)) <= 2 else g


def _pred_labels(p: np.ndarray, th: float) -> np.ndarray:
    """Objects of a prediction: a probability map binarised at ``th``, a mask's components, or labels."""
    from .metrics import binarize, label4

    p = np.asarray(p)
    if np.issubdtype(p.dtype, np.floating) and not (p.size and p.max() > 1 and np.all(p == np.round(p))):
        return label4(binarize(p, th))[0]
    return label4(p != 0)[0] if p.dtype == bool or len(np.unique(p)) <= 2 else p


def _image_row(out: Path, i: int, name: str, img, g, p, error_map, th: float, values: dict) -> str:
    """Draw one image's overlay (and error map) into ``out/figures``; return its table row."""
    base = img if img is not None else (g if g is not None else p)
    s = _stride(np.shape(base))
    sl = (slice(None, None, s), slice(None, None, s))
    gl = _gt_labels(g) if g is not None else None
    pl = _pred_labels(p, th) if p is not None else None
    ov_name = f"figures/overlay_{i:03d}.png"
    write_image(out / ov_name, overlay(np.asarray(base)[sl], None if gl is None else gl[sl], None if pl is None else pl[sl]))
    cells = [f'<td><img src="{ov_name}" alt="overlay {i}"></td>']
    err = None
    if error_map is not None and g is not None:
        err = class_error_map(np.asarray(g)[sl] != 0, _downsample_max(np.asarray(error_map), s))
    elif g is not None and pl is not None:
        err = binary_error_map(np.asarray(g)[sl], pl[sl])
    if err is not None:
        err_name = f"figures/errors_{i:03d}.png"
        write_image(out / err_name, err)
        cells.append(f'<td><img src="{err_name}" alt="errors {i}"></td>')
    else:
        cells.append("<td></td>")
    stats = "<br>".join(f"{html.escape(k)}: {_fmt(v)}" for k, v in values.items() if k != "index")
    return f"<tr><th>{html.escape(name)}</th>{''.join(cells)}<td class='stats'>{stats}</td></tr>"


def _legend(th: float, thresholded: bool, warping: bool) -> str:
    contours = ("Contours: <span style='color:#00dc00'>ground truth</span>, <span style='color:#ff00ff'>prediction</span>"
                + (f" (probability maps binarised at th = {th:.6g})" if thresholded else "") + ". ")
    if warping:
        return contours + ("Error map: <span style='color:#ff2828'>false merges</span>, <span style='color:#2878ff'>false splits</span>, "
                           "<span style='color:#ffc800'>other topological mismatches</span> (warping error at the best splits-and-mergers threshold).")
    return contours + "Error map: <span style='color:#ff2828'>false positives</span>, <span style='color:#2878ff'>false negatives</span>."


def _page(title: str, metrics: dict, rows_html: list[str], legend: str, curves: bool, shown: str) -> str:
    """The report's HTML: summary table, notes, curves and the image table."""
    summary = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{_fmt(v.get('value'))}</td><td>{_fmt(v.get('threshold'))}</td></tr>"
        for k, v in metrics.items()
        if isinstance(v, dict) and "value" in v
    )
    notes_html = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in (metrics.get("notes") or {}).items())
    warnings = "".join(f'<p style="color:#c00"><b>Warning:</b> {html.escape(str(w))}</p>' for w in metrics.get("warnings", []))
    curves_html = '<h2>Metrics vs threshold</h2><img src="figures/curves.png" alt="curves" style="max-width:100%">' if curves else ""
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; }}
img {{ max-width: 480px; image-rendering: pixelated; }} td.stats {{ font-size: 85%; white-space: nowrap; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Protocol: <b>{html.escape(str(metrics.get('protocol', '?')))}</b>, images: {_fmt(metrics.get('n_images'))}</p>
{warnings}
<h2>Summary</h2>
<table><tr><th>metric</th><th>value</th><th>threshold</th></tr>{summary}</table>
<ul>{notes_html}</ul>
{curves_html}
<h2>Images</h2>
<p>{legend}{shown}</p>
<table><tr><th>image</th><th>overlay</th><th>errors</th><th>values</th></tr>{''.join(rows_html)}</table>
<details><summary>metrics.json</summary><pre>{html.escape(json.dumps(metrics, indent=1, default=str)[:200000])}</pre></details>
</body></html>
"""


def write_report(
    out_dir,
    metrics: dict,
    images: Sequence[np.ndarray] | np.ndarray | None = None,
    gts: Sequence[np.ndarray] | np.ndarray | None = None,
    preds: Sequence[np.ndarray] | np.ndarray | None = None,
    *,
    names: Sequence[str] | None = None,
    error_maps: Sequence[np.ndarray] | None = None,
    pred_threshold: float | None = None,
    title: str = "unetseg evaluation",
    max_images: int = 12,
) -> Path:
    """Write ``out_dir/report.html`` with per-image figures (in ``out_dir/figures/``) and metric curves.

    ``metrics`` is a protocol result (``unetseg.evaluate.run_protocol``): its ``{"value",
    "threshold"}`` entries form the summary table, ``curves`` the plots, ``per_image`` the image
    table. ``images`` (grey), ``gts`` and ``preds`` are optional stacks of 2D arrays; probability
    maps are binarised at ``pred_threshold`` (default 0.5), label images used as they are.
    ``error_maps`` are warping-mismatch class images (ISBI); otherwise a false-positive /
    false-negative map is drawn. Figures for at most ``max_images`` images. Returns the path of
    ``report.html``.
    """
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    th = 0.5 if pred_threshold is None else float(pred_threshold)
    images, gts, preds = _as_items(images), _as_items(gts), _as_items(preds)
    count = max(len(s) for s in (images or [], gts or [], preds or [])) if (images or gts or preds) else 0
    names = list(names) if names is not None else [f"image {i}" for i in range(count)]
    per_image = {row.get("index"): row for row in metrics.get("per_image", []) if isinstance(row, dict)}
    at = lambda seq, i: seq[i] if seq and i < len(seq) else None  # noqa: E731
    rows_html = [
        _image_row(out, i, str(names[i]) if i < len(names) else str(i), at(images, i), at(gts, i), at(preds, i),
                   at(error_maps, i) if error_maps is not None else None, th, per_image.get(i, {}))
        for i in range(min(count, max_images))
    ]
    curves_png = plot_curves(out / "figures" / "curves.png", metrics)
    shown = f" Showing {min(count, max_images)} of {count} images." if count > max_images else ""
    doc = _page(title, metrics, rows_html, _legend(th, pred_threshold is not None, error_maps is not None), bool(curves_png), shown)
    path = out / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(doc, encoding="utf-8")
    log.info("report written to %s", path)
    return path


def _downsample_max(classes: np.ndarray, s: int) -> np.ndarray:
    """Downsample a class image by ``s`` keeping any nonzero class in each block."""
    if s == 1:
        return classes
    h, w = classes.shape
    hh, ww = -(-h // s) * s, -(-w // s) * s
    pad = np.zeros((hh, ww), dtype=classes.dtype)
    pad[:h, :w] = classes
    return pad.reshape(hh // s, s, ww // s, s).max(axis=(1, 3))
