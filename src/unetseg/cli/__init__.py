"""The ``unetseg`` command-line tool.

Each sub-command lives in its own module in this package and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` (called with the parsed namespace, returning an exit
code). The tool only parses arguments and calls the library; errors a user can cause are
printed as one line on stderr with a non-zero exit status, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from .. import __version__
from ..errors import UnetsegError

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command module of this package registered."""
    parser = argparse.ArgumentParser(
        prog="unetseg",
        description="U-Net segmentation for microscopy: train, predict (overlap-tile), evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"unetseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``unetseg`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    # Decoders log every problem they meet in a corrupt file; the CLI reports one line instead.
    for noisy in ("tifffile", "PIL", "distributed", "numcodecs"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.CRITICAL)
    try:
        return int(args.func(args) or 0)
    except UnetsegError as exc:
        _fail(str(exc))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        _fail(_os_message(exc))
    except OSError as exc:
        _fail(_os_message(exc))
    except MemoryError:
        _fail("out of memory: try a smaller --tile or fewer files at once")
    except KeyboardInterrupt:
        print("unetseg: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_ERROR


def _os_message(exc: OSError) -> str:
    if exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)


def _fail(message: str) -> None:
    first = " ".join(str(message).split())
    print(f"unetseg: error: {first}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
