"""PNG plots of a training run: the loss curve and validation overlays (matplotlib, Agg)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Records of a ``metrics.jsonl`` file (a truncated last line is skipped)."""
    out = []
    p = Path(path)
    if not p.is_file():
        return out
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def plot_loss_curve(records: list[dict], path: str | os.PathLike) -> Path:
    """Training loss (and validation metrics on a second axis) against the step."""
    plt = _pyplot()
    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train" and r.get("loss") is not None]
    val = [r for r in records if r.get("kind") == "val"]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        s, v = zip(*train)
        ax.plot(s, v, lw=0.8, color="tab:blue", alpha=0.5, label="train loss")
        if len(v) >= 5:
            k = max(2, len(v) // 20)
            smooth = np.convolve(v, np.ones(k) / k, mode="valid")
            ax.plot(s[k - 1 :], smooth, lw=1.5, color="tab:blue", label=f"train loss (mean of {k})")
        if min(v) > 0:
            ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if val:
        ax2 = ax.twinx()
        colours = ["tab:red", "tab:green", "tab:purple", "tab:orange"]
        keys = [k for k in ("v_rand", "pixel_error", "dice", "loss") if any(k in r.get("metrics", {}) for r in val)]
        for c, key in zip(colours, keys):
            pts = [(r["step"], r["metrics"][key]) for r in val if key in r.get("metrics", {})]
            if pts:
                s, v = zip(*pts)
                ax2.plot(s, v, "o-", color=c, ms=3, label=f"val {key}")
        ax2.set_ylabel("validation")
        ax2.legend(loc="upper right", fontsize=8)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out


def plot_overlay(image: np.ndarray, prob: np.ndarray, target: np.ndarray | None, path: str | os.PathLike, title: str = "") -> Path:
    """Image | predicted probability | errors (red: false cell, blue: missed cell) side by side."""
    plt = _pyplot()
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3:
        img = img[0]
    lo, hi = np.percentile(img, [1, 99.8]) if img.size else (0, 1)
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    panels = 3 if target is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 4.3), dpi=100)
    axes[0].imshow(img, cmap="gray")
    axes[0].set_title("image")
    axes[1].imshow(prob, cmap="magma", vmin=0, vmax=1)
    axes[1].set_title("P(foreground)")
    if target is not None:
        pred = prob > 0.5
        gt = np.asarray(target) > 0
        rgb = np.stack([img] * 3, -1) * 0.6
        rgb[pred & ~gt] = [1, 0.1, 0.1]
        rgb[~pred & gt] = [0.1, 0.4, 1]
        axes[2].imshow(rgb)
        axes[2].set_title(f"errors ({np.mean(pred != gt):.3f})")
    for a in axes:
        a.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out
