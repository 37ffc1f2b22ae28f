"""Reading and writing images: PNG, JPEG, TIFF (incl. multi-page and LZW), NumPy ``.npy`` and zarr.

Readers return NumPy arrays exactly as stored (no silent channel guessing): a grey image is
``(Y, X)``, an RGB(A) PNG/JPEG is ``(Y, X, C)``, a multi-page TIFF ``(Z, Y, X)`` or as its axes say.
Writers are atomic: they write a temporary sibling and rename it over the final name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path
from .axes import stack_axes
from .errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy", ".zarr")
TIFF_COMPRESSIONS = (None, "none", "zlib", "lzw", "zstd", "lzma", "packbits", "deflate")
DEFAULT_MAX_PIXELS = 2**31  # decompression-bomb guard for decoded images (about 2 gigapixels)
MAX_PIXELS_ENV = "UNETSEG_MAX_PIXELS"


def pixel_limit(max_pixels: int | None = None) -> int:
    """The decoded-size limit: ``max_pixels`` if given, else ``$UNETSEG_MAX_PIXELS``, else 2**31.

    Examples
    --------
    >>> pixel_limit(1000)
    1000
    """
    if max_pixels is not None:
        return int(max_pixels)
    text = os.environ.get(MAX_PIXELS_ENV)
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(text))
    except ValueError:
        raise InputError(f"{MAX_PIXELS_ENV}={text!r}: expected a number of pixels") from None
    if value < 1:
        raise InputError(f"{MAX_PIXELS_ENV}={text!r}: expected a positive number of pixels")
    return value


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
    files = [
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES
        and not p.name.startswith(".")
        and (p.is_file() or (p.is_dir() and p.suffix.lower() == ".zarr"))
    ]
    return sorted(files, key=natural_key)


def read_image(path: str | os.PathLike, *, max_pixels: int | None = None) -> np.ndarray:
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
    return read_image_axes(path, max_pixels=max_pixels)[0]


def read_image_axes(path: str | os.PathLike, *, max_pixels: int | None = None) -> tuple[np.ndarray, str]:
    """Read an image and say what its axes are, from the file's own metadata.

    The axes string uses ``Z`` (pages / planes / time points), ``C`` (channels or RGB samples),
    ``Y`` and ``X``. TIFF axes come from tifffile's series (``S`` samples become ``C``; ``Q``,
    ``I``, ``T`` pages become ``Z``), PNG/JPEG give ``YX`` or ``YXC``, zarr uses the OME axes
    metadata when present, and ``.npy`` (which stores no axes) is ``YX`` for 2D and ``ZYX`` for
    3D arrays; a 4D ``.npy`` is ``ZYXC``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "rgb.png"
    >>> write_image(p, np.zeros((4, 5, 3), np.uint8))
    >>> arr, axes = read_image_axes(p)
    >>> arr.shape, axes
    ((4, 5, 3), 'YXC')
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".zarr":
        return _read_zarr(path, max_pixels)
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    try:
        if suffix in (".tif", ".tiff"):
            return _read_tiff(path, max_pixels)
        if suffix in (".png", ".jpg", ".jpeg"):
            return _read_pillow(path, max_pixels)
        if suffix == ".npy":
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            _check_size(path, arr.shape, max_pixels)
            return np.asarray(arr), _default_axes(path, arr.ndim)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders of corrupt files raise anything (struct.error, SyntaxError, TokenError...)
        raise InputError(f"{path}: cannot read image, the file is corrupt or not a valid {suffix} ({type(exc).__name__}: {exc})") from exc
    raise InputError(f"{path}: unsupported file type {suffix!r}; expected one of {', '.join(IMAGE_SUFFIXES)}")


def _check_size(path: Path, shape: tuple[int, ...], max_pixels: int | None) -> None:
    max_pixels = pixel_limit(max_pixels)
    n = int(np.prod(shape, dtype=np.float64))
    if n > max_pixels:
        raise InputError(f"{path}: image of shape {tuple(shape)} has {n:,} elements, above the limit of {max_pixels:,} (max_pixels)")
    if n == 0:
        raise InputError(f"{path}: image is empty (shape {tuple(shape)})")


