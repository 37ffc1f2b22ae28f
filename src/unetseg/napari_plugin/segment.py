"""The "Segment with unetseg" dock widget: a model applied to an Image layer in the background.

The work is :func:`run_job` (no Qt): :func:`unetseg.inference.predict_array`, the same path as
``unetseg predict`` on a file, so the layer added equals the command's output for the same
pixels. A layer backed by dask or zarr (or a multiscale layer, whose full resolution is used) is
read window by window, and its probabilities or mask are written band by band into an OME-Zarr
pyramid in the user's cache (``$UNETSEG_CACHE/napari``), added as a multiscale layer: neither
input nor output of a big image is ever held whole in memory (instance labels are). The widget
runs it in a napari thread worker, polls :class:`TileProgress` for its progress bar, and Cancel
makes the next tile raise :class:`Cancelled`, so a run stops within one tile. Errors (a bad model file, an image the model cannot take) become a napari error
notification and the viewer keeps working.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, ProgressBar, PushButton, SpinBox, create_widget
from napari.utils.notifications import show_error, show_info

OUTPUTS = ("prob", "mask", "labels")
SPLITS = ("card", "none", "distance", "border")
SCOPES = ("current slice", "whole stack")


class Cancelled(Exception):
    """Raised in the worker thread at the next tile after Cancel."""


class TileProgress:
    """The tqdm-like bar the engine advances per tile batch; checks the Cancel flag each time."""

    def __init__(self, cancel: threading.Event | None = None):
        self.cancel = cancel or threading.Event()
        self.total, self.n = 0, 0

    def refresh(self) -> None:
        if self.cancel.is_set():
            raise Cancelled

    def update(self, n: int = 1) -> None:
        self.refresh()
        self.n += int(n)


@dataclass(frozen=True)
class SegmentJob:
    """One run of the widget: which pixels, which model, which output."""

    model: Path | None  # None: the sample model, trained into the cache on first use
    data: Any
    output: str = "prob"
    tile: int | None = None
    tta: bool = False
    split: str | None = None
    min_size: int | None = None
    z: int | None = None
    store: Path | None = None  # OME-Zarr folder for the output of a lazy (dask/zarr) layer


def full_resolution(layer: Any) -> Any:
    """The data of a layer at full resolution (level 0 of a multiscale layer), never loaded."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def lazy_store(layer: Any, output: str, cache: Path | None = None) -> Path | None:
    """Where the output of ``layer`` goes on disk: a new ``NAME-K.ome.zarr`` in the cache for a
    dask/zarr-backed layer (probabilities and masks), ``None`` (in memory) otherwise."""
    from ..fetch import cache_root

    if isinstance(full_resolution(layer), np.ndarray) or output == "labels":
        return None
    folder = cache_root(cache) / "napari"
    folder.mkdir(parents=True, exist_ok=True)
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in layer.name) or "layer"
    k = 0
    while (folder / f"{stem}-{k}.ome.zarr").exists():
        k += 1
    return folder / f"{stem}-{k}.ome.zarr"


def outcome(job_function, *args: Any) -> tuple[str, Any]:
    """``("done", result)``, ``("cancelled", None)`` or ``("failed", message)``: a worker's
    function never raises for what a user can cause (those become a notification); a bug still
    raises with its traceback."""
    from ..errors import UnetsegError

    try:
        return "done", job_function(*args)
    except Cancelled:
        return "cancelled", None
    except (UnetsegError, OSError, ValueError) as exc:
        return "failed", str(exc)


def run_job(job: SegmentJob, progress: TileProgress, predictors: dict) -> np.ndarray:
    """Segment ``job.data`` (slice ``job.z`` of it when set); ``predictors`` caches one
    :class:`~unetseg.inference.Predictor` per model path."""
    from ..inference import Predictor, predict_array

    if job.model is None:
        from .sample import sample_model

        model = sample_model()
    else:
        model = Path(job.model)
    key = str(model.resolve())
    if key not in predictors:
        predictors[key] = Predictor.from_path(model, device="auto", precision="fp32")  # as `unetseg predict`
    image = job.data[job.z] if job.z is not None else job.data
    open_target = None if job.store is None else _ome_zarr_target(job.store)
    out = predict_array(predictors[key], image, output=job.output, tile_shape=job.tile, tta=job.tta, split=job.split,
                        min_size=job.min_size, progress=progress, open_target=open_target)
    return out if job.store is None else pyramid_levels(job.store)


def _ome_zarr_target(path: Path):
    from ..omezarr import create_ome_zarr

    return lambda shape, dtype, axes, kind: create_ome_zarr(path, shape, dtype, axes=axes, kind=kind)


def pyramid_levels(path: Path) -> list:
    """The levels of an OME-Zarr image as lazy zarr arrays, largest first (a multiscale layer)."""
    import zarr

    group = zarr.open_group(str(path), mode="r")
    return [group[d["path"]] for d in group.attrs["ome"]["multiscales"][0]["datasets"]]


