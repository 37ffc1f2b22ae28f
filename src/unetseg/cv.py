"""k-fold cross-validation of a recipe: how well it does on images it never saw.

:func:`cross_validate` splits the recipe's labelled images (``train_data`` plus ``val_data``
when both name the same dataset) into ``folds`` contiguous groups in their natural order
(serial sections stay together, so neighbours of a scored section are not trained on in another
fold's place). For each fold the recipe trains on the other groups, with no validation on the
held-out group (it never selects a model), into ``OUT/foldK``; the final weights then segment
the held-out images with 8-fold TTA and the card's output shift, and a challenge protocol scores
them. Per-fold metrics and the metrics of all held-out predictions pooled are written to
``OUT/cv.json``; ``OUT/metrics.json``/``.csv`` and ``report.html`` hold the pooled evaluation.
Each held-out prediction is kept as ``OUT/foldK/held_out/NAME.tif`` (float32 foreground
probability, or instance labels), so post-processing can be compared on out-of-fold maps
without training again (``benchmarks/isbi_postprocess.py``).
With ``final=True`` the recipe then trains on all images into ``OUT/final``: the model to keep.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path
from .errors import ConfigError
from .train.config import SplitConfig, TrainConfig

log = logging.getLogger(__name__)

PROTOCOL_HEADLINES = {
    "isbi2012": ("v_rand", "pixel_error", "warping_error", "warping_error_splits_mergers", "v_info"),
    "ctc": ("seg", "unmatched_fraction"),
    "binary": ("dice", "iou"),
    "instances": ("f1", "mean_ap"),
}


@dataclass
class CVResult:
    """What :func:`cross_validate` measured."""

    out: Path
    protocol: str
    folds: list[dict[str, Any]] = field(default_factory=list)
    pooled: dict[str, Any] = field(default_factory=dict)
    final: Path | None = None


def fold_groups(names: list[str], folds: int) -> list[list[str]]:
    """``names`` in ``folds`` contiguous groups of (nearly) equal size.

    Examples
    --------
    >>> fold_groups(["a", "b", "c", "d", "e"], 2)
    [['a', 'b', 'c'], ['d', 'e']]
    """
    if not 2 <= folds <= len(names):
        raise ConfigError(f"--folds {folds}: expected 2 to {len(names)} (the number of labelled images)")
    return [list(g) for g in np.array_split(np.asarray(names, dtype=object), folds)]


def pool_split(cfg: TrainConfig) -> SplitConfig:
    """The images cross-validation draws from: ``train_data``, plus ``val_data`` on the same dataset."""
    train, val = cfg.train_data, cfg.val_data
    if val is None or not val.path or (val.path, val.labels) != (train.path, train.labels):
        return train
    if train.select is None or val.select is None:
        return dataclasses.replace(train, select=None)
    return dataclasses.replace(train, select=list(train.select) + [p for p in val.select if p not in train.select])


def fold_config(cfg: TrainConfig, pool: SplitConfig, train_names: list[str]) -> TrainConfig:
    """The recipe for one fold: trained on ``train_names``, no validation (nothing selects on the held-out images)."""
    return dataclasses.replace(
        cfg,
        train_data=dataclasses.replace(pool, select=[_glob_escape(n) for n in train_names]),
        val_data=None,
        validation=dataclasses.replace(cfg.validation, every=0),
    )


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def reference_labels(item: Any, protocol: str) -> np.ndarray:
    """The ground truth a protocol scores against: the label file as annotated (instances), or the
    binary target (ISBI, binary)."""
    if protocol not in ("ctc", "instances") or not getattr(item, "source", None):
        return np.asarray(item.target)
    from .axes import label_samples
    from .io import read_image_axes

    arr, axes = read_image_axes(item.source[1])
    pages = label_samples(arr, axes, spatial_dims=np.asarray(item.target).ndim, where=item.source[1])
    page = re.search(r"_z(\d+)$", item.name)
    return pages[int(page.group(1)) if page and len(pages) > 1 else 0]


def predict_held_out(run_dir: Path | Any, items: list[Any], protocol: str, *, tta: bool = True, split: str | None = None,
                     min_size: int | None = None) -> list[np.ndarray]:
    """Foreground probabilities (semantic protocols) or instance labels (ctc, instances) of ``items``
    (``split``/``min_size``: the card's ``postprocess`` unless given; a 2-class map's holes filled and
    boundaries agglomerated as its ``fill_holes`` and ``agglomerate`` say, as ``unetseg predict`` does); ``run_dir`` may also be a
    :class:`~unetseg.inference.Predictor` (any backend)."""
    from .inference import Predictor
    from .postprocess import instances_from_probabilities

    predictor = run_dir if isinstance(run_dir, Predictor) else Predictor.from_path(run_dir)
    card = predictor.card
    post = card.postprocess
    split, min_size = (post.split if split is None else split), (post.min_size if min_size is None else min_size)
    out = []
    for it in items:
        probs = predictor.postprocess(predictor.predict(it.image, tta=tta, affinities=predictor.needs_affinities()))
        if protocol in ("ctc", "instances"):
            out.append(instances_from_probabilities(probs, threshold_value=post.threshold, foreground_class=card.foreground_class,
                                                    split=split, border_class=card.border_class, min_size=min_size,
                                                    edge_min_size=post.edge_min_size, edge_dims=predictor.spatial_dims))
        else:
            out.append(probs[card.foreground_class])
    return out


def evaluate_predictions(protocol: str, preds: list[np.ndarray], gts: list[np.ndarray]) -> dict[str, Any]:
    """The protocol's ``metrics.json`` content for predictions of :func:`predict_held_out` and their references."""
    from .evaluate import run_protocol

    if len({p.shape for p in preds}) > 1:  # images of several sizes: score one at a time, pool the mean
        rows = [run_protocol(protocol, p, g) for p, g in zip(preds, gts)]
        keys = PROTOCOL_HEADLINES[protocol]
        return {"protocol": protocol, "n_images": len(rows), **{k: {"value": float(np.mean([r[k]["value"] for r in rows])),
                                                                  "threshold": None} for k in keys},
                "notes": {"pooling": "images differ in size: mean of per-image values"}}
    return run_protocol(protocol, np.stack(preds), np.stack(gts))


