"""``unetseg export``: bioimage.io packages checked by bioimageio.core itself, ONNX/TorchScript
graphs equal to eager PyTorch, packages read back without unpickling, bad packages refused."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("bioimageio.core", reason="needs the export extra (make test installs it)")

from unetseg.cli import main  # noqa: E402
from unetseg.errors import ConfigError, ModelFileError  # noqa: E402
from unetseg.export import export_model  # noqa: E402
from unetseg.export.bioimageio import preprocessing, tensor_axes  # noqa: E402
from unetseg.export.graphs import example_input, onnx_runner  # noqa: E402
from unetseg.export.package import listed_files, load_package  # noqa: E402
from unetseg.inference import Predictor  # noqa: E402
from unetseg.io import read_image  # noqa: E402
from unetseg.normalize import normalize  # noqa: E402
from unetseg.models import ModelCard, UNet, load, load_card  # noqa: E402

@pytest.fixture(scope="module")
def package(tmp_path_factory, make_em_dataset, tiny_run):
    """A model trained here for a few steps and its bioimage.io package (made once: ONNX export is slow)."""
    root = tmp_path_factory.mktemp("export")
    data = make_em_dataset(root / "data", n=2, size=64)
    tiny_run(root, data)
    assert main(["export", str(root / "run"), "--out", str(root / "m.zip"), "--author", "Ada Lovelace"]) == 0
    return root / "run", root / "m.zip", data


@pytest.mark.parametrize("weights", ["pytorch_state_dict", "torchscript", "onnx"])
def test_bioimageio_core_test_passes_for_every_weight_format(package, weights):
    from bioimageio.core import test_model

    summary = test_model(package[1], weight_format=weights)
    failed = [f"{d.name}: {[e.msg for e in d.errors]}" for d in summary.details if d.status != "passed"]
    assert summary.status == "passed", failed


def test_bioimageio_command_line_test_passes(package):
    cli = Path(sys.executable).with_name("bioimageio")
    done = subprocess.run([str(cli), "test", str(package[1])], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_package_describes_the_valid_unet_and_carries_what_consumers_read(package):
    run, zip_path, _ = package
    with zipfile.ZipFile(zip_path) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        names = set(z.namelist())
        cover = z.read("cover.png")
        readme = z.read("README.md").decode()
    assert rdf["format_version"].startswith("0.5") and rdf["type"] == "model"
    y_in = rdf["inputs"][0]["axes"][2]
    assert y_in["size"] == {"min": 44, "step": 4}  # depth 2: halo 20, 4-px steps
    assert rdf["outputs"][0]["axes"][2]["size"] == {"tensor_id": "raw", "axis_id": "y", "offset": -40}
    assert [p["id"] for p in rdf["inputs"][0]["preprocessing"]][:2] == ["ensure_dtype", "scale_range"]
    assert rdf["outputs"][0]["postprocessing"][0]["id"] == "softmax"
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript", "onnx"}
    assert rdf["weights"]["onnx"]["parent"] == rdf["weights"]["torchscript"]["parent"] == "pytorch_state_dict"
    assert all(len(w["sha256"]) == 64 for w in rdf["weights"].values())
    assert rdf["cite"][0]["doi"] == "10.1007/978-3-319-24574-4_28" and rdf["authors"] == [{"name": "Ada Lovelace"}]
    assert rdf["config"]["unetseg"]["card"]["classes"] == ["membrane", "cell"]
    assert names == {"rdf.yaml", *listed_files(rdf)}  # nothing a consumer does not read
    assert rdf["config"]["unetseg"]["weights"] == "onnx" and "attachments" not in rdf  # the weights once per format
    with zipfile.ZipFile(zip_path) as z:
        weight_bytes = sum(z.getinfo(w["source"]).file_size for w in rdf["weights"].values())
        assert sum(i.file_size for i in z.infolist()) < weight_bytes + 200_000
    from PIL import Image

    w, h = Image.open(io.BytesIO(cover)).size
    assert w == 2 * h and len(cover) < 500_000
    assert "## Validation" in readme and "10.1007/978-3-319-24574-4_28" in readme


def test_unetseg_predict_of_the_package_equals_the_run_and_bioimageio_core(package, tmp_path):
    from bioimageio.core import load_model_description, predict

    run, zip_path, data = package
    image = read_image(data / "images" / "00.png")[:60, :52]  # another size the package allows (44 + 4k)
    x = normalize(image, load_card(run).normalization)
    ours = Predictor.from_path(zip_path, device="cpu", precision="fp32").predict(x, output_shift=None)
    direct = Predictor.from_path(run, device="cpu", precision="fp32").predict(x, output_shift=None)
    np.testing.assert_allclose(ours, direct, atol=1e-6)
    theirs = predict(model=load_model_description(zip_path), inputs={"raw": image[None, None].astype(np.float32)})
    theirs = np.asarray(theirs.members["probabilities"].data.values)[0]
    np.testing.assert_allclose(theirs, ours[:, 20:-20, 20:-20], atol=1e-4)  # valid output: the halo is cropped
    assert main(["predict", "--model", str(zip_path), "--device", "cpu", str(data / "images" / "00.png"),
                 "--out", str(tmp_path / "seg")]) == 0
    assert main(["predict", "--model", str(run), "--device", "cpu", str(data / "images" / "00.png"), "--out", str(tmp_path / "ref")]) == 0
    np.testing.assert_allclose(read_image(tmp_path / "seg" / "00.tif"), read_image(tmp_path / "ref" / "00.tif"), atol=1e-6)


def test_onnx_and_torchscript_in_the_package_equal_eager_pytorch(package, tmp_path):
    run, zip_path, _ = package
    with zipfile.ZipFile(zip_path) as z:
        z.extract("weights.onnx", tmp_path)
        z.extract("weights_torchscript.pt", tmp_path)
    net = load(run).eval()
    x = example_input(net, 64, batch=2, seed=3)
    with torch.no_grad():
        want = net(x).numpy()
        traced = torch.jit.load(str(tmp_path / "weights_torchscript.pt"))(x).numpy()
    np.testing.assert_allclose(onnx_runner(tmp_path / "weights.onnx")(x), want, atol=1e-4)
    np.testing.assert_allclose(traced, want, atol=1e-4)


def test_graph_exports_on_their_own(package, tmp_path):
    run = package[0]
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    assert main(["export", str(run), "--format", "torchscript", "--out", str(tmp_path / "m.pt")]) == 0
    x = example_input(load(run), 48)
    np.testing.assert_allclose(onnx_runner(tmp_path / "m.onnx")(x), torch.jit.load(str(tmp_path / "m.pt"))(x).detach().numpy(),
                               atol=1e-4)


def _rewrite(src: Path, dst: Path, *, rdf=None, replace: dict[str, bytes] | None = None, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w") as out:
        desc = yaml.safe_load(z.read("rdf.yaml"))
        for name in z.namelist():
            if name != "rdf.yaml":
                out.writestr(name, (replace or {}).get(name, z.read(name)))
        for name, data in (extra or {}).items():
            out.writestr(name, data)
        out.writestr("rdf.yaml", yaml.safe_dump(rdf(desc) if rdf else desc))
    return dst


def _only_state_dict(desc):
    """Another tool's package whose only weights are a pickled state dict."""
    desc.pop("config")
    desc["weights"] = {"pytorch_state_dict": desc["weights"]["pytorch_state_dict"]}
    return desc


