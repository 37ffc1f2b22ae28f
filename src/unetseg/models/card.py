"""The model card: what inference needs besides the weights, typed and versioned.

Training writes a :class:`ModelCard` into every model file (``"card"`` in the JSON beside the
safetensors weights and in their header); prediction, export and the napari widget read it. It
is loaded with the strict config loader (:func:`unetseg.config.from_dict`), so an unknown or
badly typed key is an error naming the key, never silently ignored.

Model files of format version 1 stored an untyped ``extra`` dict instead; :func:`card_from_extra`
migrates it on read (training metrics stored under their own names move to
``training.metrics``).

Examples
--------
>>> card = ModelCard(classes=("membrane", "cell"), output_shift=(-0.75, -0.25))
>>> card.foreground_name, card.is_instances
('cell', False)
>>> card_from_dict(card_to_dict(card)) == card
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ..errors import ConfigError, ModelFileError

CARD_VERSION = 1
DEFAULT_NORMALIZATION = {"method": "percentile", "low": 1.0, "high": 99.8}
_TRAINING_KEYS = ("train", "val", "data", "tile", "precision", "step", "averaged_steps", "metrics", "unetseg_version", "init")


def _default_normalization() -> dict[str, Any]:
    return dict(DEFAULT_NORMALIZATION)


@dataclass(frozen=True)
class TrainingInfo:
    """Where a model came from: the images it was trained and validated on, its tile, its
    precision, the step its weights are from, its validation metrics and the unetseg version."""

    train: tuple[str, ...] = ()
    val: tuple[str, ...] = ()
    data: str | None = None  # the training data's folder or file, as the recipe named it
    tile: tuple[int, ...] | None = None
    precision: str | None = None
    step: int | None = None
    averaged_steps: int | None = None  # weights are a running mean over this many steps
    metrics: dict[str, float] = field(default_factory=dict)  # validation metrics of these weights
    unetseg_version: str | None = None
    init: str | None = None  # the model training started from (model.init), if any


@dataclass(frozen=True)
class Postprocess:
    """How probabilities become instance labels (``predict --output labels`` without flags).

    ``split``: ``none`` (connected components), ``distance`` or ``border`` (watershed splits,
    :func:`unetseg.postprocess.instances_from_probabilities`); ``min_size``: objects smaller than
    this many pixels are removed; ``threshold``: foreground probability threshold;
    ``fill_holes``: dark structures of a 2-class model's foreground map smaller than this many
    pixels are filled before any output is written (``prob``, ``mask`` and ``labels``;
    :func:`unetseg.postprocess.fill_small_holes`; 0 = off); ``agglomerate``: after that, the
    boundaries of that map are closed by agglomeration, regions merged while the median affinity
    along their boundary is above this value, the lines between the rest drawn in as 0
    (:func:`unetseg.membranes.agglomerate_boundaries`; 0 = off); ``mutex_watershed``: instead
    of that agglomeration, the regions come from the mutex watershed on the model's own affinity
    outputs (:func:`unetseg.affinities.mutex_boundaries`; needs ``affinity_offsets``);
    ``edge_min_size``: objects touching the image's edge with fewer than this many pixels are
    removed (:func:`unetseg.postprocess.remove_small_edge_objects`; 0 = off). A recipe's ``postprocess``
    section is what its benchmarks validated; training copies it into the card.
    """

    split: Literal["none", "distance", "border"] = "none"
    min_size: int = 0
    threshold: float = 0.5
    fill_holes: int = 0
    agglomerate: float = 0.0
    mutex_watershed: bool = False
    edge_min_size: int = 0

    def __post_init__(self) -> None:
        if self.min_size < 0 or not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"postprocess: min_size {self.min_size} must be >= 0 and threshold {self.threshold} in [0, 1]")
        for key in ("fill_holes", "edge_min_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"postprocess.{key}: expected a pixel count >= 0, got {value!r}")
        if isinstance(self.agglomerate, bool) or not isinstance(self.agglomerate, (int, float)) or not 0 <= self.agglomerate < 1:
            raise ConfigError(f"postprocess.agglomerate: expected a median affinity in [0, 1) (0 = off), got {self.agglomerate!r}")
        if not isinstance(self.mutex_watershed, bool) or (self.mutex_watershed and self.agglomerate):
            raise ConfigError(f"postprocess.mutex_watershed: expected true or false, and not together with agglomerate (got {self.mutex_watershed!r})")


@dataclass(frozen=True)
class ModelCard:
    """What inference needs besides the network.

    Attributes
    ----------
    normalization : dict
        Input normalisation (:func:`unetseg.normalize.normalize`), applied as in training.
    classes : tuple of str
        Class names; index = output channel.
    foreground_class : int
        The class whose probability ``predict --output prob`` writes for a 2-class model.
    border_class : int or None
        A class marking borders between touching objects (used to split instances).
    task : {"semantic", "instances"}
        ``instances``: the labels were objects; ``--output labels`` splits the foreground.
    output_shift : tuple of float or None
        Pixels per spatial axis the probabilities are moved after TTA (calibrated in training).
    postprocess : Postprocess
        How ``--output labels`` turns probabilities into objects unless told otherwise.
    training : TrainingInfo
        Provenance.
    """

    card_version: int = CARD_VERSION
    normalization: dict[str, Any] = field(default_factory=_default_normalization)
    classes: tuple[str, ...] = ("background", "foreground")
    foreground_class: int = 1
    border_class: int | None = None
    task: Literal["semantic", "instances"] = "semantic"
    output_shift: tuple[float, ...] | None = None
    postprocess: Postprocess = field(default_factory=Postprocess)
    training: TrainingInfo = field(default_factory=TrainingInfo)

    def __post_init__(self) -> None:
        if self.card_version != CARD_VERSION:
            raise ConfigError(f"card.card_version: {self.card_version} is not supported (expected {CARD_VERSION})")
        if not self.classes:
            raise ConfigError("card.classes: at least one class name is needed")
        if not 0 <= self.foreground_class < max(2, len(self.classes)):
            raise ConfigError(f"card.foreground_class: {self.foreground_class} is not a class of {list(self.classes)}")
        if self.border_class is not None and not 0 <= self.border_class < len(self.classes):
            raise ConfigError(f"card.border_class: {self.border_class} is not a class of {list(self.classes)}")
        if self.output_shift is not None and not all(math.isfinite(s) and abs(s) <= 2.0 for s in self.output_shift):
            raise ConfigError(f"card.output_shift: {list(self.output_shift)} must be finite numbers within +-2 pixels")

    @property
    def foreground_name(self) -> str:
        """The name of :attr:`foreground_class`."""
        return self.classes[self.foreground_class] if self.foreground_class < len(self.classes) else f"class_{self.foreground_class}"

    @property
    def is_instances(self) -> bool:
        """Whether the model was trained on object (instance) labels."""
        return self.task == "instances"

    def with_training(self, **changes: Any) -> ModelCard:
        """A copy whose :attr:`training` has ``changes`` applied."""
        return replace(self, training=replace(self.training, **changes))


def card_from_dict(data: Any, *, where: str = "card") -> ModelCard:
    """Build a :class:`ModelCard` from its JSON form (strict: unknown keys raise ConfigError).

    Examples
    --------
    >>> card_from_dict({"classes": ["bg", "cell"], "task": "instances"}).is_instances
    True
    >>> card_from_dict({"colour": "red"})
    Traceback (most recent call last):
    ...
    unetseg.errors.ConfigError: card.colour: unknown key (expected one of: border_class, card_version, classes, foreground_class, normalization, output_shift, postprocess, task, training)
    """
    from ..config import from_dict

    return from_dict(ModelCard, data, path=where)


def card_to_dict(card: ModelCard) -> dict[str, Any]:
    """The JSON form of ``card`` (tuples as lists), which :func:`card_from_dict` reads back."""
    from ..config import to_dict

    return to_dict(card)


def card_from_extra(extra: dict[str, Any] | None, *, unetseg_version: str | None = None, where: str = "extra") -> ModelCard:
    """Migrate the ``extra`` dict of a format-version-1 model file to a :class:`ModelCard`.

    Numbers stored in ``extra["training"]`` under a metric's name (``{"v_rand": 0.97}``) move to
    ``training.metrics``; any other unknown key is refused.

    Examples
    --------
    >>> c = card_from_extra({"classes": ["membrane", "cell"], "training": {"step": 9, "v_rand": 0.9}})
    >>> c.training.step, c.training.metrics
    (9, {'v_rand': 0.9})
    """
    data = dict(extra or {})
    training = dict(data.pop("training", None) or {})
    metrics = dict(training.pop("metrics", None) or {})
    for key in [k for k in training if k not in _TRAINING_KEYS]:
        value = training[key]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics[key] = float(training.pop(key))
    if metrics:
        training["metrics"] = metrics
    if unetseg_version is not None:
        training.setdefault("unetseg_version", unetseg_version)
    try:
        return card_from_dict({**data, "training": training}, where=where)
    except ConfigError as exc:
        raise ModelFileError(f"cannot migrate the model file's extra: {exc}") from exc