def headline(metrics: dict[str, Any], protocol: str) -> dict[str, float]:
    """The protocol's ranking metrics as ``{name: value}``."""
    return {k: float(metrics[k]["value"]) for k in PROTOCOL_HEADLINES[protocol] if k in metrics}


def cross_validate(cfg: TrainConfig, out: str | os.PathLike, *, folds: int, config_path: str | os.PathLike | None = None,
                   protocol: str | None = None, minutes: float | None = None, final: bool = False, device: str | None = None,
                   progress: bool = False, split: str | None = None, min_size: int | None = None) -> CVResult:
    """Train and score the recipe ``folds`` times, each fold held out once; see the module docstring."""
    from .train.setup import load_split, train_from_config

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pool = pool_split(cfg)
    data = load_split(pool, cfg, config_path, "train_data", progress=progress)
    protocol = protocol or ("ctc" if data.target.kind == "instances" else "isbi2012")
    if protocol not in PROTOCOL_HEADLINES:
        raise ConfigError(f"--protocol {protocol!r}: expected one of {', '.join(PROTOCOL_HEADLINES)}")
    by_name = {it.name: it for it in data.items}
    groups = fold_groups(list(by_name), folds)
    limit = minutes * 60 if minutes else None
    result, all_preds, all_gts = CVResult(out, protocol), [], []
    for k, held in enumerate(groups):
        others = [n for n in by_name if n not in held]
        run = out / f"fold{k}"
        trained = train_from_config(fold_config(cfg, pool, others), run, config_path=config_path, device=device,
                                    progress=progress, time_limit_s=limit)
        items = [by_name[n] for n in held]
        preds = predict_held_out(run, items, protocol, split=split, min_size=min_size)
        _save_held_out(run / "held_out", items, preds)
        gts = [reference_labels(it, protocol) for it in items]
        metrics = evaluate_predictions(protocol, preds, gts)
        result.folds.append({"fold": k, "held_out": held, "steps": trained.step, "status": trained.status, **headline(metrics, protocol)})
        log.info("fold %d (%s): %s", k, ", ".join(held), headline(metrics, protocol))
        all_preds += preds
        all_gts += gts
    result.pooled = headline(_write_pooled(out, protocol, all_preds, all_gts, [by_name[n] for g in groups for n in g], result.folds), protocol)
    if final:
        result.final = out / "final"
        train_from_config(dataclasses.replace(cfg, train_data=pool, val_data=None, validation=dataclasses.replace(cfg.validation, every=0)),
                          result.final, config_path=config_path, device=device, progress=progress, time_limit_s=limit)
    _write_summary(result, cfg, minutes)
    return result


def _save_held_out(folder: Path, items: list[Any], preds: list[np.ndarray]) -> None:
    from .io import write_image

    folder.mkdir(exist_ok=True)
    for it, pred in zip(items, preds):
        write_image(folder / f"{it.name}.tif", pred, compression="zlib")


def _write_pooled(out: Path, protocol: str, preds, gts, items, folds) -> dict[str, Any]:
    """Score all held-out predictions together; write metrics.json/.csv (and report.html when the images share a size)."""
    from .evaluate import evaluate_to_folder, write_metrics

    if len({p.shape for p in preds}) == 1 and np.asarray(items[0].image).shape[0] == 1:
        images = np.stack([np.asarray(it.image)[0] for it in items])
        return evaluate_to_folder(protocol, np.stack(preds), np.stack(gts), out, images=images, names=[it.name for it in items],
                                  extra={"cv": {"folds": folds}})
    pooled = evaluate_predictions(protocol, preds, gts)
    write_metrics(out, {**pooled, "cv": {"folds": folds}})
    return pooled


def _write_summary(result: CVResult, cfg: TrainConfig, minutes: float | None) -> None:
    summary = {"protocol": result.protocol, "folds": result.folds, "pooled": result.pooled, "minutes_per_fold": minutes,
               "recipe_max_minutes": cfg.runtime.max_minutes, "final": str(result.final) if result.final else None}
    with atomic_path(result.out / "cv.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
