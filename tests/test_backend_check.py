"""The accuracy rule of lossy backends: ``unetseg check-backend`` scores int8 against fp32 on a
run's validation images, and ``--backend auto`` runs int8 only where that check passed for the
run's current weights."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from unetseg.backend_check import RESULTS, auto_backend, read_results, weights_digest
from unetseg.cli import main
from unetseg.errors import ConfigError
from unetseg.inference import Predictor

@pytest.fixture(scope="module")
def run(tmp_path_factory, make_em_dataset, tiny_run):
    root = tmp_path_factory.mktemp("check")
    return tiny_run(root, make_em_dataset(root / "data", n=3, size=64), val=["02"])


@pytest.mark.skipif(not shutil.which("g++") and not shutil.which("c++"), reason="torch.compile on a CPU needs a C++ compiler")
def test_check_backend_writes_the_verdict_for_these_weights(run, capsys):
    pytest.importorskip("torchao", reason="needs the fast extra (make test installs it)")
    assert main(["check-backend", str(run)]) == 0
    out = capsys.readouterr().out
    assert "int8 passes" in out or "int8 fails" in out
    entry = read_results(run)["int8"]
    assert entry["protocol"] == "isbi2012" and entry["images"] == ["02"]
    assert set(entry["tolerance"]) == {"v_rand", "warping_error"}
    assert set(entry["reference"]) >= {"v_rand", "warping_error"} and set(entry["metrics"]) == set(entry["reference"])
    assert entry["weights_sha256"] == weights_digest(run) and "avx2" in entry["cpu"]


def _verdict(run, passed: bool) -> None:
    (run / RESULTS).write_text(json.dumps({"int8": {"passed": passed, "weights_sha256": weights_digest(run)}}))


def test_auto_picks_int8_only_where_the_check_passed_for_the_current_weights(run, tmp_path):
    pytest.importorskip("torchao", reason="needs the fast extra (make test installs it)")
    saved = (run / RESULTS).read_text() if (run / RESULTS).exists() else None
    try:
        _verdict(run, True)
        assert auto_backend(run, "cpu") == "int8" and auto_backend(run, "cuda") == "torch"
        assert Predictor.from_path(run, backend="auto").backend == "int8"
        _verdict(run, False)
        assert auto_backend(run, "cpu") == "torch" and Predictor.from_path(run, backend="auto").backend == "torch"
        other = tmp_path / "other"
        shutil.copytree(run, other)
        (other / RESULTS).write_text(json.dumps({"int8": {"passed": True, "weights_sha256": "0" * 64}}))
        assert auto_backend(other, "cpu") == "torch"  # measured on other weights
        assert auto_backend(run / "model.safetensors", "cpu") == "torch"  # a bare model file has no check
        (other / RESULTS).write_text("not json")
        with pytest.raises(ConfigError, match=RESULTS):
            auto_backend(other, "cpu")
    finally:
        (run / RESULTS).write_text(saved) if saved is not None else (run / RESULTS).unlink()


def test_check_needs_validation_images(run, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(run, bare)
    cfg = yaml.safe_load((bare / "config.yaml").read_text())
    cfg["val_data"] = None
    (bare / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["check-backend", str(bare)]) == 1  # one line, no traceback
    assert "has no val_data" in capsys.readouterr().err
