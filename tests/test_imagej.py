"""Fiji-ready outputs: ImageJ hyperstack TIFFs with the input's calibration, and ROI sets.

The last test opens both in real ImageJ (Debian's ``imagej``) when it is installed."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import tifffile
from roifile import roiread

from unetseg.cli import main
from unetseg.imagej import Calibration, read_calibration, tiff_kwargs, write_rois


def test_calibration_is_read_from_imagej_ome_and_plain_tiffs(tmp_path):
    image = np.zeros((5, 20, 30), np.uint8)
    tifffile.imwrite(tmp_path / "ij.tif", image, imagej=True, resolution=(1 / 0.25, 1 / 0.5),
                     metadata={"axes": "ZYX", "unit": "um", "spacing": 1.5})
    assert read_calibration(tmp_path / "ij.tif") == Calibration(0.25, 0.5, 1.5, "um")
    tifffile.imwrite(tmp_path / "ome.ome.tif", image, metadata={"axes": "ZYX", "PhysicalSizeX": 0.1, "PhysicalSizeY": 0.2,
                                                                "PhysicalSizeZ": 2.0})
    cal = read_calibration(tmp_path / "ome.ome.tif")
    assert (cal.x, cal.y, cal.z) == pytest.approx((0.1, 0.2, 2.0))
    tifffile.imwrite(tmp_path / "cm.tif", image[0], resolution=(20000.0, 20000.0), resolutionunit="CENTIMETER")
    assert read_calibration(tmp_path / "cm.tif").x == pytest.approx(0.5)
    tifffile.imwrite(tmp_path / "none.tif", image[0])
    assert read_calibration(tmp_path / "none.tif") is None and read_calibration(tmp_path / "x.png") is None
    assert tiff_kwargs("ZYX", np.uint32, 10)["bigtiff"]  # ImageJ holds no uint32


def _calibrated_stack(path):
    rng = np.random.default_rng(0)
    tifffile.imwrite(path, rng.integers(0, 255, (3, 40, 50), dtype=np.uint8), imagej=True, resolution=(1 / 0.3, 1 / 0.3),
                     metadata={"axes": "ZYX", "unit": "um", "spacing": 2.0})
    return path


@pytest.mark.parametrize("output", ["prob", "mask", "labels"])
def test_prediction_tiffs_are_imagej_hyperstacks_with_the_inputs_calibration(tmp_path, output, tiny_model_file):
    model, stack = tiny_model_file(tmp_path / "m.safetensors"), _calibrated_stack(tmp_path / "stack.tif")
    assert main(["predict", "--model", str(model), "--device", "cpu", "--output", output, str(stack), "--out", str(tmp_path / "o")]) == 0
    with tifffile.TiffFile(tmp_path / "o" / "stack.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "ZYX" and tif.series[0].shape == (3, 40, 50)
        assert tif.imagej_metadata["unit"] == "um" and tif.imagej_metadata["spacing"] == 2.0
        x, y = tif.pages.first.tags["XResolution"].value
        assert x / y == pytest.approx(1 / 0.3, rel=1e-6)


def test_rois_one_polygon_per_object_on_the_object(tmp_path):
    labels = np.zeros((2, 40, 50), np.uint16)
    labels[0, 5:15, 5:25] = 1
    labels[0, 20:35, 30:45] = 2
    labels[1, 10:30, 10:20] = 1
    rois = roiread(write_rois(tmp_path / "r_rois.zip", labels))
    assert len(rois) == 3 and [r.position for r in rois] == [1, 1, 2]
    xs, ys = rois[0].coordinates()[:, 0], rois[0].coordinates()[:, 1]
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == pytest.approx((5, 25, 5, 15), abs=0.51)  # the pixel edges


def test_predict_rois_flag_writes_the_roi_set_beside_the_labels(tmp_path, capsys, tiny_model_file):
    model, stack = tiny_model_file(tmp_path / "m.safetensors", bias=(0.0, 5.0)), _calibrated_stack(tmp_path / "stack.tif")
    assert main(["predict", "--model", str(model), "--device", "cpu", "--output", "labels", "--split", "none", "--rois",
                 str(stack), "--out", str(tmp_path / "o")]) == 0
    labels = tifffile.imread(tmp_path / "o" / "stack.tif")
    assert len(roiread(tmp_path / "o" / "stack_rois.zip")) == sum(len(np.unique(s[s > 0])) for s in labels) > 0
    assert main(["predict", "--model", str(model), "--rois", str(stack), "--out", str(tmp_path / "p")]) == 1
    assert "ROIs are written for --output labels" in capsys.readouterr().err


IMAGEJ_MACRO = """
open(getArgument() + "/stack.tif");
getVoxelSize(w, h, d, unit);
print("dims " + getWidth() + " " + getHeight() + " " + nSlices + " " + w + " " + d + " " + unit);
roiManager("Open", getArgument() + "/stack_rois.zip");
print("rois " + roiManager("count"));
"""


@pytest.mark.slow
def test_real_imagej_reads_the_tiff_and_the_roi_set(tmp_path, tiny_model_file):
    imagej = shutil.which("imagej")
    if imagej is None:
        pytest.skip("Debian's imagej is not installed (apt-get install imagej xvfb)")
    model, stack = tiny_model_file(tmp_path / "m.safetensors", bias=(0.0, 5.0)), _calibrated_stack(tmp_path / "stack.tif")
    out = tmp_path / "o"
    assert main(["predict", "--model", str(model), "--device", "cpu", "--output", "labels", "--split", "none", "--rois",
                 str(stack), "--out", str(out)]) == 0
    (tmp_path / "check.ijm").write_text(IMAGEJ_MACRO)
    done = subprocess.run(["xvfb-run", "-a", imagej, "-b", str(tmp_path / "check.ijm"), str(out)],
                          capture_output=True, text=True, timeout=300)
    text = done.stdout + done.stderr
    assert "dims 50 40 3 0.3 2 micron" in text.replace("µm", "micron").replace(" um", " micron"), text[-2000:]
    rois = len(roiread(out / "stack_rois.zip"))
    assert f"rois {rois}" in text, text[-2000:]
