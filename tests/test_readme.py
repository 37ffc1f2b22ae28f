"""The README's Python example runs as written (on a small model file in place of a trained run)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import tifffile
import torch

from unetseg.models import ModelCard, UNet, save

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_api_example_runs(tmp_path, monkeypatch):
    block = re.search(r"## The Python API.*?```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S).group(1)
    torch.manual_seed(0)
    run = tmp_path / "runs" / "isbi-cpu"
    run.mkdir(parents=True)
    save(UNet(1, 2, base_channels=2, depth=2), run, card=ModelCard(classes=("membrane", "cell")))
    image = np.random.default_rng(0).integers(0, 255, (70, 90), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "big.tif", image)
    monkeypatch.chdir(tmp_path)
    scope = {"image": image}
    exec(compile(block, str(README), "exec"), scope)
    assert scope["prob"].shape == (2, 70, 90) and scope["card"].classes == ("membrane", "cell")
    assert tifffile.imread(tmp_path / "big-prob.tif").shape == (70, 90)
