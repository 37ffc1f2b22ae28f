"""Segmentation metrics, NumPy in and numbers out, defined as the challenges define them.

See ``docs/metrics.md`` in the shared docs for the exact definitions. Modules:

* :mod:`.pixel` pixel error and pixel F1;
* :mod:`.rand` foreground-restricted V_rand (merge/split), classic Rand index, thinning;
* :mod:`.info` foreground-restricted V_info;
* :mod:`.warping` warping error with mismatch classification;
* :mod:`.ctc` Cell Tracking Challenge SEG;
* :mod:`.overlap` binary Dice and IoU;
* :mod:`.matching` object matching and DSB2018 mean AP.
"""

from ._common import binarize, isbi_thresholds, label4
from .ctc import seg_jaccards, seg_score, unmatched_objects
from .info import InfoScores, v_info
from .matching import DSB_THRESHOLDS, average_precision, iou_matrix, match_instances, mean_ap
from .overlap import dice, dice_from_counts, iou, iou_from_counts
from .pixel import PixelCounts, pixel_counts, pixel_error, pixel_error_by_distance, pixel_f1
from .rand import RandPairs, RandScores, rand_error, rand_index, rand_pairs, rand_scores, thin_boundaries
from .warping import (
    CLASS_NAMES,
    HOLE_ADDITION,
    HOLE_DELETION,
    MERGE,
    OBJECT_ADDITION,
    OBJECT_DELETION,
    SPLIT,
    WarpingResult,
    classify_mismatches,
    is_simple,
    simple_point_table,
    warp,
    warping_error,
)

__all__ = [
    "CLASS_NAMES",
    "DSB_THRESHOLDS",
    "HOLE_ADDITION",
    "HOLE_DELETION",
    "InfoScores",
    "MERGE",
    "OBJECT_ADDITION",
    "OBJECT_DELETION",
    "PixelCounts",
    "RandPairs",
    "RandScores",
    "SPLIT",
    "WarpingResult",
    "average_precision",
    "binarize",
    "classify_mismatches",
    "dice",
    "dice_from_counts",
    "iou",
    "iou_from_counts",
    "iou_matrix",
    "is_simple",
    "isbi_thresholds",
    "label4",
    "match_instances",
    "mean_ap",
    "pixel_counts",
    "pixel_error",
    "pixel_error_by_distance",
    "pixel_f1",
    "rand_error",
    "rand_index",
    "rand_pairs",
    "rand_scores",
    "seg_jaccards",
    "unmatched_objects",
    "seg_score",
    "simple_point_table",
    "thin_boundaries",
    "v_info",
    "warp",
    "warping_error",
]
