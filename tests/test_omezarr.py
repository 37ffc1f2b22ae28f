"""OME-Zarr outputs: an NGFF multiscale pyramid that ome-zarr's own reader (napari's) opens,
level 0 equal to the TIFF output, each level computed from the one before, atomic."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

pytest.importorskip("ome_zarr", reason="needs ome-zarr (the dev extra; make test installs it)")

from ome_zarr.io import parse_url  # noqa: E402
from ome_zarr.reader import Reader  # noqa: E402

from unetseg.cli import main  # noqa: E402
from unetseg.omezarr import create_ome_zarr, pyramid_shapes  # noqa: E402


def _image(path, shape=(600, 530)):
    rng = np.random.default_rng(0)
    tifffile.imwrite(path, rng.integers(0, 255, shape, dtype=np.uint8), imagej=True, resolution=(1 / 0.25, 1 / 0.25),
                     metadata={"axes": "YX", "unit": "um"})
    return path


def _read(path):
    nodes = list(Reader(parse_url(str(path)))())
    return [np.asarray(level) for level in nodes[0].data], nodes[0].metadata


@pytest.mark.parametrize("output", ["prob", "labels"])
def test_ome_zarr_output_is_a_pyramid_whose_level_0_equals_the_tiff(tmp_path, output, tiny_model_file):
    model, image = tiny_model_file(tmp_path / "m.safetensors", bias=(0.0, 0.3)), _image(tmp_path / "img.tif")
    common = ["predict", "--model", str(model), "--device", "cpu", "--output", output, str(image)]
    assert main(common + ["--format", "ome-zarr", "--out", str(tmp_path / "z")]) == 0
    assert main(common + ["--out", str(tmp_path / "t")]) == 0
    levels, meta = _read(tmp_path / "z" / "img.ome.zarr")
    assert [lv.shape for lv in levels] == pyramid_shapes((600, 530)) == [(600, 530), (300, 265), (150, 132)]
    np.testing.assert_array_equal(levels[0], tifffile.imread(tmp_path / "t" / "img.tif"))
    if output == "prob":
        np.testing.assert_allclose(levels[1], levels[0].reshape(300, 2, 265, 2).mean(axis=(1, 3)), atol=1e-6)
    else:  # labels stay labels: every other pixel
        np.testing.assert_array_equal(levels[1], levels[0][::2, ::2])
    scales = [t[0]["scale"] for t in meta["coordinateTransformations"]]
    assert scales == [[0.25, 0.25], [0.5, 0.5], [1.0, 1.0]] and [a["name"] for a in meta["axes"]] == ["y", "x"]
    group = zarr.open_group(str(tmp_path / "z" / "img.ome.zarr"), mode="r")
    assert group.metadata.zarr_format == 3
    from ome_zarr_models.v05 import Image

    Image.from_zarr(group)  # the NGFF 0.5 specification's own models accept the group


def test_a_failed_write_leaves_nothing_under_the_final_name(tmp_path):
    with pytest.raises(RuntimeError), create_ome_zarr(tmp_path / "x.ome.zarr", (64, 64), np.float32, axes="YX") as level0:
        level0[:32] = 1.0
        raise RuntimeError("killed mid-run")
    assert list(tmp_path.iterdir()) == []


def _ome_zarr_input(path, image, pixel=0.5):
    from unetseg.omezarr import create_ome_zarr
    from unetseg.imagej import Calibration

    with create_ome_zarr(path, image.shape, image.dtype, axes="YX", calibration=Calibration(pixel, pixel, None, "µm")) as level0:
        level0[:, :] = image
    return path


def test_labels_of_an_ome_zarr_input_become_its_ngff_label_image(tmp_path, tiny_model_file):
    from ome_zarr_models.v05 import Image

    model = tiny_model_file(tmp_path / "m.safetensors", bias=(0.0, 0.3))
    pixels = tifffile.imread(_image(tmp_path / "img.tif", shape=(300, 280)))
    src = _ome_zarr_input(tmp_path / "cells.ome.zarr", pixels)
    common = ["predict", "--model", str(model), "--device", "cpu", "--output", "labels"]
    assert main(common + ["--format", "ome-zarr", str(src), "--out", str(tmp_path / "z")]) == 0
    assert main(common + [str(tmp_path / "img.tif"), "--out", str(tmp_path / "t")]) == 0
    nodes = list(Reader(parse_url(str(src)))())  # napari's route: the image, then its labels
    label_node = next(n for n in nodes if n.load(__import__("ome_zarr.reader", fromlist=["Label"]).Label))
    np.testing.assert_array_equal(np.asarray(label_node.data[0]), tifffile.imread(tmp_path / "t" / "img.tif"))
    assert label_node.metadata["coordinateTransformations"][0][0]["scale"] == [0.5, 0.5]  # the source's pixel size
    group = zarr.open_group(str(src), mode="r")
    assert group["labels"].attrs["ome"]["labels"] == ["unetseg"]
    assert group["labels/unetseg"].attrs["ome"]["image-label"]["source"] == {"image": "../../"}
    Image.from_zarr(group)  # the source stays a valid NGFF image
    assert not (tmp_path / "z").exists() or not list((tmp_path / "z").iterdir())


def test_an_ome_zarr_input_gives_its_pixel_size_to_a_tiff_output(tmp_path, tiny_model_file):
    from unetseg.imagej import read_calibration

    src = _ome_zarr_input(tmp_path / "cells.ome.zarr", np.zeros((40, 40), np.uint8), pixel=0.25)
    cal = read_calibration(src)
    assert (cal.x, cal.y, cal.unit) == (0.25, 0.25, "µm")
    model = tiny_model_file(tmp_path / "m.safetensors")
    assert main(["predict", "--model", str(model), "--device", "cpu", str(src), "--out", str(tmp_path / "t")]) == 0
    assert read_calibration(tmp_path / "t" / "cells.tif").x == pytest.approx(0.25)
