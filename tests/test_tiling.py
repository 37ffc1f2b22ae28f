"""Tile plans: coverage, grid alignment, mirroring identical to numpy.pad."""

from __future__ import annotations

import numpy as np
import pytest

from unetseg import sizes, tiling


@pytest.mark.parametrize("n", [1, 2, 3, 7, 100])
@pytest.mark.parametrize("pad", [0, 1, 5, 92, 250])
def test_mirror_indices_match_numpy_pad_symmetric(n, pad):
    a = np.arange(n) * 10
    ref = np.pad(a, (pad, pad + 3), mode="symmetric")
    assert np.array_equal(a[tiling.mirror_indices(-pad, n + pad + 3, n)], ref)


def _check_axis_cover(tiles, size, depth):
    covered = np.zeros(size, int)
    for t in tiles:
        covered[t.keep_start : t.keep_stop] += 1
        assert t.start <= t.keep_start < t.keep_stop <= min(t.stop, size)
    assert np.all(covered == 1)


@pytest.mark.parametrize("size", [1, 4, 5, 17, 20, 21, 300, 388, 389, 513, 1027, 4096])
@pytest.mark.parametrize("tile", [4, 20, 116, 388, 1000])
def test_valid_axis_plan_covers_once_on_the_pooling_grid(size, tile):
    depth = 4
    tiles = tiling.plan_axis_valid(size, tile, depth)
    _check_axis_cover(tiles, size, depth)
    h = sizes.halo(depth)
    for t in tiles:
        assert t.start % 16 == 0  # equivariance of max-pooling needs the 2**depth grid
        assert sizes.is_valid_size(t.size + 2 * h, depth)
        assert t.size <= max(tiling.valid_output_tile(tile, depth), tiles[0].size)
    # No wasted extra tile: at most 2**depth - 1 pixels computed beyond the image end.
    assert tiles[-1].stop - size < 16 or len(tiles) == 1 and tiles[0].size == tiling.plan_axis_valid(1, 4, 4)[0].size


def test_valid_plan_efficiency_of_large_tiles():
    plan = tiling.plan_tiles((4096, 4096), 388, depth=4, padding="valid")
    # 4-pixel overlap of grid-aligned valid tiles and < 16 px overshoot: about 98%.
    assert plan.efficiency > 0.975
    assert len(plan) == 11 * 11


@pytest.mark.parametrize("size", [1, 15, 16, 17, 100, 300, 1000])
@pytest.mark.parametrize("window", [16, 64, 128])
def test_same_axis_plan_covers_once(size, window):
    tiles = tiling.plan_axis_same(size, window, 16, 16)
    _check_axis_cover(tiles, size, 4)
    for t in tiles:
        assert t.size % 16 == 0 and t.start >= 0


def test_same_plan_discards_margins_inside_only():
    tiles = tiling.plan_axis_same(1000, 256, 32, 16)
    assert tiles[0].keep_start == 0 and tiles[-1].keep_stop == 1000
    for t in tiles[1:-1]:
        assert t.keep_start - t.start >= 31 and t.stop - t.keep_stop >= 31


def test_plan_3d_and_bands():
    plan = tiling.plan_tiles((9, 40, 50), (20, 20, 20), depth=4, padding="valid")
    assert plan.halo == 92
    bands = plan.bands
    assert sum(len(b) for b in bands) == len(plan)
    covered = np.zeros(plan.shape, int)
    for t in plan:
        covered[t.keep] += 1
        assert all(k.stop - k.start == kt.stop - kt.start for k, kt in zip(t.keep, t.keep_in_tile))
        assert t.in_shape == tuple(s + 184 for s in t.out_shape)
    assert np.all(covered == 1)


def test_plan_rejects_wrong_rank():
    with pytest.raises(ValueError, match="axes"):
        tiling.plan_tiles((10, 10), (20, 20, 20), depth=4, padding="valid")
