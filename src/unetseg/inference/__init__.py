"""Overlap-tile inference (paper Fig. 2): any image size, in memory, out of core, or on Dask.

- :class:`Predictor` (``predictor``): a network and its model card prepared once, shared by the
  CLI, ``predict_file``, validation, calibration and the demo; never changes the model given.
- ``engine``: the forward pass (TTA, autocast, memory format) and the tile loop.
- ``shift``: the calibrated output shift applied after TTA.
- ``dask``: ``map_overlap`` inference of arrays larger than one machine.
- ``files``: file in, file out (lazy reading, image-wide normalisation, output kinds).
- ``ensemble``: several models (the folds of ``unetseg cv``) as one predictor.

Tiling is planned by :mod:`unetseg.tiling`: valid-padding models get non-overlapping output
tiles on the ``2**depth`` grid fed with input windows enlarged by the halo and mirrored beyond
the image (``numpy.pad`` mode ``"symmetric"``), which reproduces the whole-image output exactly;
same-padding models get overlapping windows with their margins discarded.
"""

from .dask import predict_dask
from .engine import (
    DEFAULT_CPU_BUDGET,
    auto_tile_shape,
    default_memory_budget,
    dihedral_transforms,
    estimate_tile_memory,
    probabilities,
    read_mirrored,
    whole_image_reference,
)
from .ensemble import EnsemblePredictor, model_paths
from .files import OUTPUT_KINDS, image_views, predict_array, predict_file
from .predictor import Predictor, as_predictor, predict_image, predict_into
from .shift import check_output_shift, shift_probabilities

__all__ = [
    "DEFAULT_CPU_BUDGET",
    "EnsemblePredictor",
    "OUTPUT_KINDS",
    "Predictor",
    "as_predictor",
    "auto_tile_shape",
    "check_output_shift",
    "default_memory_budget",
    "dihedral_transforms",
    "estimate_tile_memory",
    "image_views",
    "model_paths",
    "predict_dask",
    "predict_array",
    "predict_file",
    "predict_image",
    "predict_into",
    "probabilities",
    "read_mirrored",
    "shift_probabilities",
    "whole_image_reference",
]
