"""``unetseg demo``: the whole job in one command, ending with a bioimage.io package that the
real consumer (bioimageio.core's ``bioimageio test``) accepts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from unetseg.cli import main


def test_demo_trains_segments_evaluates_and_exports_a_package_that_passes_bioimageio_test(tmp_path, capsys):
    pytest.importorskip("bioimageio.core", reason="needs the export extra (make test installs it)")
    out = tmp_path / "demo-out"
    assert main(["demo", "--out", str(out), "--steps", "4", "--no-tta", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    for name in ("prediction.tif", "overlay.png", "metrics.json", "report.html", "model.zip"):
        assert (out / name).is_file(), name
    assert json.loads((out / "metrics.json").read_text())["v_rand"]["value"] > 0
    command = f"bioimageio test {out / 'model.zip'}"
    assert command in printed  # the one command that tests the package
    cli = Path(sys.executable).with_name("bioimageio")
    done = subprocess.run([str(cli), "test", str(out / "model.zip")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
