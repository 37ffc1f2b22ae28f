"""The Cell Tracking Challenge's folder layout for segmentation results.

A sequence ``NN/`` holds frames ``tTTT.tif`` (three digits, four for sequences longer than 999
frames); its ground truth ``NN_GT/SEG/man_segTTT.tif``; its results ``NN_RES/maskTTT.tif``,
uint16 instance labels with the frame numbers (and digit count) of the input. This is what the
challenge's evaluation software (``SEGMeasure``) reads: every ground-truth frame must have a
result mask of the same size, and frames without ground truth are ignored.

``unetseg predict --format ctc`` writes a results folder (:func:`result_path`);
``unetseg evaluate --protocol ctc`` reads one against ``NN_GT`` (:func:`paired_frames`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .errors import InputError

FRAME = re.compile(r"^t(\d{3,4})\.tiff?$", re.IGNORECASE)
MASK = re.compile(r"^mask(\d{3,4})\.tiff?$", re.IGNORECASE)
MAN_SEG = re.compile(r"^man_seg(\d{3,4})\.tiff?$", re.IGNORECASE)


def frame_digits(path: str | os.PathLike) -> str:
    """The frame number of a CTC frame file as written (``"002"`` for ``t002.tif``).

    Examples
    --------
    >>> frame_digits("01/t002.tif"), frame_digits("t0123.tiff")
    ('002', '0123')
    """
    match = FRAME.match(Path(path).name)
    if match is None:
        raise InputError(f"{path}: not a Cell Tracking Challenge frame (expected tTTT.tif)")
    return match.group(1)


def sequence_frames(folder: str | os.PathLike) -> list[Path]:
    """The frames ``tTTT.tif`` of a CTC sequence folder, in frame order."""
    folder = Path(folder)
    frames = sorted((p for p in folder.iterdir() if FRAME.match(p.name)), key=lambda p: int(frame_digits(p))) if folder.is_dir() else []
    if not frames:
        raise InputError(f"{folder}: not a Cell Tracking Challenge sequence (no tTTT.tif frames)")
    return frames


def result_path(out: str | os.PathLike, frame: str | os.PathLike) -> Path:
    """Where the result mask of ``frame`` goes: ``OUT/NN_RES/maskTTT.tif`` for ``.../NN/tTTT.tif``.

    Examples
    --------
    >>> result_path("out", "data/01/t021.tif").as_posix()
    'out/01_RES/mask021.tif'
    """
    frame = Path(frame)
    return Path(out) / f"{frame.parent.name}_RES" / f"mask{frame_digits(frame)}.tif"


def as_ctc_labels(labels: np.ndarray, where: str | os.PathLike) -> np.ndarray:
    """Instance labels as the uint16 the challenge requires (refused beyond 65535 objects)."""
    labels = np.asarray(labels)
    if labels.size and int(labels.max()) > np.iinfo(np.uint16).max:
        raise InputError(f"{where}: {int(labels.max())} objects do not fit the challenge's uint16 masks")
    return labels.astype(np.uint16, copy=False)


def _numbered(folder: Path, pattern: re.Pattern) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for p in sorted(folder.iterdir()):
        match = pattern.match(p.name)
        if match:
            found[int(match.group(1))] = p
    return found


def is_results_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder of ``maskTTT.tif`` files (a CTC results folder)."""
    path = Path(path)
    return path.is_dir() and bool(_numbered(path, MASK))


def ground_truth_folder(path: str | os.PathLike) -> Path | None:
    """``NN_GT/SEG`` for ``NN_GT`` or ``NN_GT/SEG`` holding ``man_segTTT.tif``; else None."""
    path = Path(path)
    for folder in (path / "SEG", path):
        if folder.is_dir() and _numbered(folder, MAN_SEG):
            return folder
    return None


def paired_frames(results: str | os.PathLike, truth: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """``(name, mask, man_seg)`` for every ground-truth frame, as the challenge pairs them.

    Every annotated frame needs its result mask (the challenge's software fails otherwise);
    result frames without annotation are ignored.
    """
    seg = ground_truth_folder(truth)
    if seg is None:
        raise InputError(f"{truth}: no man_segTTT.tif files (expected NN_GT or NN_GT/SEG)")
    masks, annotated = _numbered(Path(results), MASK), _numbered(seg, MAN_SEG)
    missing = sorted(set(annotated) - set(masks))
    if missing:
        raise InputError(f"{results}: no mask for annotated frame(s) {', '.join(str(m) for m in missing[:5])} "
                         f"({len(missing)} of {len(annotated)} missing)")
    return [(annotated[t].stem.replace("man_seg", "t"), masks[t], annotated[t]) for t in sorted(annotated)]


def load_results(results: str | os.PathLike, truth: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(masks, ground truth, frame names)`` as ``(T, Y, X)`` stacks of the annotated frames."""
    from .io import read_image

    pairs = paired_frames(results, truth)
    pred = [read_image(mask) for _, mask, _ in pairs]
    gt = [read_image(man) for _, _, man in pairs]
    for (name, mask, man), p, g in zip(pairs, pred, gt):
        if p.shape != g.shape:
            raise InputError(f"{mask}: shape {p.shape} differs from its ground truth {man.name} {g.shape}")
    return np.stack(pred), np.stack(gt), [name for name, _, _ in pairs]
