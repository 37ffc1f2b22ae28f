"""Datasets: layouts on disk, training targets, and the random tile sampler.

Layouts, discovered from one path (:func:`discover`):

``folders``
    ``images/`` with ``labels/`` (or ``masks/``, ``label/``, ``mask/``, ``gt/``), files matched by
    stem, natural order (ISBI 2012 as shipped here: ``images/00.png`` + ``labels/00.png``).
``ctc``
    The Cell Tracking Challenge: ``NN/tTTT.tif`` with ``NN_GT/SEG/man_segTTT.tif``; only frames
    with a segmentation ground truth are used (DIC-C2DH-HeLa).
``flat``
    Image and label files side by side in one folder, paired by name once the role words are
    removed: ``img2d.tif`` + ``mask2d.tif``, ``train-volume.tif`` + ``train-labels.tif``,
    ``a.tif`` + ``a_mask.tif``. Multi-page stacks (ISBI 2012 original style) become one 2D
    sample per page.
``pair``
    An image file and a label file given explicitly.

Targets (:class:`TargetConfig`): ``binary`` masks (which label value is the foreground is
configurable; ISBI: 255 = cell = class 1, 0 = membrane = class 0), ``multiclass`` masks (label
values listed per class) and ``instances`` (0 = background, other values = object ids) turned
into a background/cell target with separation borders carved between touching objects (paper
Fig. 3c). ``auto`` picks ``instances`` for the CTC layout, ``binary`` when the labels hold at
most one non-zero value and ``instances`` otherwise (logged).

Ignore rule for partial annotations (``TargetConfig.unlabeled``):

* ``"background"`` (default): every unlabelled pixel is background.
* ``"ignore_far"``: unlabelled pixels farther than ``unlabeled_margin`` px from every annotated
  object are masked out of the loss. Near annotated cells (where their outlines and the separation
  borders are) background stays trusted; far away an unlabelled region may be a cell nobody
  annotated. This is the default for the CTC layout, whose SEG ground truth is partial (HeLa
  ``man_seg067`` labels 3 of many visible cells; cells at the border are often unlabelled).

In addition a label value can be declared as "not annotated" (``ignore_value``); those pixels
are always ignored.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from .augment import AugmentConfig, Transform, apply_transform, sample_transform
from .errors import ConfigError, InputError
from .io import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, list_images, natural_key, read_image_axes, stack_axes
from .normalize import normalize
from .weights import WeightCache, carve_borders, instances_from_mask

log = logging.getLogger(__name__)

__all__ = [
    "TargetConfig",
    "WeightConfig",
    "DataConfig",
    "Pair",
    "LabeledImage",
    "discover",
    "load_dataset",
    "make_target",
    "model_extra",
    "resolved_target",
    "TileDataset",
    "make_loader",
    "BackgroundLoader",
]

IMAGE_DIRS = ("images", "image", "imgs", "img", "raw")
LABEL_DIRS = ("labels", "label", "masks", "mask", "gt", "ground_truth")
_IMAGE_WORDS = ("images", "image", "imgs", "img", "volume", "raw", "input")
_LABEL_WORDS = ("labels", "label", "masks", "mask", "seg", "gt", "annotation", "annotations")


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class TargetConfig:
    """How label files become training targets.

    Examples
    --------
    >>> TargetConfig(kind="binary", foreground_value=255).num_classes
    2
    """

    kind: Literal["auto", "binary", "multiclass", "instances"] = "auto"
    foreground_value: int | None = None  # binary: label value of class 1 (None: any non-zero)
    class_values: tuple[int, ...] | None = None  # multiclass: label value of class 0, 1, 2, ...
    class_names: tuple[str, ...] | None = None  # default: background, foreground / class_K
    separate_borders: bool = True  # instances: carve a line between touching objects
    border_width: int = 1
    instance_connectivity: int = 1  # binary/multiclass: objects for the weight map = components
    ignore_value: int | None = None  # label value meaning "not annotated" (masked out)
    unlabeled: Literal["auto", "background", "ignore_far"] = "auto"  # auto: ignore_far for CTC
    unlabeled_margin: float = 40.0

    def __post_init__(self) -> None:
        if self.kind == "multiclass" and not self.class_values:
            raise ConfigError("data.target.class_values: multiclass targets need the label value of each class")
        if self.class_values is not None and len(set(self.class_values)) != len(self.class_values):
            raise ConfigError(f"data.target.class_values: values repeat in {self.class_values}")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ConfigError(f"data.target.class_names: {len(self.class_names)} names for {self.num_classes} classes")
        if self.border_width < 1:
            raise ConfigError(f"data.target.border_width: must be >= 1, got {self.border_width}")
        if self.unlabeled_margin < 0:
            raise ConfigError(f"data.target.unlabeled_margin: must be >= 0, got {self.unlabeled_margin}")

    @property
    def num_classes(self) -> int:
        return len(self.class_values) if self.kind == "multiclass" and self.class_values else 2

    @property
    def names(self) -> list[str]:
        """Class names, index = class id (stored in the model file's ``extra["classes"]``)."""
        if self.class_names is not None:
            return list(self.class_names)
        if self.num_classes == 2:
            return ["background", "foreground"]
        return ["background"] + [f"class_{v}" for v in (self.class_values or ())[1:]]


@dataclass(frozen=True)
class WeightConfig:
    """The paper's weight map parameters (``enabled=False``: weight 1 everywhere, 0 on ignored)."""

    enabled: bool = True
    w0: float = 10.0
    sigma: float = 5.0
    class_weight: Literal["balanced", "none"] = "balanced"
    background_only: bool = True

    def __post_init__(self) -> None:
        if self.sigma <= 0:
            raise ConfigError(f"data.weights.sigma: must be > 0, got {self.sigma}")
        if self.w0 < 0:
            raise ConfigError(f"data.weights.w0: must be >= 0, got {self.w0}")


def _default_norm() -> dict[str, Any]:
    return {"method": "percentile", "low": 1.0, "high": 99.8}


@dataclass(frozen=True)
class DataConfig:
    """Everything :func:`load_dataset` needs.

    ``labels`` optionally names the label file/folder when ``path`` is an image file or folder
    (the ``pair`` layout). ``spatial_dims=2`` splits stacks into 2D samples; ``3`` keeps volumes.
    ``in_channels`` (optional) is checked against every image. ``image_axes`` overrides the axes
    the files declare (letters Z, C, Y, X; needed only for formats without axis metadata, e.g. a
    ``(Y, X, 3)`` ``.npy`` would otherwise be read as a 3-page stack). ``cache_dir`` stores weight maps.
    """

    target: TargetConfig = field(default_factory=TargetConfig)
    weights: WeightConfig = field(default_factory=WeightConfig)
    normalization: dict[str, Any] = field(default_factory=_default_norm)
    spatial_dims: int = 2
    in_channels: int | None = None
    image_axes: str | None = None  # override for files that store no axes (.npy): e.g. "YXC"
    labels: str | None = None
    cache_dir: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise ConfigError(f"data.spatial_dims: expected 2 or 3, got {self.spatial_dims}")
        ax = self.image_axes
        if ax is not None and (set(ax) - set("ZCYX") or len(set(ax)) != len(ax) or "Y" not in ax or "X" not in ax):
            raise ConfigError(f"data.image_axes: {ax!r} must use each of Z, C, Y, X at most once and include Y and X")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DataConfig:
        """Build from a nested mapping (strict: unknown keys raise ConfigError)."""
        from .config import from_dict

        return from_dict(cls, dict(data or {}), path="data")


# --------------------------------------------------------------------------------------------
# Layout discovery


@dataclass(frozen=True)
class Pair:
    """One image file and its label file (``label`` None for unlabelled data)."""

    name: str
    image: Path
    label: Path | None


def _stem(p: Path) -> str:
    name = p.name
    for suf in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return p.stem


def _find_dir(root: Path, names: Sequence[str]) -> Path | None:
    for n in names:
        for cand in (root / n, root / n.capitalize(), root / n.upper()):
            if cand.is_dir():
                return cand
    return None


def _pair_by_stem(img_dir: Path, lab_dir: Path) -> list[Pair]:
    images = list_images(img_dir)
    labels = list_images(lab_dir)
    if not images:
        raise InputError(f"{img_dir}: folder holds no images (expected {', '.join(IMAGE_SUFFIXES)})")
    if not labels:
        raise InputError(f"{lab_dir}: folder holds no label images")
    by_stem: dict[str, Path] = {}
    for lab in labels:
        key = _strip_role(_stem(lab), _LABEL_WORDS)
        by_stem.setdefault(_stem(lab), lab)
        by_stem.setdefault(key, lab)
    pairs, used = [], set()
    for img in images:
        lab = by_stem.get(_stem(img)) or by_stem.get(_strip_role(_stem(img), _IMAGE_WORDS))
        if lab is None:
            raise InputError(f"{img}: image has no label partner in {lab_dir} (matched by file stem)")
        used.add(lab)
        pairs.append(Pair(_stem(img), img, lab))
    extra = [lab for lab in labels if lab not in used]
    if extra:
        raise InputError(f"{extra[0]}: label has no image partner in {img_dir} (matched by file stem)")
    return pairs


_SUFFIX_OK = re.compile(r"^(\d*[23]d|\d*)$")


def _word_rest(token: str, words: Sequence[str]) -> str | None:
    """If ``token`` is a role word, optionally followed by digits or ``2d``/``3d``, the rest."""
    t = token.lower()
    for w in words:
        if t.startswith(w) and _SUFFIX_OK.match(t[len(w) :]):
            return token[len(w) :]
    return None


def _strip_role(stem: str, words: Sequence[str]) -> str:
    """Remove a role word (``mask``, ``img``...) from a file stem, keeping what follows it.

    Examples
    --------
    >>> _strip_role("img2d", _IMAGE_WORDS), _strip_role("train-labels", _LABEL_WORDS), _strip_role("a_mask", _LABEL_WORDS)
    ('2d', 'train', 'a')
    """
    tokens = re.split(r"([_\-. ]+)", stem)
    for i, t in enumerate(tokens):
        rest = _word_rest(t, words)
        if rest is not None:
            new = tokens[:i] + ([rest] if rest else []) + tokens[i + 1 :]
            return "".join(new).strip("_-. ")
    return stem


def _role(stem: str) -> str | None:
    toks = [t for t in re.split(r"[_\-. ]+", stem) if t]
    if any(_word_rest(t, _LABEL_WORDS) is not None for t in toks):
        return "label"
    if any(_word_rest(t, _IMAGE_WORDS) is not None for t in toks):
        return "image"
    return None


def _flat_pairs(folder: Path) -> list[Pair]:
    files = list_images(folder)
    if not files:
        raise InputError(f"{folder}: folder holds no images (expected {', '.join(IMAGE_SUFFIXES)}, or images/ + labels/ subfolders, or the Cell Tracking Challenge layout)")
    images: dict[str, Path] = {}
    labels: dict[str, Path] = {}
    for f in files:
        stem = _stem(f)
        role = _role(stem)
        if role == "label":
            labels[_strip_role(stem, _LABEL_WORDS)] = f
        else:
            images[_strip_role(stem, _IMAGE_WORDS) if role == "image" else stem] = f
    if not labels:
        raise InputError(f"{folder}: no label files found (expected images/ + labels/ folders, the Cell Tracking Challenge layout, or files named like NAME_mask.tif)")
    pairs = []
    for key, img in sorted(images.items(), key=lambda kv: natural_key(kv[1])):
        lab = labels.get(key)
        if lab is None:
            raise InputError(f"{img}: image has no label partner in {folder}")
        pairs.append(Pair(_stem(img), img, lab))
    extra = sorted(set(labels) - set(images))
    if extra:
        raise InputError(f"{labels[extra[0]]}: label has no image partner in {folder}")
    return pairs


_CTC_SEQ = re.compile(r"^(\d+)$")
_CTC_SEG = re.compile(r"^man_seg_?(\d+)\.tiff?$", re.IGNORECASE)


def _ctc_pairs(root: Path) -> list[Pair]:
    pairs = []
    for seq in sorted((p for p in root.iterdir() if p.is_dir() and _CTC_SEQ.match(p.name)), key=natural_key):
        seg = root / f"{seq.name}_GT" / "SEG"
        if not seg.is_dir():
            continue
        for lab in sorted(seg.iterdir(), key=natural_key):
            m = _CTC_SEG.match(lab.name)
            if not m:
                continue
            digits = m.group(1)
            cands = [seq / f"t{digits}{s}" for s in (".tif", ".tiff")]
            img = next((c for c in cands if c.is_file()), None)
            if img is None:
                raise InputError(f"{lab}: ground truth frame has no raw image {cands[0]}")
            pairs.append(Pair(f"{seq.name}_t{digits}", img, lab))
    return pairs


def _is_ctc(root: Path) -> bool:
    return any(p.is_dir() and _CTC_SEQ.match(p.name) and (root / f"{p.name}_GT" / "SEG").is_dir() for p in root.iterdir())


def discover(path: str | os.PathLike, labels: str | os.PathLike | None = None) -> tuple[str, list[Pair]]:
    """Find image/label pairs under ``path``; returns ``(layout, pairs)``.

    Raises
    ------
    InputError
        Missing path, empty folder, an image without label partner (or the reverse), or no
        recognisable layout; the message names the file or folder.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from unetseg.io import write_image
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> (d / "images").mkdir(); (d / "labels").mkdir()
    >>> for n in ("a2", "a10"):
    ...     write_image(d / "images" / f"{n}.png", np.zeros((4, 4), np.uint8))
    ...     write_image(d / "labels" / f"{n}.png", np.zeros((4, 4), np.uint8))
    >>> layout, pairs = discover(d)
    >>> layout, [p.name for p in pairs]
    ('folders', ['a2', 'a10'])
    """
    root = Path(path)
    if not root.exists():
        raise InputError(f"{root}: dataset path not found")
    if labels is not None:
        lab = Path(labels)
        if not lab.exists():
            raise InputError(f"{lab}: label path not found")
        if root.is_dir() and lab.is_dir():
            return "folders", _pair_by_stem(root, lab)
        if root.is_dir() != lab.is_dir():
            raise InputError(f"{lab}: images and labels must both be files or both be folders")
        return "pair", [Pair(_stem(root), root, lab)]
    if root.is_file() or root.suffix.lower() == ".zarr":
        raise InputError(f"{root}: an image file needs its labels (data.labels / --labels)")
    img_dir, lab_dir = _find_dir(root, IMAGE_DIRS), _find_dir(root, LABEL_DIRS)
    if img_dir is not None and lab_dir is not None:
        return "folders", _pair_by_stem(img_dir, lab_dir)
    if _is_ctc(root):
        pairs = _ctc_pairs(root)
        if not pairs:
            raise InputError(f"{root}: Cell Tracking Challenge layout without any man_seg*.tif ground truth")
        return "ctc", pairs
    if img_dir is not None:
        raise InputError(f"{root}: found {img_dir.name}/ but no label folder ({', '.join(LABEL_DIRS)})")
    return "flat", _flat_pairs(root)


# --------------------------------------------------------------------------------------------
# Targets


@dataclass
class LabeledImage:
    """One training sample in memory.

    ``image`` (C, *spatial) float32 normalised; ``target`` (*spatial) int64 class ids;
    ``weight`` (*spatial) float32 (0 where ignored); ``ignore`` (*spatial) bool, True where not
    annotated; ``instances`` int32 object ids after border carving (or None).
    """

    name: str
    image: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    ignore: np.ndarray
    instances: np.ndarray | None = None
    source: tuple[str, str] | None = None

    @property
    def mask(self) -> np.ndarray:
        """True where the pixel counts in the loss."""
        return ~self.ignore

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.target.shape)


