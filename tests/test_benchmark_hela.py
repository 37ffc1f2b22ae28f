"""The HeLa benchmarks' counting of false objects (predicted objects on no reference cell)."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from hela_postprocess import false_objects, false_objects_at_edges  # noqa: E402


def test_false_objects_are_counted_by_the_frame_edge_they_touch():
    gt = np.zeros((8, 8), np.int64)
    gt[5:7, 5:7] = 3  # one reference cell
    labels = np.zeros((8, 8), np.int64)
    labels[0, 1:3] = 1  # false, at the top
    labels[0:2, 7] = 2  # false, at the top and the right
    labels[3, 3] = 4  # false, in open background
    labels[5:8, 5:7] = 5  # on the cell, and at the bottom: not false
    assert false_objects(gt, labels) == (3, 4)
    assert false_objects_at_edges(gt, labels) == {"top": 2, "bottom": 0, "left": 0, "right": 1, "none": 1}
