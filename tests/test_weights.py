"""Weight maps and separation borders (paper section 3, Fig. 3c/d), checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from unetseg.errors import InputError
from unetseg.weights import (
    WeightCache,
    border_term,
    carve_borders,
    class_weights,
    instances_from_mask,
    nearest_two_distances,
    separation_borders,
    weight_map,
)


def two_squares() -> np.ndarray:
    """30x40 image, square 1 at rows 10-19 / cols 5-14, square 2 touching it at cols 15-24."""
    lab = np.zeros((30, 40), np.int32)
    lab[10:20, 5:15] = 1
    lab[10:20, 15:25] = 2
    return lab


def test_two_touching_squares_get_a_one_pixel_line():
    carved, border = carve_borders(two_squares())
    expected = np.zeros((30, 40), bool)
    expected[10:20, 15] = True
    assert np.array_equal(border, expected)
    assert np.array_equal(carved == 0, (two_squares() == 0) | expected)
    # The foreground now falls apart into two components, even with 8-connectivity.
    _, n = ndimage.label(carved > 0, structure=np.ones((3, 3)))
    assert n == 2


def test_border_width_two_carves_both_sides():
    border = separation_borders(two_squares(), width=2)
    assert border[10:20, 14].all() and border[10:20, 15].all()
    assert border.sum() == 20


def test_diagonal_touch_is_separated_with_full_connectivity():
    lab = np.zeros((6, 6), np.int32)
    lab[:3, :3] = 1
    lab[3:, 3:] = 2
    assert separation_borders(lab, connectivity=1).sum() == 0
    carved, _ = carve_borders(lab)
    _, n = ndimage.label(carved > 0, structure=np.ones((3, 3)))
    assert n == 2


def test_separate_instances_not_touched():
    lab = np.zeros((10, 10), np.int32)
    lab[1:4, 1:4] = 1
    lab[6:9, 6:9] = 2
    assert not separation_borders(lab).any()


def test_weight_map_matches_hand_computed_values():
    carved, _ = carve_borders(two_squares())
    w = weight_map(carved, w0=10.0, sigma=5.0, class_weight=None)
    assert w.dtype == np.float32 and w.shape == (30, 40)
    # On the line: one pixel from each square, d1 = d2 = 1.
    assert w[14, 15] == pytest.approx(1 + 10 * math.exp(-((1 + 1) ** 2) / 50), abs=1e-5)
    # Above the line end: sqrt(5) from each square.
    d = math.sqrt(5)
    assert w[8, 15] == pytest.approx(1 + 10 * math.exp(-((2 * d) ** 2) / 50), abs=1e-5)
    # Right of square 2: d1 = 3 (col 24), d2 = 13 (square 1 ends at col 14).
    assert w[14, 27] == pytest.approx(1 + 10 * math.exp(-((3 + 13) ** 2) / 50), abs=1e-5)
    # Far away the border term vanishes; inside cells it is not applied.
    assert w[0, 39] == pytest.approx(1.0, abs=1e-5)
    assert w[15, 10] == 1.0


def test_weight_map_balanced_class_weights():
    carved, _ = carve_borders(two_squares())
    w = weight_map(carved, class_weight="balanced")
    n_fg = 190  # 200 square pixels minus the 10 on the line
    n_bg = 1200 - n_fg
    assert w[15, 10] == pytest.approx(1200 / (2 * n_fg))
    assert w[0, 39] == pytest.approx(1200 / (2 * n_bg), abs=1e-5)
    assert w[14, 15] == pytest.approx(1200 / (2 * n_bg) + 10 * math.exp(-4 / 50), abs=1e-5)


def test_windowed_distances_equal_full_image_distances():
    rng = np.random.default_rng(0)
    lab = np.zeros((96, 96), np.int32)
    for i in range(1, 40):
        y, x = rng.integers(0, 92, size=2)
        lab[y : y + rng.integers(2, 6), x : x + rng.integers(2, 6)] = i
    exact = weight_map(lab, tol=0)
    fast = weight_map(lab)
    assert np.abs(exact - fast).max() <= 1e-5
    # And the d1/d2 of the full computation against a brute-force reference.
    d1, d2 = nearest_two_distances(lab)
    ids = [i for i in np.unique(lab) if i]
    ref = np.sort(np.stack([ndimage.distance_transform_edt(lab != i) for i in ids]), axis=0)
    assert np.allclose(d1, ref[0]) and np.allclose(d2, ref[1])


def test_border_term_everywhere_option():
    carved, _ = carve_borders(two_squares())
    t = border_term(carved, background_only=False)
    # Inside square 1 next to the line: d1 = 0, d2 = 2 (square 2 starts at col 16).
    assert t[14, 14] == pytest.approx(10 * math.exp(-4 / 50), abs=1e-5)


def test_class_weights():
    assert np.allclose(class_weights(np.array([0, 0, 0, 1])), [2 / 3, 2.0])
    assert np.allclose(class_weights(np.array([0, 0]), 3), [1.0, 0.0, 0.0])
    mask = np.array([True, True, False, False])
    assert np.allclose(class_weights(np.array([0, 1, 1, 1]), mask=mask), [1.0, 1.0])
    assert np.allclose(class_weights(np.array([0, 1]), method="none"), [1, 1])
    with pytest.raises(InputError):
        class_weights(np.array([0.5]))


def test_mask_zeroes_weights():
    lab = two_squares()
    mask = np.ones(lab.shape, bool)
    mask[:5] = False
    w = weight_map(lab, mask=mask)
    assert (w[:5] == 0).all() and (w[5:] > 0).all()


def test_isbi_style_instances_are_4_connected_cells():
    cells = np.ones((5, 5), bool)
    cells[2, :] = False  # a membrane line
    cells[:, 2] = False
    inst = instances_from_mask(cells)
    assert inst.max() == 4
    w = weight_map(inst, class_weight=None)
    # The membrane crossing point has four cells at distance sqrt(2): d1 + d2 = 2 sqrt(2).
    assert w[2, 2] == pytest.approx(1 + 10 * math.exp(-8 / 50), abs=1e-5)


def test_weight_map_3d():
    lab = np.zeros((8, 12, 12), np.int32)
    lab[2:6, 2:6, 2:6] = 1
    lab[2:6, 2:6, 6:10] = 2
    carved, border = carve_borders(lab)
    assert border[2:6, 2:6, 6].all()
    w = weight_map(carved, class_weight=None)
    assert w[4, 4, 6] == pytest.approx(1 + 10 * math.exp(-4 / 50), abs=1e-5)


def test_weight_cache_memory_and_disk(tmp_path):
    lab = two_squares()
    c1 = WeightCache(tmp_path)
    w1 = c1.get(lab, w0=10.0, sigma=5.0)
    assert c1.misses == 1 and len(list(tmp_path.glob("*.npy"))) == 1
    c2 = WeightCache(tmp_path)
    w2 = c2.get(lab, w0=10.0, sigma=5.0)
    assert c2.hits == 1 and c2.misses == 0 and np.array_equal(w1, w2)
    c2.get(lab, w0=5.0, sigma=5.0)  # other parameters: another entry
    assert c2.misses == 1
    other = lab.copy()
    other[0, 0] = 3
    c2.get(other, w0=10.0, sigma=5.0)  # other content: another entry
    assert c2.misses == 2


def test_weight_map_100_instances_is_fast():
    # A loose version of the benchmark's 100 ms target, generous for a shared CI machine.
    import time

    rng = np.random.default_rng(1)
    lab = np.zeros((512, 512), np.int32)
    for i in range(1, 121):
        y, x = rng.integers(0, 500, size=2)
        lab[y : y + 20, x : x + 20] = i
    weight_map(lab)
    t = time.perf_counter()
    weight_map(lab)
    assert time.perf_counter() - t < 1.0