def _resolve_kind(cfg: TargetConfig, layout: str, values: set[int]) -> TargetConfig:
    import dataclasses

    kind, fg = cfg.kind, cfg.foreground_value
    if kind == "auto":
        nonzero = sorted(v for v in values if v != 0 and v != cfg.ignore_value)
        if layout == "ctc":
            kind = "instances"
        elif len(nonzero) <= 1:
            kind, fg = "binary", (fg if fg is not None else (nonzero[0] if nonzero else None))
        else:
            kind = "instances"
        log.info("labels: %s targets (auto; label values %s)", kind, sorted(values)[:8])
    unl = cfg.unlabeled
    if unl == "auto":
        unl = "ignore_far" if layout == "ctc" else "background"
    return dataclasses.replace(cfg, kind=kind, foreground_value=fg, unlabeled=unl)


def _check_label_values(lab: np.ndarray, cfg: TargetConfig, where: str) -> None:
    vals = np.unique(lab)
    if cfg.kind == "binary" and cfg.foreground_value is not None:
        if cfg.foreground_value == 0:  # foreground 0: any single other value is background
            nonzero = [int(v) for v in vals if v != 0 and v != cfg.ignore_value]
            allowed = {0, *nonzero[:1]}
        else:
            allowed = {0, cfg.foreground_value}
    elif cfg.kind == "multiclass":
        allowed = set(cfg.class_values or ())
    else:
        allowed = None
    if cfg.ignore_value is not None and allowed is not None:
        allowed.add(cfg.ignore_value)
    if allowed is not None:
        bad = [int(v) for v in vals if int(v) not in allowed]
        if bad:
            raise InputError(f"{where}: label values {bad[:5]} not declared for {cfg.kind} targets (expected {sorted(allowed)})")
    elif vals.size and vals[0] < 0 and vals[0] != cfg.ignore_value:
        raise InputError(f"{where}: negative label value {int(vals[0])} in an instance label image")


