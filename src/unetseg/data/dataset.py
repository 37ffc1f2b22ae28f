"""Loading a labelled dataset: every image with its target, weight map and ignore mask.

:func:`load_labeled` reads the files of a layout once, resolves the target kind from the label
values it saw (``auto``), and returns the samples together with that resolved
:class:`~unetseg.data.config.TargetConfig`, which training writes into the model card
(:func:`card_for_target`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..axes import label_samples, to_channels_first
from ..errors import InputError
from ..io import read_image_axes
from ..models.card import ModelCard
from ..normalize import normalize
from ..weights import WeightCache
from .config import DataConfig, TargetConfig, _default_norm
from .layout import Pair, discover
from .targets import LabeledImage, make_target, partial_frames, resolve_kind

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabeledData:
    """What :func:`load_labeled` read: the samples, the resolved target and the layout's name."""

    items: list[LabeledImage]
    target: TargetConfig
    layout: str


def _read_image(pair: Pair, cfg: DataConfig) -> list[np.ndarray]:
    arr, axes = read_image_axes(pair.image, max_pixels=cfg.max_pixels)
    if cfg.image_axes is not None:
        if len(cfg.image_axes) != arr.ndim:
            raise InputError(f"{pair.image}: data.image_axes {cfg.image_axes!r} does not fit an image of shape {arr.shape}")
        axes = cfg.image_axes
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{pair.image}: unsupported pixel type {arr.dtype}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InputError(f"{pair.image}: image contains NaN or Inf values")
    imgs = to_channels_first(arr, axes, spatial_dims=cfg.spatial_dims, where=pair.image)
    if cfg.in_channels is not None and imgs[0].shape[0] != cfg.in_channels:
        raise InputError(f"{pair.image}: image has {imgs[0].shape[0]} channel(s), the config expects {cfg.in_channels}")
    return imgs


def _read_labels(pair: Pair, cfg: DataConfig, imgs: list[np.ndarray]) -> list[np.ndarray]:
    lab_arr, lab_axes = read_image_axes(pair.label, max_pixels=cfg.max_pixels)
    if lab_arr.dtype.kind == "f" and not np.isfinite(lab_arr).all():
        raise InputError(f"{pair.label}: label image contains NaN or Inf values")
    if "C" in lab_axes and lab_arr.shape[lab_axes.index("C")] not in (1, 3, 4):
        raise InputError(f"{pair.label}: label image has {lab_arr.shape[lab_axes.index('C')]} channels; labels must be single-channel")
    try:
        labs = label_samples(lab_arr, lab_axes, spatial_dims=cfg.spatial_dims, where=pair.label)
    except InputError as exc:
        raise InputError(f"{exc}; labels must be single-channel") from exc
    if len(imgs) != len(labs) or imgs[0].shape[1:] != labs[0].shape:
        raise InputError(
            f"{pair.label}: label shape {len(labs)} x {labs[0].shape} does not match image {pair.image} "
            f"({len(imgs)} x {imgs[0].shape[1:]}, channels {imgs[0].shape[0]})"
        )
    return labs


def _collect_values(values: set[int], labels) -> bool:
    """Add the smallest label values of ``labels`` to ``values`` until three are known (enough
    for :func:`~unetseg.data.targets.resolve_kind`); True once they are."""
    for lab in labels:
        if len(values) > 2:
            break
        values.update(int(v) for v in np.unique(lab)[:3])
    return len(values) > 2


def _samples(pair: Pair, imgs, labs, targets: list[TargetConfig], cfg: DataConfig, cache: WeightCache | None) -> list[LabeledImage]:
    """The :class:`LabeledImage` of each page (2D) or the volume (3D) of one image/label pair."""
    out = []
    for z, (img, lab, target) in enumerate(zip(imgs, labs, targets)):
        name = pair.name if len(imgs) == 1 else f"{pair.name}_z{z:03d}"
        where = str(pair.label) if len(imgs) == 1 else f"{pair.label} (page {z})"
        image = normalize(img, cfg.normalization, channel_axis=0).astype(np.float32, copy=False)
        tgt, ignore, inst = make_target(lab, target, where=where)
        if cache is not None:
            wc = cfg.weights
            weight = cache.get(inst, target=tgt, mask=~ignore, w0=wc.w0, sigma=wc.sigma, class_weight=wc.class_weight,
                               num_classes=target.num_classes, background_only=wc.background_only)
        else:
            weight = (~ignore).astype(np.float32)
        out.append(LabeledImage(name, np.ascontiguousarray(image), tgt, weight, ignore, inst, (str(pair.image), str(pair.label))))
    return out


