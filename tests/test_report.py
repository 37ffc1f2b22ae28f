"""HTML report and its figures."""

from __future__ import annotations

import re

import numpy as np

from unetseg.report import binary_error_map, class_error_map, overlay, plot_curves, write_report


def test_overlay_draws_gt_and_prediction_contours():
    lab = np.zeros((8, 8), int)
    lab[2:6, 2:6] = 1
    rgb = overlay(np.zeros((8, 8)), lab, np.roll(lab, 1, axis=1))
    assert rgb.dtype == np.uint8 and rgb.shape == (8, 8, 3)
    assert (rgb == [0, 220, 0]).all(axis=-1).any() and (rgb == [255, 0, 255]).all(axis=-1).any()


def test_error_maps_colour_their_classes():
    gt = np.array([[1, 1, 0, 0]])
    rgb = binary_error_map(gt, np.array([[1, 0, 1, 0]]))
    assert rgb[0, 1].tolist() == [40, 120, 255] and rgb[0, 2].tolist() == [255, 40, 40]
    classes = np.zeros((5, 5), np.uint8)
    classes[2, 2] = 1
    assert class_error_map(np.ones((5, 5)), classes)[2, 2].tolist() == [255, 40, 40]


def test_write_report_links_existing_figures(tmp_path):
    rng = np.random.default_rng(0)
    gts = [(rng.random((20, 30)) > 0.3).astype(np.uint8) * 255 for _ in range(3)]
    preds = [rng.random((20, 30)).astype(np.float32) for _ in range(3)]
    metrics = {
        "protocol": "binary",
        "n_images": 3,
        "dice": {"value": 0.7, "threshold": 0.5},
        "per_image": [{"index": i, "dice": 0.7} for i in range(3)],
        "curves": {"thresholds": [0.0, 0.5], "dice": [0.6, 0.7], "iou": [0.4, 0.5]},
        "notes": {"dice": "pooled"},
    }
    path = write_report(tmp_path / "rep", metrics, None, gts, preds, names=["a", "b", "c"], max_images=2)
    text = path.read_text()
    for src in re.findall(r'src="([^"]+)"', text):
        assert (path.parent / src).is_file(), src
    assert "overlay_001.png" in text and "overlay_002.png" not in text  # max_images
    assert "Showing 2 of 3 images" in text and "<td>dice</td><td>0.7</td>" in text


def test_plot_curves_none_without_curves(tmp_path):
    assert plot_curves(tmp_path / "c.png", {"protocol": "ctc"}) is None
    assert not (tmp_path / "c.png").exists()


def test_report_shows_warnings(tmp_path):
    path = write_report(tmp_path, {"protocol": "isbi2012", "warnings": ["looks inverted"]})
    assert "looks inverted" in path.read_text()
