"""Files in, files out: lazy reading, normalisation with image-wide statistics, output kinds.

:func:`predict_file` segments one image file of any size into a ``.tif``, ``.zarr`` or ``.npy``
file: the input is read window by window (:mod:`unetseg.store`), normalised as the model card
says with statistics fitted over the whole image (:func:`unetseg.normalize.fit_normalization`),
and ``prob``/``mask`` outputs are written band by band, so memory does not grow with the image.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..axes import axes_for_model, model_views
from ..errors import ConfigError
from ..imagej import output_axes, read_calibration, rois_path, write_rois
from ..io import write_image
from ..normalize import fit_normalization
from ..omezarr import create_ome_zarr, writes_ome_zarr
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
    edge_min_size: int | None = None,
    fill_holes: int | None = None,
    agglomerate: float | None = None,
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
    map in memory); ``threshold``, ``split``, ``min_size``, ``edge_min_size``, ``fill_holes``, ``agglomerate`` default to
    the card's ``postprocess`` (with ``fill_holes`` or ``agglomerate``, each section's foreground
    map is held in memory whole).
    ``normalization`` overrides the card's. ``channel`` picks one channel of a multi-channel
    image for a single-channel model. TIFFs are ImageJ hyperstacks with the input's pixel size
    (:mod:`unetseg.imagej`); ``rois`` (labels) also writes ``NAME_rois.zip``, one ROI per object.
    Other keywords (``tile_shape``, ``tta``, ``batch_size``, ``output_shift``: the card's by default, ``None`` for none) go to
    :meth:`Predictor.predict_into`. With ``dask_scheduler`` (``"threads"``, an address or a
    ``distributed.Client``) the image is segmented by :func:`~unetseg.inference.dask.predict_dask`.
    """
    from ..store import open_source

    if set(kwargs) - set(_PREDICT_KEYS):
        raise TypeError(f"predict_file: unexpected argument(s) {', '.join(sorted(set(kwargs) - set(_PREDICT_KEYS)))}")
    predictor = as_predictor(model, device=device, precision=precision)
    kwargs.setdefault("output_shift", CARD)
    post = _postprocess(predictor.card, threshold=threshold, split=split, min_size=min_size, edge_min_size=edge_min_size,
                        fill_holes=fill_holes, agglomerate=agglomerate)
    spec = normalization if normalization is not None else predictor.card.normalization
    input_path, output_path = Path(input_path), Path(output_path)
    if rois and output != "labels":
        raise ConfigError(f"rois: ImageJ ROIs are written for --output labels, not {output!r}")
    source, calibration = open_source(input_path), read_calibration(input_path)  # a missing or corrupt file: refused first
    job = _Job(output, spec, post, (dask_scheduler, progress, kwargs))

    def open_target(shape, dtype, axes, kind):
        return _writer(output_path, shape, dtype, axes, calibration, kind)

    result = _segment(predictor, source, str(input_path), job, channel, open_target)
    if output == "labels":
        labels, axes = result
        _write_labels(output_path, labels, axes, calibration, rois)
    return output_path


def calibration_images(predictor: Predictor, paths: list, *, channel: int | None = None, max_side: int = 1024) -> list[np.ndarray]:
    """The first view of each image file in ``paths``, normalised as ``predictor``'s card says and
    cropped to at most ``max_side`` per axis: what an ``int8`` backend calibrates on."""
    from ..store import open_source

    out = []
    for path in paths:
        view = image_views(open_source(Path(path)), predictor, str(path), channel=channel)[0]
        window = np.asarray(view[(slice(None), *(slice(0, min(n, max_side)) for n in view.shape[1:]))])
        out.append(fit_normalization(view, predictor.card.normalization)(window))
    return out