def _read_tiff(path: Path, max_pixels: int | None) -> tuple[np.ndarray, str]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise InputError(f"{path}: TIFF holds no image")
        series = tif.series[0]
        _check_size(path, series.shape, max_pixels)
        arr = series.asarray()
        axes = _tiff_axes(str(series.axes))
    if len(axes) != arr.ndim:
        axes = _default_axes(path, arr.ndim)
    return arr, axes


def _tiff_axes(axes: str) -> str:
    out = []
    for ax in axes.upper():
        if ax in "YX":
            out.append(ax)
        elif ax in "SC":
            out.append("C")
        else:
            out.append("Z")
    # Several page-like axes (e.g. T and Z) cannot both be Z; keep them distinct but recognisable.
    if out.count("Z") > 1 or out.count("C") > 1:
        return ""
    return "".join(out)


def _default_axes(path: Path, ndim: int) -> str:
    if ndim == 2:
        return "YX"
    if ndim == 3:
        return "ZYX"
    if ndim == 4:
        return "ZYXC"
    raise InputError(f"{path}: cannot tell the axes of a {ndim}-D array; expected 2 to 4 dimensions")


def _read_pillow(path: Path, max_pixels: int | None) -> tuple[np.ndarray, str]:
    from PIL import Image

    try:
        opened = Image.open(path)
    except Image.DecompressionBombError as exc:
        # Pillow refuses declared sizes above its own limit before we see them; name ours too.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        declared = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise InputError(
            f"{path}: image declares {declared}, above the decompression-bomb limit "
            f"(Pillow's {2 * (Image.MAX_IMAGE_PIXELS or 0):,}; max_pixels {pixel_limit(max_pixels):,})"
        ) from exc
    with opened as im:
        _check_size(path, (im.height, im.width, len(im.getbands())), max_pixels)
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode == "1":
            im = im.convert("L")
        arr = np.asarray(im)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    return arr, ("YX" if arr.ndim == 2 else "YXC")


def write_image(
    path: str | os.PathLike,
    array: np.ndarray,
    *,
    compression: str | None = "zlib",
    axes: str | None = None,
    chunks: tuple[int, ...] | None = None,
    imagej: bool = False,
    calibration: Any = None,
) -> None:
    """Write ``array`` atomically as TIFF, PNG, ``.npy`` or zarr (chosen by the suffix).

    Parameters
    ----------
    path : path-like
        ``.tif``/``.tiff`` (any dtype; multi-page for 3D/4D; BigTIFF above 2 GiB), ``.png``
        (2D or RGB(A) ``uint8``/``uint16``), ``.npy`` or ``.zarr`` (a zarr v3 array folder).
    array : ndarray
        The pixels.
    compression : str or None
        TIFF compression: ``"zlib"`` (default), ``"lzw"``, ``"zstd"``, ``"lzma"``, ``"packbits"``
        or ``None``. Ignored by the other formats.
    axes : str or None
        Axes of ``array`` in the letters of :func:`read_image_axes` (``"ZYX"``, ``"YXC"``,
        ``"CYX"``, ...). Stored in TIFF and zarr metadata so the reader knows which axis holds
        channels. Default: ``YX``, ``ZYX`` or ``ZYXC`` by dimension.
    chunks : tuple of int or None
        zarr chunk shape (default: whole 2D planes, at most 1024 px per axis).
    imagej, calibration : bool, Calibration or None
        TIFF only: write an ImageJ hyperstack where ImageJ can hold it, with the pixel size of
        ``calibration`` (:mod:`unetseg.imagej`; what prediction outputs do).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "stack.tif"
    >>> write_image(p, np.zeros((3, 4, 5), np.uint16), compression="lzw")
    >>> read_stack(p).shape
    (3, 4, 5)
    """
    path = Path(path)
    suffix = path.suffix.lower()
    array = np.asarray(array)
    if axes is not None and (len(axes) != array.ndim or set(axes) - set("ZCYX") or len(set(axes)) != len(axes)):
        raise InputError(f"{path}: axes {axes!r} do not describe an array of shape {array.shape}")
    if suffix == ".zarr":
        write_zarr(path, array, chunks=chunks, axes=axes)
        return
    if suffix in (".tif", ".tiff"):
        compression = _tiff_compression(path, compression)
    with atomic_path(path) as tmp:
        if suffix in (".tif", ".tiff"):
            _write_tiff(tmp, array, compression, axes or _default_axes(path, array.ndim), imagej, calibration)
        elif suffix == ".png":
            _write_png(tmp, array, path)
        elif suffix == ".npy":
            with open(tmp, "wb") as fh:
                np.save(fh, array, allow_pickle=False)
        else:
            raise InputError(f"{path}: cannot write {suffix!r}; use .tif, .png, .npy or .zarr")


