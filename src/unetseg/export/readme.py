"""The human-facing parts of a bioimage.io package, all made from the model card: README, cover, tags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..models.card import ModelCard

COVER_SIDE = 256  # each half of the 2:1 cover


def summary(card: ModelCard, network: nn.Module) -> str:
    """One sentence for the description field.

    Examples
    --------
    >>> from unetseg.models import UNet
    >>> summary(ModelCard(), UNet(1, 2, depth=2, base_channels=2))
    'U-Net (Ronneberger et al. 2015, valid convolutions) trained with unetseg: per-pixel probabilities of background, foreground.'
    """
    padding = getattr(network, "padding", "same")
    kind = "instances (objects split from the foreground)" if card.is_instances else "per-pixel probabilities"
    arch = "U-Net (Ronneberger et al. 2015, valid convolutions)" if padding == "valid" else f"{type(network).__name__} (padded)"
    return f"{arch} trained with unetseg: {kind} of {', '.join(card.classes)}."


def tags(card: ModelCard, network: nn.Module) -> list[str]:
    dims = int(getattr(network, "spatial_dims", 2))
    return ["unet", "segmentation", f"{dims}d", "unetseg", "pytorch"] + (["instance-segmentation"] if card.is_instances else [])


def readme_text(name: str, card: ModelCard, meta: dict[str, Any], network: nn.Module) -> str:
    """README.md: what the model segments, its data, how it was trained, what its validation reached."""
    t = card.training
    shift = list(card.output_shift) if card.output_shift else None
    lines = [f"# {name}", "", summary(card, network), "",
             "## Input and output", "",
             f"- input: {getattr(network, 'in_channels', 1)} channel(s), normalised per image and channel as "
             f"`{dict(card.normalization)}`; tiles of the sizes the description lists (the network's valid sizes)",
             f"- output: probabilities of {', '.join(f'{i} = {c}' for i, c in enumerate(card.classes))}; "
             f"foreground class {card.foreground_class}"]
    if getattr(network, "padding", "same") == "valid":
        lines.append(f"- valid convolutions: the output is the input minus {network.halo} px on each side (the "
                     "description's size offset); consumers tile with overlap from those sizes, which is seamless")
    lines += ["", "## Training", "",
              f"- data: {t.data or 'not recorded'}; {len(t.train)} training and {len(t.val)} validation image(s)",
              f"- tile {list(t.tile) if t.tile else '?'}, precision {t.precision or '?'}, weights from step "
              f"{t.step if t.step is not None else '?'}" + (f", started from {t.init}" if t.init else ""),
              f"- unetseg {t.unetseg_version or meta.get('unetseg_version') or '?'}, architecture `{meta['arch']}` "
              f"with `{dict(meta['args'])}`"]
    lines += ["", "## Validation", "",
              ("Validation metrics of these weights (unetseg's validation during training): "
               + ", ".join(f"{k} {v:.4f}" for k, v in t.metrics.items())) if t.metrics else
              "No validation images were used in training; see the recipe's cross-validation (`unetseg cv`).",
              "The package's test tensors were computed by bioimageio.core's own pipeline and checked against "
              "unetseg's prediction (maximum difference 1e-4).",
              "", "## What the description cannot express", "",
              f"- output shift {shift or 'none'}: unetseg shifts the probabilities by this sub-pixel offset (calibrated on "
              "the training images) after prediction; other consumers do not",
              "- test-time augmentation (8 dihedral transforms): `unetseg predict --tta`; the validation numbers above "
              "are without it unless the recipe says otherwise",
              f"- instances: `unetseg predict --output labels` uses split `{card.postprocess.split}`, minimum size "
              f"{card.postprocess.min_size}, threshold {card.postprocess.threshold}"
              + (f", objects at the image's edge under {card.postprocess.edge_min_size} pixels removed"
                 if card.postprocess.edge_min_size > 1 else ""),
              *([f"- hole filling: unetseg fills dark structures smaller than {card.postprocess.fill_holes} pixels in "
                 "the foreground map (area closing) before writing any output; other consumers do not"]
                if card.postprocess.fill_holes > 1 else []),
              *([f"- closed boundaries: unetseg merges regions of the foreground map whose boundary's median probability "
                 f"is above {card.postprocess.agglomerate} (waterz agglomeration) and draws the lines between the rest "
                 "into the map before writing any output; other consumers do not"]
                if card.postprocess.agglomerate > 0 else []),
              "", "Both are stored under `config.unetseg`; `unetseg predict --model THIS.zip` restores them.", "",
              "## Citation", "",
              "Ronneberger, Fischer, Brox: U-Net: Convolutional Networks for Biomedical Image Segmentation, "
              "MICCAI 2015, doi:10.1007/978-3-319-24574-4_28", ""]
    return "\n".join(lines)


def environment_yaml(version: str | None) -> str:
    """The conda environment the ``pytorch_state_dict`` weights need (unetseg provides the architecture)."""
    import torch

    pin = f"unetseg=={version}" if version else "unetseg"
    return ("name: unetseg\nchannels: [conda-forge]\ndependencies:\n  - python=3.11\n  - pip\n  - pip:\n"
            f"    - {pin}\n    - torch=={torch.__version__.split('+')[0]}\n")


def validation_overlay(source: str | Path) -> Path | None:
    """The first validation overlay training drew in a run folder (``val/NAME.png``), if any."""
    folder = Path(source) / "val"
    found = sorted(folder.glob("*.png")) if Path(source).is_dir() and folder.is_dir() else []
    return found[0] if found else None


def cover_from_overlay(path: Path, overlay: Path, width: int = 2 * COVER_SIDE) -> Path:
    """A 2:1 PNG cover (``width`` x ``width / 2``, white margins) from a training overlay figure."""
    from PIL import Image

    with Image.open(overlay) as figure:
        figure = figure.convert("RGB")
        figure.thumbnail((width, width // 2))
        cover = Image.new("RGB", (width, width // 2), "white")
        cover.paste(figure, ((width - figure.width) // 2, (width // 2 - figure.height) // 2))
    cover.save(path, optimize=True)
    return path


def write_cover(path: Path, raw: np.ndarray, probs: np.ndarray, card: ModelCard) -> Path:
    """A 2:1 PNG: the input's centre (the output's footprint) | the foreground probability
    (the cover of a model file that has no training overlay beside it)."""
    from PIL import Image

    image = raw[0, 0] if raw.ndim == 4 else raw[0, 0, raw.shape[2] // 2]
    prob = probs[0, card.foreground_class if probs.shape[1] > 1 else 0]
    prob = prob if prob.ndim == 2 else prob[prob.shape[0] // 2]
    off = [(a - b) // 2 for a, b in zip(image.shape, prob.shape)]
    image = image[off[0]:off[0] + prob.shape[0], off[1]:off[1] + prob.shape[1]]
    lo, hi = np.percentile(image, (1, 99.8))
    grey = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)
    halves = [Image.fromarray((a * 255).astype(np.uint8)).resize((COVER_SIDE, COVER_SIDE)) for a in (grey, np.clip(prob, 0, 1))]
    cover = Image.new("L", (2 * COVER_SIDE, COVER_SIDE))
    cover.paste(halves[0], (0, 0))
    cover.paste(halves[1], (COVER_SIDE, 0))
    cover.save(path)
    return path
