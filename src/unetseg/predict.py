"""Re-exports of :mod:`unetseg.inference` under their first names (``unetseg.predict`` was the
inference module before it became a package); new code imports from :mod:`unetseg.inference`."""

from .inference import (
    DEFAULT_CPU_BUDGET,
    OUTPUT_KINDS,
    Predictor,
    auto_tile_shape,
    check_output_shift,
    default_memory_budget,
    dihedral_transforms,
    estimate_tile_memory,
    image_views,
    predict_dask,
    predict_file,
    predict_image,
    predict_into,
    probabilities,
    read_mirrored,
    shift_probabilities,
    whole_image_reference,
)
from .normalize import fit_normalization

__all__ = [
    "DEFAULT_CPU_BUDGET",
    "OUTPUT_KINDS",
    "Predictor",
    "auto_tile_shape",
    "check_output_shift",
    "default_memory_budget",
    "dihedral_transforms",
    "estimate_tile_memory",
    "fit_normalization",
    "image_views",
    "predict_dask",
    "predict_file",
    "predict_image",
    "predict_into",
    "probabilities",
    "read_mirrored",
    "shift_probabilities",
    "whole_image_reference",
]
