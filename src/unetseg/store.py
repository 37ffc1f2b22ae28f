"""Lazy array sources and tile-by-tile output writers, so inference never holds a whole image.

Sources expose ``shape``, ``dtype``, ``ndim`` and ``source[index]`` for tuples of slices inside
the array (like NumPy), reading only what is asked for:

- uncompressed TIFF and ``.npy`` files are read with ``os.pread`` from their data offset
  (:class:`RawSource`), without mapping the file, so resident memory stays at the size of what
  was read rather than growing with every page touched;
- compressed or tiled TIFF files are read through tifffile's zarr store (only the strips or tiles
  a window touches are decoded); zarr arrays (and OME-Zarr groups, level ``0``) directly;
- PNG/JPEG have no random access and are decoded whole (:func:`unetseg.io.read_image`).

Writers (:func:`create_writer`) preallocate the output (a BigTIFF whose data is contiguous and
memory-mappable, a ``.npy`` file, or a zarr array) under a temporary sibling name, accept
``writer[index] = tile`` (TIFF and npy with ``os.pwrite``) and are renamed to the final name only
when the ``with`` block succeeds (:func:`unetseg.atomic.atomic_path`): a crash leaves no partial
output under the final name. Writers pickle by path, so Dask workers can write to them.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path, ensure_space
from .errors import InputError

ZARR_SUFFIXES = (".zarr", ".zarr/")
OUTPUT_SUFFIXES = (".tif", ".tiff", ".npy", ".zarr")


def _normalise_index(index: Any, shape: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    if not isinstance(index, tuple):
        index = (index,)
    if len(index) > len(shape):
        raise IndexError(f"too many indices ({len(index)}) for an array of {len(shape)} dimensions")
    index = index + (slice(None),) * (len(shape) - len(index))
    out = []
    for sl, n in zip(index, shape):
        if isinstance(sl, (int, np.integer)):
            i = int(sl) + (n if sl < 0 else 0)
            out.append((i, i + 1))
            continue
        if not isinstance(sl, slice) or sl.step not in (None, 1):
            raise IndexError(f"only slices with step 1 and integers are supported, got {sl!r}")
        start, stop, _ = sl.indices(n)
        out.append((start, max(start, stop)))
    return tuple(out)


def _squeeze_ints(index: Any, arr: np.ndarray) -> np.ndarray:
    if not isinstance(index, tuple):
        index = (index,)
    axes = tuple(i for i, sl in enumerate(index) if isinstance(sl, (int, np.integer)))
    return arr.squeeze(axis=axes) if axes else arr


def _byte_runs(shape: tuple[int, ...], ranges: tuple[tuple[int, int], ...], itemsize: int):
    """Yield ``(byte_offset, nbytes)`` of the contiguous runs covering a box of a C-order array."""
    # The trailing axes that are taken whole merge into one contiguous run.
    k = len(shape)
    while k > 0 and ranges[k - 1] == (0, shape[k - 1]):
        k -= 1
    if k == 0:
        yield 0, math.prod(shape) * itemsize
        return
    inner = math.prod(shape[k:]) * itemsize  # bytes of one element of axis k-1
    run = (ranges[k - 1][1] - ranges[k - 1][0]) * inner
    strides = [math.prod(shape[i + 1 :]) * itemsize for i in range(len(shape))]
    outer = [range(a, b) for a, b in ranges[: k - 1]]
    base = ranges[k - 1][0] * strides[k - 1]
    for pos in np.ndindex(*[len(r) for r in outer]) if outer else [()]:
        off = base + sum((outer[i][p]) * strides[i] for i, p in enumerate(pos))
        yield off, run


class _RawFile:
    """A C-ordered array stored uncompressed at ``offset`` in a file, accessed with pread/pwrite.

    The file descriptor is opened lazily and dropped when pickled, so Dask workers reopen it.
    """

    _open_flags = os.O_RDONLY

    def __init__(self, path: str | os.PathLike, offset: int, shape: tuple[int, ...], dtype: Any):
        self.path = Path(path)
        self.offset = int(offset)
        self.shape = tuple(int(s) for s in shape)
        self._fd: int | None = None

    ndim = property(lambda self: len(self.shape))

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fd"] = None
        return state

    def _fileno(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, self._open_flags)
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class RawSource(_RawFile):
    """A C-ordered array stored uncompressed at ``offset`` in a file, read with ``os.pread``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.npy"
    >>> np.save(p, np.arange(12, dtype=np.uint16).reshape(3, 4))
    >>> src = open_source(p)
    >>> src[1:3, 1:3]
    array([[ 5,  6],
           [ 9, 10]], dtype=uint16)
    """

    def __init__(self, path: str | os.PathLike, offset: int, shape: tuple[int, ...], dtype: Any):
        super().__init__(path, offset, shape, dtype)
        self.file_dtype = np.dtype(dtype)
        self.dtype = self.file_dtype.newbyteorder("=")
        self.identity = _identity(os.stat(self.path))  # the file as opened: pixels are read from it alone

    def _checked_fd(self) -> int:
        """The descriptor, after checking the file is still the one opened (not rewritten in place,
        not replaced before a Dask worker reopened it): a changed input is an error, never a mix."""
        fd = self._fileno()
        now = _identity(os.fstat(fd))
        if now != self.identity:
            what = "replaced by another file" if now[:2] != self.identity[:2] else "modified"
            raise InputError(f"{self.path}: the input was {what} while it was being read; run again on a file that stays put")
        return fd

    def __del__(self):  # pragma: no cover - best effort
        with contextlib.suppress(Exception):
            self.close()

    def __getitem__(self, index) -> np.ndarray:
        ranges = _normalise_index(index, self.shape)
        out_shape = tuple(b - a for a, b in ranges)
        out = np.empty(out_shape, dtype=self.file_dtype)
        if out.size:
            buf = memoryview(out.reshape(-1).view(np.uint8))
            pos = 0
            fd = self._checked_fd()
            for off, nbytes in _byte_runs(self.shape, ranges, self.file_dtype.itemsize):
                got = os.preadv(fd, [buf[pos : pos + nbytes]], self.offset + off)
                if got != nbytes:
                    raise InputError(f"{self.path}: file is truncated (expected {nbytes} bytes at offset {self.offset + off}, read {got})")
                pos += nbytes
        if out.dtype != self.dtype:
            out = out.astype(self.dtype)
        return _squeeze_ints(index, out)

    def __array__(self, dtype=None, copy=None):
        arr = self[tuple(slice(None) for _ in self.shape)]
        return arr if dtype is None else arr.astype(dtype)


class ArraySource:
    """Wrap any array-like with ``shape``, ``dtype`` and slicing (NumPy, memmap, zarr)."""

    def __init__(self, array: Any, path: str | os.PathLike | None = None):
        self.array = array
        self.path = Path(path) if path is not None else None
        self.shape = tuple(int(s) for s in array.shape)
        self.dtype = np.dtype(array.dtype)

    ndim = property(lambda self: len(self.shape))

    def __getstate__(self):
        # File-backed arrays (tifffile/zarr stores hold open handles) travel by path.
        state = dict(self.__dict__)
        if self.path is not None and not isinstance(self.array, np.ndarray):
            state["array"] = None
        return state

    def __getitem__(self, index) -> np.ndarray:
        if self.array is None:
            self.array = open_source(self.path).array
        try:
            return np.asarray(self.array[index])
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            where = self.path or "array"
            raise InputError(f"{where}: cannot read pixels ({type(exc).__name__}: {exc})") from exc

    def __array__(self, dtype=None, copy=None):
        arr = np.asarray(self.array)
        return arr if dtype is None else arr.astype(dtype)


def is_zarr_path(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.suffix.lower() == ".zarr" or (p.is_dir() and ((p / "zarr.json").exists() or (p / ".zarray").exists() or (p / ".zgroup").exists()))


def open_source(path: str | os.PathLike):
    """Open an image file for lazy, window-by-window reading.

    Returns a :class:`RawSource` (uncompressed TIFF, ``.npy``) or :class:`ArraySource`
    (compressed TIFF via tifffile's zarr store, zarr, or a decoded PNG/JPEG).

    Raises
    ------
    InputError
        Missing, unreadable, corrupt or unsupported file.
    """
    from .io import read_image

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    suffix = path.suffix.lower()
    try:
        if is_zarr_path(path):
            return _open_zarr(path)
        if not path.is_file():
            raise InputError(f"{path}: not a file")
        if suffix in (".tif", ".tiff"):
            return _open_tiff(path)
        if suffix == ".npy":
            return _open_npy(path)
        return ArraySource(read_image(path), path)
    except InputError:
        raise
    except (OSError, ValueError, TypeError, KeyError, IndexError, RuntimeError, EOFError, MemoryError) as exc:
        raise InputError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc


def _check_shape(path: Path, shape: tuple[int, ...]) -> None:
    if not shape or math.prod(shape) == 0:
        raise InputError(f"{path}: image is empty (shape {tuple(shape)})")


def _open_npy(path: Path):
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(fh)
        offset = fh.tell()
    _check_shape(path, shape)
    if dtype.hasobject:
        raise InputError(f"{path}: object arrays are not images")
    need = offset + math.prod(shape) * dtype.itemsize
    if path.stat().st_size < need:
        raise InputError(f"{path}: file is truncated ({path.stat().st_size} bytes, header promises {need})")
    if fortran:
        return ArraySource(np.load(path, mmap_mode="r", allow_pickle=False), path)
    return RawSource(path, offset, shape, dtype)


def _open_tiff(path: Path):
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        shape = tuple(series.shape)
        _check_shape(path, shape)
        offset = series.dataoffset
        dtype = np.dtype(series.dtype).newbyteorder(tif.byteorder)
        if offset is not None:
            need = offset + math.prod(shape) * dtype.itemsize
            if path.stat().st_size < need:
                raise InputError(f"{path}: file is truncated ({path.stat().st_size} bytes, pixels end at {need})")
            return RawSource(path, offset, shape, dtype)
    import zarr

    store = tifffile.imread(path, aszarr=True)
    arr = zarr.open_array(store, mode="r") if not hasattr(store, "shape") else store
    if tuple(arr.shape) != shape:  # pragma: no cover - multi-resolution stores
        arr = zarr.open_group(store, mode="r")["0"]
    return ArraySource(arr, path)


def _open_zarr(path: Path):
    import zarr

    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Group):
        if "0" not in node:
            raise InputError(f"{path}: zarr group has no array '0' (expected an array or OME-Zarr image)")
        node = node["0"]
    _check_shape(path, tuple(node.shape))
    return ArraySource(node, path)


class _PwriteTarget(_RawFile):
    """Writes boxes of a C-ordered array stored at ``offset`` in a file with ``os.pwrite``."""

    _open_flags = os.O_WRONLY

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype):
        super().__init__(path, offset, shape, dtype)
        self.dtype = np.dtype(dtype)

    def __setitem__(self, index, value) -> None:
        ranges = _normalise_index(index, self.shape)
        box = tuple(b - a for a, b in ranges)
        data = np.ascontiguousarray(np.broadcast_to(np.asarray(value, dtype=self.dtype), box))
        buf = memoryview(data.reshape(-1).view(np.uint8))
        pos = 0
        fd = self._fileno()
        for off, nbytes in _byte_runs(self.shape, ranges, self.dtype.itemsize):
            done = 0
            while done < nbytes:
                done += os.pwrite(fd, buf[pos + done : pos + nbytes], self.offset + off + done)
            pos += nbytes

    def __getitem__(self, index) -> np.ndarray:
        return RawSource(self.path, self.offset, self.shape, self.dtype)[index]


def _preallocate(tmp: Path, suffix: str, shape: tuple[int, ...], dtype: np.dtype, axes: str | None, calibration: Any) -> int:
    """Write the header of an uncompressed ``.npy`` or TIFF output and size the file (sparse);
    returns the byte offset of its pixels."""
    nbytes = math.prod(shape) * dtype.itemsize
    if suffix == ".npy":
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
        with open(tmp, "wb") as fh:
            np.lib.format.write_array_header_2_0(fh, header)
            offset = fh.tell()
            fh.truncate(offset + nbytes)
        return offset
    import tifffile

    from .imagej import tiff_kwargs

    axes = axes or ("YX" if len(shape) == 2 else "ZYX" if len(shape) == 3 else "CZYX")
    mm = tifffile.memmap(tmp, shape=shape, dtype=dtype, **tiff_kwargs(axes, dtype, nbytes, calibration))
    offset = int(mm.offset)
    del mm
    return offset


@contextlib.contextmanager
def create_writer(path: str | os.PathLike, shape: tuple[int, ...], dtype: Any, *, chunks: tuple[int, ...] | None = None,
                  axes: str | None = None, calibration: Any = None):
    """Preallocate an output array file and yield a writer accepting ``writer[index] = values``.

    ``.tif``/``.tiff``: uncompressed, memory-mappable; an ImageJ hyperstack with ``axes`` and the
    input's ``calibration`` (:func:`unetseg.imagej.tiff_kwargs`) where ImageJ can hold it, else
    BigTIFF;
    ``.npy``: a NumPy file; ``.zarr``: a zarr array (``chunks`` default 512 per spatial axis).
    Everything is written under a temporary sibling and renamed to ``path`` when the block
    succeeds; on error the temporary file is removed and ``path`` is left untouched.

    Examples
    --------
    >>> import tempfile, pathlib, tifffile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "out.tif"
    >>> with create_writer(p, (2, 3), np.float32) as w:
    ...     w[0:1, :] = 1.0
    ...     w[1:2, :] = 2.0
    >>> tifffile.imread(p)
    array([[1., 1., 1.],
           [2., 2., 2.]], dtype=float32)
    """
    path = Path(path)
    shape = tuple(int(s) for s in shape)
    dtype = np.dtype(dtype)
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise InputError(f"{path}: cannot write {suffix!r}; use one of {', '.join(OUTPUT_SUFFIXES)}")
    nbytes = math.prod(shape) * dtype.itemsize
    if suffix == ".zarr":
        import zarr

        with atomic_path(path, directory=True, expected_bytes=nbytes) as tmp:  # compressed: at most this
            if chunks is None:
                chunks = tuple(min(s, 512) if i >= len(shape) - 2 else 1 for i, s in enumerate(shape))
            arr = zarr.create_array(store=str(tmp), shape=shape, chunks=chunks, dtype=dtype, fill_value=0, overwrite=True)
            yield arr
        return
    ensure_space(path, nbytes)  # preallocated sparse: refuse now, not at the last band
    with atomic_path(path) as tmp:
        offset = _preallocate(tmp, suffix, shape, dtype, axes, calibration)
        target = _PwriteTarget(tmp, offset, shape, dtype)
        try:
            yield target
        finally:
            target.close()