def _tiff_compression(path: Path, compression: str | None) -> str | None:
    if compression not in TIFF_COMPRESSIONS:
        raise InputError(f"{path}: TIFF compression {compression!r}: expected one of {', '.join(map(str, TIFF_COMPRESSIONS))}")
    return None if compression == "none" else compression


def _write_png(tmp: Path, array: np.ndarray, path: Path) -> None:
    from PIL import Image

    if array.dtype not in (np.uint8, np.uint16) or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise InputError(f"{path}: PNG holds 2D or RGB(A) uint8/uint16 images, got {array.dtype} {array.shape}")
    if array.ndim == 3 and array.dtype != np.uint8:
        raise InputError(f"{path}: RGB(A) PNG must be uint8, got {array.dtype}")
    Image.fromarray(array).save(tmp, format="PNG")


def _write_tiff(tmp: Path, array: np.ndarray, compression: str | None, axes: str, imagej: bool = False,
                calibration: Any = None) -> None:
    import tifffile

    if imagej:
        from .imagej import tiff_kwargs

        tifffile.imwrite(tmp, array, compression=compression, **tiff_kwargs(axes, array.dtype, array.nbytes, calibration))
        return
    rgb = axes.endswith("C") and array.shape[-1] in (3, 4) and array.dtype == np.uint8
    tif_axes = axes[:-1] + "S" if rgb else axes
    kwargs = {"photometric": "rgb" if rgb else "minisblack", "metadata": {"axes": tif_axes}}
    if axes.endswith("C") and not rgb:
        kwargs["planarconfig"] = "contig"
    tifffile.imwrite(tmp, array, compression=compression, bigtiff=array.nbytes > 2**31 - 2**25, **kwargs)


def write_zarr(
    path: str | os.PathLike,
    array: np.ndarray,
    *,
    chunks: tuple[int, ...] | None = None,
    axes: str | None = None,
) -> None:
    """Write ``array`` atomically as a zarr v3 array folder (``path`` should end in ``.zarr``).

    The axes are stored in the array attributes (``"axes"``), so :func:`read_zarr` gives them back.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.zarr"
    >>> write_zarr(p, np.arange(12, dtype=np.float32).reshape(3, 4))
    >>> read_zarr(p)[1, 2]
    np.float32(6.0)
    """
    import zarr

    path = Path(path)
    array = np.asarray(array)
    axes = axes or _default_axes(path, array.ndim)
    if chunks is None:
        chunks = tuple(1 if ax in "ZC" and array.ndim > 2 else min(n, 1024) for ax, n in zip(axes, array.shape))
        chunks = tuple(max(1, c) for c in chunks)
    with atomic_path(path, directory=True) as tmp:
        z = zarr.create_array(store=str(tmp), shape=array.shape, chunks=chunks, dtype=array.dtype, overwrite=True)
        z[...] = array
        z.attrs["axes"] = axes


