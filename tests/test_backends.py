"""Inference backends: ``torch.compile`` tiles exactly like eager PyTorch; int8 (PT2E + torchao)
stays within a tolerance of fp32, calibrates on the images it is given, and runs from the CLI."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
import torch

from unetseg.cli import main
from unetseg.errors import ConfigError
from unetseg.inference import Predictor
from unetseg.inference.backends import Int8Network
from unetseg.io import read_image
from unetseg.models import UNet, save

needs_compiler = pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                                    reason="torch.compile on a CPU needs a C++ compiler")


def _network(seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    return UNet(1, 2, depth=2, base_channels=4)


def _image(shape=(60, 70), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random(shape, dtype=np.float32)


@needs_compiler
def test_compiled_backend_tiles_exactly_like_eager():
    net = _network()
    image = _image()
    eager = Predictor(net, device="cpu", precision="fp32")
    compiled = Predictor(net, device="cpu", precision="fp32", backend="compile")
    assert compiled.backend == "compile" and compiled.precision == "fp32"
    assert net.training  # the module given is untouched
    np.testing.assert_allclose(compiled.predict(image, tile_shape=40), eager.predict(image, tile_shape=40), atol=1e-5)


def test_int8_calibration_tiles_are_cut_deterministically_from_the_images():
    net = _network()
    images = [_image((1, 50, 64), seed=1)[0][None], _image((1, 30, 20), seed=2)[0][None]]
    q = Int8Network(net, images, max_tiles=3)
    tiles = q.calibration_tiles((2, 1, 40, 40))
    assert [tuple(t.shape) for t in tiles] == [(2, 1, 40, 40)] * 2  # 5 tiles (4 corners of image 0, image 1 mirrored): 2 batches
    np.testing.assert_array_equal(tiles[0][0, 0].numpy(), images[0][0, :40, :40])
    np.testing.assert_array_equal(tiles[0][1, 0].numpy(), images[0][0, :40, 24:64])
    again = Int8Network(net, images, max_tiles=3).calibration_tiles((2, 1, 40, 40))
    assert all(torch.equal(a, b) for a, b in zip(tiles, again))


def test_int8_needs_torchao_and_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao", None)  # import torchao now raises ImportError
    with pytest.raises(ConfigError, match=r"unetseg\[fast\]"):
        Predictor(_network(), device="cpu", backend="int8")


@needs_compiler
def test_int8_backend_runs_from_the_cli_close_to_fp32(tmp_path, capsys):
    pytest.importorskip("torchao", reason="needs the fast extra (make test installs it)")
    from unetseg.io import write_image

    net = _network()
    model = save(net, tmp_path / "model.safetensors")
    image = (_image((72, 80), seed=3) * 255).astype(np.uint8)
    write_image(tmp_path / "in.tif", image)
    args = ["predict", "--model", str(model), str(tmp_path / "in.tif"), "--tile", "80", "--precision", "fp32"]
    assert main([*args, "--out", str(tmp_path / "fp32")]) == 0
    assert main([*args, "--out", str(tmp_path / "int8"), "--backend", "int8"]) == 0
    assert "backend int8, precision int8" in capsys.readouterr().out
    fp32, int8 = read_image(tmp_path / "fp32" / "in.tif"), read_image(tmp_path / "int8" / "in.tif")
    assert fp32.shape == int8.shape == image.shape
    assert float(np.abs(fp32 - int8).max()) < 0.05 and not np.array_equal(fp32, int8)  # quantised, and close
