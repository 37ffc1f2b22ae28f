import os
import stat

import pytest

from unetseg.atomic import atomic_path


def test_success_replaces_and_uses_umask(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp != target and tmp.parent == target.parent
        tmp.write_text("new")
        assert target.read_text() == "old"
    assert target.read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_failure_leaves_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_directory_mode(tmp_path):
    target = tmp_path / "store.zarr"
    with atomic_path(target, directory=True) as tmp:
        (tmp / "chunk").write_text("x")
    assert (target / "chunk").read_text() == "x"
    with pytest.raises(ValueError):
        with atomic_path(target, directory=True) as tmp:
            (tmp / "chunk").write_text("y")
            raise ValueError("boom")
    assert (target / "chunk").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.zarr"]


def test_missing_parent(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with atomic_path(tmp_path / "nope" / "x.txt"):
            pass
