"""Malformed inputs to ``unetseg predict`` and ``unetseg evaluate``: a one-line error and a
non-zero exit, or a correct result; never a traceback, a hang or a partial output file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unetseg.cli import main
from unetseg.io import write_image
from unetseg.models import ModelCard, UNet, save

FUZZ = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model")
    save(UNet(1, 2, depth=2, base_channels=2), folder, card=ModelCard(normalization={"method": "minmax"}))
    return folder


def _run(argv, capsys) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, err


def _assert_clean_failure(code, err, out_dir):
    assert code == 1, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("unetseg: error:"), err
    assert "Traceback" not in err
    leftovers = [p.name for p in out_dir.iterdir()] if out_dir.exists() else []
    assert leftovers == [], f"partial output left behind: {leftovers}"


def _bad_arrays():
    return st.sampled_from(
        [
            ("complex", np.ones((20, 20), np.complex64)),
            ("nan", np.where(np.eye(20, dtype=bool), np.nan, 1.0).astype(np.float32)),
            ("inf", np.full((20, 20), np.inf, np.float32)),
            ("empty", np.zeros((0, 20), np.float32)),
            ("five-d", np.zeros((2, 2, 2, 2, 2), np.float32)),
            ("object-strings", np.array([["a", "b"], ["c", "d"]])),
            ("wrong-channels", np.zeros((3, 40, 40, 5), np.float32)),
        ]
    )


@given(case=_bad_arrays())
@FUZZ
def test_predict_refuses_bad_arrays(tmp_path, tally, model_dir, capsys, case):
    name, arr = case
    src = tmp_path / f"{name}.npy"
    np.save(src, arr)
    out = tmp_path / f"out-{name}"
    tally["malformed inputs tried (predict CLI)"] += 1
    code, err = _run(["predict", "--model", model_dir, src, "--out", out], capsys)
    _assert_clean_failure(code, err, out)


@pytest.mark.parametrize("dtype", [bool, np.int64, np.uint16, np.float64, np.int8])
@pytest.mark.parametrize("shape", [(1, 1), (1, 17), (17, 300)])
def test_predict_accepts_odd_but_valid_arrays(tmp_path, tally, model_dir, capsys, dtype, shape):
    src = tmp_path / "odd.npy"
    np.save(src, (np.arange(np.prod(shape)).reshape(shape) % 2).astype(dtype))
    out = tmp_path / "out"
    tally["malformed inputs tried (predict CLI)"] += 1
    code, err = _run(["predict", "--model", model_dir, src, "--out", out], capsys)
    assert code == 0, err
    from unetseg.io import read_image

    result = read_image(out / "odd.tif")
    assert result.shape == shape and np.isfinite(result).all()


@given(blob=st.binary(min_size=0, max_size=300), suffix=st.sampled_from([".png", ".tif", ".npy", ".jpg"]))
@FUZZ
def test_predict_refuses_corrupt_files(tmp_path, tally, model_dir, capsys, blob, suffix):
    src = tmp_path / f"junk{suffix}"
    src.write_bytes(blob)
    out = tmp_path / "out-junk"
    tally["malformed inputs tried (predict CLI)"] += 1
    code, err = _run(["predict", "--model", model_dir, src, "--out", out], capsys)
    _assert_clean_failure(code, err, out)


def test_predict_missing_model_and_input(tmp_path, model_dir, capsys):
    img = tmp_path / "a.png"
    write_image(img, np.zeros((30, 30), np.uint8))
    for argv in (
        ["predict", "--model", tmp_path / "nomodel", img, "--out", tmp_path / "o1"],
        ["predict", "--model", model_dir, tmp_path / "missing.png", "--out", tmp_path / "o2"],
    ):
        code, err = _run(argv, capsys)
        assert code == 1 and err.startswith("unetseg: error:") and err.count("\n") == 1, err


def test_predict_output_names_stay_inside_out(tmp_path, model_dir, capsys):
    nested = tmp_path / "deep" / "dir"
    nested.mkdir(parents=True)
    img = nested / "cells.png"
    write_image(img, np.zeros((30, 30), np.uint8))
    out = tmp_path / "out"
    # A path with '..' components must still write OUT/cells.tif, nowhere else.
    code, err = _run(["predict", "--model", model_dir, tmp_path / "deep" / "dir" / ".." / "dir" / "cells.png", "--out", out], capsys)
    assert code == 0, err
    assert [p.name for p in out.iterdir()] == ["cells.tif"]


def test_predict_unwritable_output(tmp_path, model_dir, capsys):
    img = tmp_path / "a.png"
    write_image(img, np.zeros((30, 30), np.uint8))
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("x")
    code, err = _run(["predict", "--model", model_dir, img, "--out", blocker], capsys)
    assert code == 1 and err.startswith("unetseg: error:") and "Traceback" not in err


@pytest.mark.parametrize(
    "pred,gt,expect",
    [
        (np.full((32, 32), np.nan, np.float32), np.full((32, 32), 255, np.uint8), "NaN"),
        (np.zeros((32, 32), np.float32), np.zeros((31, 32), np.uint8), "shape"),
        (np.zeros((32, 32), np.complex64), np.zeros((32, 32), np.uint8), ""),
        (np.full((32, 32), 7.0, np.float32), np.full((32, 32), 255, np.uint8), ""),
    ],
)
def test_evaluate_refuses_bad_pairs(tmp_path, tally, capsys, pred, gt, expect):
    p, g = tmp_path / "pred.npy", tmp_path / "gt.npy"
    np.save(p, pred)
    np.save(g, gt)
    out = tmp_path / "eval"
    tally["malformed inputs tried (evaluate CLI)"] += 1
    code, err = _run(["evaluate", "--pred", p, "--gt", g, "--protocol", "isbi2012", "--out", out], capsys)
    _assert_clean_failure(code, err, out)
    assert expect.lower() in err.lower()


TRAIN_RECIPE = """
model: {{arch: UNet, args: {{depth: 2, base_channels: 2, dropout: 0.0}}}}
train_data: {{path: {data}}}
data: {{target: {{kind: binary, foreground_value: 255}}}}
schedule: {{steps: 2}}
runtime: {{device: cpu, precision: fp32, threads: 1}}
tile: [28, 28]
"""


def _train_dataset(root, image, label):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    np.save(root / "images" / "a.npy", image)
    np.save(root / "labels" / "a.npy", label)
    return root


@pytest.mark.parametrize(
    "case,image,label",
    [
        ("label-values", np.zeros((48, 48), np.uint8), np.full((48, 48), 7, np.uint8)),
        ("nan-image", np.full((48, 48), np.nan, np.float32), np.full((48, 48), 255, np.uint8)),
        ("complex-image", np.zeros((48, 48), np.complex64), np.full((48, 48), 255, np.uint8)),
        ("shape-mismatch", np.zeros((48, 48), np.uint8), np.full((40, 48), 255, np.uint8)),
        ("float-label", np.zeros((48, 48), np.uint8), np.full((48, 48), 0.5, np.float32)),
    ],
)
def test_train_refuses_malformed_data(tmp_path, tally, capsys, case, image, label):
    data = _train_dataset(tmp_path / "data", image, label)
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text(TRAIN_RECIPE.format(data=data))
    run = tmp_path / "run"
    tally["malformed inputs tried (train CLI)"] += 1
    code, err = _run(["train", "--config", cfg, "--out", run, "--no-progress"], capsys)
    assert code == 1, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[-1].startswith("unetseg: error:") and "Traceback" not in err, err
    assert "a.npy" in lines[-1], f"error does not name the file: {lines[-1]}"
    assert not (run / "model.safetensors").exists()