def predict_array(
    model: Any,
    image: Any,
    *,
    output: str = "prob",
    threshold: float | None = None,
    split: str | None = None,
    min_size: int | None = None,
    edge_min_size: int | None = None,
    fill_holes: int | None = None,
    agglomerate: float | None = None,
    channel: int | None = None,
    progress: bool | Any = False,
    open_target: Any = None,
    **kwargs: Any,
) -> Any:
    """What :func:`predict_file` writes, for an array instead of a file (the napari widget's path).

    ``image`` is any array with ``shape``, ``dtype`` and slicing (NumPy, dask, zarr), laid out as
    a file of it would be (``(Y, X)``, ``(Z, Y, X)`` stack, channels last or first as
    :func:`unetseg.axes.axes_for_model` reads them); it is read window by window, never whole.
    Normalisation, output kinds and the card's post-processing are those of
    :func:`predict_file`, so both give the same values for the same pixels. ``prob`` and
    ``mask`` go into a NumPy array, or into what ``open_target(shape, dtype, axes, kind)`` (a
    context manager yielding a writable array, e.g. :func:`unetseg.omezarr.create_ome_zarr`
    bound to a path) gives, so an image larger than memory can be segmented band by band;
    ``labels`` are always returned in memory.

    Examples
    --------
    >>> import torch
    >>> from unetseg.models import UNet
    >>> _ = torch.manual_seed(0)
    >>> prob = predict_array(UNet(1, 2, depth=1, base_channels=2), np.zeros((40, 30), np.uint8))
    >>> prob.shape, prob.dtype
    ((40, 30), dtype('float32'))
    """
    from ..store import ArraySource

    predictor = as_predictor(model)
    kwargs.setdefault("output_shift", CARD)
    card = predictor.card
    data = image if all(hasattr(image, a) for a in ("shape", "dtype", "__getitem__")) else np.asarray(image)
    post = _postprocess(card, threshold=threshold, split=split, min_size=min_size, edge_min_size=edge_min_size,
                        fill_holes=fill_holes, agglomerate=agglomerate)
    job = _Job(output, card.normalization, post, (None, progress, kwargs))
    result = _segment(predictor, ArraySource(data), "image", job, channel, open_target or _in_memory)
    return result[0] if output == "labels" else result


class _Job(NamedTuple):
    output: str
    spec: Any  # normalisation
    post: Any  # the card's Postprocess with the caller's overrides
    run: tuple  # dask scheduler, progress, predict_into keywords


@contextlib.contextmanager
def _in_memory(shape: tuple[int, ...], dtype: Any, axes: str, kind: str) -> Iterator[np.ndarray]:
    yield np.zeros(shape, dtype)


def _segment(predictor: Predictor, source: Any, name: str, job: _Job, channel: int | None, open_target) -> Any:
    """Segment ``source`` as ``job`` says: ``(labels, axes)`` for labels, else the target
    ``open_target`` gave, filled band by band."""
    views = image_views(source, predictor, name, channel=channel)
    stack = len(views) > 1 or views[0].z is not None
    num_classes, spatial, card = predictor.num_classes, views[0].shape[1:], predictor.card
    post = job.post
    if job.output == "labels":
        run, n = _affinity_run(predictor, post, job.run)
        probs = np.empty((n, len(views), *spatial) if stack else (n, *spatial), np.float32)
        _run_views(predictor, views, probs, True, job.spec, None, np.float32, run)
        predictor.postprocess(probs, post, sections=stack)
        return _labels(probs[:num_classes], card, post, predictor.spatial_dims), output_axes(False, stack, predictor.spatial_dims)
    class_axis, dtype, transform = output_spec(job.output, num_classes, card.foreground_class, post.threshold)
    out_shape = ((num_classes,) if class_axis else ()) + ((len(views),) if stack else ()) + tuple(spatial)
    axes = output_axes(class_axis, stack, predictor.spatial_dims)
    with open_target(out_shape, dtype, axes, "image" if job.output == "prob" else "labels") as target:
        if (post.fill_holes > 1 or post.agglomerate > 0 or post.mutex_watershed) and num_classes <= 2:  # whole sections only when needed
            _run_views_whole(predictor, views, target, job, transform)
        else:
            _run_views(predictor, views, target, class_axis, job.spec, transform, dtype, job.run)
    return target


def _postprocess(card, **given: Any):
    """The card's :class:`~unetseg.models.card.Postprocess` with the values the caller gave
    (``None``: the card's), checked as the card's own are."""
    return dataclasses.replace(card.postprocess, **{k: v for k, v in given.items() if v is not None})


def _run_views_whole(predictor: Predictor, views: list, target: Any, job: _Job, transform) -> None:
    """:func:`_run_views` for a foreground map post-processed whole: each view is predicted into
    memory, post-processed (:func:`~unetseg.postprocess.foreground_postprocess`), then written
    through ``transform``."""
    stack = len(views) > 1 or views[0].z is not None
    run, _ = _affinity_run(predictor, job.post, job.run)
    for z, view in enumerate(views):
        probs = _view_probs(predictor, view, fit_normalization(view, job.spec), *run)
        probs = predictor.postprocess(probs, job.post)
        out = transform(probs)
        full = tuple(slice(None) for _ in out.shape)
        (_StackTarget(target, z, False) if stack else _Full(target))[full] = out


def _affinity_run(predictor: Predictor, post, run: tuple) -> tuple[tuple, int]:
    """``run`` asking for the affinity channels too when the post-processing needs them, and the
    number of output channels that gives. Dask computes the class channels only (the
    post-processing then says it needs the prediction in this process)."""
    scheduler, progress, kwargs = run
    if not predictor.needs_affinities(post) or scheduler is not None:
        return run, predictor.num_classes
    return (scheduler, progress, {**kwargs, "affinities": True}), predictor.num_outputs


