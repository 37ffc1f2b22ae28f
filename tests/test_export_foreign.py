"""Packages unetseg did not export: run from their onnx/torchscript weights with overlap-tile
planned from the declared sizes and halos, equal to the whole network on the same tiles."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("bioimageio.core", reason="needs the export extra (make test installs it)")

from unetseg.errors import ModelFileError  # noqa: E402
from unetseg.export import export_bioimageio, export_onnx, export_torchscript  # noqa: E402
from unetseg.export.foreign import PackageNetwork  # noqa: E402
from unetseg.export.package import load_package  # noqa: E402
from unetseg.inference import Predictor  # noqa: E402
from unetseg.models import UNet  # noqa: E402
from unetseg.synthetic import em_membranes  # noqa: E402


def _strip(src: Path, dst: Path, keep: tuple[str, ...] = ("torchscript", "onnx"), edit=None) -> Path:
    """``src`` as another tool would have written it: no config.unetseg."""
    with zipfile.ZipFile(src) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        rdf.pop("config", None)
        rdf["weights"] = {k: v for k, v in rdf["weights"].items() if k in keep}
        for w in rdf["weights"].values():
            w.pop("parent", None)
        rdf = edit(rdf) if edit else rdf
        with zipfile.ZipFile(dst, "w") as out:
            for name in z.namelist():
                if name != "rdf.yaml" and not (
                        name.startswith("weights") and not any(rdf["weights"].get(k, {}).get("source") == name for k in keep)):
                    out.writestr(name, z.read(name))
            out.writestr("rdf.yaml", yaml.safe_dump(rdf))
    return dst


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """A valid and a same-padding network (random, fixed seed) and their packages without unetseg's parts."""
    root = tmp_path_factory.mktemp("foreign")
    torch.manual_seed(0)
    nets = {"valid": UNet(1, 2, depth=2, base_channels=4), "same": UNet(1, 2, depth=2, base_channels=4, padding="same")}
    zips = {}
    for kind, net in nets.items():
        ours = export_bioimageio(net.eval(), root / f"{kind}.zip", authors=["A. Tester"])
        zips[kind] = _strip(ours, root / f"{kind}-foreign.zip")
    image, _ = em_membranes((70, 83), np.random.default_rng(1))
    return nets, zips, image.astype(np.float32) / 255.0


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_foreign_valid_unet_tiles_exactly(packages, backend):
    nets, zips, image = packages
    foreign = Predictor.from_path(zips["valid"], device="cpu", backend=backend)
    assert isinstance(foreign.network, PackageNetwork) and foreign.precision == "fp32"
    assert foreign.backend == ("torchscript" if backend == "torch" else "onnxruntime")
    reference = Predictor(nets["valid"], device="cpu", precision="fp32")
    for tta in (False, True):
        np.testing.assert_allclose(foreign.predict(image, tile_shape=12, tta=tta),
                                   reference.predict(image, tile_shape=12, tta=tta, output_shift=None), atol=1e-4)
    whole = reference.predict(image, tile_shape=200, output_shift=None)  # one tile: the whole mirrored image
    np.testing.assert_allclose(foreign.predict(image, tile_shape=12), whole, atol=1e-4)


def test_foreign_same_padding_network_uses_the_declared_halo(packages):
    nets, zips, image = packages
    with zipfile.ZipFile(zips["same"]) as z:
        halo = yaml.safe_load(z.read("rdf.yaml"))["outputs"][0]["axes"][2]["halo"]
    foreign = Predictor.from_path(zips["same"], device="cpu")
    assert foreign.network.padding == "same" and foreign.network.tile_margin == halo
    reference = Predictor(nets["same"], device="cpu", precision="fp32")
    np.testing.assert_allclose(foreign.predict(image, tile_shape=48),  # windows of at least the smallest size, 44
                               reference.predict(image, tile_shape=48, margin=halo, output_shift=None), atol=1e-4)
    tiny = image[:5, :7]  # smaller than the package's smallest size: mirrored up to it inside the network
    assert foreign.predict(tiny).shape == (2, 5, 7)


def test_foreign_card_follows_the_description(packages):
    _, zips, _ = packages
    network, meta = load_package(zips["valid"])
    assert meta["card"].classes == ("background", "foreground") and meta["card"].normalization["method"] == "percentile"
    assert meta["weights_format"] == "torchscript" and network.depth == 2 and network.halo == 20


