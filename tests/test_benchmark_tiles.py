"""The tile-consistency benchmark's parts: tile-border masks, and maps per tile size."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from tile_consistency import border_mask, predict_maps  # noqa: E402

from unetseg import tiling  # noqa: E402
from unetseg.inference import Predictor  # noqa: E402
from unetseg.models import UNet  # noqa: E402


def test_border_mask_marks_both_sides_of_every_inner_tile_boundary():
    plan = tiling.plan_tiles((50, 30), 20, depth=2, padding="valid", margin=0)
    starts = [[t.keep_start for t in axis[1:]] for axis in plan.axes]
    assert starts[0] and starts[1], "the plan must cut both axes"
    mask = border_mask((50, 30), plan, width=2)
    rows = {s + d for s in starts[0] for d in (-2, -1, 0, 1)}
    cols = {s + d for s in starts[1] for d in (-2, -1, 0, 1)}
    expected = np.zeros((50, 30), bool)
    expected[sorted(rows), :] = True
    expected[:, sorted(cols)] = True
    np.testing.assert_array_equal(mask, expected)
    one = tiling.plan_tiles((50, 30), 100, depth=2, padding="valid")
    assert not border_mask((50, 30), one).any()


@pytest.mark.parametrize("norm,changes", [("none", False), ("instance", True)])
def test_only_instance_norm_changes_the_map_with_the_tile(norm, changes):
    torch.manual_seed(0)
    net = UNet(1, 2, depth=2, base_channels=4, norm=norm, dropout=0.0).eval()
    image = np.random.default_rng(0).normal(size=(60, 50)).astype(np.float32)
    image[:, 25:] *= 3.0  # tiles over different halves see different statistics
    predictor = Predictor(net, precision="fp32")
    (whole,), _ = predict_maps(predictor, [image[None]], 0, tta=False)
    (tiled,), (borders,) = predict_maps(predictor, [image], 12, tta=False)
    assert borders.any()
    assert (np.abs(tiled - whole).max() > 1e-3) == changes
