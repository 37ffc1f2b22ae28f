"""OME-Zarr (NGFF) outputs: a multiscale pyramid written tile by tile, with bounded memory.

``predict --format ome-zarr`` writes ``NAME.ome.zarr``: an NGFF image group in the version the
pinned ``ome-zarr`` library reads and writes (0.5, zarr v3). Level ``0`` is written band by band by
the overlap-tile engine like any other output; each further level halves Y and X of the one
before (the mean for probabilities, every other pixel for masks and labels, so labels stay
labels) and is computed window by window from the level already on disk, so memory depends on
the chunk size, not on the image. Axes and pixel sizes (``scale``, doubled per
level) come from the input's calibration where it has one. The tests validate the metadata
with ``ome-zarr-models`` (the specification as pydantic models) and read the result back with
``ome_zarr.reader`` (what napari's OME-Zarr reader uses).

Instance labels of an OME-Zarr *input* are written as the specification's label image next to
their source: ``INPUT.ome.zarr/labels/unetseg`` (``image-label`` metadata pointing at ``../../``,
the source's pixel sizes, listed in ``labels/``), which napari opens as a Labels layer over the
image. :func:`read_ngff_calibration` gives an OME-Zarr input's pixel size to every output.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path

SUFFIX = ".ome.zarr"
NGFF_VERSION = "0.5"
CHUNK = 512
SMALLEST = 256  # stop the pyramid once Y and X are both at most this
LABEL_NAME = "unetseg"  # the label image unetseg writes into an OME-Zarr input's labels/
_UM = ("micrometer", "µm", "um", "micron")


def is_ome_zarr_output(path: str | os.PathLike) -> bool:
    """Whether an output path asks for OME-Zarr (``NAME.ome.zarr``).

    Examples
    --------
    >>> is_ome_zarr_output("out/a.ome.zarr"), is_ome_zarr_output("out/a.zarr")
    (True, False)
    """
    return str(path).lower().rstrip("/").endswith(SUFFIX)


def pyramid_shapes(shape: tuple[int, ...], smallest: int = SMALLEST) -> list[tuple[int, ...]]:
    """Shapes of the levels: Y and X (the last two axes) halved until both fit ``smallest``.

    Examples
    --------
    >>> pyramid_shapes((2, 1000, 600))
    [(2, 1000, 600), (2, 500, 300), (2, 250, 150)]
    """
    shapes = [tuple(int(s) for s in shape)]
    while max(shapes[-1][-2:]) > smallest:
        last = shapes[-1]
        shapes.append(last[:-2] + tuple(max(1, s // 2) for s in last[-2:]))
    return shapes


def ngff_multiscale(path: str | os.PathLike) -> dict[str, Any] | None:
    """The first ``multiscales`` entry of an OME-Zarr (NGFF 0.4 or 0.5) image group, else None.

    Examples
    --------
    >>> ngff_multiscale("/nonexistent.ome.zarr") is None
    True
    """
    path = Path(path)
    for meta_file, key in (("zarr.json", "attributes"), (".zattrs", None)):
        if (path / meta_file).is_file():
            try:
                attrs = json.loads((path / meta_file).read_text())
            except (OSError, ValueError):
                return None
            attrs = attrs.get(key, {}) if key else attrs
            found = attrs.get("ome", attrs).get("multiscales")
            return found[0] if isinstance(found, list) and found and isinstance(found[0], dict) else None
    return None


def read_ngff_calibration(path: str | os.PathLike) -> Any:
    """The pixel size (x, y, z, unit) of an OME-Zarr image's full resolution, or None.

    Examples
    --------
    >>> read_ngff_calibration("/nonexistent.ome.zarr") is None
    True
    """
    from .imagej import Calibration

    ms = ngff_multiscale(path)
    try:
        names = [a["name"] for a in ms["axes"]]
        scale = next(t["scale"] for t in ms["datasets"][0]["coordinateTransformations"] if t["type"] == "scale")
        unit = next((a.get("unit") for a in ms["axes"] if a["name"] == "x"), None)
        size = dict(zip(names, (float(v) for v in scale)))
        return Calibration(size["x"], size["y"], size.get("z"), "µm" if unit in _UM else (unit or "pixel"))
    except (TypeError, KeyError, StopIteration, ValueError):
        return None


def label_image_path(image: str | os.PathLike, name: str = LABEL_NAME) -> Path:
    """Where the label image ``name`` of an OME-Zarr image goes.

    Examples
    --------
    >>> label_image_path("in/cells.ome.zarr").as_posix()
    'in/cells.ome.zarr/labels/unetseg'
    """
    return Path(image) / "labels" / name


def is_label_image_output(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a label image of an OME-Zarr image (``IMAGE/labels/NAME``)."""
    path = Path(path)
    return path.parent.name == "labels" and ngff_multiscale(path.parent.parent) is not None


