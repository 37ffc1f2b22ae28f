"""Output-shift calibration: recover a known displacement of the annotations; stored by training."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from unetseg.errors import ConfigError
from unetseg.train.calibrate import CalibrationConfig, estimate_output_shift, shift_cross_entropy


def _blobs(rng: np.random.Generator, shape=(64, 64)) -> np.ndarray:
    noise = ndi.gaussian_filter(rng.normal(size=shape), 3.0)
    return (noise > 0).astype(np.int64)


def _probs_seen_at(target: np.ndarray, displacement) -> np.ndarray:
    """A soft prediction of ``target`` that lies ``displacement`` pixels away from it."""
    fg = ndi.gaussian_filter(ndi.shift(target.astype(float), displacement, order=1, mode="nearest"), 0.8)
    return np.stack([1 - fg, fg]).astype(np.float32)


@pytest.mark.parametrize("displacement", [(0.5, 0.0), (-0.75, 0.25), (0.0, 1.0), (0.0, 0.0)])
def test_estimate_recovers_a_known_displacement(displacement):
    rng = np.random.default_rng(0)
    targets = [_blobs(rng) for _ in range(3)]
    probs = [_probs_seen_at(t, displacement) for t in targets]
    shift, report = estimate_output_shift(probs, targets)
    # within one grid step: linear interpolation blurs, which favours shifts near whole pixels
    assert np.abs(np.add(shift, displacement)).max() <= 0.25, (shift, displacement)
    if not any(displacement):
        assert shift == (0.0, 0.0)
    else:
        assert report["cross_entropy_shifted"] < report["cross_entropy_unshifted"]


def test_small_gains_are_not_kept_and_masks_count():
    rng = np.random.default_rng(1)
    t = _blobs(rng)
    p = _probs_seen_at(t, (0.5, 0.0))
    shift, report = estimate_output_shift([p], [t], min_gain=0.99)
    assert shift == (0.0, 0.0) and report["best_shift"] == [-0.5, 0.0]
    # only the masked-in pixels count: mask out everything but the top half
    mask = np.zeros(t.shape, bool)
    mask[:32] = True
    full = shift_cross_entropy([p], [t], (0, 0))
    half = shift_cross_entropy([p], [t], (0, 0), [mask])
    flat = np.take_along_axis(p, t[None], 0)[0]
    assert half == pytest.approx(float(-np.log(np.clip(flat[:32], 1e-6, 1)).mean()), rel=1e-6)
    assert full != half


def test_estimate_in_3d_and_bad_input():
    rng = np.random.default_rng(2)
    t = (ndi.gaussian_filter(rng.normal(size=(16, 32, 32)), 2.0) > 0).astype(np.int64)
    fg = ndi.gaussian_filter(ndi.shift(t.astype(float), (0, 0.5, 0), order=1, mode="nearest"), 0.8)
    shift, _ = estimate_output_shift([np.stack([1 - fg, fg])], [t], step=0.5)
    assert shift == (0.0, -0.5, 0.0)
    with pytest.raises(ValueError):
        estimate_output_shift([], [])


@pytest.mark.parametrize("bad", [{"max_shift": 3.0}, {"step": 0.0}, {"max_images": 0}, {"min_gain": 1.0}])
def test_config_is_checked(bad):
    with pytest.raises(ConfigError, match="calibration"):
        CalibrationConfig(**bad)
