"""The HeLa benchmarks' counting of false objects (predicted objects on no reference cell)."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from hela_postprocess import edge_areas, false_objects, false_objects_at_edges, nested  # noqa: E402


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


def test_the_nested_choice_breaks_a_seg_tie_by_fewer_false_objects():
    # rows: (fold, SEG, reference objects, false objects in complete frames) per frame
    keep = [(0, 0.8, 10, 2), (1, 0.7, 10, 1), (2, 0.9, 10, 3)]
    drop = [(0, 0.8, 10, 0), (1, 0.7, 10, 0), (2, 0.9, 10, 1)]  # same SEG, fewer false objects
    worse = [(0, 0.8, 10, 0), (1, 0.6, 10, 0), (2, 0.9, 10, 0)]  # fewer still, but SEG lost on fold 1
    table = {("border", 50, 0.6, 0): keep, ("border", 50, 0.6, 1000): drop, ("border", 50, 0.6, 4000): worse}
    got = nested(table)
    assert {f: c["edge_min_size"] for f, c in got["chosen_per_fold"].items()} == {"0": 1000, "1": 4000, "2": 1000}
    assert got["nested_seg_pooled"] == 0.7667 and got["nested_false_objects_complete_frames"] == 1


def test_edge_areas_counts_only_objects_at_the_frame_edge():
    labels = np.zeros((6, 6), np.int64)
    labels[0, 0:3] = 1  # 3 px at the top
    labels[2:4, 2:4] = 2  # inside
    labels[3:6, 5] = 3  # 3 px at the right and bottom... and 1 more
    labels[5, 4] = 3
    assert edge_areas(labels) == [3, 4]
    assert edge_areas(labels, {3}) == [4]


def test_bn_draws_parses_draws_and_reports_ranges(tmp_path, capsys):
    import argparse

    import pytest
    from hela_bn_draws import main, parse_draw, ranges

    assert parse_draw("64:7") == (64, 7)
    for bad in ("64", "0:1", "a:1", "64:-1"):
        with pytest.raises(argparse.ArgumentTypeError, match="TILES:SEED"):
            parse_draw(bad)
    assert ranges([{"039": 0.5, "054": 0.9}, {"039": 0.7, "054": 0.8}]) == {"039": [0.5, 0.7], "054": [0.8, 0.9]}
    assert ranges([]) == {}
    assert main(["--cv", str(tmp_path), "--data", str(tmp_path)]) == 0  # nothing to score: says so, no error
    assert "nothing to do" in capsys.readouterr().out


def test_the_batch_norm_tiles_are_named_or_refused():
    from isbi_weight_averaging import training_tiles

    with pytest.raises(ValueError, match="augmented, plain or geometric"):
        training_tiles(Path("no-run"), Path("no-data"), None, 1, tiles="intensity")