def _hand_written(tmp: Path, rdf_edit=None, axes=("y", "x", "channel")) -> Path:
    """A package written by hand (another tool's layout): no batch axis, channel last, sigmoid."""
    net = UNet(1, 1, depth=2, base_channels=2, padding="same").eval()

    class ChannelLast(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):  # (y, x, c) -> (y, x, c)
            return self.net(x.permute(2, 0, 1)[None])[0].permute(1, 2, 0)

    script = torch.jit.trace(ChannelLast(), torch.rand(32, 32, 1))
    buffer = io.BytesIO()
    torch.jit.save(script, buffer)
    weights = buffer.getvalue()
    space = {"min": 16, "step": 4}
    rdf = {"type": "model", "format_version": "0.5.4", "name": "hand", "weights": {"torchscript": {
        "source": "w.pt", "sha256": hashlib.sha256(weights).hexdigest(), "pytorch_version": "2.0"}},
        "inputs": [{"id": "in", "axes": [{"type": "space", "id": "y", "size": space}, {"type": "space", "id": "x", "size": space},
                                         {"type": "channel", "channel_names": ["c0"]}],
                    "preprocessing": [{"id": "zero_mean_unit_variance", "kwargs": {"axes": ["y", "x"]}}]}],
        "outputs": [{"id": "out", "axes": [{"type": "space", "id": "y", "size": {"tensor_id": "in", "axis_id": "y"}, "halo": 4},
                                           {"type": "space", "id": "x", "size": {"tensor_id": "in", "axis_id": "x"}, "halo": 4},
                                           {"type": "channel", "channel_names": ["fg"]}],
                     "postprocessing": [{"id": "sigmoid"}]}]}
    rdf = rdf_edit(rdf) if rdf_edit else rdf
    path = tmp / "hand.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("rdf.yaml", yaml.safe_dump(rdf))
        z.writestr("w.pt", weights)
    return path, net


def test_hand_written_package_with_other_axis_order_and_sigmoid(tmp_path):
    path, net = _hand_written(tmp_path)
    image = np.random.default_rng(0).random((45, 50)).astype(np.float32)
    foreign = Predictor.from_path(path, device="cpu")
    assert foreign.card.normalization == {"method": "zscore"} and foreign.num_classes == 1
    want = Predictor(net, device="cpu", precision="fp32").predict(image, tile_shape=32, margin=4, output_shift=None)
    np.testing.assert_allclose(foreign.predict(image, tile_shape=32), want, atol=1e-5)  # sigmoid applied once


def _set(path, value):
    def edit(rdf):
        target = rdf
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return rdf
    return edit


@pytest.mark.parametrize("edit,match", [
    (_set(("inputs", 0, "axes", 0, "type"), "wavelength"), "unknown axis type 'wavelength'"),
    (_set(("inputs", 0, "axes", 0, "type"), "time"), "time axes are not supported"),
    (_set(("inputs", 0, "axes", 0, "size"), 64), "fixed-size inputs"),
    (_set(("inputs", 0, "preprocessing"), [{"id": "scale_linear", "kwargs": {"gain": 2.0}}]), "scale_linear"),
    (_set(("outputs", 0, "postprocessing"), [{"id": "scale_range", "kwargs": {}}]), "tile by tile"),
    (lambda rdf: _set(("outputs", 0, "axes", 1, "size", "offset"), -6)(_set(("outputs", 0, "axes", 0, "size", "offset"), -6)(rdf)),
     "offset -6"),
    (_set(("outputs", 0, "axes", 0, "halo"), 2), "differ in offset or halo"),
    (_set(("weights",), {"pytorch_state_dict": {"source": "w.pt"}}), "never loaded"),
    (_set(("inputs",), []), "0 inputs"),
])
def test_foreign_packages_it_cannot_run_are_refused_naming_the_entry(tmp_path, edit, match):
    path, _ = _hand_written(tmp_path, edit)
    with pytest.raises(ModelFileError, match=match) as err:
        Predictor.from_path(path, device="cpu")
    assert str(path) in str(err.value)


def test_graph_export_functions_take_a_network(tmp_path):
    net = UNet(1, 2, depth=2, base_channels=2).eval()
    assert export_onnx(net, tmp_path / "m.onnx").stat().st_size > 0
    assert export_torchscript(net, tmp_path / "m.pt").stat().st_size > 0
