"""Backends chosen by measurement: ``unetseg check-backend`` scores and times each candidate
against fp32 on a run's validation images and records the fastest that keeps the accuracy rule,
keyed by CPU, torch and weights; ``--backend auto`` uses that record and nothing else."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from unetseg.backend_check import RESULTS, RESULTS_FORMAT, auto_backend, machine_key, read_results
from unetseg.cli import main
from unetseg.errors import ConfigError
from unetseg.inference import Predictor


@pytest.fixture(scope="module")
def run(tmp_path_factory, make_em_dataset, tiny_run):
    root = tmp_path_factory.mktemp("check")
    return tiny_run(root, make_em_dataset(root / "data", n=3, size=64), val=["02"])


@pytest.mark.skipif(not shutil.which("g++") and not shutil.which("c++"), reason="torch.compile on a CPU needs a C++ compiler")
def test_check_backend_records_scores_times_and_the_fastest_that_passes(run, capsys):
    pytest.importorskip("torchao", reason="needs the fast extra (make test installs it)")
    pytest.importorskip("onnxruntime", reason="needs the export extra (make test installs it)")
    elsewhere = {**machine_key(run), "cpu": {"cpu": "another CPU"}, "candidates": {}, "choice": "int8"}
    (run / RESULTS).write_text(json.dumps({"format": RESULTS_FORMAT, "checks": [elsewhere]}))
    for _ in range(2):  # a second check replaces this machine's record, never another machine's
        assert main(["check-backend", str(run), "--backends", "int8", "onnxruntime"]) == 0
    out = capsys.readouterr().out
    assert "chosen:" in out and "onnxruntime" in out
    records = read_results(run)
    assert len(records) == 2 and records[0]["cpu"] == {"cpu": "another CPU"}
    record = records[1]
    assert {k: record[k] for k in machine_key(run)} == machine_key(run)
    assert record["protocol"] == "isbi2012" and record["images"] == ["02"]
    assert set(record["tolerance"]) == {"v_rand", "warping_error"}
    assert set(record["candidates"]) == {"torch-fp32", "int8", "onnxruntime"}
    ort = record["candidates"]["onnxruntime"]
    assert ort["passed"] and ort["precision"] == "fp32" and ort["seconds"] > 0  # fp32 graph: the reference's scores
    assert record["candidates"]["int8"]["precision"] == "int8"
    passed = {n: e["seconds"] for n, e in record["candidates"].items() if e["passed"]}
    assert record["choice"] == min(passed, key=passed.get)


def _choose(run, choice: str, entry: dict, **key) -> None:
    record = {**machine_key(run), **key, "candidates": {choice: entry}, "choice": choice}
    (run / RESULTS).write_text(json.dumps({"format": RESULTS_FORMAT, "checks": [record]}))


def test_auto_uses_this_machines_choice_for_the_current_weights_only(run, tmp_path):
    pytest.importorskip("onnxruntime", reason="needs the export extra (make test installs it)")
    saved = (run / RESULTS).read_text() if (run / RESULTS).exists() else None
    try:
        _choose(run, "onnxruntime", {"backend": "onnxruntime", "precision": "fp32", "passed": True, "seconds": 0.1})
        assert auto_backend(run, "cpu") == ("onnxruntime", None) and auto_backend(run, "cuda") == ("torch", "fp32")
        assert Predictor.from_path(run, backend="auto").backend == "onnxruntime"
        _choose(run, "torch-fp32", {"backend": "torch", "precision": "fp32", "passed": True, "seconds": 0.1})
        chosen = Predictor.from_path(run, backend="auto")  # the check's precision, where none was asked for
        assert (chosen.backend, chosen.precision) == ("torch", "fp32")
        assert Predictor.from_path(run, backend="auto", precision="bf16").precision == "bf16"
        _choose(run, "onnxruntime", {"backend": "onnxruntime", "precision": "fp32"}, weights_sha256="0" * 64)
        assert auto_backend(run, "cpu") == ("torch", "fp32")  # measured on other weights: the lossless default
        _choose(run, "onnxruntime", {"backend": "onnxruntime", "precision": "fp32"}, torch="1.0")
        assert auto_backend(run, "cpu") == ("torch", "fp32")  # another torch
        assert auto_backend(run / "model.safetensors", "cpu") == ("torch", "fp32")  # a bare model file has no check
        unchecked = Predictor.from_path(run / "model.safetensors", backend="auto")  # precision auto: not bf16 unmeasured
        assert (unchecked.backend, unchecked.precision) == ("torch", "fp32")
        from unetseg.models import UNet

        module = Predictor(UNet(1, 2, depth=1, base_channels=2), backend="auto")  # a module has no check either
        assert (module.backend, module.precision) == ("torch", "fp32")
        for text in ("not json", json.dumps({"int8": {"passed": True}})):  # unreadable, or an older format
            (run / RESULTS).write_text(text)
            with pytest.raises(ConfigError, match=RESULTS):
                auto_backend(run, "cpu")
    finally:
        (run / RESULTS).write_text(saved) if saved is not None else (run / RESULTS).unlink()


def test_predict_uses_the_recorded_choice_by_default_and_says_so(run, tmp_path, make_em_dataset, capsys):
    pytest.importorskip("onnxruntime", reason="needs the export extra (make test installs it)")
    saved = (run / RESULTS).read_text() if (run / RESULTS).exists() else None
    data = make_em_dataset(tmp_path / "data", n=1, size=64)
    try:
        _choose(run, "onnxruntime", {"backend": "onnxruntime", "precision": "fp32", "passed": True, "seconds": 0.1})
        assert main(["predict", "--model", str(run), str(data / "images"), "--out", str(tmp_path / "o")]) == 0
        assert "backend onnxruntime, precision fp32" in capsys.readouterr().out
        (run / RESULTS).unlink()  # no check: eager fp32, as before checks existed
        assert main(["predict", "--model", str(run), str(data / "images"), "--out", str(tmp_path / "p")]) == 0
        assert "backend torch, precision fp32" in capsys.readouterr().out
    finally:
        (run / RESULTS).write_text(saved) if saved is not None else (run / RESULTS).unlink()


def test_a_recipe_can_run_the_check_when_training_ends(tmp_path, make_em_dataset, tiny_run, monkeypatch):
    """``validation.check_backends: true``: the finished run has this machine's record."""
    import unetseg.backend_check as bc

    pytest.importorskip("onnxruntime", reason="needs the export extra (make test installs it)")
    monkeypatch.setattr(bc, "available", lambda names=None: ["onnxruntime"])  # one quick candidate
    data = make_em_dataset(tmp_path / "data", n=3, size=64)
    run = tiny_run(tmp_path, data, val=["02"], validation="{every: 0, check_backends: true}")
    record = read_results(run)[-1]
    assert set(record["candidates"]) == {"torch-fp32", "onnxruntime"} and record["images"] == ["02"]
    assert {k: record[k] for k in machine_key(run)} == machine_key(run)


def test_check_needs_validation_images(run, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(run, bare)
    cfg = yaml.safe_load((bare / "config.yaml").read_text())
    cfg["val_data"] = None
    (bare / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["check-backend", str(bare)]) == 1  # one line, no traceback
    assert "has no val_data" in capsys.readouterr().err
