"""Several models as one predictor: the mean of their probabilities (nnU-Net's fold ensemble).

:class:`EnsemblePredictor` is a :class:`~unetseg.inference.Predictor` whose forward pass averages
its members' TTA probabilities tile by tile, so every entry point (``predict``, ``predict_file``,
Dask, the CLI) ensembles without knowing it. The members must share the architecture's geometry
(halo, depth, padding, channels, classes) and the input normalisation; the output shift applied
after averaging is the mean of the members' shifts. :func:`model_paths` finds the fold models
of a ``unetseg cv`` folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import ModelFileError
from ..models.files import WEIGHTS_NAME
from .predictor import Predictor

_GEOMETRY = ("halo", "depth", "padding", "spatial_dims", "in_channels", "num_classes", "affinity_offsets")


def model_paths(path: str | os.PathLike) -> list[Path]:
    """The model(s) a path names: a model file or run folder (one), or a cross-validation folder
    whose ``fold*/`` run folders hold models (all folds, in order).

    Examples
    --------
    >>> import tempfile
    >>> model_paths(tempfile.mkdtemp())
    Traceback (most recent call last):
    ...
    unetseg.errors.ModelFileError: ...: holds no model (model.safetensors) and no fold*/ run folders with one
    """
    p = Path(path)
    if p.is_file() or (p / WEIGHTS_NAME).is_file():
        return [p]
    folds = sorted((d for d in p.glob("fold*") if (d / WEIGHTS_NAME).is_file()), key=lambda d: (len(d.name), d.name))
    if not folds:
        raise ModelFileError(f"{p}: holds no model ({WEIGHTS_NAME}) and no fold*/ run folders with one")
    return folds


class EnsemblePredictor(Predictor):
    """The mean prediction of several models (each prepared once, like a :class:`Predictor`).

    Examples
    --------
    >>> from unetseg.models import UNet
    >>> members = [UNet(1, 2, base_channels=2, depth=2) for _ in range(2)]
    >>> EnsemblePredictor(members, precision="fp32").predict(np.zeros((20, 21), np.float32), tile_shape=16).shape
    (2, 20, 21)
    """

    def __init__(self, models: Sequence, *, device=None, precision: str = "auto", channels_last: bool | str = "auto",
                 backend: str = "torch"):
        if not models:
            raise ModelFileError("an ensemble needs at least one model")
        self.members = [m if isinstance(m, Predictor) else Predictor(m, device=device, precision=precision, channels_last=channels_last,
                                                                      backend=backend)
                        for m in models]
        first = self.members[0]
        for i, m in enumerate(self.members[1:], start=1):
            diffs = [k for k in _GEOMETRY if getattr(m.network, k, None) != getattr(first.network, k, None)]
            if diffs:
                raise ModelFileError(f"ensemble member {i} differs from member 0 in {', '.join(diffs)}")
            if m.card.normalization != first.card.normalization:
                raise ModelFileError(f"ensemble member {i} normalises its input differently from member 0")
        # The tile plan, views and memory estimates use the first member (all share its geometry).
        self.device, self.precision, self.spatial_dims, self.backend = first.device, first.precision, first.spatial_dims, first.backend
        self.memory_format, self.network = first.memory_format, first.network
        shifts = [m.card.output_shift or (0.0,) * first.spatial_dims for m in self.members]
        mean = tuple(float(v) for v in np.mean(shifts, axis=0))
        self.card = replace(first.card, output_shift=mean if any(mean) else None)

    def calibrate(self, images) -> None:
        """Calibrate every member's ``int8`` backend on ``images``."""
        for member in self.members:
            member.calibrate(images)

    @classmethod
    def from_path(cls, path: str | os.PathLike, **kwargs) -> Predictor:
        """A Predictor for one model, an EnsemblePredictor for a cross-validation folder."""
        paths = model_paths(path)
        return Predictor(paths[0], **kwargs) if len(paths) == 1 else cls(paths, **kwargs)

    def __call__(self, batch: np.ndarray, *, tta: bool = False) -> np.ndarray:
        total = self.members[0](batch, tta=tta)
        for m in self.members[1:]:
            total = total + m(batch, tta=tta)
        return total / len(self.members)
