"""Sample data for the plugin: a synthetic EM section with labels, and a model made on first use.

Nothing is downloaded: the section comes from :func:`unetseg.synthetic.em_membranes` and the
model is trained on a few such sections by the demo's recipe into the user's cache
(``$UNETSEG_CACHE`` or ``~/.cache/unetseg``, :func:`unetseg.fetch.cache_root`) the first time
it is asked for, then reused.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

SAMPLE_SHAPE = (512, 512)
MODEL_STEPS = 150


def em_section(seed: int = 0, shape: tuple[int, int] = SAMPLE_SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic EM section (uint8) and its labels (1: cell interior, 0: membrane).

    Examples
    --------
    >>> image, labels = em_section(shape=(64, 64))
    >>> image.dtype, labels.dtype, sorted(np.unique(labels).tolist())
    (dtype('uint8'), dtype('uint8'), [0, 1])
    """
    from ..synthetic import em_membranes

    image, truth = em_membranes(shape, np.random.default_rng(seed))
    return image.astype(np.uint8), (truth > 0).astype(np.uint8)


def em_sample() -> list[tuple]:
    """napari sample data: the section as an Image layer and its labels as a Labels layer."""
    image, labels = em_section()
    return [(image, {"name": "synthetic EM"}, "image"), (labels, {"name": "synthetic EM labels"}, "labels")]


def sample_model(cache: str | os.PathLike | None = None, *, steps: int | None = None) -> Path:
    """The run folder of the sample model, trained here on first use (``steps`` steps of the
    demo recipe on synthetic sections) and reused afterwards."""
    from ..demo import make_synthetic_data, recipe_path
    from ..fetch import cache_root
    from ..train.config import load_train_config
    from ..train.setup import train_from_config

    steps = MODEL_STEPS if steps is None else steps
    root = cache_root(cache) / "napari-sample-model"
    if (root / "run" / "model.safetensors").is_file():
        return root / "run"
    shutil.rmtree(root, ignore_errors=True)
    train, val, _ = make_synthetic_data(root / "data")
    cfg = load_train_config(recipe_path(), [f"train_data.path={train}", f"val_data.path={val}", f"schedule.steps={steps}",
                                            "validation.every=0", "runtime.device=cpu"])
    train_from_config(cfg, root / "partial")
    (root / "partial").rename(root / "run")
    return root / "run"
