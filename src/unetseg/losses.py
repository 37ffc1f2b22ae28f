"""Training losses: the paper's weighted soft-max cross-entropy, soft Dice, BCE and Dice + CE,
and the Skeleton Recall term (Kirchhoff et al., ECCV 2024) for thin structures such as membranes.

Every loss takes ``logits`` of shape ``(N, C, *spatial)`` and a batch of per-pixel tensors of the
output's spatial shape: ``target`` (int64 class indices), optionally ``weight`` (float, the paper's
weight map ``w(x)``) and ``mask`` (bool, ``True`` where a pixel counts; ``False`` for ignored
pixels such as unlabelled regions or the border the network cannot see).

Reduction
---------
The paper's energy ``E = sum_x w(x) log p_{l(x)}(x)`` is a **sum** over pixels. ``reduction``
chooses how that sum is scaled:

``"sum"``
    The paper's energy per image: sum over the valid pixels of each image, averaged over the
    batch. Gradients grow with the tile area, so the learning rate must shrink with it.
``"mean"``
    The sum divided by the number of valid pixels (what most libraries do). Same direction as
    ``"sum"``; with plain SGD, ``lr_mean = lr_sum * P`` gives identical updates, where ``P`` is
    the number of valid output pixels per image (for example 388 x 388 = 150,544).
``"weight"``
    The sum divided by the sum of the weights of the valid pixels. Equal to ``"mean"`` without a
    weight map; with one it keeps the loss scale independent of ``w0`` and of how many borders a
    tile holds.

See ``docs/training.md`` for how this relates to the paper's SGD recipe.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from skimage.morphology import dilation, skeletonize
from torch import Tensor

from .errors import ConfigError

Reduction = Literal["sum", "mean", "weight"]
REDUCTIONS = ("sum", "mean", "weight")


def _check(logits: Tensor, target: Tensor) -> None:
    if logits.dim() < 3:
        raise ValueError(f"logits must be (N, C, *spatial), got shape {tuple(logits.shape)}")
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)} (expected (N, *spatial))")


def _reduce(per_pixel: Tensor, weight: Tensor | None, mask: Tensor | None, reduction: str) -> Tensor:
    """Weight and mask an (N, *spatial) per-pixel loss, then reduce it."""
    if weight is not None:
        per_pixel = per_pixel * weight.float()
    if mask is not None:
        per_pixel = per_pixel * mask
    if reduction not in REDUCTIONS:
        raise ConfigError(f"loss.reduction {reduction!r}: expected one of {', '.join(REDUCTIONS)}")
    if reduction == "sum":
        return per_pixel.sum() / per_pixel.shape[0]
    if reduction == "mean":
        count = mask.sum() if mask is not None else torch.tensor(float(per_pixel.numel()), device=per_pixel.device)
        return per_pixel.sum() / count.clamp_min(1)
    denom = weight if weight is not None else torch.ones_like(per_pixel)
    if mask is not None:
        denom = denom * mask
    return per_pixel.sum() / denom.sum().clamp_min(1e-12)


def weighted_cross_entropy(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    mask: Tensor | None = None,
    *,
    reduction: Reduction = "mean",
) -> Tensor:
    """The paper's energy: pixel-wise soft-max cross-entropy weighted by ``weight``.

    Parameters
    ----------
    logits : Tensor
        ``(N, C, *spatial)`` network output (before soft-max).
    target : Tensor
        ``(N, *spatial)`` int64 class indices. Values outside ``[0, C)`` must be masked out.
    weight : Tensor, optional
        ``(N, *spatial)`` per-pixel weights (the weight map). ``None`` weighs every pixel 1.
    mask : Tensor, optional
        ``(N, *spatial)`` bool, ``False`` where the pixel is ignored.
    reduction : {"sum", "mean", "weight"}
        See the module docstring.

    Returns
    -------
    Tensor
        Scalar loss (float32 even under autocast).

    Examples
    --------
    >>> logits = torch.zeros(1, 2, 2, 2)
    >>> target = torch.tensor([[[0, 1], [1, 0]]])
    >>> round(float(weighted_cross_entropy(logits, target)), 4)  # log(2)
    0.6931
    >>> round(float(weighted_cross_entropy(logits, target, reduction="sum")), 4)  # 4 log(2)
    2.7726
    """
    _check(logits, target)
    safe_target = target
    if mask is not None:
        safe_target = torch.where(mask, target, torch.zeros_like(target))
    per_pixel = F.cross_entropy(logits.float(), safe_target, reduction="none")
    return _reduce(per_pixel, weight, mask, reduction)


def binary_cross_entropy(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    mask: Tensor | None = None,
    *,
    reduction: Reduction = "mean",
) -> Tensor:
    """Sigmoid binary cross-entropy (the padded U-Net variant: one output channel + sigmoid).

    ``logits`` has one channel (its sigmoid is the foreground probability) or two (then the
    foreground logit is ``logits[:, 1] - logits[:, 0]``, which makes BCE identical to the
    two-class soft-max CE). ``target`` holds 0/1.

    Examples
    --------
    >>> logits = torch.zeros(1, 1, 2, 2)
    >>> round(float(binary_cross_entropy(logits, torch.ones(1, 2, 2, dtype=torch.long))), 4)
    0.6931
    """
    _check(logits, target)
    if logits.shape[1] == 1:
        fg = logits[:, 0]
    elif logits.shape[1] == 2:
        fg = logits[:, 1] - logits[:, 0]
    else:
        raise ValueError(f"binary_cross_entropy needs 1 or 2 channels, got {logits.shape[1]}")
    per_pixel = F.binary_cross_entropy_with_logits(fg.float(), (target > 0).float(), reduction="none")
    return _reduce(per_pixel, weight, mask, reduction)


def soft_dice_loss(
    logits: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    *,
    classes: tuple[int, ...] | None = None,
    smooth: float = 1.0,
) -> Tensor:
    """``1 - mean over classes of the soft Dice``, pooled over the batch.

    Soft Dice of class ``c`` = ``(2 sum p_c g_c + smooth) / (sum p_c + sum g_c + smooth)`` over
    the unmasked pixels, with ``p`` the soft-max (sigmoid for one channel) probabilities and
    ``g`` the one-hot target. ``classes`` picks which classes are averaged (default: all; for one
    channel: the foreground).

    Examples
    --------
    >>> target = torch.tensor([[[0, 1], [1, 0]]])
    >>> perfect = torch.stack([(target == 0), (target == 1)], 1).float() * 40 - 20
    >>> float(soft_dice_loss(perfect, target)) < 1e-6
    True
    """
    _check(logits, target)
    logits = logits.float()
    if logits.shape[1] == 1:
        probs = torch.sigmoid(logits)
        onehot = (target > 0).unsqueeze(1).float()
    else:
        probs = torch.softmax(logits, dim=1)
        safe = target if mask is None else torch.where(mask, target, torch.zeros_like(target))
        onehot = F.one_hot(safe.clamp(0, logits.shape[1] - 1), logits.shape[1]).movedim(-1, 1).float()
    if mask is not None:
        m = mask.unsqueeze(1).float()
        probs = probs * m
        onehot = onehot * m
    dims = [0] + list(range(2, logits.dim()))
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + smooth) / (denom + smooth)
    if classes is not None:
        dice = dice[list(classes)]
    return 1 - dice.mean()


def tubed_skeleton(structure: np.ndarray, *, tube: int = 2) -> np.ndarray:
    """The skeleton of a 2D binary ``structure``, dilated ``tube`` times with a 3x3 cross.

    What Skeleton Recall measures against: the centre lines of a thin structure (a membrane),
    thickened a little so that a prediction one pixel off the centre still covers them.

    Examples
    --------
    >>> band = np.zeros((7, 9), bool); band[2:5, :] = True
    >>> np.flatnonzero(tubed_skeleton(band, tube=0)[:, 4]).tolist()  # the centre line, row 3
    [3]
    >>> int(tubed_skeleton(band, tube=1)[:, 4].sum())  # the line grows by one pixel each side
    3
    """
    if structure.ndim != 2:
        raise ValueError(f"tubed_skeleton needs a 2D mask, got shape {structure.shape}")
    skeleton = skeletonize(structure.astype(bool))
    for _ in range(tube):
        skeleton = dilation(skeleton)
    return skeleton & structure.astype(bool) if tube else skeleton


def class_skeletons(target: np.ndarray, valid: np.ndarray | None = None, *, classes: tuple[int, ...], tube: int = 2) -> np.ndarray:
    """The :func:`tubed_skeleton` of each class of ``classes`` in one 2D ``target``, restricted to
    the ``valid`` pixels: a bool array ``(len(classes), H, W)``, what Skeleton Recall recalls.

    The training tiles carry it (``TileDataset(skeleton_classes=...)``), so it is made in the
    data loader instead of the training step.

    Examples
    --------
    >>> target = np.ones((7, 9), np.int64); target[2:5, :] = 0
    >>> s = class_skeletons(target, classes=(0,), tube=0)
    >>> s.shape, np.flatnonzero(s[0, :, 4]).tolist()
    ((1, 7, 9), [3])
    """
    ok = np.ones(target.shape, bool) if valid is None else np.asarray(valid, dtype=bool)
    return np.stack([tubed_skeleton((target == c) & ok, tube=tube) for c in classes])


def skeleton_recall_loss(logits: Tensor, target: Tensor, mask: Tensor | None = None, *, classes: tuple[int, ...], smooth: float = 1.0,
                         skeletons: Tensor | None = None) -> Tensor:
    """``1 -`` the soft recall of the tubed ground-truth skeletons of ``classes``, pooled over the batch.

    For each class ``c``: ``(sum p_c S_c + smooth) / (sum S_c + smooth)``, with ``S_c`` the
    :func:`tubed_skeleton` of the (unmasked) pixels of class ``c`` and ``p_c`` the soft-max
    probability; the loss is 1 minus its mean over ``classes``. A gap in a predicted membrane
    lowers the recall of its skeleton however thin the gap, which is what the ISBI ranking
    metrics (V_rand, warping error) punish and per-pixel losses barely see. ``skeletons``
    (``(N, len(classes), H, W)``, :func:`class_skeletons` of each item, as the training tiles
    carry them) are used as given; without them they are computed here from the target.

    Examples
    --------
    >>> target = torch.ones(1, 8, 8, dtype=torch.long); target[0, 3:5, :] = 0
    >>> sure = F.one_hot(target, 2).movedim(-1, 1).float() * 40 - 20
    >>> float(skeleton_recall_loss(sure, target, classes=(0,))) < 1e-6
    True
    >>> gap = sure.clone(); gap[0, :, :, 4] = torch.tensor([-20.0, 20.0])[:, None]  # one column missed
    >>> round(float(skeleton_recall_loss(gap, target, classes=(0,), smooth=0)), 3)  # 1 of 8 columns
    0.125
    """
    _check(logits, target)
    if logits.dim() != 4:
        raise ValueError(f"skeleton recall is 2D: logits must be (N, C, H, W), got shape {tuple(logits.shape)}")
    if skeletons is None:
        labels = target.detach().cpu().numpy()
        valid = [None] * len(labels) if mask is None else mask.detach().cpu().numpy()
        skeletons = torch.from_numpy(np.stack([class_skeletons(lab, ok, classes=classes) for lab, ok in zip(labels, valid)]))
    expected = (logits.shape[0], len(classes), *logits.shape[2:])
    if tuple(skeletons.shape) != expected:
        raise ValueError(f"skeletons of shape {tuple(skeletons.shape)} for {len(classes)} class(es): expected {expected}")
    skel = skeletons.to(logits.device, torch.float32)
    probs = torch.softmax(logits.float(), dim=1)[:, list(classes)]
    recall = ((probs * skel).sum((0, 2, 3)) + smooth) / (skel.sum((0, 2, 3)) + smooth)
    return 1 - recall.mean()


def affinity_loss(logits: Tensor, target: Tensor, mask: Tensor | None = None, *, offsets: tuple[tuple[int, ...], ...],
                  foreground: int = 1) -> Tensor:
    """Binary cross-entropy of affinity logits ``(N, K, *spatial)`` against the affinities of the
    target's objects, averaged over the pairs that count (both pixels in the tile and unmasked).

    The objects are the connected parts (face-connected) of the target's ``foreground`` class
    (ISBI 2012: the cells between the membranes), labelled per tile on the CPU inside the training
    step; two pixels have affinity 1 when they lie in the same object
    (:func:`unetseg.affinities.affinity_targets`).

    Examples
    --------
    >>> target = torch.ones(1, 6, 6, dtype=torch.long); target[0, :, 2] = 0  # two cells, one membrane
    >>> offs = ((0, -2), (0, 2), (-2, 0), (2, 0))
    >>> round(float(affinity_loss(torch.zeros(1, 4, 6, 6), target, offsets=offs)), 4)  # logits 0: log 2
    0.6931
    """
    from scipy import ndimage as ndi

    from .affinities import affinity_targets

    _check(logits[:, :1], target)
    labels = target.detach().cpu().numpy()
    valid = np.ones(labels.shape, bool) if mask is None else mask.detach().cpu().numpy().astype(bool)
    faces = ndi.generate_binary_structure(labels.ndim - 1, 1)
    pairs = [affinity_targets(ndi.label(lab == foreground, structure=faces)[0], offsets, ok) for lab, ok in zip(labels, valid)]
    aff = torch.from_numpy(np.stack([a for a, _ in pairs])).to(logits.device)
    counts = torch.from_numpy(np.stack([m for _, m in pairs])).to(logits.device, torch.float32)
    per_pair = F.binary_cross_entropy_with_logits(logits.float(), aff, reduction="none")
    return (per_pair * counts).sum() / counts.sum().clamp_min(1)


@dataclass(frozen=True)
class LossConfig:
    """Which loss to train with.

    Attributes
    ----------
    name : {"ce", "bce", "dice", "dice_ce"}
        ``ce`` is the paper's weighted soft-max cross-entropy.
    reduction : {"sum", "mean", "weight"}
        How the pixel sum is scaled (see :mod:`unetseg.losses`).
    use_weight_map : bool
        Multiply the cross-entropy by the batch's ``weight`` map (the paper's ``w(x)``).
    dice_weight, ce_weight : float
        Mix of ``dice_ce``: ``ce_weight * CE + dice_weight * Dice``.
    dice_classes : list of int, optional
        Classes averaged in the Dice term (default: all).
    dice_smooth : float
        Additive smoothing of the soft Dice.
    skeleton_weight : float
        Weight of the Skeleton Recall term added to the loss (0: off; its authors use 1).
    skeleton_classes : list of int, optional
        The classes whose skeletons are recalled (the term is their mean). ISBI 2012 recipe:
        ``[0, 1]``: the membrane's centre lines (gaps merge cells) and the cells' (a false
        membrane across a cell splits it).
    affinity_weight : float
        Weight of :func:`affinity_loss` for a network with ``affinity_offsets`` (ignored without).
    affinity_class : int
        The class whose connected parts are the objects the affinities separate (ISBI: 1, cells).
    """

    name: Literal["ce", "bce", "dice", "dice_ce"] = "ce"
    reduction: Literal["sum", "mean", "weight"] = "mean"
    use_weight_map: bool = True
    dice_weight: float = 1.0
    ce_weight: float = 1.0
    dice_classes: list[int] | None = None
    dice_smooth: float = 1.0
    skeleton_weight: float = 0.0
    skeleton_classes: list[int] | None = None
    affinity_weight: float = 1.0
    affinity_class: int = 1

    @property
    def recalled_classes(self) -> tuple[int, ...]:
        """The classes whose skeletons the Skeleton Recall term recalls; empty when it is off.

        Examples
        --------
        >>> LossConfig(skeleton_weight=1.0, skeleton_classes=[0, 1]).recalled_classes, LossConfig().recalled_classes
        ((0, 1), ())
        """
        return tuple(self.skeleton_classes or ()) if self.skeleton_weight > 0 else ()


LossFn = Callable[[Tensor, Mapping[str, Tensor]], Tensor]


def build_loss(cfg: LossConfig, *, num_classes: int | None = None, affinity_offsets: tuple[tuple[int, ...], ...] = ()) -> LossFn:
    """A function ``loss(logits, batch)`` for ``cfg``; ``batch`` holds target, weight and mask.

    With ``affinity_offsets`` the logits hold ``num_classes`` class channels and then one per
    offset: the class losses see the former, :func:`affinity_loss` (times ``affinity_weight``)
    the latter.

    Examples
    --------
    >>> fn = build_loss(LossConfig(name="dice_ce"))
    >>> batch = {"target": torch.zeros(1, 4, 4, dtype=torch.long)}
    >>> float(fn(torch.zeros(1, 2, 4, 4), batch)) > 0
    True
    """
    if cfg.name not in ("ce", "bce", "dice", "dice_ce"):
        raise ConfigError(f"loss.name {cfg.name!r}: expected ce, bce, dice or dice_ce")
    if cfg.reduction not in REDUCTIONS:
        raise ConfigError(f"loss.reduction {cfg.reduction!r}: expected one of {', '.join(REDUCTIONS)}")
    if cfg.skeleton_weight < 0 or (cfg.skeleton_weight > 0 and not cfg.skeleton_classes):
        raise ConfigError("loss.skeleton_weight needs loss.skeleton_classes (the thin-structure classes) and must be >= 0")
    if cfg.affinity_weight < 0 or cfg.affinity_class < 0:
        raise ConfigError(f"loss.affinity_weight and loss.affinity_class must be >= 0 (got {cfg.affinity_weight}, {cfg.affinity_class})")
    classes = tuple(cfg.dice_classes) if cfg.dice_classes is not None else None
    base = _base_loss(cfg, classes)
    if cfg.recalled_classes:
        base = _with_skeleton(base, cfg.skeleton_weight, cfg.recalled_classes)
    if not affinity_offsets:
        return base
    c = int(num_classes or 0)
    if c < 1:
        raise ValueError("build_loss: affinity_offsets need num_classes (the class channels before them)")

    def with_affinities(logits: Tensor, batch: Mapping[str, Tensor]) -> Tensor:
        aff = affinity_loss(logits[:, c:], batch["target"], batch.get("mask"), offsets=affinity_offsets, foreground=cfg.affinity_class)
        return base(logits[:, :c], batch) + cfg.affinity_weight * aff

    return with_affinities


def _with_skeleton(base: LossFn, weight: float, classes: tuple[int, ...]) -> LossFn:
    def with_skeleton(logits: Tensor, batch: Mapping[str, Tensor]) -> Tensor:
        recall = skeleton_recall_loss(logits, batch["target"], batch.get("mask"), classes=classes, skeletons=batch.get("skeleton"))
        return base(logits, batch) + weight * recall

    return with_skeleton


def _base_loss(cfg: LossConfig, classes: tuple[int, ...] | None) -> LossFn:
    def loss(logits: Tensor, batch: Mapping[str, Tensor]) -> Tensor:
        target = batch["target"]
        mask = batch.get("mask")
        weight = batch.get("weight") if cfg.use_weight_map else None
        if cfg.name == "ce":
            return weighted_cross_entropy(logits, target, weight, mask, reduction=cfg.reduction)
        if cfg.name == "bce":
            return binary_cross_entropy(logits, target, weight, mask, reduction=cfg.reduction)
        dice = soft_dice_loss(logits, target, mask, classes=classes, smooth=cfg.dice_smooth)
        if cfg.name == "dice":
            return dice
        ce = weighted_cross_entropy(logits, target, weight, mask, reduction=cfg.reduction)
        return cfg.ce_weight * ce + cfg.dice_weight * dice

    return loss
