"""Closed membranes: the lines of a seeded partition drawn into a cell map."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from unetseg.errors import ConfigError, InputError
from unetseg.membranes import (
    Closure,
    agglomerate_boundaries,
    agglomerated_regions,
    close_membranes,
    merge_weak_boundaries,
    neighbour_affinities,
    seeded_regions,
    separating_lines,
)


def test_separating_lines_4_separate_every_pair_of_regions():
    rng = np.random.default_rng(0)
    labels = ndi.zoom(rng.integers(1, 6, (6, 6)), 5, order=0)
    kept = np.where(separating_lines(labels), 0, labels)
    for a in np.unique(labels):
        comps, _ = ndi.label(kept == a)
        # no 4-connected component off the lines holds pixels of two regions
        for c in range(1, comps.max() + 1):
            assert len(np.unique(labels[comps == c])) == 1
    right = kept[:, :-1] != kept[:, 1:]
    assert not np.any(right & (kept[:, :-1] > 0) & (kept[:, 1:] > 0))


def test_a_gap_in_a_membrane_is_closed_and_the_rest_of_the_map_kept():
    p = np.full((20, 21), 0.95, np.float32)
    p[:, 9:12] = 0.05
    p[8:11, 9:12] = 0.9  # a gap: two cells joined at any threshold below 0.9
    closed = close_membranes(p, Closure(seed_threshold=0.92, sigma=0, min_seed_size=5))
    for th in (0.1, 0.5, 0.85):
        assert ndi.label(closed > th)[1] == 2, th
    assert ndi.label(p > 0.5)[1] == 1
    changed = closed != p
    assert changed.sum() <= 2 * p.shape[0] and np.all(closed[changed] == 0)  # a thin line only


def test_weak_boundaries_merge_and_strong_ones_stay():
    p = np.full((10, 30), 0.9, np.float32)
    p[:, 14:16] = 0.1
    regions = np.repeat(np.repeat([[1, 2, 3, 4, 5, 6]], 10, axis=0), 5, axis=1)
    merged = merge_weak_boundaries(p, regions, 0.5)
    assert len(np.unique(merged)) == 2
    assert len(np.unique(merged[:, :14])) == 1 and merged[0, 0] != merged[0, -1]


def test_no_seed_means_no_lines_and_stacks_are_closed_per_section():
    p = np.full((2, 12, 12), 0.3, np.float32)
    assert not seeded_regions(p[0]).any()
    np.testing.assert_array_equal(close_membranes(p), p)


@pytest.mark.parametrize("kwargs", [{"seed_threshold": 1.0}, {"min_seed_size": 0}, {"sigma": -1}, {"merge": 1.5}, {"h": -1}])
def test_bad_closure_settings_name_the_key(kwargs):
    with pytest.raises(ConfigError, match="postprocess.closure"):
        Closure(**kwargs)


def test_closure_wants_2d_sections():
    with pytest.raises(InputError, match="2D"):
        close_membranes(np.zeros((2, 2, 2, 2), np.float32))


def _cells_with_faint_membrane(rng: np.random.Generator) -> np.ndarray:
    """Four cells in a 2x2 grid; the vertical membrane between the upper two is faint for a stretch."""
    p = np.full((40, 40), 0.95, np.float32)
    p[19:21, :] = 0.05
    p[:, 19:21] = 0.05
    p[4:9, 19:21] = 0.45  # five faint rows out of 19: a threshold of 0.4 joins the two upper cells
    return np.clip(p + rng.normal(0, 0.02, p.shape).astype(np.float32), 0, 1)


def test_agglomeration_closes_a_faint_stretch_of_membrane_and_keeps_the_rest_of_the_map():
    p = _cells_with_faint_membrane(np.random.default_rng(0))
    assert ndi.label(p > 0.4)[1] == 3  # the two upper cells joined through the faint stretch
    closed = agglomerate_boundaries(p, 0.3)
    for th in (0.1, 0.4, 0.5, 0.9):
        assert ndi.label(closed > th)[1] == 4, th
    changed = closed != p
    assert np.all(closed[changed] == 0) and changed.sum() <= 4 * p.shape[0]  # thin lines only
    # a lower merge affinity merges more: never more regions
    assert len(np.unique(agglomerated_regions(p, 0.01))) <= len(np.unique(agglomerated_regions(p, 0.3)))
    np.testing.assert_array_equal(agglomerate_boundaries(p, 0), p)


def test_agglomeration_is_quiet_and_works_per_section(capfd):
    p = np.stack([_cells_with_faint_membrane(np.random.default_rng(s)) for s in (1, 2)])
    closed = agglomerate_boundaries(p, 0.3)
    assert capfd.readouterr().out == ""  # waterz's own messages never reach stdout
    for k in range(2):
        np.testing.assert_array_equal(closed[k], agglomerate_boundaries(p[k], 0.3))
    assert len(np.unique(agglomerated_regions(p[0], 0.3))) >= 4


def test_neighbour_affinities_are_the_lower_probability_of_each_pair():
    p = np.random.default_rng(3).random((5, 7), dtype=np.float32)
    a = neighbour_affinities(p)
    np.testing.assert_array_equal(a[1, 0, 1:], np.minimum(p[1:], p[:-1]))
    np.testing.assert_array_equal(a[2, 0, :, 1:], np.minimum(p[:, 1:], p[:, :-1]))
    assert not a[0].any() and not a[1, 0, 0].any() and not a[2, 0, :, 0].any()
    with pytest.raises(InputError, match="2D"):
        neighbour_affinities(np.zeros((2, 3, 3)))


@pytest.mark.parametrize("affinity", [1.0, -0.1])
def test_a_bad_merge_affinity_names_the_key(affinity):
    with pytest.raises(ConfigError, match="postprocess.agglomerate"):
        agglomerated_regions(np.full((8, 8), 0.5, np.float32), affinity)
