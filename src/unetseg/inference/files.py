"""Files in, files out: lazy reading, normalisation with image-wide statistics, output kinds.

:func:`predict_file` segments one image file of any size into a ``.tif``, ``.zarr`` or ``.npy``
file: the input is read window by window (:mod:`unetseg.store`), normalised as the model card
says with statistics fitted over the whole image (:func:`unetseg.normalize.fit_normalization`),
and ``prob``/``mask`` outputs are written band by band, so memory does not grow with the image.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..axes import axes_for_model, model_views
from ..errors import ConfigError
from ..imagej import output_axes, read_calibration, rois_path, write_rois
from ..io import write_image
from ..normalize import fit_normalization
from .predictor import CARD, Predictor, as_predictor

OUTPUT_KINDS = ("prob", "mask", "labels")
_PREDICT_KEYS = ("tile_shape", "tta", "batch_size", "margin", "memory_budget", "output_shift")


def output_spec(kind: str, num_classes: int, foreground: int, threshold: float):
    """(class axis kept?, dtype, band transform) of an output kind for a model's probabilities.

    Examples
    --------
    >>> keep, dtype, f = output_spec("mask", 2, 1, 0.5)
    >>> keep, f(np.array([[[0.9, 0.2]], [[0.1, 0.8]]])).tolist()
    (False, [[0, 255]])
    """
    if kind not in OUTPUT_KINDS or kind == "labels":
        raise ConfigError(f"output {kind!r}: expected one of {', '.join(k for k in OUTPUT_KINDS if k != 'labels')} here")
    c = foreground if num_classes == 2 else 0
    if kind == "prob":
        if num_classes <= 2:
            return False, np.float32, lambda p: p[c]
        return True, np.float32, None
    if num_classes <= 2:
        return False, np.uint8, lambda p: np.where(p[c] > threshold, np.uint8(255), np.uint8(0))
    return False, np.uint8, lambda p: np.argmax(p, axis=0).astype(np.uint8)


class _StackTarget:
    """Writes the bands of stack slice ``z`` into a target holding the whole stack."""

    def __init__(self, target: Any, z: int, class_axis: bool):
        self.target, self.z, self.class_axis = target, z, class_axis

    def __setitem__(self, index, value) -> None:
        index = tuple(index)
        if self.class_axis:
            self.target[(index[0], self.z, *index[1:])] = value
        else:
            self.target[(self.z, *index)] = value


def image_views(source: Any, model: Any, name: str = "image", *, channel: int | None = None) -> list:
    """Lazy ``(channels, *spatial)`` views of a stored array for ``model`` (a module or Predictor):
    one, or one per slice of a stack for a 2D model (:func:`unetseg.axes.model_views`)."""
    net = model.network if isinstance(model, Predictor) else model
    dims, channels = int(getattr(net, "spatial_dims", 2)), int(net.in_channels)
    axes = axes_for_model(tuple(int(s) for s in source.shape), spatial_dims=dims, channels=channels, where=name)
    return model_views(source, axes, spatial_dims=dims, channels=channels, channel=channel, where=name)


def predict_file(
    model: Any,
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    output: str = "prob",
    threshold: float | None = None,
    normalization: dict[str, Any] | None = None,
    split: str | None = None,
    min_size: int | None = None,
    channel: int | None = None,
    rois: bool = False,
    dask_scheduler: Any = None,
    progress: bool | Any = False,
    device: Any = None,
    precision: str | None = None,
    **kwargs: Any,
) -> Path:
    """Segment one image file into ``output_path`` (``.tif``, ``.zarr`` or ``.npy``).

    ``model`` is a :class:`Predictor`, a run folder, a model file or a module. ``output``:
    ``"prob"`` float32 probabilities (for a 2-class model the foreground map alone), ``"mask"``
    uint8 (0/255 for 1-2 classes, else the argmax class), ``"labels"`` uint16/uint32 instances
    (:func:`unetseg.postprocess.instances_from_probabilities`, which needs the whole probability
    map in memory); ``threshold``, ``split``, ``min_size`` default to the card's ``postprocess``.
    ``normalization`` overrides the card's. ``channel`` picks one channel of a multi-channel
    image for a single-channel model. TIFFs are ImageJ hyperstacks with the input's pixel size
    (:mod:`unetseg.imagej`); ``rois`` (labels) also writes ``NAME_rois.zip``, one ROI per object.
    Other keywords (``tile_shape``, ``tta``, ``batch_size``, ``output_shift``: the card's by default, ``None`` for none) go to
    :meth:`Predictor.predict_into`. With ``dask_scheduler`` (``"threads"``, an address or a
    ``distributed.Client``) the image is segmented by :func:`~unetseg.inference.dask.predict_dask`.
    """
    from ..store import create_writer, open_source

    if set(kwargs) - set(_PREDICT_KEYS):
        raise TypeError(f"predict_file: unexpected argument(s) {', '.join(sorted(set(kwargs) - set(_PREDICT_KEYS)))}")
    predictor = as_predictor(model, device=device, precision=precision)
    kwargs.setdefault("output_shift", CARD)
    card = predictor.card
    threshold, split, min_size = _postprocess(card, threshold, split, min_size)
    spec = normalization if normalization is not None else card.normalization
    input_path, output_path = Path(input_path), Path(output_path)
    views = image_views(open_source(input_path), predictor, str(input_path), channel=channel)
    stack = len(views) > 1 or views[0].z is not None
    num_classes, spatial = predictor.num_classes, views[0].shape[1:]
    if rois and output != "labels":
        raise ConfigError(f"rois: ImageJ ROIs are written for --output labels, not {output!r}")
    calibration, dims = read_calibration(input_path), predictor.spatial_dims
    run = (dask_scheduler, progress, kwargs)
    if output == "labels":
        probs = np.empty((num_classes, len(views), *spatial) if stack else (num_classes, *spatial), np.float32)
        _run_views(predictor, views, probs, True, spec, None, np.float32, run)
        _write_labels(output_path, _labels(probs, card, threshold, split, min_size), output_axes(False, stack, dims), calibration, rois)
        return output_path
    class_axis, dtype, transform = output_spec(output, num_classes, card.foreground_class, threshold)
    out_shape = ((num_classes,) if class_axis else ()) + ((len(views),) if stack else ()) + tuple(spatial)
    axes = output_axes(class_axis, stack, dims)
    with create_writer(output_path, out_shape, dtype, axes=axes, calibration=calibration) as writer:
        _run_views(predictor, views, writer, class_axis, spec, transform, dtype, run)
    return output_path


def _postprocess(card, threshold: float | None, split: str | None, min_size: int | None) -> tuple[float, str, int]:
    """The card's ``postprocess`` values where the caller gave none."""
    post = card.postprocess
    return (post.threshold if threshold is None else threshold, post.split if split is None else split,
            post.min_size if min_size is None else min_size)


def _run_views(predictor: Predictor, views: list, target: Any, class_axis: bool, spec, transform, dtype, run: tuple) -> None:
    """Segment every view (one, or each slice of a stack) into ``target``."""
    stack = len(views) > 1 or views[0].z is not None
    for z, view in enumerate(views):
        _predict_view(predictor, view, _StackTarget(target, z, class_axis) if stack else target, fit_normalization(view, spec),
                      transform, dtype, *run)


def _write_labels(path: Path, labels: np.ndarray, axes: str, calibration, rois: bool) -> None:
    write_image(path, labels, axes=axes, imagej=True, calibration=calibration)
    if rois:
        write_rois(rois_path(path), labels)


def _labels(probs: np.ndarray, card, threshold: float, split: str, min_size: int) -> np.ndarray:
    from ..postprocess import instances_from_probabilities

    foreground = min(card.foreground_class, probs.shape[0] - 1)
    return instances_from_probabilities(probs, threshold_value=threshold, foreground_class=foreground, split=split,
                                        border_class=card.border_class, min_size=min_size)


def _predict_view(predictor: Predictor, view, target, pre, transform, dtype, dask_scheduler, progress, kwargs) -> None:
    if dask_scheduler is None:
        predictor.predict_into(view, target, preprocess=pre, transform=transform, progress=progress, **kwargs)
        return
    import dask.array as da

    dims = view.ndim - 1
    darr = da.from_array(view, chunks=(view.shape[0],) + (1024,) * dims, asarray=True, fancy=False)
    normed = darr.map_blocks(pre, dtype=np.float32)
    allowed = {k: v for k, v in kwargs.items() if k in ("tile_shape", "tta", "batch_size", "output_shift")}
    probs = predictor.predict_dask(normed, **allowed)
    result = probs.map_blocks(transform, drop_axis=0, dtype=dtype) if transform is not None else probs
    _store_dask(result, target, dask_scheduler)


def _store_dask(result, target, scheduler) -> None:
    import dask.array as da

    if isinstance(scheduler, str) and scheduler in ("threads", "sync", "synchronous"):
        da.store(result, _Full(target), lock=True, scheduler=scheduler)
        return
    from distributed import Client

    if isinstance(scheduler, Client):
        da.store(result, _Full(target), lock=True, scheduler=scheduler)
        return
    with Client(scheduler) as client:
        da.store(result, _Full(target), lock=True, scheduler=client)


class _Full:
    """Adapter so ``da.store`` can write into targets that take full-index tuples."""

    def __init__(self, target):
        self.target = target
        self.shape = getattr(target, "shape", None)

    def __setitem__(self, index, value):
        self.target[index] = value
