"""Dataset layouts on disk, discovered from one path (:func:`discover`); see :mod:`unetseg.data`."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..io import IMAGE_SUFFIXES, list_images, natural_key
from .config import IMAGE_DIRS, LABEL_DIRS, _IMAGE_WORDS, _LABEL_WORDS

@dataclass(frozen=True)
class Pair:
    """One image file and its label file (``label`` None for unlabelled data)."""

    name: str
    image: Path
    label: Path | None


def _stem(p: Path) -> str:
    name = p.name
    for suf in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return p.stem


def _find_dir(root: Path, names: Sequence[str]) -> Path | None:
    for n in names:
        for cand in (root / n, root / n.capitalize(), root / n.upper()):
            if cand.is_dir():
                return cand
    return None


def _pair_by_stem(img_dir: Path, lab_dir: Path) -> list[Pair]:
    images = list_images(img_dir)
    labels = list_images(lab_dir)
    if not images:
        raise InputError(f"{img_dir}: folder holds no images (expected {', '.join(IMAGE_SUFFIXES)})")
    if not labels:
        raise InputError(f"{lab_dir}: folder holds no label images")
    by_stem: dict[str, Path] = {}
    for lab in labels:
        key = _strip_role(_stem(lab), _LABEL_WORDS)
        by_stem.setdefault(_stem(lab), lab)
        by_stem.setdefault(key, lab)
    pairs, used = [], set()
    for img in images:
        lab = by_stem.get(_stem(img)) or by_stem.get(_strip_role(_stem(img), _IMAGE_WORDS))
        if lab is None:
            raise InputError(f"{img}: image has no label partner in {lab_dir} (matched by file stem)")
        used.add(lab)
        pairs.append(Pair(_stem(img), img, lab))
    extra = [lab for lab in labels if lab not in used]
    if extra:
        raise InputError(f"{extra[0]}: label has no image partner in {img_dir} (matched by file stem)")
    return pairs


_SUFFIX_OK = re.compile(r"^(\d*[23]d|\d*)$")


def _word_rest(token: str, words: Sequence[str]) -> str | None:
    """If ``token`` is a role word, optionally followed by digits or ``2d``/``3d``, the rest."""
    t = token.lower()
    for w in words:
        if t.startswith(w) and _SUFFIX_OK.match(t[len(w) :]):
            return token[len(w) :]
    return None


def _strip_role(stem: str, words: Sequence[str]) -> str:
    """Remove a role word (``mask``, ``img``...) from a file stem, keeping what follows it.

    Examples
    --------
    >>> _strip_role("img2d", _IMAGE_WORDS), _strip_role("train-labels", _LABEL_WORDS), _strip_role("a_mask", _LABEL_WORDS)
    ('2d', 'train', 'a')
    """
    tokens = re.split(r"([_\-. ]+)", stem)
    for i, t in enumerate(tokens):
        rest = _word_rest(t, words)
        if rest is not None:
            new = tokens[:i] + ([rest] if rest else []) + tokens[i + 1 :]
            return "".join(new).strip("_-. ")
    return stem


def _role(stem: str) -> str | None:
    toks = [t for t in re.split(r"[_\-. ]+", stem) if t]
    if any(_word_rest(t, _LABEL_WORDS) is not None for t in toks):
        return "label"
    if any(_word_rest(t, _IMAGE_WORDS) is not None for t in toks):
        return "image"
    return None


def _flat_pairs(folder: Path) -> list[Pair]:
    files = list_images(folder)
    if not files:
        raise InputError(f"{folder}: folder holds no images (expected {', '.join(IMAGE_SUFFIXES)}, or images/ + labels/ subfolders, or the Cell Tracking Challenge layout)")
    images: dict[str, Path] = {}
    labels: dict[str, Path] = {}
    for f in files:
        stem = _stem(f)
        role = _role(stem)
        if role == "label":
            labels[_strip_role(stem, _LABEL_WORDS)] = f
        else:
            images[_strip_role(stem, _IMAGE_WORDS) if role == "image" else stem] = f
    if not labels:
        raise InputError(f"{folder}: no label files found (expected images/ + labels/ folders, the Cell Tracking Challenge layout, or files named like NAME_mask.tif)")
    pairs = []
    for key, img in sorted(images.items(), key=lambda kv: natural_key(kv[1])):
        lab = labels.get(key)
        if lab is None:
            raise InputError(f"{img}: image has no label partner in {folder}")
        pairs.append(Pair(_stem(img), img, lab))
    extra = sorted(set(labels) - set(images))
    if extra:
        raise InputError(f"{labels[extra[0]]}: label has no image partner in {folder}")
    return pairs


_CTC_SEQ = re.compile(r"^(\d+)$")
_CTC_SEG = re.compile(r"^man_seg_?(\d+)\.tiff?$", re.IGNORECASE)


def _ctc_pairs(root: Path) -> list[Pair]:
    pairs = []
    for seq in sorted((p for p in root.iterdir() if p.is_dir() and _CTC_SEQ.match(p.name)), key=natural_key):
        seg = root / f"{seq.name}_GT" / "SEG"
        if not seg.is_dir():
            continue
        for lab in sorted(seg.iterdir(), key=natural_key):
            m = _CTC_SEG.match(lab.name)
            if not m:
                continue
            digits = m.group(1)
            cands = [seq / f"t{digits}{s}" for s in (".tif", ".tiff")]
            img = next((c for c in cands if c.is_file()), None)
            if img is None:
                raise InputError(f"{lab}: ground truth frame has no raw image {cands[0]}")
            pairs.append(Pair(f"{seq.name}_t{digits}", img, lab))
    return pairs


def _is_ctc(root: Path) -> bool:
    return any(p.is_dir() and _CTC_SEQ.match(p.name) and (root / f"{p.name}_GT" / "SEG").is_dir() for p in root.iterdir())


def discover(path: str | os.PathLike, labels: str | os.PathLike | None = None) -> tuple[str, list[Pair]]:
    """Find image/label pairs under ``path``; returns ``(layout, pairs)``.

    Raises
    ------
    InputError
        Missing path, empty folder, an image without label partner (or the reverse), or no
        recognisable layout; the message names the file or folder.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from unetseg.io import write_image
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> (d / "images").mkdir(); (d / "labels").mkdir()
    >>> for n in ("a2", "a10"):
    ...     write_image(d / "images" / f"{n}.png", np.zeros((4, 4), np.uint8))
    ...     write_image(d / "labels" / f"{n}.png", np.zeros((4, 4), np.uint8))
    >>> layout, pairs = discover(d)
    >>> layout, [p.name for p in pairs]
    ('folders', ['a2', 'a10'])
    """
    root = Path(path)
    if not root.exists():
        raise InputError(f"{root}: dataset path not found")
    if labels is not None:
        lab = Path(labels)
        if not lab.exists():
            raise InputError(f"{lab}: label path not found")
        if root.is_dir() and lab.is_dir():
            return "folders", _pair_by_stem(root, lab)
        if root.is_dir() != lab.is_dir():
            raise InputError(f"{lab}: images and labels must both be files or both be folders")
        return "pair", [Pair(_stem(root), root, lab)]
    if root.is_file() or root.suffix.lower() == ".zarr":
        raise InputError(f"{root}: an image file needs its labels (data.labels / --labels)")
    img_dir, lab_dir = _find_dir(root, IMAGE_DIRS), _find_dir(root, LABEL_DIRS)
    if img_dir is not None and lab_dir is not None:
        return "folders", _pair_by_stem(img_dir, lab_dir)
    if _is_ctc(root):
        pairs = _ctc_pairs(root)
        if not pairs:
            raise InputError(f"{root}: Cell Tracking Challenge layout without any man_seg*.tif ground truth")
        return "ctc", pairs
    if img_dir is not None:
        raise InputError(f"{root}: found {img_dir.name}/ but no label folder ({', '.join(LABEL_DIRS)})")
    return "flat", _flat_pairs(root)