def read_zarr(path: str | os.PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """Read a zarr array, or the full-resolution level of an OME-Zarr image group.

    Raises
    ------
    InputError
        Not a zarr store, no array inside, or too large.
    """
    return _read_zarr(Path(path), max_pixels)[0]


def open_zarr(path: str | os.PathLike):
    """Open a zarr array (or an OME-Zarr group's level 0) lazily; returns ``(zarr.Array, axes)``."""
    import zarr

    path = Path(path)
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # noqa: BLE001 - broken metadata raises many types
        raise InputError(f"{path}: cannot open as zarr ({type(exc).__name__}: {exc})") from exc
    if isinstance(node, zarr.Array):
        axes = node.attrs.get("axes")
        return node, axes if isinstance(axes, str) and len(axes) == node.ndim else _default_axes(path, node.ndim)
    attrs = dict(node.attrs)
    ms = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if ms:
        first = ms[0]
        sub = first["datasets"][0]["path"]
        try:
            arr = node[sub]
        except KeyError as exc:
            raise InputError(f"{path}: OME-Zarr level {sub!r} listed in multiscales is missing") from exc
        names = [a["name"] if isinstance(a, dict) else str(a) for a in first.get("axes", [])]
        axes = "".join({"t": "T", "c": "C", "z": "Z", "y": "Y", "x": "X"}.get(n.lower(), "?") for n in names)
        if len(axes) != arr.ndim or "?" in axes or len(set(axes)) != len(axes):
            axes = _default_axes(path, arr.ndim)
        return arr, axes
    arrays = [k for k, v in node.members() if isinstance(v, zarr.Array)]
    if len(arrays) != 1:
        raise InputError(f"{path}: zarr group holds {len(arrays)} arrays and no OME multiscales metadata; cannot tell which to read")
    return open_zarr(path / arrays[0])


def _read_zarr(path: Path, max_pixels: int | None) -> tuple[np.ndarray, str]:
    arr, axes = open_zarr(path)
    _check_size(path, arr.shape, max_pixels)
    try:
        data = np.asarray(arr[...])
    except Exception as exc:  # noqa: BLE001 - corrupt chunks raise codec-specific errors
        raise InputError(f"{path}: cannot read zarr data ({type(exc).__name__}: {exc})") from exc
    # OME-Zarr is (t, c, z, y, x): drop a singleton time axis; a time series without z is a stack.
    if "T" in axes:
        t = axes.index("T")
        if data.shape[t] == 1:
            data, axes = np.take(data, 0, axis=t), axes.replace("T", "")
        elif "Z" not in axes:
            axes = axes.replace("T", "Z")
        else:
            raise InputError(f"{path}: both time ({data.shape[t]}) and z axes present; read one time point at a time")
    return data, axes


def read_stack(path: str | os.PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """Read a stack of 2D slices as ``(N, Y, X)`` or ``(N, Y, X, C)``.

    ``path`` is a single image (``N = 1``), a multi-page TIFF / 3D array (``N`` pages) or a
    folder of 2D slices (natural order; all must have the same shape and dtype).

    Raises
    ------
    InputError
        Empty folder, slices of different shapes (naming the offending file), unreadable files.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for i in range(3):
    ...     write_image(d / f"s{i}.png", np.full((2, 4), i, np.uint8))
    >>> read_stack(d).shape
    (3, 2, 4)
    """
    path = Path(path)
    if path.is_dir() and path.suffix.lower() != ".zarr":
        files = list_images(path)
        if not files:
            raise InputError(f"{path}: folder holds no images (expected {', '.join(IMAGE_SUFFIXES)})")
        slices = []
        for f in files:
            arr = stack_axes(*read_image_axes(f, max_pixels=max_pixels), path=f)
            if arr.shape[0] != 1:
                raise InputError(f"{f}: expected a 2D slice in a folder of slices, got {arr.shape[0]} pages")
            if slices and (arr.shape != slices[0].shape or arr.dtype != slices[0].dtype):
                raise InputError(f"{f}: shape {arr.shape[1:]} {arr.dtype} differs from {files[0].name} {slices[0].shape[1:]} {slices[0].dtype}")
            slices.append(arr)
        return np.concatenate(slices, axis=0)
    return stack_axes(*read_image_axes(path, max_pixels=max_pixels), path=path)
