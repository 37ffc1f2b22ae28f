"""The "Train a unetseg model" dock widget: a recipe trained on an Image and a painted Labels layer.

:func:`run_training` (no Qt) writes the two layers as a one-image dataset beside the run folder,
trains the chosen recipe there with :func:`unetseg.train.setup.train_from_config` (the code
``unetseg train`` runs), and predicts the image with the result. The widget runs it in a napari
thread worker, draws the loss curve from the steps it reports, and Stop asks the loop to stop
after the current step: a checkpoint is written and Resume continues from it, exactly as
``unetseg train --resume`` would.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, PushButton, SpinBox, create_widget
from napari.utils.notifications import show_error

from .segment import outcome, start_timer


def recipes() -> dict[str, Path]:
    """The recipes shipped inside the package, by name."""
    folder = Path(str(resources.files("unetseg") / "recipes"))
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


@dataclass(frozen=True)
class TrainJob:
    image: Any
    labels: Any
    recipe: Path
    run_dir: Path
    steps: int
    resume: bool = False


def write_dataset(job: TrainJob) -> Path:
    """The layers as ``RUN-data/images/00.tif`` + ``labels/00.tif`` (labels > 0 become 255, the
    foreground value of binary recipes, unless the recipe's targets are instances)."""
    from ..io import write_image
    from ..train.config import load_train_config

    root = job.run_dir.with_name(job.run_dir.name + "-data")
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    labels = np.asarray(job.labels)
    if load_train_config(job.recipe).data.target.kind == "binary":
        labels = np.where(labels > 0, 255, 0).astype(np.uint8)
    write_image(root / "images" / "00.tif", np.asarray(job.image))
    write_image(root / "labels" / "00.tif", labels)
    return root


def run_training(job: TrainJob, losses: list, stop: threading.Event) -> tuple[Any, np.ndarray]:
    """Train (or resume) ``job``; append ``(step, loss)`` to ``losses``; stop when ``stop`` is set.

    Returns the :class:`~unetseg.train.loop.TrainResult` and the probability map of the image.
    """
    from ..inference import predict_array
    from ..train.config import load_train_config
    from ..train.setup import train_from_config

    data = write_dataset(job)
    cfg = load_train_config(job.recipe, [f"train_data.path={data}", f"schedule.steps={job.steps}", "validation.every=0"])

    def on_step(step: int, loss: float) -> bool:
        losses.append((int(step), float(loss)))
        return stop.is_set()

    result = train_from_config(cfg, job.run_dir, resume=job.resume, on_step=on_step)
    return result, predict_array(job.run_dir, np.asarray(job.image), output="prob")


class TrainWidget(Container):
    """Dock widget: image and labels layers, recipe, run folder, steps; Train, Stop, Resume."""

    def __init__(self, napari_viewer: Any):
        super().__init__()
        self.viewer = napari_viewer
        self.image = create_widget(annotation="napari.layers.Image", label="image")
        self.labels = create_widget(annotation="napari.layers.Labels", label="labels")
        self.recipe = ComboBox(label="recipe", choices=list(recipes()), value="demo")
        self.run_dir = FileEdit(label="run folder", mode="d", value=Path.home() / "unetseg-runs" / "napari")
        self.steps = SpinBox(label="steps", value=500, min=1, max=10**7)
        self.train_button, self.stop_button = PushButton(text="Train"), PushButton(text="Stop", enabled=False)
        self.resume_button, self.status = PushButton(text="Resume", enabled=False), Label(value="")
        self.extend([self.image, self.labels, self.recipe, self.run_dir, self.steps, self.train_button, self.stop_button,
                     self.resume_button, self.status])
        self.train_button.changed.connect(lambda: self.start(resume=False))
        self.resume_button.changed.connect(lambda: self.start(resume=True))
        self.stop_button.changed.connect(self.stop)
        self.losses: list = []
        self.worker, self.result, self.last_layer, self._stop, self._timer = None, None, None, threading.Event(), None
        self.figure, self.canvas = _loss_canvas(self)

    def start(self, resume: bool = False) -> Any:
        """Train in a napari thread worker; returns the worker."""
        from napari.qt.threading import create_worker

        if self.image.value is None or self.labels.value is None:
            show_error("unetseg: choose an image layer and a labels layer")
            return None
        job = TrainJob(image=self.image.value.data, labels=self.labels.value.data, recipe=recipes()[self.recipe.value],
                       run_dir=Path(self.run_dir.value), steps=int(self.steps.value), resume=resume)
        self._stop = threading.Event()
        if not resume:
            self.losses.clear()
        worker = create_worker(outcome, run_training, job, self.losses, self._stop, _start_thread=False)
        worker.returned.connect(lambda result: self._finished(*result))
        worker.finished.connect(self._idle)
        self.train_button.enabled = self.resume_button.enabled = False
        self.stop_button.enabled, self.status.value = True, "training..."
        self._start_timer()
        self.worker = worker
        worker.start()
        return worker

    def stop(self) -> None:
        """Stop after the current step (a checkpoint is written; Resume continues)."""
        self._stop.set()

    def _start_timer(self) -> None:
        self._timer = start_timer(self._timer, self.draw_losses, 500)

    def draw_losses(self) -> None:
        """Redraw the loss curve from the steps reported so far."""
        if not self.losses:
            return
        axes = self.figure.axes[0]
        axes.clear()
        steps, values = zip(*list(self.losses))
        axes.plot(steps, values, lw=1)
        axes.set_xlabel("step")
        axes.set_ylabel("loss")
        self.canvas.draw_idle()

    def _finished(self, state: str, value: Any) -> None:
        if state != "done":
            self.status.value = "failed"
            show_error(f"unetseg: {value}")
            return
        self.result, prob = value
        self.last_layer = self.viewer.add_image(prob, name=f"{self.image.value.name} prediction (trained)",
                                                colormap="magma", contrast_limits=(0.0, 1.0), blending="additive")
        self.status.value = f"{self.result.status} at step {self.result.step}: {self.run_dir.value}"

    def _idle(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self.draw_losses()
        self.train_button.enabled, self.stop_button.enabled = True, False
        self.resume_button.enabled = self.result is not None and self.result.status == "interrupted"


def _loss_canvas(widget: Container):
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4, 2.5), tight_layout=True)
    figure.add_subplot(1, 1, 1)
    canvas = FigureCanvasQTAgg(figure)
    widget.native.layout().addWidget(canvas)
    return figure, canvas
