"""One training run per run folder: ``RUN/.lock`` names the process that trains there.

The lock is an exclusive ``flock`` on ``RUN/.lock``, taken by the main process (rank 0) when a
run starts or resumes and released when it ends. The kernel drops it when its holder dies, even
by ``kill -9``, so a second ``unetseg train`` into the same folder is refused while the first
lives (the message gives its pid and host), and the lock of a killed run is taken over with a
warning (its pid is still in the file: a clean end empties it). ``flock`` holds on local disks;
on network file systems that do not support it, two hosts are not kept apart.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from ..errors import TrainingError
from .distributed import from_env

LOCK_NAME = ".lock"
log = logging.getLogger(__name__)


class RunLock:
    """A held run-folder lock; :meth:`release` (or the end of the process) lets it go."""

    def __init__(self, fd: int, path: Path):
        self.fd: int | None = fd
        self.path = path

    def release(self) -> None:
        """Empty the file (a clean end) and drop the lock; the file stays, so no other process
        can lock an unlinked copy of it."""
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder(fd: int) -> str:
    return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()


def acquire_run_lock(run_dir: str | os.PathLike) -> RunLock:
    """Lock ``run_dir`` (which must exist) for this process.

    Raises
    ------
    TrainingError
        Another live process holds the lock; the message names its pid and host.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with acquire_run_lock(folder):
    ...     try:
    ...         acquire_run_lock(folder)
    ...     except TrainingError as exc:
    ...         print("refused:", "another training run" in str(exc))
    refused: True
    """
    path = Path(run_dir) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd) or "unknown"
        os.close(fd)
        raise TrainingError(f"{run_dir}: another training run (pid {holder}) is using this run folder; "
                            "wait for it to end or train into another folder") from None
    previous = _holder(fd)
    if previous:
        log.warning("%s: took over the lock of a run that ended without releasing it (pid %s)", run_dir, previous)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    return RunLock(fd, path)


@contextlib.contextmanager
def held_run_folder(run_dir: str | os.PathLike) -> Iterator[None]:
    """Create ``run_dir`` and hold its lock for the block, on the main process of a run; other
    ranks of a distributed run share the main process's folder."""
    if not from_env().is_main:
        yield
        return
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    with acquire_run_lock(run_dir):
        yield
