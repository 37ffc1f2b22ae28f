"""Shared fixtures: where the real data live, and a skip when they are absent."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from unetseg.io import write_image

if not os.environ.get("DISPLAY"):  # the napari plugin's tests: headless Qt (its viewer tests need Xvfb's display)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()


def shared_dataset(name: str) -> Path:
    """Path of ``../shared/data/NAME``; skips the calling test when it is absent."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture
def isbi_dir() -> Path:
    return shared_dataset("isbi2012")


@pytest.fixture
def hela_dir() -> Path:
    return shared_dataset("DIC-C2DH-HeLa")


@pytest.fixture
def dsb_dir() -> Path:
    return shared_dataset("dsb2018-stardist-sample")


def make_dataset(root: Path, n: int = 3, size: int = 64, seed: int = 0) -> Path:
    """Tiny ISBI-like folders: bright cells (255) separated by dark membranes (0)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        pts = rng.uniform(0, size, (6, 2))
        d = np.sort(((yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2) ** 0.5, axis=-1)
        membrane = (d[..., 1] - d[..., 0]) < 2.0
        label = np.where(membrane, 0, 255).astype(np.uint8)
        image = np.clip(np.where(membrane, 60, 180) + rng.normal(0, 20, label.shape), 0, 255).astype(np.uint8)
        write_image(root / "images" / f"{i:02d}.png", image)
        write_image(root / "labels" / f"{i:02d}.png", label)
    return root


TINY_RECIPE = """
model: {{arch: UNet, args: {{depth: 2, base_channels: 4, dropout: 0.0}}}}
train_data: {{path: {data}{train_select}}}
{val_data}
data: {{target: {{kind: binary, foreground_value: 255, class_names: [membrane, cell]}}}}
schedule: {{steps: 4}}
validation: {validation}
runtime: {{device: cpu, precision: fp32, threads: 1}}
tile: [28, 28]
"""


def train_tiny_run(root: Path, data: Path, *, val: list[str] | None = None, validation: str = "{every: 0}") -> Path:
    """Train a depth-2, 4-channel U-Net for 4 steps on ``data`` (``make_dataset``) into ``root/run``;
    with ``val`` those images are the run's ``val_data`` and the others its training images;
    ``validation`` is the recipe's validation section (YAML flow)."""
    from unetseg.cli import main

    names = sorted(p.stem for p in (data / "images").glob("*.png"))
    train_select = f", select: {[n for n in names if n not in val]}" if val else ""
    val_data = f"val_data: {{path: {data}, select: {val}}}" if val else ""
    (root / "recipe.yaml").write_text(TINY_RECIPE.format(data=data, train_select=train_select, val_data=val_data, validation=validation))
    assert main(["train", "--config", str(root / "recipe.yaml"), "--out", str(root / "run"), "--no-progress"]) == 0
    return root / "run"


@pytest.fixture(scope="session")
def tiny_run():
    """:func:`train_tiny_run`: ``tiny_run(root, data, val=None)`` trains a 4-step run folder."""
    return train_tiny_run


@pytest.fixture(scope="session")
def make_em_dataset():
    """:func:`make_dataset`: tiny ISBI-like ``images/`` + ``labels/`` folders."""
    return make_dataset


def _tiny_model_file(path: Path, bias: tuple[float, float] = (0.0, 0.0)) -> Path:
    """A 2-class depth-1 U-Net saved to ``path``, its output biased by ``bias`` (instances card)."""
    import torch

    from unetseg.models import ModelCard, UNet, save

    torch.manual_seed(0)
    net = UNet(1, 2, depth=1, base_channels=2)
    with torch.no_grad():
        net.head.bias.copy_(torch.tensor(bias))
    return save(net, path, card=ModelCard(classes=("background", "cell"), task="instances"))


@pytest.fixture(scope="session")
def tiny_model_file():
    """:func:`_tiny_model_file`: ``tiny_model_file(path, bias)`` saves a depth-1 2-class U-Net."""
    return _tiny_model_file
