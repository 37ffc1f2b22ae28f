"""Outputs that Fiji / ImageJ open as they should: hyperstack TIFF metadata and ROI sets.

- :func:`read_calibration` takes the pixel size (and its unit, and the Z spacing) from an input
  TIFF: ImageJ metadata, OME-XML ``PhysicalSize*``, or the TIFF resolution tags (or from an
  OME-Zarr input's ``scale``);
- :func:`tiff_kwargs` turns output axes and that calibration into tifffile arguments: an ImageJ
  hyperstack (``imagej=True``: axes, ``unit``, ``spacing``, X/Y resolution) where ImageJ can hold
  it (uint8/uint16/float32, axes in ImageJ's order, under 4 GiB), else a BigTIFF with the
  resolution tags only;
- :func:`write_rois` writes one polygon ROI per object (``NAME_rois.zip``, roifile), which
  Fiji's ROI Manager opens.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

IMAGEJ_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
IMAGEJ_AXES = ("YX", "ZYX", "CYX", "ZCYX")
_CLASSIC_TIFF_LIMIT = 2**32 - 2**26  # ImageJ reads classic TIFF only; keep room for the tags
_UNITS_UM = {"m": 1e6, "cm": 1e4, "mm": 1e3, "µm": 1.0, "um": 1.0, "micron": 1.0, "nm": 1e-3}


@dataclass(frozen=True)
class Calibration:
    """Pixel size along x and y (and z spacing) in ``unit``."""

    x: float
    y: float
    z: float | None = None
    unit: str = "pixel"


def _imagej_calibration(tif: Any, xres: float | None, yres: float | None) -> Calibration | None:
    meta = tif.imagej_metadata or {}
    if xres is None or yres is None:
        return None
    unit = str(meta.get("unit", "pixel")).replace("\\u00B5", "µ")
    return Calibration(1.0 / xres, 1.0 / yres, float(meta["spacing"]) if "spacing" in meta else None, unit)


def _ome_calibration(xml: str) -> Calibration | None:
    sizes = {a: re.search(rf'PhysicalSize{a}="([0-9.eE+-]+)"', xml) for a in "XYZ"}
    if sizes["X"] is None or sizes["Y"] is None:
        return None
    unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', xml)
    z = float(sizes["Z"].group(1)) if sizes["Z"] else None
    return Calibration(float(sizes["X"].group(1)), float(sizes["Y"].group(1)), z, unit.group(1) if unit else "µm")


def read_calibration(path: str | os.PathLike) -> Calibration | None:
    """The pixel size of a TIFF file or an OME-Zarr image (None for other files, or one that records none)."""
    if Path(path).suffix.lower() not in (".tif", ".tiff"):
        from .omezarr import read_ngff_calibration

        return read_ngff_calibration(path) if Path(path).is_dir() else None
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if tif.ome_metadata:
            return _ome_calibration(tif.ome_metadata)
        tags = tif.pages.first.tags
        res = [tags[k].value if k in tags else None for k in ("XResolution", "YResolution")]
        xres, yres = [r[0] / r[1] if r and r[1] and r[0] else None for r in res]
        if tif.is_imagej:
            return _imagej_calibration(tif, xres, yres)
        unit_tag = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
        if xres is None or yres is None or unit_tag == 1:
            return None
        per = 25400.0 if unit_tag == 2 else 1e4  # inch or centimetre, in micrometres
        if (xres, yres) == (1.0, 1.0) or (unit_tag == 2 and xres in (72.0, 96.0, 300.0)):  # screen dpi, not a calibration
            return None
        return Calibration(per / xres, per / yres, None, "µm")


def tiff_kwargs(axes: str, dtype: Any, nbytes: int, calibration: Calibration | None = None) -> dict[str, Any]:
    """tifffile ``imwrite``/``memmap`` keywords for an output with ``axes`` (letters of ``ZCYX``).

    Examples
    --------
    >>> kw = tiff_kwargs("ZYX", np.float32, 10, Calibration(0.5, 0.5, 2.0, "µm"))
    >>> kw["imagej"], kw["metadata"], kw["resolution"]
    (True, {'axes': 'ZYX', 'unit': 'um', 'spacing': 2.0}, (2.0, 2.0))
    >>> tiff_kwargs("CZYX", np.float32, 10)["bigtiff"]  # not ImageJ's axis order
    True
    """
    resolution = None if calibration is None else (1.0 / calibration.x, 1.0 / calibration.y)
    if axes in IMAGEJ_AXES and np.dtype(dtype) in IMAGEJ_DTYPES and nbytes < _CLASSIC_TIFF_LIMIT:
        meta: dict[str, Any] = {"axes": axes}
        if calibration is not None:
            meta["unit"] = "um" if calibration.unit in ("µm", "um", "micron") else calibration.unit
            if calibration.z is not None and "Z" in axes:
                meta["spacing"] = calibration.z
        kwargs: dict[str, Any] = {"imagej": True, "metadata": meta}
    else:
        kwargs = {"bigtiff": True, "photometric": "minisblack", "metadata": {"axes": axes}}
    if resolution is not None:
        kwargs["resolution"] = resolution
    return kwargs


def output_axes(class_axis: bool, stack: bool, spatial_dims: int) -> str:
    """Axis letters of a prediction output.

    Examples
    --------
    >>> output_axes(False, True, 2), output_axes(True, False, 2), output_axes(False, False, 3)
    ('ZYX', 'CYX', 'ZYX')
    """
    return ("C" if class_axis else "") + ("Z" if stack else "") + ("ZYX" if spatial_dims == 3 else "YX")


def rois_path(labels_path: str | os.PathLike) -> Path:
    """``NAME_rois.zip`` beside ``NAME.tif``.

    Examples
    --------
    >>> rois_path("out/cells.tif").as_posix()
    'out/cells_rois.zip'
    """
    p = Path(labels_path)
    return p.with_name(f"{p.name.split('.')[0]}_rois.zip")


def object_rois(labels: np.ndarray, *, z: int | None = None) -> list:
    """One polygon :class:`roifile.ImagejRoi` per object of a 2D label image (its outer contour,
    the longest when an object has several parts), named ``LLLLL`` after its label, or
    ``ZZZZ-LLLLL`` with its stack position for slice ``z``."""
    from roifile import ROI_TYPE, ImagejRoi
    from scipy import ndimage
    from skimage.measure import find_contours

    rois = []
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        window = (slice(max(box[0].start - 1, 0), box[0].stop + 1), slice(max(box[1].start - 1, 0), box[1].stop + 1))
        mask = np.pad(labels[window] == label, 1)
        contour = max(find_contours(mask.astype(np.float32), 0.5), key=len)
        points = contour[:, ::-1] - 0.5 + [window[1].start, window[0].start]  # (x, y): ImageJ puts pixel i at [i, i+1)
        name = f"{label:05d}" if z is None else f"{z + 1:04d}-{label:05d}"  # unique entry names in the zip
        roi = ImagejRoi.frompoints(points.astype(np.float32), name=name)
        roi.roitype = ROI_TYPE.POLYGON
        if z is not None:
            roi.position = z + 1
        rois.append(roi)
    return rois


def write_rois(path: str | os.PathLike, labels: np.ndarray) -> Path:
    """All objects of a 2D label image, or of each slice of a ``(Z, Y, X)`` stack, as an
    ImageJ ROI set ``path`` (a zip, written atomically); the path written."""
    from roifile import roiwrite

    from .atomic import atomic_path

    labels = np.asarray(labels)
    rois = object_rois(labels) if labels.ndim == 2 else [r for z, s in enumerate(labels) for r in object_rois(s, z=z)]
    with atomic_path(Path(path)) as tmp:
        staged = tmp.with_suffix(".zip")
        roiwrite(staged, rois, mode="w")
        staged.replace(tmp)
    return Path(path)
