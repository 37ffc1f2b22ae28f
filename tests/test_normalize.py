"""Normalisation: the in-memory and the streamed variants give the same result."""

from __future__ import annotations

import numpy as np
import pytest

import unetseg.normalize as N
from unetseg.errors import ConfigError, InputError
from unetseg.normalize import fit_normalization, normalize

SPECS = [{"method": "percentile", "low": 1, "high": 99.8}, {"method": "minmax"}, {"method": "zscore"}, {"method": "dtype"}, {"method": "none"}]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("band_elements", [1 << 24, 700])  # one band, or many bands of 5 rows
def test_streamed_normalisation_matches_normalize(spec, dtype, band_elements, monkeypatch):
    monkeypatch.setattr(N, "_BAND_ELEMENTS", band_elements)
    img = (np.random.default_rng(0).random((2, 300, 70)) * 200).astype(dtype)
    if spec["method"] == "dtype" and dtype == np.float32:
        img = img / 200
    fitted = fit_normalization(img, spec)
    np.testing.assert_allclose(fitted(img), normalize(img, spec, channel_axis=0), rtol=1e-5, atol=1e-5)
    # a window is normalised with the whole image's statistics
    np.testing.assert_allclose(fitted(img[:, 10:20, 5:9]), normalize(img, spec, channel_axis=0)[:, 10:20, 5:9], rtol=1e-5, atol=1e-5)


def test_both_variants_refuse_the_same_inputs():
    for fn in (lambda a, s: normalize(a, s, channel_axis=0), lambda a, s: fit_normalization(a, s)(a)):
        with pytest.raises(ConfigError, match="method"):
            fn(np.zeros((1, 4, 4)), {"method": "magic"})
        with pytest.raises(InputError, match="NaN"):
            fn(np.full((1, 4, 4), np.nan), {"method": "minmax"})
        with pytest.raises(InputError, match="dtype"):
            fn(np.zeros((1, 4, 4), complex), None)