def add_result(viewer: Any, layer: Any, job: SegmentJob, out: np.ndarray) -> Any:
    """The result as a layer placed over ``layer`` (one slice of a stack when ``job.z`` is set)."""
    scale, translate = list(layer.scale), list(layer.translate)
    if job.z is not None:
        out = [level[None] for level in out] if isinstance(out, list) else out[None]
        translate[0] += job.z * scale[0]
    kind = {"prob": "probability", "mask": "mask", "labels": "labels"}[job.output]
    name = f"{layer.name}: unetseg {kind}" + (f" (slice {job.z})" if job.z is not None else "")
    if job.output == "prob":
        return viewer.add_image(out, name=name, colormap="magma", contrast_limits=(0.0, 1.0), scale=scale, translate=translate,
                                blending="additive", multiscale=isinstance(out, list))
    if isinstance(out, list):  # an OME-Zarr pyramid on disk
        return viewer.add_labels(out, name=name, scale=scale, translate=translate, multiscale=True)
    data = (out > 0).astype(np.uint8) if job.output == "mask" else out
    return viewer.add_labels(data, name=name, scale=scale, translate=translate)


def start_timer(timer: Any, callback: Any, every_ms: int) -> Any:
    """A Qt timer calling ``callback`` every ``every_ms`` ms in the GUI thread (made on first use)."""
    from qtpy.QtCore import QTimer

    if timer is None:
        timer = QTimer()
        timer.timeout.connect(callback)
    timer.start(every_ms)
    return timer


class SegmentWidget(Container):
    """Dock widget: image layer, model, tile, TTA, output, split, minimum size, slice or stack."""

    def __init__(self, napari_viewer: Any):
        super().__init__()
        self.viewer = napari_viewer
        self.image = create_widget(annotation="napari.layers.Image", label="image")
        self.model = FileEdit(label="model", mode="r", tooltip="run folder, model .safetensors or bioimage.io .zip; empty: the sample model (trained on first use)")
        self.tile = SpinBox(label="tile (0: auto)", value=0, min=0, max=8192, step=16)
        self.tta = CheckBox(text="test-time augmentation (8x)", value=False)
        self.output = ComboBox(label="output", choices=OUTPUTS, value="prob")
        self.split = ComboBox(label="split", choices=SPLITS, value="card")
        self.min_size = SpinBox(label="min size (-1: card)", value=-1, min=-1, max=10**7)
        self.scope = ComboBox(label="stacks", choices=SCOPES, value="whole stack")
        self.run_button, self.cancel_button = PushButton(text="Segment"), PushButton(text="Cancel", enabled=False)
        self.progress, self.status = ProgressBar(label="tiles", value=0, max=1), Label(value="")
        self.extend([self.image, self.model, self.tile, self.tta, self.output, self.split, self.min_size, self.scope,
                     self.run_button, self.cancel_button, self.progress, self.status])
        self.run_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)
        self.predictors: dict = {}
        self.worker, self.last_layer, self._tiles = None, None, TileProgress()
        self._timer = None

    def job(self) -> SegmentJob:
        """The job the current settings describe."""
        layer = self.image.value
        if layer is None:
            raise ValueError("choose an image layer")
        stack = layer.ndim > 2 and not getattr(layer, "rgb", False)
        z = int(self.viewer.dims.current_step[0]) if stack and self.scope.value == "current slice" else None
        chosen = str(self.model.value or "")
        return SegmentJob(model=None if chosen in ("", ".") else Path(chosen), data=full_resolution(layer), output=self.output.value,
                          tile=self.tile.value or None, tta=bool(self.tta.value),
                          split=None if self.split.value == "card" else self.split.value,
                          min_size=None if self.min_size.value < 0 else int(self.min_size.value), z=z,
                          store=lazy_store(layer, self.output.value))

    def start(self) -> Any:
        """Run the current job in a napari thread worker; returns the worker."""
        from napari.qt.threading import create_worker

        try:
            job = self.job()
        except ValueError as exc:
            show_error(f"unetseg: {exc}")
            return None
        layer = self.image.value
        self._tiles = TileProgress()
        worker = create_worker(outcome, run_job, job, self._tiles, self.predictors, _start_thread=False)
        worker.returned.connect(lambda result: self._finished(layer, job, *result))
        worker.finished.connect(self._idle)
        self.run_button.enabled, self.cancel_button.enabled, self.status.value = False, True, "segmenting..."
        self._start_timer()
        self.worker = worker
        worker.start()
        return worker

    def cancel(self) -> None:
        """Stop at the next tile."""
        self._tiles.cancel.set()

    def _start_timer(self) -> None:
        self._timer = start_timer(self._timer, self._poll, 100)

    def _poll(self) -> None:
        self.progress.max, self.progress.value = max(1, self._tiles.total), min(self._tiles.n, max(1, self._tiles.total))

    def _finished(self, layer: Any, job: SegmentJob, state: str, value: Any) -> None:
        if state == "done":
            self.last_layer = add_result(self.viewer, layer, job, value)
            self.status.value = f"done: {self.last_layer.name}"
        elif state == "cancelled":
            self.status.value = f"cancelled after {self._tiles.n} of {self._tiles.total} tiles"
            show_info("unetseg: segmentation cancelled")
        else:
            self.status.value = "failed"
            show_error(f"unetseg: {value}")

    def _idle(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._poll()
        self.run_button.enabled, self.cancel_button.enabled = True, False
