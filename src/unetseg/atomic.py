"""Atomic file output: write to a temporary sibling, then rename over the final name.

A crash, a ``kill -9`` or an exception while writing never leaves a half-written file under
the final name; at worst a hidden ``.NAME.*.tmp`` file remains next to it. A full disk
(``ENOSPC``) becomes a :class:`~unetseg.errors.DiskFullError` naming the final path (and, where
the writer said how much it needs, :func:`ensure_space`, the bytes).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import DiskFullError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, directory: bool = False, expected_bytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary path that is renamed to ``path`` when the block succeeds.

    Parameters
    ----------
    path : path-like
        Final destination. Its parent folder must exist.
    directory : bool
        Yield a temporary *folder* (for zarr stores) instead of a file name.
    expected_bytes : int, optional
        About how much the output takes, named in the error if the disk fills up (for outputs
        whose size is known only roughly: compressed arrays, packages, graphs).

    Yields
    ------
    pathlib.Path
        Where to write. On success it replaces ``path``; on error it is removed.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "out.txt") as tmp:
    ...     _ = tmp.write_text("done")
    >>> (d / "out.txt").read_text()
    'done'
    """
    final = Path(path)
    parent = final.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"{parent}: output folder does not exist")
    prefix = f".{final.name}."
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=parent)
        os.close(fd)
        tmp = Path(name)
    # mkstemp/mkdtemp create private 0600/0700 entries; give the output the usual umask permissions.
    mode = (0o777 if directory else 0o666) & ~_umask()
    os.chmod(tmp, mode)
    try:
        yield tmp
        if directory:
            _chmod_tree(tmp, 0o666 & ~_umask())
            if final.exists():
                shutil.rmtree(final) if final.is_dir() else final.unlink()
        else:
            # Writers that replace the file they are given (safetensors does) recreate it 0600.
            os.chmod(tmp, mode)
            _fsync(tmp)
        os.replace(tmp, final)
    except BaseException as exc:
        if tmp.is_dir():
            _remove_tree(tmp)
        else:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC and not isinstance(exc, DiskFullError):
            raise _disk_full(final, expected_bytes) from exc
        raise


def _remove_tree(folder: Path, tries: int = 20) -> None:
    """Remove a temporary folder that a writer's background threads may still add to (zarr's
    asynchronous stores finish their last chunks after an error): try until it is gone."""
    for _ in range(tries):
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            return
        time.sleep(0.05)


def _disk_full(final: Path, expected_bytes: int | None) -> DiskFullError:
    need = f"needs about {expected_bytes} bytes, " if expected_bytes else ""
    return DiskFullError(f"{final}: no space left on the device while writing it ({need}{free_bytes(final.parent)} bytes free there now)")


def free_bytes(folder: str | os.PathLike) -> int:
    """Bytes an unprivileged writer can still put on the disk holding ``folder``."""
    return int(shutil.disk_usage(folder).free)


def ensure_space(path: str | os.PathLike, nbytes: int) -> None:
    """Refuse, before writing, an output of ``nbytes`` bytes that cannot fit beside ``path``.

    Raises
    ------
    DiskFullError
        Naming ``path``, the bytes it needs and the bytes free.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> ensure_space(pathlib.Path(tempfile.mkdtemp()) / "small.tif", 10)
    """
    parent = Path(path).parent
    free = free_bytes(parent)
    if nbytes > free:
        raise DiskFullError(f"{path}: needs {nbytes} bytes, {free} free on its disk")


def _chmod_tree(folder: Path, mode: int) -> None:
    """Give every file under ``folder`` ``mode`` (writers such as safetensors create them 0600)."""
    for p in folder.rglob("*"):
        if p.is_file() and not p.is_symlink():
            os.chmod(p, mode)


def _umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())