def make_target(labels: np.ndarray, cfg: TargetConfig, *, where: str = "<labels>") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turn one label image into ``(target int64, ignore bool, instances int32)``.

    ``cfg.kind`` must be resolved (not ``auto``). Instances are the objects the weight map's
    border term separates: the carved instances for ``instances`` labels, the connected
    components (``instance_connectivity``) of the foreground otherwise.

    Examples
    --------
    >>> lab = np.zeros((4, 7), np.uint16); lab[:, 1:4] = 1; lab[:, 4:6] = 2
    >>> t, ign, inst = make_target(lab, TargetConfig(kind="instances", unlabeled="background"))
    >>> t
    array([[0, 1, 1, 1, 0, 1, 0],
           [0, 1, 1, 1, 0, 1, 0],
           [0, 1, 1, 1, 0, 1, 0],
           [0, 1, 1, 1, 0, 1, 0]])
    """
    lab = np.asarray(labels)
    if lab.dtype.kind == "f":
        if not np.isfinite(lab).all() or not np.array_equal(lab, np.round(lab)):
            raise InputError(f"{where}: label image holds non-integer values")
        lab = lab.astype(np.int64)
    elif lab.dtype.kind == "b":
        lab = lab.astype(np.int64)
    elif lab.dtype.kind not in "iu":
        raise InputError(f"{where}: labels must be integers, got {lab.dtype}")
    _check_label_values(lab, cfg, where)
    ignore = lab == cfg.ignore_value if cfg.ignore_value is not None else np.zeros(lab.shape, bool)
    if cfg.kind == "instances":
        inst = np.where(ignore, 0, lab).astype(np.int32)
        if cfg.separate_borders:
            inst, _ = carve_borders(inst, width=cfg.border_width)
        target = (inst > 0).astype(np.int64)
    elif cfg.kind == "binary":
        fg = (lab == cfg.foreground_value) if cfg.foreground_value is not None else (lab != 0)
        fg &= ~ignore
        target = fg.astype(np.int64)
        inst = instances_from_mask(fg, connectivity=cfg.instance_connectivity)
    elif cfg.kind == "multiclass":
        lut = {int(v): i for i, v in enumerate(cfg.class_values or ())}
        target = np.zeros(lab.shape, np.int64)
        for v, i in lut.items():
            target[lab == v] = i
        inst = instances_from_mask(target > 0, connectivity=cfg.instance_connectivity)
    else:
        raise ConfigError(f"data.target.kind: {cfg.kind!r} must be resolved before make_target")
    if cfg.unlabeled == "ignore_far":
        annotated = (lab != 0) & ~ignore
        if annotated.any():
            far = ndimage.distance_transform_edt(~annotated) > cfg.unlabeled_margin
        else:
            far = np.ones(lab.shape, bool)
        ignore = ignore | (far & (target == 0))
    return target, ignore, inst


# --------------------------------------------------------------------------------------------
# Loading


def _to_channels_first(arr: np.ndarray, axes: str, spatial_dims: int, where: Path) -> list[np.ndarray]:
    """Split an image into samples of shape (C, *spatial)."""
    stack = stack_axes(arr, axes, path=where)  # (N, Y, X[, C])
    if stack.ndim == 3:
        stack = stack[..., None]
    chw = np.moveaxis(stack, -1, 1)  # (N, C, Y, X)
    if spatial_dims == 2:
        return [chw[i] for i in range(chw.shape[0])]
    return [np.moveaxis(chw, 1, 0)]  # (C, Z, Y, X)


def _label_samples(arr: np.ndarray, axes: str, spatial_dims: int, where: Path) -> list[np.ndarray]:
    if "C" in axes:
        c = arr.shape[axes.index("C")]
        if c != 1:
            raise InputError(f"{where}: label image has {c} channels; labels must be single-channel")
        arr = np.take(arr, 0, axis=axes.index("C"))
        axes = axes.replace("C", "")
    stack = stack_axes(arr, axes, path=where)
    return [stack[i] for i in range(stack.shape[0])] if spatial_dims == 2 else [stack]


def load_dataset(path: str | os.PathLike, cfg: DataConfig | None = None, *, progress: bool = False) -> list[LabeledImage]:
    """Load every labelled image under ``path`` with targets, weight maps and ignore masks.

    Raises
    ------
    InputError
        Unreadable/corrupt file, image/label shape mismatch, empty folder, label values the
        config does not declare, NaN/Inf in an image, an image without label partner; every
        message names the file.

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
    cfg = cfg or DataConfig()
    layout, pairs = discover(path, cfg.labels)
    raw: list[tuple[Pair, list[np.ndarray], list[np.ndarray]]] = []
    values: set[int] = set()
    it = pairs
    if progress:
        from tqdm import tqdm

        it = tqdm(pairs, desc="reading", unit="image")
    for pair in it:
        arr, axes = read_image_axes(pair.image, max_pixels=cfg.max_pixels)
        if cfg.image_axes is not None:
            if len(cfg.image_axes) != arr.ndim:
                raise InputError(f"{pair.image}: data.image_axes {cfg.image_axes!r} does not fit an image of shape {arr.shape}")
            axes = cfg.image_axes
        if arr.dtype.kind not in "biuf":
            raise InputError(f"{pair.image}: unsupported pixel type {arr.dtype}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise InputError(f"{pair.image}: image contains NaN or Inf values")
        imgs = _to_channels_first(arr, axes, cfg.spatial_dims, pair.image)
        lab_arr, lab_axes = read_image_axes(pair.label, max_pixels=cfg.max_pixels)
        if lab_arr.dtype.kind == "f" and not np.isfinite(lab_arr).all():
            raise InputError(f"{pair.label}: label image contains NaN or Inf values")
        labs = _label_samples(lab_arr, lab_axes, cfg.spatial_dims, pair.label)
        if len(imgs) != len(labs) or imgs[0].shape[1:] != labs[0].shape:
            raise InputError(
                f"{pair.label}: label shape {len(labs)} x {labs[0].shape} does not match image {pair.image} "
                f"({len(imgs)} x {imgs[0].shape[1:]}, channels {imgs[0].shape[0]})"
            )
        if cfg.in_channels is not None and imgs[0].shape[0] != cfg.in_channels:
            raise InputError(f"{pair.image}: image has {imgs[0].shape[0]} channel(s), the config expects {cfg.in_channels}")
        if cfg.target.kind == "auto":
            for lab in labs:
                values.update(int(v) for v in np.unique(lab)[:3])
                if len(values) > 2:
                    break
        raw.append((pair, imgs, labs))
    if not raw:
        raise InputError(f"{path}: no labelled images found")
    tcfg = _resolve_kind(cfg.target, layout, values)
    channels = {imgs[0].shape[0] for _, imgs, _ in raw}
    if len(channels) > 1:
        first = next(p for p, imgs, _ in raw if imgs[0].shape[0] != raw[0][1][0].shape[0])
        raise InputError(f"{first.image}: channel count differs from {raw[0][0].image}")
    cache = WeightCache(cfg.cache_dir) if cfg.weights.enabled else None
    out: list[LabeledImage] = []
    for pair, imgs, labs in raw:
        for z, (img, lab) in enumerate(zip(imgs, labs)):
            name = pair.name if len(imgs) == 1 else f"{pair.name}_z{z:03d}"
            where = str(pair.label) if len(imgs) == 1 else f"{pair.label} (page {z})"
            image = normalize(img, cfg.normalization, channel_axis=0).astype(np.float32, copy=False)
            target, ignore, inst = make_target(lab, tcfg, where=where)
            if cache is not None:
                wc = cfg.weights
                weight = cache.get(
                    inst,
                    target=target,
                    mask=~ignore,
                    w0=wc.w0,
                    sigma=wc.sigma,
                    class_weight=wc.class_weight,
                    num_classes=tcfg.num_classes,
                    background_only=wc.background_only,
                )
            else:
                weight = (~ignore).astype(np.float32)
            out.append(LabeledImage(name, np.ascontiguousarray(image), target, weight, ignore, inst, (str(pair.image), str(pair.label))))
    log.info("loaded %d samples from %s (%s layout, %s targets)", len(out), path, layout, tcfg.kind)
    return out


def resolved_target(path: str | os.PathLike, cfg: DataConfig | None = None) -> TargetConfig:
    """The :class:`TargetConfig` that :func:`load_dataset` would use (``auto`` resolved)."""
    cfg = cfg or DataConfig()
    layout, pairs = discover(path, cfg.labels)
    values: set[int] = set()
    if cfg.target.kind == "auto":
        for p in pairs[:4]:
            values.update(int(v) for v in np.unique(read_image_axes(p.label, max_pixels=cfg.max_pixels)[0])[:3])
    return _resolve_kind(cfg.target, layout, values)


def model_extra(target: TargetConfig, normalization: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``extra`` dict a run folder's model file stores for inference (project agreement).

    ``target`` should be resolved (see :func:`resolved_target`); instance labels give
    ``task="instances"`` (prediction then splits the foreground into objects).

    Examples
    --------
    >>> model_extra(TargetConfig(kind="binary", foreground_value=255, class_names=("membrane", "cell")))["classes"]
    ['membrane', 'cell']
    """
    return {
        "normalization": dict(normalization if normalization is not None else _default_norm()),
        "classes": target.names,
        "foreground_class": 1,
        "task": "instances" if target.kind == "instances" else "semantic",
    }


# --------------------------------------------------------------------------------------------
# Tile sampling


class TileDataset(Dataset):
    """Random training tiles: input of the model's valid size, target crops of its output size.

    Each index draws one sample from a generator seeded by ``(seed, rank, index)``, so samples
    are reproducible, differ across data-loader workers (different indices) and across
    distributed ranks, and do not depend on the number of workers. :func:`make_loader` keeps
    counting indices across epochs, so every epoch sees new samples.

    Parameters
    ----------
    images : sequence of LabeledImage
    input_shape, output_shape : sequence of int
        The model's input tile and the output it produces (``output == input`` for padded
        models). The output covers the centre of the input.
    augment : AugmentConfig or None
        None = no augmentation (tiles are plain crops).
    samples_per_epoch : int
        Total over all ranks; each rank gets ``samples_per_epoch // world_size``.
    foreground_bias, border_bias : float
        Probability that a tile is centred on a random foreground pixel / on a pixel with a
        high border weight (``w > border_threshold``) instead of uniformly.
    seed, rank, world_size : int

    Examples
    --------
    >>> img = LabeledImage("a", np.zeros((1, 40, 40), np.float32), np.zeros((40, 40), np.int64),
    ...                    np.ones((40, 40), np.float32), np.zeros((40, 40), bool))
    >>> ds = TileDataset([img], (36, 36), (20, 20), samples_per_epoch=4)
    >>> s = ds[0]
    >>> tuple(s["image"].shape), tuple(s["target"].shape), s["mask"].dtype
    ((1, 36, 36), (20, 20), torch.bool)
    """

    def __init__(
        self,
        images: Sequence[LabeledImage],
        input_shape: Sequence[int],
        output_shape: Sequence[int],
        *,
        augment: AugmentConfig | None = None,
        samples_per_epoch: int = 100,
        foreground_bias: float = 0.0,
        border_bias: float = 0.0,
        border_threshold: float = 3.0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not images:
            raise InputError("no training images to sample tiles from")
        self.images = list(images)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.output_shape = tuple(int(s) for s in output_shape)
        nd = len(self.input_shape)
        if len(self.output_shape) != nd or any(o > i or (i - o) % 2 for i, o in zip(self.input_shape, self.output_shape)):
            raise ConfigError(f"output shape {self.output_shape} is not a centred crop of input shape {self.input_shape}")
        for im in self.images:
            if im.target.ndim != nd:
                raise InputError(f"{im.name}: {im.target.ndim}D sample for {nd}D tiles")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} outside world size {world_size}")
        if foreground_bias < 0 or border_bias < 0 or foreground_bias + border_bias > 1:
            raise ConfigError("foreground_bias and border_bias must be >= 0 and sum to at most 1")
        self.augment = augment
        self.samples_per_epoch = int(samples_per_epoch)
        self.foreground_bias = float(foreground_bias)
        self.border_bias = float(border_bias)
        self.border_threshold = float(border_threshold)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        sizes = np.array([im.target.size for im in self.images], dtype=np.float64)
        self._p = sizes / sizes.sum()
        self._fg: dict[int, np.ndarray] = {}
        self._border: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return max(1, self.samples_per_epoch // self.world_size)

    def _candidates(self, which: dict[int, np.ndarray], i: int, kind: str) -> np.ndarray:
        if i not in which:
            im = self.images[i]
            sel = (im.target > 0) if kind == "fg" else (im.weight > self.border_threshold)
            which[i] = np.flatnonzero(sel & ~im.ignore)
        return which[i]

    def _center(self, rng: np.random.Generator, i: int) -> np.ndarray:
        im = self.images[i]
        shape = im.spatial_shape
        u = rng.random()
        pool = None
        if u < self.foreground_bias:
            pool = self._candidates(self._fg, i, "fg")
        elif u < self.foreground_bias + self.border_bias:
            pool = self._candidates(self._border, i, "border")
        # Centres sit on the tile's pixel lattice: for an even tile size the centre is between
        # two pixels, so it is a half-integer and every sampled position stays on the grid.
        half = np.array([((o - 1) / 2.0) % 1.0 for o in self.output_shape])
        if pool is not None and pool.size:
            return np.array(np.unravel_index(int(pool[rng.integers(pool.size)]), shape), dtype=np.float64) + half
        c = []
        for n, o in zip(shape, self.output_shape):
            lo = int(rng.integers(0, n - o + 1)) if n >= o else (n - o) // 2
            c.append(lo + (o - 1) / 2.0)
        return np.array(c, dtype=np.float64)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """One random tile as a dict of NumPy arrays (see :meth:`__getitem__`)."""
        i = int(rng.choice(len(self.images), p=self._p)) if len(self.images) > 1 else 0
        im = self.images[i]
        center = self._center(rng, i)
        if self.augment is not None:
            t = sample_transform(rng, self.input_shape, self.augment)
        else:
            t = Transform.identity(self.input_shape)
        if t.is_geometric_identity:
            out = _crop(im, center, self.input_shape, self.output_shape)
            if self.augment is not None:
                from .augment import apply_gray

                out["image"] = apply_gray(out["image"], t)
            return out
        out = apply_transform(t, im.image, im.target, im.weight, im.ignore, center=center, out_shape=self.output_shape)
        return {"image": out["image"], "target": out["labels"], "weight": out["weight"], "mask": ~out["mask"]}

    def rng_for(self, index: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, self.rank, self.world_size, int(index)]))

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Tensors ``image`` (C, *in) float32, ``target`` (*out) int64, ``weight`` (*out) float32,
        ``mask`` (*out) bool (True = counts in the loss)."""
        s = self.sample(self.rng_for(index))
        return {
            "image": torch.from_numpy(np.ascontiguousarray(s["image"], dtype=np.float32)),
            "target": torch.from_numpy(np.ascontiguousarray(s["target"], dtype=np.int64)),
            "weight": torch.from_numpy(np.ascontiguousarray(s["weight"], dtype=np.float32)),
            "mask": torch.from_numpy(np.ascontiguousarray(s["mask"], dtype=bool)),
        }


def _crop(im: LabeledImage, center: np.ndarray, in_shape: Sequence[int], out_shape: Sequence[int]) -> dict[str, Any]:
    """Exact integer crop (mirrored beyond the border) for an untransformed tile."""
    from .augment import _mirror_index

    shape = im.spatial_shape
    lo = [int(round(c - (n - 1) / 2.0)) for c, n in zip(center, in_shape)]
    idx_in = [_mirror_index(np.arange(a, a + n, dtype=np.float64), s) for a, n, s in zip(lo, in_shape, shape)]
    idx_out = [ix[(n - m) // 2 : (n - m) // 2 + m] for ix, n, m in zip(idx_in, in_shape, out_shape)]
    gin, gout = np.ix_(*idx_in), np.ix_(*idx_out)
    return {
        "image": im.image[(slice(None), *gin)],
        "target": im.target[gout],
        "weight": im.weight[gout],
        "mask": ~im.ignore[gout],
    }


class _CountingSampler:
    """Yields ``len`` consecutive indices per epoch and keeps counting across epochs."""

    def __init__(self, n: int, start: int = 0) -> None:
        self.n = n
        self.next = start

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        start = self.next
        self.next += self.n
        return iter(range(start, start + self.n))


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


class BackgroundLoader:
    """Batches produced by a background thread into a bounded queue (``prefetch`` batches ahead).

    NumPy and PyTorch release the GIL in their kernels, so augmentation overlaps with training
    even without worker processes. Iterating again starts the next epoch.
    """

    def __init__(self, dataset: TileDataset, batch_size: int = 1, prefetch: int = 2, start: int = 0) -> None:
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.prefetch = max(1, int(prefetch))
        self.sampler = _CountingSampler(len(dataset), start)

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from torch.utils.data import default_collate

        indices = list(iter(self.sampler))
        batches = (
            default_collate([self.dataset[i] for i in indices[b : b + self.batch_size]])
            for b in range(0, len(indices), self.batch_size)
        )
        return prefetch(batches, self.prefetch)


def prefetch(iterable, depth: int = 2) -> Iterator[Any]:
    """Iterate ``iterable`` in a background thread, ``depth`` items ahead.

    NumPy, SciPy and PyTorch release the GIL in their kernels, so tile augmentation overlaps
    with the training step. Exceptions are re-raised in the consumer.

    Examples
    --------
    >>> list(prefetch(range(5)))
    [0, 1, 2, 3, 4]
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except Exception as exc:  # handed to the consumer and raised there
            q.put(exc)

    th = threading.Thread(target=produce, name="unetseg-prefetch", daemon=True)
    th.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()
        th.join(timeout=5)


def make_loader(dataset: TileDataset, batch_size: int = 1, num_workers: int = 0, prefetch: int = 2, *, pin_memory: bool = False, start: int = 0):
    """An iterable of collated batches with background prefetch.

    ``num_workers > 0``: a PyTorch ``DataLoader`` with that many persistent worker processes
    (one thread each), ``prefetch`` batches ahead per worker. ``num_workers == 0``: a
    :class:`BackgroundLoader` thread. Every epoch continues the index sequence (new samples);
    ``start`` sets the first index (resume).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ConfigError(f"num_workers must be >= 0, got {num_workers}")
    if num_workers == 0:
        return BackgroundLoader(dataset, batch_size, prefetch, start)
    from torch.utils.data import DataLoader

    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=_CountingSampler(len(dataset), start),
        num_workers=num_workers,
        prefetch_factor=max(1, prefetch),
        persistent_workers=True,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init,
    )
