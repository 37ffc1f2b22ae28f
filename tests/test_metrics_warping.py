"""Warping error: hand-worked topology cases, the simple-point table, and the sequential reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from unetseg.metrics import (
    HOLE_ADDITION,
    MERGE,
    SPLIT,
    classify_mismatches,
    is_simple,
    simple_point_table,
    warp,
    warping_error,
)
from unetseg.metrics.warping import warp_reference

FOUR = ndimage.generate_binary_structure(2, 1)
EIGHT = np.ones((3, 3), bool)


def two_cells(h: int = 12, w: int = 12, col: int = 5) -> np.ndarray:
    """0/255 labels: two cells separated by a 1-pixel vertical membrane at ``col``."""
    gt = np.full((h, w), 255, np.uint8)
    gt[:, col] = 0
    return gt


def direct_t4_t8(patch: np.ndarray) -> tuple[int, int]:
    """T4 of the foreground and T8 of the background by labelling the 3x3 patch directly."""
    fg = patch.astype(bool).copy()
    fg[1, 1] = False
    lab4, _ = ndimage.label(fg, FOUR)
    t4 = len({int(lab4[1 + dy, 1 + dx]) for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))} - {0})
    bg = ~patch.astype(bool)
    bg[1, 1] = False
    _, t8 = ndimage.label(bg, EIGHT)
    return t4, int(t8)


def test_simple_point_table_matches_direct_counting_for_all_512_patterns():
    for code in range(512):
        patch = np.array([(code >> k) & 1 for k in range(9)], dtype=np.uint8).reshape(3, 3)
        t4, t8 = direct_t4_t8(patch)
        assert is_simple(patch) == (t4 == 1 and t8 == 1), (code, patch, t4, t8)
    assert simple_point_table().shape == (256,)


def test_identical_segmentation_has_no_error():
    gt = two_cells()
    r = warping_error(gt, gt / 255.0, 0.5)
    assert r.error == 0.0 and r.splits_mergers_error == 0.0 and len(r.mismatches) == 0


def test_one_pixel_boundary_shift_has_zero_warping_error():
    gt = two_cells(col=5)
    pred = (two_cells(col=6) > 0).astype(np.float32)
    assert np.count_nonzero((gt > 0) != (pred > 0.5)) == 24  # pixel error is not zero
    r = warping_error(gt, pred, 0.5)
    assert r.error == 0.0
    assert np.array_equal(r.warped, pred > 0.5)


def test_merge_through_one_pixel_gap_is_classified_merge():
    gt = two_cells()
    pred = (gt > 0).astype(np.float32)
    pred[6, 5] = 1.0  # gap in the membrane joins the two cells
    r = warping_error(gt, pred, 0.5)
    assert r.error == pytest.approx(1 / gt.size)
    assert r.mismatches.tolist() == [[6, 5]]
    assert r.classes.tolist() == [MERGE]
    assert r.splits_mergers_error == pytest.approx(1 / gt.size)
    assert r.counts["merge"] == 1


def test_predicted_split_is_classified_split():
    gt = np.zeros((12, 12), np.uint8)
    gt[1:11, 1:11] = 255  # one cell
    pred = (gt > 0).astype(np.float32)
    pred[1:11, 6] = 0.0  # a membrane cuts it in two
    r = warping_error(gt, pred, 0.5)
    assert r.error > 0
    assert set(r.classes.tolist()) == {SPLIT}
    assert r.splits_mergers_error == r.error


def test_predicted_hole_is_an_error_but_not_a_split_or_merge():
    gt = np.zeros((12, 12), np.uint8)
    gt[1:11, 1:11] = 255
    pred = (gt > 0).astype(np.float32)
    pred[5, 5] = 0.0  # a hole inside the cell
    r = warping_error(gt, pred, 0.5)
    assert r.error == pytest.approx(1 / gt.size)
    assert r.classes.tolist() == [HOLE_ADDITION]
    assert r.splits_mergers_error == 0.0


def test_border_acts_as_membrane():
    # a cell touching the image border, prediction erodes it by one pixel at the border:
    # removing border pixels is simple because the frame is membrane
    gt = np.full((8, 8), 255, np.uint8)
    gt[:, 4] = 0
    pred = (gt > 0).astype(np.float32)
    pred[0, :] = 0
    assert warping_error(gt, pred, 0.5).error == 0.0


def test_threshold_compares_in_float64():
    gt = np.full((4, 4), 255, np.uint8)
    prob = np.ones((4, 4), np.float32)
    assert warping_error(gt, prob, 0.9999999999999999).error == 0.0


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), th=st.sampled_from([0.3, 0.5, 0.7]), binary=st.booleans())
def test_vectorised_warp_equals_sequential_reference(seed, th, binary):
    rng = np.random.default_rng(seed)
    cells = ndimage.gaussian_filter(rng.random((24, 24)), 1.5)
    gt = ((cells > np.median(cells)) * 255).astype(np.uint8)
    prob = np.clip(ndimage.gaussian_filter((gt > 0).astype(float), 1.0) + rng.normal(0, 0.25, gt.shape), 0, 1).astype(np.float32)
    if binary:  # all ties: the order falls back to x-major, y-minor
        prob = (prob > 0.5).astype(np.float32)
    w1, m1 = warp(gt, prob, th)
    w2, m2 = warp_reference(gt, prob, th)
    assert np.array_equal(w1, w2)
    assert np.array_equal(m1, m2)


def test_classification_of_edge_pixels_skips_out_of_image_neighbours():
    warped = np.zeros((3, 3), bool)
    warped[1, :] = True
    # (0, 1) is background with one object below: hole addition, like the reference
    assert classify_mismatches(warped, np.array([[0, 1]])).tolist() == [HOLE_ADDITION]


def brute_force_classes(warped: np.ndarray, mismatches: np.ndarray) -> list[int]:
    """The reference classification, relabelling the whole image for every split candidate."""
    lab, _ = ndimage.label(warped, FOUR)
    h, w = warped.shape
    out = []
    for y, x in mismatches:
        nb = [int(lab[y + dy, x + dx]) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy or dx) and 0 <= y + dy < h and 0 <= x + dx < w]
        ids = set(nb)
        centre = lab[y, x]
        if ids == {0}:
            out.append(0x8 if centre else 0x10)
        elif len(ids) == 1:
            out.append(HOLE_ADDITION if centre else 0x20)
        elif len(ids) == 2:
            if not centre:
                out.append(HOLE_ADDITION)
            else:
                flipped = warped.copy()
                flipped[y, x] = False
                lab2, _ = ndimage.label(flipped, FOUR)
                ids2 = {int(lab2[y + dy, x + dx]) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy or dx) and 0 <= y + dy < h and 0 <= x + dx < w}
                out.append(SPLIT if len(ids2) > 2 else 0x20)
        else:
            out.append(SPLIT if centre else MERGE)
    return out


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 100_000), density=st.sampled_from([0.3, 0.5, 0.7]))
def test_vectorised_classification_equals_whole_image_relabelling(seed, density):
    rng = np.random.default_rng(seed)
    warped = rng.random((14, 17)) < density
    pts = np.argwhere(np.ones_like(warped))  # classify every pixel, edges included
    assert classify_mismatches(warped, pts).tolist() == brute_force_classes(warped, pts)


@pytest.mark.data
def test_real_isbi_label_shifted_by_one_pixel_has_zero_warping_error(isbi_dir):
    from unetseg.io import read_image

    gt = read_image(isbi_dir / "labels" / "00.png")
    shifted = np.roll(gt, 1, axis=1)
    shifted[:, :1] = gt[:, :1]
    prob = shifted.astype(np.float32) / 255
    assert np.mean((prob > 0.5) != (gt > 0)) > 0.04  # 4 % of pixels differ
    assert warping_error(gt, prob, 0.5).error == 0.0
    shifted3 = np.roll(gt, 3, axis=1)  # a 3-pixel displacement leaves residual mismatches
    assert warping_error(gt, shifted3.astype(np.float32) / 255, 0.5).error > 0
