import json
import math
import pickle

import numpy as np
import pytest
import torch

from unetseg import sizes
from unetseg.errors import ModelFileError
from unetseg.models import FusionNet, ModelCard, UNet, build, card_to_dict, count_conv_layers, load, parameter_count, read_config, save


def test_paper_network_structure():
    net = UNet(in_channels=1, num_classes=2)
    assert parameter_count(net) == 31_030_658
    assert count_conv_layers(net) == {"3x3": 18, "up": 4, "1x1": 1, "other": 0, "total": 23}


@pytest.mark.parametrize("size_in,size_out", [(572, 388), (700, 516)])
def test_paper_network_shapes(size_in, size_out):
    net = UNet(1, 2).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, size_in, size_in))
    assert out.shape == (1, 2, size_out, size_out)
    assert torch.isfinite(out).all()


def test_he_initialisation_std():
    torch.manual_seed(0)
    net = UNet(1, 2)
    for name, m in net.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            fan_in = m.in_channels * math.prod(m.kernel_size)
            expected = math.sqrt(2.0 / fan_in)
            w = m.weight.detach()
            if w.numel() < 1000:
                continue  # too few samples for a 5% statistical check (the 1x1 head has 128)
            assert abs(w.std().item() / expected - 1) < 0.05, name
            assert abs(w.mean().item()) < 0.05 * expected, name
            assert torch.all(m.bias == 0)


def test_he_initialisation_head_pooled():
    # The head has only 128 weights: pool it over several seeds for the statistical check.
    stds = []
    for seed in range(20):
        torch.manual_seed(seed)
        stds.append(UNet(1, 2, base_channels=64).head.weight.detach().flatten())
    std = torch.cat(stds).std().item()
    assert abs(std / math.sqrt(2 / 64) - 1) < 0.05


@pytest.mark.parametrize("size", [32, 48, 96])
@pytest.mark.parametrize("norm", ["none", "batch", "instance"])
def test_same_padding_keeps_size(size, norm):
    net = UNet(2, 3, base_channels=4, padding="same", norm=norm, upsample="bilinear").eval()
    assert net(torch.randn(1, 2, size, size + 16)).shape == (1, 3, size, size + 16)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_valid_shapes_match_arithmetic(depth):
    net = UNet(1, 2, depth=depth, base_channels=2).eval()
    for size in sizes.valid_sizes(sizes.next_valid_size(1, depth) + 3 * 2**depth, depth):
        with torch.no_grad():
            out = net(torch.zeros(1, 1, size, size + 2**depth))
        assert tuple(out.shape[2:]) == sizes.output_shape((size, size + 2**depth), depth)


def test_3d_valid_shape():
    net = UNet(1, 2, base_channels=2, depth=2, spatial_dims=3).eval()
    shape = (44, 52, 60)
    with torch.no_grad():
        out = net(torch.randn(1, 1, *shape))
    assert tuple(out.shape[2:]) == sizes.output_shape(shape, 2) == net.output_shape(shape)


def test_3d_same_shape():
    net = UNet(1, 2, base_channels=2, depth=2, spatial_dims=3, padding="same", norm="batch").eval()
    assert net(torch.randn(1, 1, 8, 16, 12)).shape == (1, 2, 8, 16, 12)


@pytest.mark.parametrize(
    "make",
    [
        lambda: UNet(1, 2, base_channels=4),
        lambda: UNet(3, 4, base_channels=4, padding="same", norm="batch", upsample="bilinear"),
        lambda: UNet(1, 2, base_channels=2, depth=2, spatial_dims=3),
        lambda: FusionNet(1, 2, base_channels=4),
        lambda: FusionNet(2, 3, base_channels=4, downsample="conv", skip_merge="mean"),
    ],
)
def test_every_parameter_gets_a_gradient(make):
    torch.manual_seed(0)
    net = make().train()
    dims = getattr(net, "spatial_dims", 2)
    size = sizes.next_valid_size(1, net.depth, net.padding) + (2**net.depth if net.padding == "valid" else 16)
    x = torch.randn(2, net.in_channels, *([size] * dims))
    out = net(x)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_fusionnet_structure():
    net = FusionNet(1, 2)
    counts = count_conv_layers(net)
    # 9 levels x 5 convs + final 3x3 conv; 4 up-convolutions.
    assert counts["3x3"] == 9 * 5 + 1 and counts["up"] == 4
    acts = {type(m).__name__ for m in net.decoders.modules()}
    assert "ELU" in acts and "ReLU" not in acts
    assert "ReLU" in {type(m).__name__ for m in net.encoders.modules()}


