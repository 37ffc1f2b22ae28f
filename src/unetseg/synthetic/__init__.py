"""Synthetic microscopy images with exact ground truth, for the demo, tests and quick experiments.

Three generators, all pure NumPy/SciPy, deterministic for a given ``numpy.random.Generator``:

- :func:`em_membranes` (and :func:`em_volume` for a stack of serial sections): electron-microscopy
  sections in the style of the ISBI 2012 challenge. Irregular cells with curved borders, dark
  membranes of varying thickness, and inside the cells dark vesicles, mitochondria-like blobs
  and granular texture that are *not* membrane, so a threshold alone does not solve the task.
  Labels follow the ISBI 2012 convention: 255 = cell interior, 0 = membrane.
- :func:`touching_cells`: whole cells that touch one another without a background gap, in a
  DIC-like relief style or a fluorescence style, with instance labels (0 = background). These
  are the cases the paper's border weight map is made for.
- :func:`nuclei`: smaller, mostly separate fluorescent nuclei with instance labels.

The default parameters of :func:`em_membranes` were matched to the 24 labelled ISBI 2012
sections: membrane covers about 22 % of the pixels, the mean intensity is about 90 on membrane
and 145 on cells, and the image standard deviation is about 44.

Examples
--------
>>> import numpy as np
>>> image, labels = em_membranes((128, 128), np.random.default_rng(0))
>>> image.dtype, labels.dtype, sorted(np.unique(labels).tolist())
(dtype('uint8'), dtype('uint8'), [0, 255])
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .cells import nuclei, touching_cells
from .em import _RENDER_KEYS, em_membranes, em_statistics, em_volume

__all__ = ["em_membranes", "em_volume", "touching_cells", "nuclei", "generate", "pairs", "write_pairs", "check_params", "kind_function",
           "em_statistics", "KINDS"]

#: Names accepted by ``unetseg data synth`` and what each produces.
KINDS = {
    "em": "EM membrane sections like ISBI 2012 (uint8 image, labels 255 = cell, 0 = membrane)",
    "em-volume": "serial EM sections whose cells continue from one section to the next",
    "dic-cells": "touching cells in a DIC-like relief style (uint16 image, instance labels)",
    "fluo-cells": "touching cells in a fluorescence style (uint16 image, instance labels)",
    "nuclei": "mostly separate fluorescent nuclei (uint16 image, instance labels)",
}


def generate(kind: str, shape: tuple[int, int], rng: np.random.Generator, **params) -> tuple[np.ndarray, np.ndarray]:
    """One image/label pair of a named ``kind`` (see :data:`KINDS`; not ``em-volume``).

    ``params`` go to the generator (for example ``noise=20`` or ``membrane_width=(2, 6)``); an
    unknown name raises :class:`~unetseg.errors.ConfigError`.

    Examples
    --------
    >>> image, labels = generate("nuclei", (64, 64), np.random.default_rng(0), noise=5)
    >>> image.shape
    (64, 64)
    """
    if kind == "em-volume" or kind not in KINDS:
        raise ConfigError(f"synthetic kind {kind!r}: expected one of {', '.join(k for k in KINDS if k != 'em-volume')}")
    fn, fixed = kind_function(kind)
    check_params(fn, params, fixed)
    return fn(shape, rng, **fixed, **params)


def kind_function(kind: str):
    """``(function, fixed keyword arguments)`` behind a kind name of :data:`KINDS`.

    Examples
    --------
    >>> kind_function("dic-cells")[1]
    {'style': 'dic'}
    """
    table = {
        "em": (em_membranes, {}),
        "em-volume": (em_volume, {}),
        "dic-cells": (touching_cells, {"style": "dic"}),
        "fluo-cells": (touching_cells, {"style": "fluorescence"}),
        "nuclei": (nuclei, {}),
    }
    if kind not in table:
        raise ConfigError(f"synthetic kind {kind!r}: expected one of {', '.join(table)}")
    return table[kind]


def check_params(fn, params: dict, fixed: dict | None = None) -> None:
    """Raise ConfigError naming any key of ``params`` that ``fn`` does not take as a keyword.

    Examples
    --------
    >>> check_params(nuclei, {"noise": 3})
    >>> check_params(nuclei, {"nosie": 3})
    Traceback (most recent call last):
    ...
    unetseg.errors.ConfigError: nuclei: unknown parameter 'nosie'; expected one of blur, n_nuclei, noise, radius, touching
    """
    import inspect

    sig = inspect.signature(fn)
    allowed = {n for n, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY} - set(fixed or {})
    if fn is em_volume:
        allowed |= set(_RENDER_KEYS)
    for key in params:
        if key not in allowed:
            raise ConfigError(f"{fn.__name__}: unknown parameter {key!r}; expected one of {', '.join(sorted(allowed))}")


def pairs(kind: str, shape: tuple[int, int], count: int, seed: int, **params):
    """``count`` image/label pairs of ``kind``, lazily; for ``em-volume`` the sections of one
    volume (``numpy.random.default_rng(seed)``), else one generator per image seeded by
    ``(seed, index)``, so image i does not depend on ``count``.

    Examples
    --------
    >>> a = [img for img, _ in pairs("nuclei", (32, 32), 2, seed=1)]
    >>> b = [img for img, _ in pairs("nuclei", (32, 32), 3, seed=1)]
    >>> all((x == y).all() for x, y in zip(a, b))
    True
    """
    if count < 1:
        raise ConfigError(f"count {count}: expected at least 1")
    if kind == "em-volume":
        images, labels = em_volume((count, *shape), np.random.default_rng(seed), **params)
        return ((images[i], labels[i]) for i in range(count))
    if kind not in KINDS:
        raise ConfigError(f"synthetic kind {kind!r}: expected one of {', '.join(KINDS)}")
    fn, fixed = kind_function(kind)
    check_params(fn, params, fixed)
    return (generate(kind, shape, np.random.default_rng([seed, i]), **params) for i in range(count))


def write_pairs(folder, items, count: int, *, em: bool, progress=None) -> list[str]:
    """Write image/label ``items`` (from :func:`pairs`) as ``folder/images/NNN`` and
    ``folder/labels/NNN`` (PNG for EM, TIFF otherwise): the folders layout
    :func:`unetseg.data.load_dataset` reads. ``progress`` wraps the iteration (e.g. tqdm).
    Returns the file names."""
    from pathlib import Path

    from ..io import write_image

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    width = max(3, len(str(count - 1)))
    names = []
    for i, (image, label) in enumerate(progress(items) if progress else items):
        names.append(f"{i:0{width}d}{'.png' if em else '.tif'}")
        write_image(folder / "images" / names[-1], image)
        write_image(folder / "labels" / names[-1], label)
    return names
