"""Reading and writing images: PNG, JPEG, TIFF (incl. multi-page and LZW), NumPy ``.npy`` and zarr.

Readers return NumPy arrays exactly as stored (no silent channel guessing): a grey image is
``(Y, X)``, an RGB(A) PNG/JPEG is ``(Y, X, C)``, a multi-page TIFF ``(Z, Y, X)`` or as its axes say.
Writers are atomic: they write a temporary sibling and rename it over the final name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy")
DEFAULT_MAX_PIXELS = 2**31  # decompression-bomb guard for decoded images (about 2 gigapixels)


def natural_key(path: str | os.PathLike) -> list:
    """Sort key that orders ``t2`` before ``t10``.

    Examples
    --------
    >>> sorted(["t10.tif", "t2.tif", "t1.tif"], key=natural_key)
    ['t1.tif', 't2.tif', 't10.tif']
    """
    name = Path(path).name
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder``, in natural order (hidden files skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
    return sorted(files, key=natural_key)


def read_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read one image file into a NumPy array.

    Parameters
    ----------
    path : path-like
        A PNG, JPEG, TIFF (any page count and compression imagecodecs supports) or ``.npy`` file.
    max_pixels : int
        Refuse images whose decoded size exceeds this many elements (decompression bombs),
        before allocating them.

    Raises
    ------
    InputError
        The file is missing, unreadable, corrupt, of an unsupported type or too large.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.tif"
    >>> write_image(p, np.arange(6, dtype=np.uint16).reshape(2, 3))
    >>> read_image(p)
    array([[0, 1, 2],
           [3, 4, 5]], dtype=uint16)
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            return _read_tiff(path, max_pixels)
        if suffix in (".png", ".jpg", ".jpeg"):
            return _read_pillow(path, max_pixels)
        if suffix == ".npy":
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            _check_size(path, arr.shape, max_pixels)
            return np.asarray(arr)
    except InputError:
        raise
    except (OSError, ValueError, TypeError, KeyError, IndexError, RuntimeError, EOFError, MemoryError) as exc:
        raise InputError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc
    raise InputError(f"{path}: unsupported file type {suffix!r}; expected one of {', '.join(IMAGE_SUFFIXES)}")


def _check_size(path: Path, shape: tuple[int, ...], max_pixels: int) -> None:
    n = int(np.prod(shape, dtype=np.float64))
    if n > max_pixels:
        raise InputError(f"{path}: image of shape {tuple(shape)} has {n:,} elements, above the limit of {max_pixels:,} (max_pixels)")
    if n == 0:
        raise InputError(f"{path}: image is empty (shape {tuple(shape)})")


def _read_tiff(path: Path, max_pixels: int) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        _check_size(path, series.shape, max_pixels)
        return series.asarray()


def _read_pillow(path: Path, max_pixels: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        _check_size(path, (im.height, im.width, len(im.getbands())), max_pixels)
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode == "1":
            im = im.convert("L")
        arr = np.asarray(im)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    return arr


def write_image(path: str | os.PathLike, array: np.ndarray, *, compression: str | None = "zlib") -> None:
    """Write ``array`` atomically as TIFF (any dtype, compressed), PNG (uint8/uint16) or ``.npy``.

    A TIFF larger than 2 GiB is written as BigTIFF.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    array = np.asarray(array)
    with atomic_path(path) as tmp:
        if suffix in (".tif", ".tiff"):
            import tifffile

            tifffile.imwrite(tmp, array, compression=compression, bigtiff=array.nbytes > 2**31 - 2**25)
        elif suffix == ".png":
            from PIL import Image

            if array.dtype not in (np.uint8, np.uint16) or array.ndim not in (2, 3):
                raise InputError(f"{path}: PNG holds 2D/RGB uint8 or uint16 images, got {array.dtype} {array.shape}")
            Image.fromarray(array).save(tmp, format="PNG")
        elif suffix == ".npy":
            with open(tmp, "wb") as fh:
                np.save(fh, array, allow_pickle=False)
        else:
            raise InputError(f"{path}: cannot write {suffix!r}; use .tif, .png or .npy")