@pytest.mark.parametrize(
    "model",
    [UNet(1, 2, base_channels=4, dropout=0.3), FusionNet(1, 2, base_channels=4), UNet(2, 3, base_channels=2, depth=2, spatial_dims=3)],
)
def test_save_load_round_trip(tmp_path, model):
    model.eval()
    dims = getattr(model, "spatial_dims", 2)
    size = 64 if model.padding == "same" else sizes.next_valid_size(1, model.depth)
    x = torch.randn(1, model.in_channels, *([size] * dims))
    path = save(model, tmp_path / "net.safetensors", card=ModelCard(normalization={"method": "minmax"}))
    assert path.is_file() and path.with_suffix(".json").is_file()
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["arch"] == model.arch and meta["args"] == model.config
    assert meta["unetseg_version"]
    loaded = load(path)
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    # The weights file alone is enough.
    path.with_suffix(".json").unlink()
    assert read_config(path)["card"].normalization == {"method": "minmax"}
    with torch.no_grad():
        assert torch.equal(model(x), load(path)(x))


def test_load_from_folder(tmp_path):
    model = UNet(1, 2, base_channels=2)
    save(model, tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert isinstance(load(tmp_path), UNet)


def test_load_refuses_pickle(tmp_path):
    evil = tmp_path / "model.safetensors"
    with open(evil, "wb") as fh:
        pickle.dump({"weights": np.zeros(3)}, fh)
    with pytest.raises(ModelFileError, match="pickle"):
        load(evil)
    torch.save(UNet(1, 2, base_channels=2).state_dict(), tmp_path / "t.safetensors")
    with pytest.raises(ModelFileError, match="pickle"):
        load(tmp_path / "t.safetensors")


def test_load_refuses_truncated_and_garbage(tmp_path):
    path = save(UNet(1, 2, base_channels=2), tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError):
        load(path)
    path.write_bytes(b"\x00" * 3)
    with pytest.raises(ModelFileError):
        load(path)
    path.write_bytes(b"this is not a model at all, just text")
    with pytest.raises(ModelFileError):
        load(path)


def test_load_refuses_unknown_keys(tmp_path):
    path = save(UNet(1, 2, base_channels=2), tmp_path / "m.safetensors")
    side = path.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta["args"]["evil"] = 1
    side.write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="does not match"):
        load(path)
    with pytest.raises(ModelFileError, match="unknown argument"):
        build("UNet", {"evil": 1})
    with pytest.raises(ModelFileError, match="unknown architecture"):
        build("ResNet", {})


def test_load_refuses_mismatched_tensors(tmp_path):
    from safetensors.torch import save_file

    good = save(UNet(1, 2, base_channels=2), tmp_path / "m.safetensors")
    meta = read_config(good)
    meta["card"] = card_to_dict(meta["card"])
    state = UNet(1, 2, base_channels=4).state_dict()
    save_file(state, str(good), metadata={"unetseg": json.dumps(meta)})
    good.with_suffix(".json").unlink()
    with pytest.raises(ModelFileError, match="shape"):
        load(good)


def test_invalid_constructor_arguments():
    for kwargs in ({"padding": "reflect"}, {"norm": "group"}, {"spatial_dims": 4}, {"dropout": 1.5}, {"base_channels": 0}):
        with pytest.raises(ValueError):
            UNet(1, 2, **kwargs)
