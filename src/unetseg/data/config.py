"""Dataset configuration: how label files become targets, weight maps, normalisation, axes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigError
from ..io import DEFAULT_MAX_PIXELS

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
    border_class_width: int = 0  # instances: the outer rim of every object (this many px) is class 2, "border"
    instance_connectivity: int = 1  # binary/multiclass: objects for the weight map = components
    ignore_value: int | None = None  # label value meaning "not annotated" (masked out)
    unlabeled: Literal["auto", "background", "ignore_far", "partial"] = "auto"  # auto: partial for CTC
    unlabeled_margin: float = 40.0

    def __post_init__(self) -> None:
        if self.kind == "multiclass" and not self.class_values:
            raise ConfigError("data.target.class_values: multiclass targets need the label value of each class")
        if self.class_values is not None and len(set(self.class_values)) != len(self.class_values):
            raise ConfigError(f"data.target.class_values: values repeat in {self.class_values}")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ConfigError(f"data.target.class_names: {len(self.class_names)} names for {self.num_classes} classes")
        if self.border_class_width < 0 or (self.border_class_width and self.kind not in ("instances", "auto")):
            raise ConfigError(f"data.target.border_class_width: a rim width >= 0 for instance targets, got {self.border_class_width} for {self.kind}")
        if self.border_width < 1:
            raise ConfigError(f"data.target.border_width: must be >= 1, got {self.border_width}")
        if self.unlabeled_margin < 0:
            raise ConfigError(f"data.target.unlabeled_margin: must be >= 0, got {self.unlabeled_margin}")

    @property
    def num_classes(self) -> int:
        if self.kind == "multiclass" and self.class_values:
            return len(self.class_values)
        return 3 if self.border_class_width else 2

    @property
    def names(self) -> list[str]:
        """Class names, index = class id (stored in the model file's ``extra["classes"]``)."""
        if self.class_names is not None:
            return list(self.class_names)
        if self.num_classes == 2:
            return ["background", "foreground"]
        if self.kind != "multiclass":
            return ["background", "foreground", "border"]
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
        from ..config import from_dict

        return from_dict(cls, dict(data or {}), path="data")