def _read_the_pickle(desc):
    desc["config"]["unetseg"]["weights"] = "pytorch_state_dict"
    return desc


def _config_narrower_than_graph(desc):
    """A description that agrees with itself but not with the tensors in its ONNX graph."""
    desc["config"]["unetseg"]["args"]["base_channels"] = 8
    desc["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]["base_channels"] = 8
    return desc


def _matching_sha(data: bytes):
    """The description edited so that its onnx sha256 is that of ``data``."""
    def edit(desc):
        desc["weights"]["onnx"]["sha256"] = hashlib.sha256(data).hexdigest()
        return desc
    return edit


def _other_width(desc):
    desc["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]["base_channels"] = 8
    return desc


@pytest.mark.parametrize("case,match", [
    ("slip", "outside the package"),
    ("missing", "missing from the package"),
    ("sha", "sha256"),
    ("foreign", "pytorch_state_dict is a pickle and is never loaded"),
    ("pickle", "pytorch_state_dict and torchscript are pickles and are never loaded"),
    ("mismatch", "base_channels"),
    ("graph", "weights.onnx: tensor inc.0.weight has shape"),
    ("corrupt", "weights.onnx: not an ONNX model"),
])
def test_bad_packages_are_refused_naming_the_file(package, tmp_path, case, match):
    src, bad = package[1], tmp_path / f"{case}.zip"
    if case == "slip":
        _rewrite(src, bad, extra={"../evil.txt": b"x"})
    elif case == "missing":
        with zipfile.ZipFile(src) as z, zipfile.ZipFile(bad, "w") as out:
            for name in z.namelist():
                if name != "cover.png":
                    out.writestr(name, z.read(name))
    elif case == "sha":
        _rewrite(src, bad, replace={"weights.onnx": b"not the model"})
    elif case == "foreign":
        _rewrite(src, bad, rdf=_only_state_dict)
    elif case == "pickle":
        _rewrite(src, bad, rdf=_read_the_pickle)
    elif case == "graph":
        _rewrite(src, bad, rdf=_config_narrower_than_graph)
    elif case == "corrupt":
        _rewrite(src, bad, replace={"weights.onnx": b"not the model"}, rdf=_matching_sha(b"not the model"))
    else:
        _rewrite(src, bad, rdf=_other_width)
    with pytest.raises(ModelFileError, match=match) as err:
        load_package(bad)
    assert str(bad) in str(err.value)


def test_cli_errors_are_one_line_and_leave_no_file(package, tmp_path, capsys):
    run = package[0]
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "m.zip")]) == 1
    assert "written to a .onnx file" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.zip")]) == 1
    assert "model file not found" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    bad = _rewrite(package[1], tmp_path / "bad.zip", rdf=_other_width)
    assert main(["predict", "--model", str(bad), str(package[2] / "images" / "00.png"), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.zip" in err and not list((tmp_path / "o").glob("*"))


def test_description_pieces_follow_the_card_and_the_network():
    net = UNet(1, 3, depth=4, base_channels=2)
    inputs, outputs = tensor_axes(net, ModelCard(classes=("background", "cell interior", "border"), foreground_class=1))
    assert inputs[2]["size"] == {"min": 188, "step": 16} and outputs[2]["size"]["offset"] == -184
    assert outputs[1]["channel_names"] == ["background", "cell_interior", "border"]
    same = UNet(1, 2, depth=2, base_channels=2, padding="same")
    assert tensor_axes(same, ModelCard())[1][2]["halo"] > 0
    assert preprocessing(ModelCard(normalization={"method": "zscore"}))[1]["id"] == "zero_mean_unit_variance"
    with pytest.raises(ModelFileError, match="dtype"):
        preprocessing(ModelCard(normalization={"method": "dtype"}))
    with pytest.raises(ConfigError, match="--format"):
        export_model("x", "y.zip", format="tflite")


def test_exported_card_round_trips(package):
    network, meta = load_package(package[1])
    assert meta["card"] == load_card(package[0])


def test_onnxruntime_backend_tiles_exactly_like_pytorch(package, tmp_path, capsys):
    run, _, data = package
    image = normalize(read_image(data / "images" / "01.png"), load_card(run).normalization)
    torch_p = Predictor.from_path(run, device="cpu", precision="fp32")
    onnx_p = Predictor.from_path(run, device="cpu", backend="onnxruntime")
    assert onnx_p.precision == "fp32" and onnx_p.backend == "onnxruntime"
    net = UNet(1, 2, depth=2, base_channels=4)  # in training mode: exporting it for the backend must leave it so
    Predictor(net, device="cpu", backend="onnxruntime")
    assert net.training and all(m.training for m in net.modules())
    for tta in (False, True):
        np.testing.assert_allclose(onnx_p.predict(image, tile_shape=12, tta=tta), torch_p.predict(image, tile_shape=12, tta=tta),
                                   atol=1e-4)
    assert main(["predict", "--model", str(run), "--backend", "onnxruntime", str(data / "images" / "01.png"),
                 "--out", str(tmp_path)]) == 0
    assert "backend onnxruntime, precision fp32" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="backend"):
        Predictor.from_path(run, backend="tflite")


def test_cover_is_made_from_the_training_overlay_when_the_run_has_one(tmp_path):
    from PIL import Image

    from unetseg.export.readme import cover_from_overlay, validation_overlay
    from unetseg.train.plots import plot_overlay

    assert validation_overlay(tmp_path) is None
    rng = np.random.default_rng(0)
    (tmp_path / "val").mkdir()
    plot_overlay(rng.random((64, 64)), rng.random((64, 64)), rng.random((64, 64)) > 0.5, tmp_path / "val" / "07.png")
    found = validation_overlay(tmp_path)
    assert found == tmp_path / "val" / "07.png"
    cover = cover_from_overlay(tmp_path / "cover.png", found)
    w, h = Image.open(cover).size
    assert (w, h) == (512, 256) and cover.stat().st_size < 500_000
