"""Pixel, Rand, information, overlap, SEG and matching metrics on hand-worked and random cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from unetseg.errors import InputError
from unetseg.metrics import (
    binarize,
    dice,
    iou,
    isbi_thresholds,
    match_instances,
    mean_ap,
    pixel_error,
    pixel_error_by_distance,
    pixel_f1,
    rand_error,
    rand_index,
    rand_scores,
    seg_score,
    thin_boundaries,
    v_info,
)

GT = np.array(
    [
        [1, 1, 1, 0, 2, 2],
        [1, 1, 1, 0, 2, 2],
        [0, 0, 0, 0, 2, 2],
        [3, 3, 3, 0, 2, 2],
    ]
)

labels_st = arrays(np.int64, st.tuples(st.integers(1, 6), st.integers(1, 6)), elements=st.integers(0, 3))


# ------------------------------------------------------------------ thresholds


def test_isbi_thresholds_accumulate_like_the_reference():
    th10 = isbi_thresholds(0.9)
    assert len(th10) == 10 and th10[3] == 0.30000000000000004 and th10[-1] == 0.8999999999999999
    th11 = isbi_thresholds(1.0)
    assert len(th11) == 11 and th11[-1] == 0.9999999999999999


def test_binarize_widens_float32_before_comparing():
    m = np.array([1.0, 0.9999999], dtype=np.float32)
    assert binarize(m, 0.9999999999999999).tolist() == [True, False]
    # what NumPy 2 does without widening: the threshold is cast to float32 (1.0)
    assert (m > np.float32(0.9999999999999999)).tolist() == [False, False]


# ------------------------------------------------------------------ pixel / overlap


def test_pixel_error_and_f1():
    gt = np.array([[255, 0], [255, 255]])
    assert pixel_error(gt, gt > 0) == 0.0
    assert pixel_error(gt, np.ones((2, 2))) == 0.25
    assert pixel_f1(gt, np.ones((2, 2))) == pytest.approx(6 / 7)


def test_pixel_error_by_distance_puts_a_shifted_boundary_in_the_first_band():
    gt = np.zeros((40, 40), bool)
    gt[:, :20] = True  # cell left, membrane right
    shifted = np.zeros_like(gt)
    shifted[:, :21] = True  # boundary one pixel to the right: one column of errors at distance 1
    assert pixel_error_by_distance(gt, shifted).tolist() == [40 / 1600, 0.0, 0.0]
    shifted2 = np.zeros_like(gt)
    shifted2[:, :22] = True  # two columns: distance 1 and 2
    assert pixel_error_by_distance(gt, shifted2).tolist() == [40 / 1600, 40 / 1600, 0.0]
    far = gt.copy()
    far[5, 35] = True  # a false cell pixel 16 px from the boundary
    assert pixel_error_by_distance(gt, far).tolist() == [0.0, 0.0, 1 / 1600]
    # no boundary at all: every error is far
    assert pixel_error_by_distance(np.ones((3, 3)), np.eye(3)).tolist() == [0.0, 0.0, 6 / 9]
    with pytest.raises(ValueError, match="bands"):
        pixel_error_by_distance(gt, gt, bands=(2.0, 1.0))


@settings(max_examples=40, deadline=None)
@given(gt=arrays(bool, (7, 9)), pred=arrays(bool, (7, 9)))
def test_pixel_error_by_distance_sums_to_the_pixel_error(gt, pred):
    assert pixel_error_by_distance(gt, pred, bands=(1.0, 1.5, 3.0)).sum() == pytest.approx(pixel_error(gt, pred))


def test_dice_iou_hand_worked_and_empty():
    assert dice([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(2 / 3)
    assert iou([1, 1, 0, 0], [1, 0, 0, 0]) == 0.5
    assert dice(np.zeros(4), np.zeros(4)) == 1.0 and iou(np.zeros(4), np.zeros(4)) == 1.0
    with pytest.raises(InputError):
        dice(np.zeros(3), np.zeros(4))


# ------------------------------------------------------------------ Rand


def brute_force_rand(gt: np.ndarray, pred: np.ndarray) -> float:
    """V_rand by counting ordered pixel pairs (self-pairs included) over the GT foreground."""
    g = gt.ravel()
    fg = g != 0
    g = g[fg]
    p = pred.ravel()[fg].astype(np.int64)
    ids = np.arange(len(p))
    p = np.where(p == 0, -1 - ids, p)  # predicted 0 -> singletons
    same_t = g[:, None] == g[None, :]
    same_s = p[:, None] == p[None, :]
    sum_p2 = np.sum(same_t & same_s)
    return 2 * sum_p2 / (np.sum(same_s) + np.sum(same_t))


def test_rand_identical_is_perfect_and_merge_is_hand_worked():
    assert rand_scores(GT, GT).v_rand == 1.0
    merged = (GT > 0).astype(int)  # every cell one segment
    r = rand_scores(GT, merged)
    t2 = 6**2 + 8**2 + 3**2
    assert r.split == 1.0
    assert r.merge == pytest.approx(t2 / 17**2)
    assert r.v_rand == pytest.approx(2 * t2 / (17**2 + t2))


def test_predicted_zero_inside_foreground_counts_as_singletons():
    gt = np.array([[1, 1, 1, 1]])
    pred = np.array([[0, 0, 0, 0]])
    r = rand_scores(gt, pred)
    assert r.pairs.sum_p2 == 4 and r.pairs.sum_s2 == 4 and r.pairs.sum_t2 == 16
    assert r.v_rand == pytest.approx(8 / 20)


@settings(max_examples=60, deadline=None)
@given(gt=labels_st, data=st.data())
def test_v_rand_equals_brute_force_pair_count(gt, data):
    pred = data.draw(arrays(np.int64, gt.shape, elements=st.integers(0, 4)))
    if not (gt != 0).any():
        assert np.isnan(rand_scores(gt, pred).v_rand)
        return
    assert rand_scores(gt, pred).v_rand == pytest.approx(brute_force_rand(gt, pred), rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(gt=labels_st, data=st.data())
def test_v_rand_and_v_info_are_invariant_to_relabelling(gt, data):
    pred = data.draw(arrays(np.int64, gt.shape, elements=st.integers(0, 4)))
    perm_g = np.concatenate([[0], 10 + np.array(data.draw(st.permutations(list(range(1, 4)))))])
    perm_p = np.concatenate([[0], 50 + 7 * np.array(data.draw(st.permutations(list(range(1, 5)))))])
    g2, p2 = perm_g[gt], perm_p[pred]
    a, b = rand_scores(gt, pred), rand_scores(g2, p2)
    assert a.v_rand == pytest.approx(b.v_rand, nan_ok=True)
    assert a.merge == pytest.approx(b.merge, nan_ok=True)
    i, j = v_info(gt, pred), v_info(g2, p2)
    assert i.v_info == pytest.approx(j.v_info, nan_ok=True)
    assert i.split == pytest.approx(j.split, nan_ok=True)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@settings(max_examples=40, deadline=None)
@given(gt=labels_st, data=st.data())
def test_v_rand_before_thinning_matches_skimage_adapted_rand_error(gt, data):
    from skimage.metrics import adapted_rand_error

    pred = data.draw(arrays(np.int64, gt.shape, elements=st.integers(0, 4)))
    if np.count_nonzero(gt) < 2:
        return
    # scikit-image treats predicted 0 as one segment: give each predicted-0 pixel its own label
    single = pred.copy()
    zeros = single == 0
    single[zeros] = 100 + np.arange(np.count_nonzero(zeros))
    are, _, _ = adapted_rand_error(gt, single, ignore_labels=(0,))
    ours = rand_scores(gt, pred, self_pairs=False).v_rand
    if np.isfinite(ours):
        assert 1 - are == pytest.approx(ours, abs=1e-12)


def test_classic_rand_index():
    a = np.array([0, 0, 1, 1])
    assert rand_index(a, np.array([5, 5, 7, 7])) == 1.0
    # pairs: (0,1) agree-same, (2,3) agree-same, 4 cross pairs disagree -> 2/6
    assert rand_index(a, np.array([5, 5, 5, 5])) == pytest.approx(2 / 6)
    assert rand_error(a, a) == 0.0


def test_thin_boundaries_keeps_one_pixel_lines():
    b = np.ones((5, 9), bool)
    b[:, 3:6] = False  # a 3-pixel membrane between two cells
    lab = thin_boundaries(b)
    assert set(np.unique(lab[:, 3:6])) == {0, 1, 2}
    assert np.all(lab[:, 4] == 0) and np.all(lab[:, 3] == 1) and np.all(lab[:, 5] == 2)
    assert np.all(thin_boundaries(np.zeros((3, 3), bool)) == 0)


# ------------------------------------------------------------------ V_info


def test_v_info_identical_and_edge_cases():
    assert v_info(GT, GT).v_info == pytest.approx(1.0)
    r = v_info(np.array([[1, 1]]), np.array([[1, 2]]))  # H(GT) = 0
    assert (r.split, r.merge, r.v_info) == (0.0, 1.0, 0.0)
    r = v_info(np.ones((2, 2), int), np.ones((2, 2), int))  # both 0: the H(S) rule is applied last
    assert (r.split, r.merge, r.v_info) == (1.0, 0.0, 0.0)
    r = v_info(GT, (GT > 0).astype(int))  # H(S) = 0: one predicted segment
    assert (r.split, r.merge, r.v_info) == (1.0, 0.0, 0.0)


def test_v_info_hand_worked_split():
    gt = np.array([[1, 1, 2, 2]])
    pred = np.array([[1, 2, 3, 4]])  # every cell split in two
    r = v_info(gt, pred)
    # H(T) = log 2, H(S) = log 4, H(S,T) = log 4 -> I = log 2
    assert r.mutual_information == pytest.approx(np.log(2))
    assert r.split == pytest.approx(1.0) and r.merge == pytest.approx(0.5)
    assert r.v_info == pytest.approx(2 * np.log(2) / (np.log(2) + np.log(4)))


def test_v_info_singletons():
    gt = np.array([[1, 1, 2, 2]])
    pred = np.array([[0, 0, 0, 0]])  # four singletons: same as labels 1..4
    assert v_info(gt, pred).v_info == pytest.approx(v_info(gt, np.array([[1, 2, 3, 4]])).v_info)


# ------------------------------------------------------------------ SEG


def test_seg_touching_cells_predicted_as_one():
    gt = np.array([[1, 1, 2, 2]])
    pred = np.array([[7, 7, 7, 7]])
    assert iou(gt, pred) == 1.0  # foreground IoU cannot see the merge
    assert seg_score(gt, pred) == 0.5


def test_seg_match_is_strictly_more_than_half():
    gt = np.array([[1, 1, 1, 1, 0, 0]])
    assert seg_score(gt, np.array([[5, 5, 0, 0, 0, 0]])) == 0.0  # exactly half: no match
    assert seg_score(gt, np.array([[5, 5, 5, 0, 0, 5]])) == pytest.approx(3 / 5)
    assert seg_score(gt, gt) == 1.0
    assert np.isnan(seg_score(np.zeros((2, 2), int), np.ones((2, 2), int)))


# ------------------------------------------------------------------ matching


def test_match_instances_hand_worked():
    gt = np.array([[1, 1, 0, 2, 2, 0, 3]])
    pred = np.array([[4, 4, 0, 5, 0, 0, 0]])
    m = match_instances(gt, pred, 0.5)
    assert (m["tp"], m["fp"], m["fn"]) == (2, 0, 1)
    assert m["precision"] == 1.0 and m["recall"] == pytest.approx(2 / 3) and m["f1"] == 0.8
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert match_instances(gt, pred, 0.6)["tp"] == 1  # IoU of (2, 5) is 0.5


def test_match_instances_is_one_to_one():
    gt = np.array([[1, 1, 1, 1]])
    pred = np.array([[2, 2, 3, 3]])
    m = match_instances(gt, pred, 0.5)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 1, 0)


def test_mean_ap_dsb():
    gt = np.array([[1, 1, 1, 1, 0, 2, 2, 2, 2, 2]])
    assert mean_ap(gt, gt) == 1.0
    pred = np.array([[1, 1, 1, 0, 0, 2, 2, 2, 2, 2]])  # IoU 0.75 and 1.0
    # t in 0.50..0.70: both match (AP 1); t >= 0.75 (IoU > t fails at 0.75): AP = 1/3
    assert mean_ap(gt, pred) == pytest.approx((5 * 1.0 + 5 * (1 / 3)) / 10)
    assert mean_ap([gt, gt], [gt, pred]) == pytest.approx((1 + (5 + 5 / 3) / 10) / 2)


@settings(max_examples=40, deadline=None)
@given(gt=labels_st, data=st.data())
def test_predicted_zero_equals_unique_labels_for_rand_and_info(gt, data):
    pred = data.draw(arrays(np.int64, gt.shape, elements=st.integers(0, 3)))
    expanded = pred.copy()
    zeros = expanded == 0
    expanded[zeros] = 100 + np.arange(np.count_nonzero(zeros))
    assert rand_scores(gt, pred).v_rand == pytest.approx(rand_scores(gt, expanded).v_rand, nan_ok=True)
    assert v_info(gt, pred).v_info == pytest.approx(v_info(gt, expanded).v_info, nan_ok=True, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(a=labels_st, data=st.data())
def test_classic_rand_index_equals_brute_force(a, data):
    b = data.draw(arrays(np.int64, a.shape, elements=st.integers(0, 3)))
    if a.size < 2:
        return
    x, y = a.ravel(), b.ravel()
    iu = np.triu_indices(x.size, 1)
    agree = (x[:, None] == x[None, :]) == (y[:, None] == y[None, :])
    assert rand_index(a, b) == pytest.approx(agree[iu].mean(), rel=1e-12)


def test_skimage_cross_check_on_a_fixed_case():
    from skimage.metrics import adapted_rand_error

    pred = np.array([[1, 1, 0, 0, 2, 2], [1, 1, 2, 0, 2, 2], [0, 0, 0, 0, 2, 2], [3, 3, 0, 0, 2, 2]])
    single = pred.copy()
    single[pred == 0] = 100 + np.arange(np.count_nonzero(pred == 0))
    are, _, _ = adapted_rand_error(GT, single, ignore_labels=(0,))
    ours = rand_scores(GT, pred, self_pairs=False).v_rand
    assert 0.5 < ours < 1.0
    assert 1 - are == pytest.approx(ours, abs=1e-12)
    # with self-pairs (the ISBI normalisation) the number differs
    assert rand_scores(GT, pred).v_rand != pytest.approx(ours)