def writes_ome_zarr(path: str | os.PathLike) -> bool:
    """Whether an output path is written as OME-Zarr: ``NAME.ome.zarr``, or an image's label image.

    Examples
    --------
    >>> writes_ome_zarr("out/a.ome.zarr"), writes_ome_zarr("out/a.tif")
    (True, False)
    """
    return is_ome_zarr_output(path) or is_label_image_output(path)


def _axes(axes: str, calibration: Any) -> list[dict[str, str]]:
    unit = None
    if calibration is not None and calibration.unit in _UM:
        unit = "micrometer"
    out = []
    for a in axes.lower():
        entry = {"name": a, "type": "channel" if a == "c" else "space"}
        if a != "c" and unit:
            entry["unit"] = unit
        out.append(entry)
    return out


def _scales(axes: str, calibration: Any, levels: int) -> list[list[float]]:
    base = {"c": 1.0, "z": 1.0, "y": 1.0, "x": 1.0}
    if calibration is not None:
        base.update(x=float(calibration.x), y=float(calibration.y), z=float(calibration.z or 1.0))
    return [[base[a] * (2**k if a in "yx" else 1) for a in axes.lower()] for k in range(levels)]


def multiscales_attrs(axes: str, calibration: Any, levels: int, name: str) -> dict[str, Any]:
    """The ``ome`` attribute of an NGFF 0.5 image group with ``levels`` levels named ``0``, ``1``, ...

    Written as the specification's JSON rather than through ``ome_zarr.writer``, so prediction
    does not import that library and Dask with it. The tests validate it with
    ``ome-zarr-models`` and read it with ``ome_zarr``.

    Examples
    --------
    >>> attrs = multiscales_attrs("YX", None, 2, "cells")
    >>> attrs["version"], [d["coordinateTransformations"][0]["scale"] for d in attrs["multiscales"][0]["datasets"]]
    ('0.5', [[1.0, 1.0], [2.0, 2.0]])
    """
    datasets = [{"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
                for k, scale in enumerate(_scales(axes, calibration, levels))]
    return {"version": NGFF_VERSION, "multiscales": [{"name": name, "axes": _axes(axes, calibration), "datasets": datasets}]}


def downsample(block: np.ndarray, kind: str) -> np.ndarray:
    """Half the last two axes of a block: 2x2 mean (``"image"``) or every other pixel (``"labels"``).

    Examples
    --------
    >>> b = np.arange(16, dtype=np.float32).reshape(4, 4)
    >>> downsample(b, "image").tolist(), downsample(b, "labels").tolist()
    ([[2.5, 4.5], [10.5, 12.5]], [[0.0, 2.0], [8.0, 10.0]])
    """
    if kind == "labels":
        return block[..., ::2, ::2]
    h, w = block.shape[-2] // 2 * 2, block.shape[-1] // 2 * 2
    even = block[..., :h, :w].astype(np.float32)
    return (even.reshape(*even.shape[:-2], h // 2, 2, w // 2, 2).mean(axis=(-3, -1))).astype(block.dtype)


def _write_level(source: Any, target: Any, kind: str, block: int = 2 * CHUNK) -> None:
    """``target`` = ``source`` halved, one ``block`` x ``block`` window (of ``source``) at a time."""
    rows, cols = source.shape[-2] // 2 * 2 if kind == "image" else source.shape[-2], source.shape[-1]
    for y in range(0, rows, block):
        for x in range(0, cols, block):
            part = downsample(np.asarray(source[..., y:y + block, x:x + block]), kind)
            oy, ox = y // 2, x // 2
            part = part[..., : target.shape[-2] - oy, : target.shape[-1] - ox]
            target[..., oy:oy + part.shape[-2], ox:ox + part.shape[-1]] = part


class _ChunkColumns:
    """Writes a band into a zarr array one chunk column at a time, so zarr's encoding copies
    are those of one chunk column, not of a whole band the width of the image."""

    def __init__(self, array: Any, width: int = CHUNK):
        self.array, self.width, self.shape = array, width, array.shape

    def __setitem__(self, index: Any, value: Any) -> None:
        index = index if isinstance(index, tuple) else (index,)
        index = index + (slice(None),) * (len(self.shape) - len(index))
        last = index[-1]
        if not isinstance(last, slice) or last.step not in (None, 1):
            self.array[index] = value
            return
        start, stop, _ = last.indices(self.shape[-1])
        value = np.broadcast_to(np.asarray(value), tuple(len(range(*i.indices(n))) if isinstance(i, slice) else 1
                                                          for i, n in zip(index, self.shape)) if np.ndim(value) == 0 else np.shape(value))
        for x in range(start, stop, self.width):
            end = min(stop, (x // self.width + 1) * self.width)
            self.array[index[:-1] + (slice(x, end),)] = value[..., x - start:end - start]


@contextlib.contextmanager
def create_ome_zarr(path: str | os.PathLike, shape: tuple[int, ...], dtype: Any, *, axes: str, calibration: Any = None,
                    kind: str = "image") -> Iterator[Any]:
    """Yield level 0 of a new OME-Zarr image (``writer[index] = values``); on success add the
    pyramid and the NGFF metadata and move the folder to ``path`` (nothing there on error).

    ``kind``: ``"image"`` (probabilities, averaged down) or ``"labels"`` (masks or instance
    labels, subsampled). A ``path`` of the form ``IMAGE.ome.zarr/labels/NAME``
    (:func:`label_image_path`) becomes the image's NGFF label image, listed in ``labels/``.
    """
    import zarr

    path = Path(path)
    label_of = path.parent.parent if is_label_image_output(path) else None
    if label_of is not None:
        calibration = read_ngff_calibration(label_of) or calibration
    shapes = pyramid_shapes(shape)
    chunks = tuple(1 if i < len(shape) - 2 else min(s, CHUNK) for i, s in enumerate(shape))
    if label_of is not None:
        prepare_label_group(label_of)
    total = sum(math.prod(level) for level in shapes) * np.dtype(dtype).itemsize  # uncompressed: at most
    with atomic_path(path, directory=True, expected_bytes=total) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        names = [a.lower() for a in axes]
        level0 = group.create_array("0", shape=shape, chunks=chunks, dtype=np.dtype(dtype), fill_value=0, dimension_names=names)
        yield _ChunkColumns(level0)
        previous = level0
        for k, level_shape in enumerate(shapes[1:], start=1):
            target = group.create_array(str(k), shape=level_shape, chunks=chunks, dtype=np.dtype(dtype), fill_value=0,
                                        dimension_names=names)
            _write_level(previous, target, kind)
            previous = target
        name = path.name[: -len(SUFFIX)] if label_of is None else path.name
        attrs = multiscales_attrs(axes, calibration, len(shapes), name)
        if label_of is not None:
            attrs["image-label"] = {"version": NGFF_VERSION, "source": {"image": "../../"}}
        group.attrs["ome"] = attrs
    if label_of is not None:
        _list_label(path.parent, path.name)


def prepare_label_group(image: str | os.PathLike) -> Path:
    """Create ``IMAGE/labels`` (an NGFF labels group) if missing; returns it."""
    import zarr

    folder = Path(image) / "labels"
    if not (folder / "zarr.json").is_file():
        zarr.open_group(str(folder), mode="a", zarr_format=3).attrs["ome"] = {"version": NGFF_VERSION, "labels": []}
    return folder


def _list_label(folder: Path, name: str) -> None:
    import zarr

    group = zarr.open_group(str(folder), mode="a", zarr_format=3)
    ome = dict(group.attrs.get("ome", {"version": NGFF_VERSION}))
    ome["labels"] = sorted(set(ome.get("labels", [])) | {name})
    group.attrs["ome"] = ome
