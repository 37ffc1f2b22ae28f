"""From label images to training targets: classes, ignore masks and the objects whose borders
the weight map separates; see :mod:`unetseg.data` for the target kinds and the ignore rule."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import ConfigError, InputError
from ..weights import carve_borders, instances_from_mask
from .config import TargetConfig

log = logging.getLogger(__name__)

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


def resolve_kind(cfg: TargetConfig, layout: str, values: set[int]) -> TargetConfig:
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
        unl = "partial" if layout == "ctc" else "background"
    return dataclasses.replace(cfg, kind=kind, foreground_value=fg, unlabeled=unl)


def partial_frames(labels: list[np.ndarray], ignore_value: int | None = None) -> list[bool]:
    """Which label images annotate only some of their objects: fewer than half the median count.

    The Cell Tracking Challenge's SEG ground truth is complete in most frames and partial in a
    few (DIC-C2DH-HeLa 01: 10-13 cells in eight frames, 3 in ``man_seg067``); only the partial
    ones should leave far-away unlabelled pixels out of the loss.

    Examples
    --------
    >>> full = np.arange(12).reshape(3, 4)
    >>> partial_frames([full, full, full, np.array([[0, 1]])])
    [False, False, False, True]
    """
    counts = [int(np.count_nonzero(np.unique(lab[(lab != 0) & (lab != ignore_value)] if ignore_value is not None else lab[lab != 0])))
              for lab in labels]
    typical = float(np.median(counts)) if counts else 0.0
    return [c < 0.5 * typical for c in counts]


def object_rims(instances: np.ndarray, width: int) -> np.ndarray:
    """The pixels of each object within ``width`` pixels (city-block) of a pixel of another label.

    The "border" class of a three-class instance target: touching objects are separated by two
    rims (plus any carved line), so the interiors that seed the watershed stay apart.

    Examples
    --------
    >>> lab = np.zeros((5, 8), np.int32); lab[:, 1:4] = 1; lab[:, 4:7] = 2
    >>> object_rims(lab, 1)[2].astype(int).tolist()
    [0, 1, 0, 1, 1, 0, 1, 0]
    """
    footprint = ndimage.generate_binary_structure(instances.ndim, 1)
    footprint = ndimage.iterate_structure(footprint, width)
    low = ndimage.minimum_filter(instances, footprint=footprint, mode="nearest")
    high = ndimage.maximum_filter(instances, footprint=footprint, mode="nearest")
    return (instances > 0) & (low != high)


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
        if cfg.border_class_width:
            target[object_rims(inst, cfg.border_class_width)] = 2
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


