"""Predictions and ground truth as ``(Z, Y, X)`` stacks: files, folders of slices or arrays."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..axes import label_samples
from ..errors import InputError
from ..io import list_images, read_image_axes

_TOLERANCE = 1e-6


def load_stack(path: str | os.PathLike) -> np.ndarray:
    """Load a single image, a multi-page TIFF or a folder of slices as a ``(Z, Y, X)`` array.

    A 2D image becomes a stack of one. Greyscale PNG/JPEG stored as RGB(A) with equal
    colour channels is reduced to one channel; real colour is refused.

    Raises
    ------
    InputError
        Missing or unreadable files, an empty folder, colour images, slices of different
        shapes, or more than three dimensions.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from unetseg.io import write_image
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for i in range(3):
    ...     write_image(d / f"s{i}.tif", np.full((4, 5), i, np.uint8))
    >>> load_stack(d).shape
    (3, 4, 5)
    """
    path = Path(path)
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise InputError(f"{path}: folder holds no images")
        slices = [_single_slice(f) for f in files]
        shapes = {s.shape for s in slices}
        if len(shapes) > 1:
            raise InputError(f"{path}: slices differ in shape ({', '.join(str(s) for s in sorted(shapes))})")
        return np.stack(slices)
    arr, axes = read_image_axes(path)
    arr, axes = _squeeze(arr, axes)
    if axes.count("Z") > 1 or len(axes) > 4:
        raise InputError(f"{path}: expected a 2D image or a stack of 2D slices, got shape {arr.shape}")
    return np.stack(label_samples(arr, axes, spatial_dims=2, where=path))


def _squeeze(arr: np.ndarray, axes: str) -> tuple[np.ndarray, str]:
    """Drop length-1 page and channel axes (a (1, Y, X, 1) file is one slice)."""
    keep = [i for i, a in enumerate(axes) if not (a in "ZC" and arr.shape[i] == 1)]
    return arr.reshape([arr.shape[i] for i in keep]), "".join(axes[i] for i in keep)


def _single_slice(path: Path) -> np.ndarray:
    arr, axes = _squeeze(*read_image_axes(path))
    samples = label_samples(arr, axes, spatial_dims=2, where=path)
    if len(samples) != 1:
        raise InputError(f"{path}: expected a 2D slice, got shape {arr.shape}")
    return samples[0]


def stack_names(path: str | os.PathLike, count: int) -> list[str]:
    """Names for the slices of :func:`load_stack` (file stems for folders, ``name[i]`` else)."""
    path = Path(path)
    if path.is_dir():
        names = [f.stem for f in list_images(path)]
        if len(names) == count:
            return names
    if count == 1:
        return [path.stem]
    return [f"{path.stem}[{i}]" for i in range(count)]


def _as_stack(x, name: str) -> np.ndarray:
    if isinstance(x, (str, os.PathLike)):
        return load_stack(x)
    if isinstance(x, (list, tuple)):
        arrs = [np.asarray(a) for a in x]
        if len({a.shape for a in arrs}) > 1:
            raise InputError(f"{name}: images differ in shape")
        return np.stack(arrs) if arrs else np.zeros((0, 0, 0))
    arr = np.asarray(x)
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim != 3:
        raise InputError(f"{name}: expected a 2D image or a (Z, Y, X) stack, got shape {arr.shape}")
    return arr


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise InputError(f"prediction and ground truth differ in shape: {pred.shape} vs {gt.shape} (Z, Y, X)")
    if pred.shape[0] == 0:
        raise InputError("no images to evaluate")


def as_probability(pred: np.ndarray, name: str = "prediction") -> np.ndarray:
    """A probability map in [0, 1]: floats as they are, integers divided by their dtype's max.

    Float32 maps stay float32, so thresholds compare exactly as the reference does.

    Examples
    --------
    >>> as_probability(np.array([0, 255], np.uint8)).tolist()
    [0.0, 1.0]
    """
    arr = np.asarray(pred)
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        top = np.iinfo(arr.dtype).max
        if arr.size and arr.min() < 0:
            raise InputError(f"{name}: negative values in an integer probability map")
        return (arr.astype(np.float64) / top).astype(np.float32)
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"{name}: expected a float probability map, got {arr.dtype}")
    if arr.size and not np.all(np.isfinite(arr)):
        raise InputError(f"{name}: probability map holds NaN or Inf")
    if arr.size and (arr.min() < -_TOLERANCE or arr.max() > 1 + _TOLERANCE):
        raise InputError(f"{name}: probability map outside [0, 1] (min {arr.min():g}, max {arr.max():g}); expected cell probabilities")
    if arr.size and (arr.min() < 0 or arr.max() > 1):  # rounding noise of a softmax: clip
        arr = np.clip(arr, 0, 1).astype(arr.dtype, copy=False)
    return arr


def _name(x, default: str) -> str:
    """A path's name for messages, else ``default``."""
    return str(x) if isinstance(x, (str, os.PathLike)) else default


def require_labels(arr: np.ndarray, name: str) -> np.ndarray:
    """``arr`` when it holds integer labels (integer dtype, or floats with integer values).

    Instance protocols need label images; a probability map given as labels is refused.

    Examples
    --------
    >>> require_labels(np.array([[0.0, 2.0]]), "gt").tolist()
    [[0.0, 2.0]]
    """
    if arr.dtype.kind == "f" and arr.size and not np.array_equal(arr, np.round(arr)):
        raise InputError(f"{name}: holds non-integer values ({arr.dtype}, e.g. {float(arr[arr != np.round(arr)].flat[0]):g}); "
                         "this protocol needs instance label images (unetseg predict --output labels)")
    return arr


def check_label_inputs(protocol: str, pred: np.ndarray, gt: np.ndarray, *, pred_name: str = "prediction", gt_name: str = "ground truth") -> None:
    """Refuse, naming the file, a non-integer image where ``protocol`` needs labels (the ground
    truth of ``ctc`` and ``instances``, the prediction of ``ctc``)."""
    if protocol in ("ctc", "instances"):
        require_labels(gt, gt_name)
    if protocol == "ctc":
        require_labels(pred, pred_name)
