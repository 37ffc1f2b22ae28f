"""Cell Tracking Challenge results: ``predict --format ctc`` writes NN_RES/maskTTT.tif as the
challenge's software reads it, and ``evaluate --protocol ctc`` scores that folder directly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch

from unetseg.cli import main
from unetseg.ctc import as_ctc_labels, frame_digits, paired_frames, result_path
from unetseg.errors import InputError
from unetseg.evaluate import evaluate_ctc
from unetseg.io import read_image, write_image
from unetseg.models import ModelCard, UNet, save
from unetseg.synthetic import touching_cells


def test_frame_numbers_and_digit_counts_are_kept():
    assert frame_digits("01/t007.tif") == "007" and frame_digits("t1234.tif") == "1234"
    assert result_path("out", "seq/02/t1234.tif").as_posix() == "out/02_RES/mask1234.tif"
    with pytest.raises(InputError, match="tTTT.tif"):
        frame_digits("frame7.tif")
    with pytest.raises(InputError, match="uint16"):
        as_ctc_labels(np.array([[70000]]), "x.tif")


def _sequence(root, frames=(0, 1, 2, 3), annotated=(1, 3)):
    (root / "01").mkdir()
    (root / "01_GT" / "SEG").mkdir(parents=True)
    for t in frames:
        image, labels = touching_cells((64, 72), np.random.default_rng(t), radius=(8.0, 14.0))
        write_image(root / "01" / f"t{t:03d}.tif", image)
        if t in annotated:
            write_image(root / "01_GT" / "SEG" / f"man_seg{t:03d}.tif", labels.astype(np.uint16))
    return root / "01", root / "01_GT"


def _all_foreground_model(path):
    """A model whose every pixel is foreground (one object per frame): deterministic labels."""
    net = UNet(1, 2, depth=1, base_channels=2)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.head.bias.copy_(torch.tensor([0.0, 5.0]))
    return save(net, path, card=ModelCard(classes=("background", "cell"), task="instances"))


def test_ctc_results_round_trip_with_the_same_seg_as_in_memory(tmp_path):
    seq, gt = _sequence(tmp_path)
    model = _all_foreground_model(tmp_path / "m.safetensors")
    assert main(["predict", "--model", str(model), "--format", "ctc", "--split", "none", "--device", "cpu",
                 str(seq), "--out", str(tmp_path / "out")]) == 0
    res = tmp_path / "out" / "01_RES"
    assert sorted(p.name for p in res.iterdir()) == [f"mask{t:03d}.tif" for t in range(4)]
    masks = [tifffile.imread(res / f"mask{t:03d}.tif") for t in range(4)]
    assert all(m.dtype == np.uint16 and m.shape == (64, 72) and m.max() == 1 for m in masks)
    assert main(["evaluate", "--protocol", "ctc", "--pred", str(res), "--gt", str(gt), "--out", str(tmp_path / "ev"),
                 "--no-report"]) == 0
    scored = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    truth = np.stack([read_image(gt / "SEG" / f"man_seg{t:03d}.tif") for t in (1, 3)])
    in_memory = evaluate_ctc(np.stack([masks[1], masks[3]]), truth)
    assert scored["seg"]["value"] == pytest.approx(in_memory["seg"]["value"], abs=1e-12) and scored["seg"]["value"] > 0


def test_a_missing_result_for_an_annotated_frame_is_an_error(tmp_path):
    _, gt = _sequence(tmp_path)
    (tmp_path / "01_RES").mkdir()
    write_image(tmp_path / "01_RES" / "mask001.tif", np.ones((64, 72), np.uint16))
    with pytest.raises(InputError, match="annotated frame"):
        paired_frames(tmp_path / "01_RES", gt)
    assert main(["predict", "--model", "x", "--format", "ctc", "--output", "prob", str(tmp_path / "01"),
                 "--out", str(tmp_path / "o")]) == 1
