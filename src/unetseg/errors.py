"""Exceptions for errors a user can cause.

Every error that bad input, a bad path or a bad config can trigger is raised as a subclass of
:class:`UnetsegError`, with a message that names the file or key and what was expected. The
command-line tool prints such errors as one line and exits non-zero; anything else is a bug.
"""

from __future__ import annotations


class UnetsegError(Exception):
    """Base class of all user-facing errors."""


class InputError(UnetsegError, ValueError):
    """An input image, label or array is missing, unreadable or not what was expected."""


class ConfigError(UnetsegError, ValueError):
    """A configuration file or option is invalid (unknown key, wrong type, bad value)."""


class ModelFileError(UnetsegError, ValueError):
    """A model file is missing, corrupt, not safetensors, or does not match its config."""


class TrainingError(UnetsegError, RuntimeError):
    """Training cannot continue (for example the loss became NaN or Inf)."""


class ClusterError(UnetsegError, RuntimeError):
    """A Dask cluster cannot finish the work (no worker left, or a task that kills its workers)."""


class DiskFullError(UnetsegError, OSError):
    """An output does not fit on its disk: the message names the path and the bytes it needs."""

    def __init__(self, message: str):
        import errno

        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return str(self.strerror)
