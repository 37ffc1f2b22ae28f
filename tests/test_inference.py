"""The Predictor: prepared once, shared by every entry point, never changes the model it is given."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unetseg.inference import Predictor, estimate_tile_memory, predict_dask, predict_image, predict_into
from unetseg.inference.engine import prepared_copy
from unetseg.models import FusionNet, ModelCard, UNet, load, load_card, save


def _snapshot(model: torch.nn.Module) -> dict:
    return {
        "training": model.training,
        "modes": [m.training for m in model.modules()],
        "devices": {p.device.type for p in model.parameters()},
        "contiguous": [p.is_contiguous() for p in model.parameters()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
    }


def _assert_same(before: dict, model: torch.nn.Module) -> None:
    after = _snapshot(model)
    for key in ("training", "modes", "devices", "contiguous", "requires_grad"):
        assert after[key] == before[key], key
    for k, v in before["state"].items():
        assert torch.equal(v, after["state"][k]), k


@pytest.mark.parametrize("arch", ["unet-batchnorm", "fusionnet"])
def test_prediction_leaves_the_model_it_was_given_unchanged(arch):
    torch.manual_seed(0)
    if arch == "fusionnet":
        net = FusionNet(1, 2, base_channels=2)
    else:
        net = UNet(1, 2, base_channels=4, depth=2, norm="batch", padding="same", dropout=0.5)
    net.train()  # as a training loop hands it over: train mode, contiguous, with gradients
    before = _snapshot(net)
    img = np.random.default_rng(0).random((37, 45), dtype=np.float32)
    a = predict_image(net, img, tile_shape=32, tta=True, channels_last=True)
    out = np.empty((2, 37, 45), np.float32)
    predict_into(net, img[None], out, tile_shape=32, channels_last=True)
    import dask.array as da

    c = predict_dask(net, da.from_array(img, chunks=20), tile_shape=32).compute(scheduler="sync")
    Predictor(net, channels_last=True).predict(img, tile_shape=32)
    _assert_same(before, net)
    np.testing.assert_allclose(c, out, atol=1e-5)
    assert a.shape == (2, 37, 45)


def test_predictor_copy_is_eval_mode_in_its_memory_format():
    net = UNet(1, 2, base_channels=2, depth=2)
    copy = prepared_copy(net, torch.device("cpu"), torch.channels_last)
    assert not copy.training and net.training
    conv = [p for p in copy.parameters() if p.dim() == 4]
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in conv)
    assert not any(p.requires_grad for p in copy.parameters())


def test_predictor_from_a_run_folder_or_a_model_file_carries_its_card(tmp_path):
    torch.manual_seed(1)
    net = UNet(1, 2, base_channels=2, depth=2, dropout=0.0)
    card = ModelCard(classes=("membrane", "cell"), output_shift=(0.5, 0.0), normalization={"method": "minmax"})
    weights = save(net, tmp_path, card=card)
    img = np.random.default_rng(2).random((30, 33), dtype=np.float32)
    for p in (Predictor(tmp_path, device="cpu", precision="fp32"), Predictor.from_path(weights, precision="fp32")):
        assert p.card == load_card(tmp_path) and p.card.classes == ("membrane", "cell")
        # the card's shift is applied by default, and can be turned off
        expected = predict_image(load(tmp_path), img, tile_shape=20, output_shift=(0.5, 0.0))
        np.testing.assert_allclose(p.predict(img, tile_shape=20), expected, atol=1e-6)
        np.testing.assert_allclose(p.predict(img, tile_shape=20, output_shift=None), predict_image(load(tmp_path), img, tile_shape=20), atol=1e-6)
    from unetseg.runtime import resolve_precision

    assert Predictor(tmp_path).precision == resolve_precision("auto", torch.device("cpu"))  # decided on this machine


def test_predictor_is_a_callable_on_batches_of_tiles():
    net = UNet(1, 3, base_channels=2, depth=2)
    p = Predictor(net, precision="fp32")
    probs = p(np.zeros((2, 1, *net.input_shape_for((16, 16))), np.float32), tta=True)
    assert probs.shape == (2, 3, 16, 16) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_tile_memory_estimate_asks_the_model_not_its_class_name():
    class Heavier(UNet):
        activation_memory_factor = 3.0

    plain, heavy = UNet(base_channels=8), Heavier(base_channels=8)
    assert estimate_tile_memory(heavy, (252, 252)) == pytest.approx(3 * estimate_tile_memory(plain, (252, 252)), rel=1e-6)
    assert estimate_tile_memory(FusionNet(base_channels=8), (252, 252)) > estimate_tile_memory(UNet(base_channels=8), (252, 252))


def test_an_ensemble_is_the_mean_of_its_members(tmp_path):
    from unetseg.inference import EnsemblePredictor, model_paths

    img = np.random.default_rng(3).random((41, 37), dtype=np.float32)
    nets = []
    for k in range(3):
        torch.manual_seed(k)
        nets.append(UNet(1, 2, base_channels=2, depth=2, dropout=0.0))
        (tmp_path / f"fold{k}").mkdir()
        save(nets[-1], tmp_path / f"fold{k}", card=ModelCard(output_shift=(0.25 * k, 0.0)))
    assert model_paths(tmp_path) == [tmp_path / f"fold{k}" for k in range(3)]
    ens = EnsemblePredictor.from_path(tmp_path, precision="fp32")
    assert ens.card.output_shift == (0.25, 0.0)
    members = [predict_image(n, img, tile_shape=20, tta=True) for n in nets]
    np.testing.assert_allclose(ens.predict(img, tile_shape=20, tta=True, output_shift=None), np.mean(members, axis=0), atol=1e-6)
    with pytest.raises(Exception, match="differs from member 0"):
        EnsemblePredictor([nets[0], UNet(1, 3, base_channels=2, depth=2)])


def test_cli_predict_ensembles_a_cv_folder_or_repeated_models(tmp_path):
    import tifffile

    from unetseg.cli import main

    for k in range(2):
        torch.manual_seed(k)
        (tmp_path / "cv" / f"fold{k}").mkdir(parents=True)
        save(UNet(1, 2, base_channels=2, depth=2, dropout=0.0), tmp_path / "cv" / f"fold{k}", card=ModelCard(normalization={"method": "minmax"}))
    tifffile.imwrite(tmp_path / "x.tif", np.random.default_rng(0).integers(0, 255, (30, 30), dtype=np.uint8))
    assert main(["predict", "--model", str(tmp_path / "cv"), str(tmp_path / "x.tif"), "--out", str(tmp_path / "a"), "--tile", "20"]) == 0
    folds = ["--model", str(tmp_path / "cv" / "fold0"), "--model", str(tmp_path / "cv" / "fold1")]
    assert main(["predict", *folds, str(tmp_path / "x.tif"), "--out", str(tmp_path / "b"), "--tile", "20"]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "a" / "x.tif"), tifffile.imread(tmp_path / "b" / "x.tif"))
    assert main(["predict", "--model", str(tmp_path / "cv" / "fold0"), str(tmp_path / "x.tif"), "--out", str(tmp_path / "c"), "--tile", "20"]) == 0
    assert not np.array_equal(tifffile.imread(tmp_path / "a" / "x.tif"), tifffile.imread(tmp_path / "c" / "x.tif"))
