"""Shared fixtures: where the real data live, and a skip when they are absent."""

from __future__ import annotations

from pathlib import Path

import pytest

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