def _run_views(predictor: Predictor, views: list, target: Any, class_axis: bool, spec, transform, dtype, run: tuple) -> None:
    """Segment every view (one, or each slice of a stack) into ``target``."""
    stack = len(views) > 1 or views[0].z is not None
    for z, view in enumerate(views):
        _predict_view(predictor, view, _StackTarget(target, z, class_axis) if stack else target, fit_normalization(view, spec),
                      transform, dtype, *run)


def _writer(path: Path, shape: tuple[int, ...], dtype, axes: str, calibration, kind: str):
    """The band-by-band writer of an output file: OME-Zarr pyramid, or :func:`unetseg.store.create_writer`."""
    from ..store import create_writer

    if writes_ome_zarr(path):
        return create_ome_zarr(path, shape, dtype, axes=axes, calibration=calibration, kind=kind)
    return create_writer(path, shape, dtype, axes=axes, calibration=calibration)


def _write_labels(path: Path, labels: np.ndarray, axes: str, calibration, rois: bool) -> None:
    if writes_ome_zarr(path):
        with _writer(path, labels.shape, labels.dtype, axes, calibration, "labels") as level0:
            level0[...] = labels
    else:
        write_image(path, labels, axes=axes, imagej=True, calibration=calibration)
    if rois:
        write_rois(rois_path(path), labels)


def _labels(probs: np.ndarray, card, post, spatial_dims: int) -> np.ndarray:
    from ..postprocess import instances_from_probabilities

    foreground = min(card.foreground_class, probs.shape[0] - 1)
    return instances_from_probabilities(probs, threshold_value=post.threshold, foreground_class=foreground, split=post.split,
                                        border_class=card.border_class, min_size=post.min_size,
                                        edge_min_size=post.edge_min_size, edge_dims=spatial_dims)


def _predict_view(predictor: Predictor, view, target, pre, transform, dtype, dask_scheduler, progress, kwargs) -> None:
    if dask_scheduler is None:
        predictor.predict_into(view, target, preprocess=pre, transform=transform, progress=progress, **kwargs)
        return
    probs = _dask_probs(predictor, view, pre, kwargs)
    result = probs.map_blocks(transform, drop_axis=0, dtype=dtype) if transform is not None else probs
    _store_dask(result, target, dask_scheduler)


def _dask_probs(predictor: Predictor, view, pre, kwargs):
    """The lazy probabilities of ``view`` (:meth:`Predictor.predict_dask`, blocks of 1024 px)."""
    import dask.array as da

    dims = view.ndim - 1
    darr = da.from_array(view, chunks=(view.shape[0],) + (1024,) * dims, asarray=True, fancy=False)
    normed = darr.map_blocks(pre, dtype=np.float32)
    allowed = {k: v for k, v in kwargs.items() if k in ("tile_shape", "tta", "batch_size", "output_shift")}
    return predictor.predict_dask(normed, **allowed)


def _view_probs(predictor: Predictor, view, pre, dask_scheduler, progress, kwargs) -> np.ndarray:
    """All class probabilities of ``view`` in memory; on a cluster, computed there and gathered."""
    if dask_scheduler is None or (isinstance(dask_scheduler, str) and dask_scheduler in ("threads", "sync", "synchronous")):
        probs = np.zeros((predictor.num_outputs if kwargs.get("affinities") else predictor.num_classes, *view.shape[1:]), np.float32)
        _predict_view(predictor, view, probs, pre, None, np.float32, dask_scheduler, progress, kwargs)
        return probs
    from distributed import Client

    lazy = _dask_probs(predictor, view, pre, kwargs)
    if isinstance(dask_scheduler, Client):
        return np.asarray(dask_scheduler.compute(lazy).result(), np.float32)
    with Client(dask_scheduler) as client:
        return np.asarray(client.compute(lazy).result(), np.float32)


def _store_dask(result, target, scheduler) -> None:
    import dask.array as da

    if isinstance(scheduler, str) and scheduler in ("threads", "sync", "synchronous"):
        da.store(result, _Full(target), lock=True, scheduler=scheduler)
        return
    from distributed import Client

    from .dask import store_on_cluster

    if isinstance(scheduler, Client):
        store_on_cluster(result, _Full(target), scheduler)
        return
    with Client(scheduler) as client:
        store_on_cluster(result, _Full(target), client)


class _Full:
    """Adapter so ``da.store`` can write into targets that take full-index tuples."""

    def __init__(self, target):
        self.target = target
        self.shape = getattr(target, "shape", None)

    def __setitem__(self, index, value):
        self.target[index] = value