def load_labeled(path: str | os.PathLike, cfg: DataConfig | None = None, *, progress: bool = False) -> LabeledData:
    """Load every labelled image under ``path``; return the samples and the resolved target.

    Raises
    ------
    InputError
        Unreadable/corrupt file, image/label shape mismatch, empty folder, label values the
        config does not declare, NaN/Inf in an image, an image without label partner; every
        message names the file.
    """
    cfg = cfg or DataConfig()
    layout, pairs = discover(path, cfg.labels)
    if progress:
        from tqdm import tqdm

        pairs = list(tqdm(pairs, desc="reading", unit="image"))
    raw, values = [], set()
    for pair in pairs:
        imgs = _read_image(pair, cfg)
        labs = _read_labels(pair, cfg, imgs)
        if cfg.target.kind == "auto":
            _collect_values(values, labs)
        raw.append((pair, imgs, labs))
    if not raw:
        raise InputError(f"{path}: no labelled images found")
    first = raw[0]
    for pair, imgs, _ in raw:
        if imgs[0].shape[0] != first[1][0].shape[0]:
            raise InputError(f"{pair.image}: channel count differs from {first[0].image}")
    target = resolve_kind(cfg.target, layout, values)
    per_sample = iter(_sample_targets(target, [lab for _, _, labs in raw for lab in labs]))
    cache = WeightCache(cfg.cache_dir) if cfg.weights.enabled else None
    items = [s for pair, imgs, labs in raw for s in _samples(pair, imgs, labs, [next(per_sample) for _ in labs], cfg, cache)]
    log.info("loaded %d samples from %s (%s layout, %s targets)", len(items), path, layout, target.kind)
    return LabeledData(items, target, layout)


def _sample_targets(target: TargetConfig, labels: list[np.ndarray]) -> list[TargetConfig]:
    """The target of each label sample: ``unlabeled: partial`` decided per sample (:func:`partial_frames`)."""
    if target.unlabeled != "partial":
        return [target] * len(labels)
    flags = partial_frames(labels, target.ignore_value)
    log.info("unlabeled: partial: %d of %d label images annotate only some objects (far unlabelled pixels ignored there)",
             sum(flags), len(flags))
    return [dataclasses.replace(target, unlabeled="ignore_far" if f else "background") for f in flags]


def load_dataset(path: str | os.PathLike, cfg: DataConfig | None = None, *, progress: bool = False) -> list[LabeledImage]:
    """The samples of :func:`load_labeled`: images with targets, weight maps and ignore masks.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from unetseg.io import write_image
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> lab = np.zeros((32, 32), np.uint16); lab[4:12, 4:12] = 1; lab[4:12, 12:20] = 2
    >>> write_image(d / "cells.tif", (lab * 50).astype(np.uint8)); write_image(d / "cells_mask.tif", lab)
    >>> [s] = load_dataset(d)
    >>> s.image.shape, s.target.dtype, s.weight.dtype, int(s.target[8, 12])  # carved border
    ((1, 32, 32), dtype('int64'), dtype('float32'), 0)
    """
    return load_labeled(path, cfg, progress=progress).items


def resolved_target(path: str | os.PathLike, cfg: DataConfig | None = None) -> TargetConfig:
    """The :class:`TargetConfig` that :func:`load_labeled` resolves for ``path`` (``auto``
    decided from the label values), reading only label files: for inspecting a dataset."""
    cfg = cfg or DataConfig()
    layout, pairs = discover(path, cfg.labels)
    values: set[int] = set()
    for pair in pairs if cfg.target.kind == "auto" else ():
        if _collect_values(values, [read_image_axes(pair.label, max_pixels=cfg.max_pixels)[0]]):
            break
    return resolve_kind(cfg.target, layout, values)


def card_for_target(target: TargetConfig, normalization: dict[str, Any] | None = None) -> ModelCard:
    """The model card a model trained on ``target`` labels starts from (classes, task, normalisation).

    A class named ``border`` of a multiclass target becomes the card's ``border_class``, which
    ``predict --output labels --split border`` uses to separate touching objects.

    Examples
    --------
    >>> card_for_target(TargetConfig(kind="binary", foreground_value=255, class_names=("membrane", "cell"))).classes
    ('membrane', 'cell')
    >>> card_for_target(TargetConfig(kind="multiclass", class_values=(0, 1, 2), class_names=("bg", "cell", "border"))).border_class
    2
    """
    names = tuple(target.names)
    return ModelCard(
        normalization=dict(normalization if normalization is not None else _default_norm()),
        classes=names,
        foreground_class=1,
        border_class=names.index("border") if "border" in names else None,
        task="instances" if target.kind == "instances" else "semantic",
    )
