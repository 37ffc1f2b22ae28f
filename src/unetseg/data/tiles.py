"""The random tile sampler: reproducible training tiles with augmentation and biased centres."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..augment import AugmentConfig, Transform, apply_transform, sample_transform
from ..errors import ConfigError, InputError
from ..losses import class_skeletons
from .targets import LabeledImage


class TileDataset(Dataset):
    """Random training tiles: input of the model's valid size, target crops of its output size.

    Each index draws one sample from a generator seeded by ``(seed, rank, index)``, so samples
    are reproducible, differ across data-loader workers (different indices) and across
    distributed ranks, and do not depend on the number of workers; the training loader
    (:func:`~unetseg.data.loader.train_loader`) gives every step new indices.

    Parameters
    ----------
    images : sequence of LabeledImage
    input_shape, output_shape : sequence of int
        The model's input tile and the output it produces (``output == input`` for padded
        models). The output covers the centre of the input.
    augment : AugmentConfig or None
        None = no augmentation (tiles are plain crops).
    samples_per_epoch : int
        Total over all ranks; each rank gets ``samples_per_epoch // world_size``.
    foreground_bias, border_bias : float
        Probability that a tile is centred on a random foreground pixel / on a pixel with a
        high border weight (``w > border_threshold``) instead of uniformly.
    seed, rank, world_size : int
    skeleton_classes : sequence of int
        2D only: each tile also carries ``skeleton``, the tubed skeletons of these classes
        (:func:`~unetseg.losses.class_skeletons`) that the Skeleton Recall term recalls, made here
        in the data loader rather than in the training step.

    Examples
    --------
    >>> img = LabeledImage("a", np.zeros((1, 40, 40), np.float32), np.zeros((40, 40), np.int64),
    ...                    np.ones((40, 40), np.float32), np.zeros((40, 40), bool))
    >>> ds = TileDataset([img], (36, 36), (20, 20), samples_per_epoch=4)
    >>> s = ds[0]
    >>> tuple(s["image"].shape), tuple(s["target"].shape), s["mask"].dtype
    ((1, 36, 36), (20, 20), torch.bool)
    """

    def __init__(
        self,
        images: Sequence[LabeledImage],
        input_shape: Sequence[int],
        output_shape: Sequence[int],
        *,
        augment: AugmentConfig | None = None,
        samples_per_epoch: int = 100,
        foreground_bias: float = 0.0,
        border_bias: float = 0.0,
        border_threshold: float = 3.0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        skeleton_classes: Sequence[int] = (),
    ) -> None:
        if not images:
            raise InputError("no training images to sample tiles from")
        self.images = list(images)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.output_shape = tuple(int(s) for s in output_shape)
        nd = len(self.input_shape)
        if len(self.output_shape) != nd or any(o > i or (i - o) % 2 for i, o in zip(self.input_shape, self.output_shape)):
            raise ConfigError(f"output shape {self.output_shape} is not a centred crop of input shape {self.input_shape}")
        for im in self.images:
            if im.target.ndim != nd:
                raise InputError(f"{im.name}: {im.target.ndim}D sample for {nd}D tiles")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} outside world size {world_size}")
        if foreground_bias < 0 or border_bias < 0 or foreground_bias + border_bias > 1:
            raise ConfigError("foreground_bias and border_bias must be >= 0 and sum to at most 1")
        if skeleton_classes and nd != 2:
            raise ConfigError(f"loss.skeleton_classes: Skeleton Recall is 2D, these tiles are {nd}D")
        self.skeleton_classes = tuple(int(c) for c in skeleton_classes)
        self.augment = augment
        self.samples_per_epoch = int(samples_per_epoch)
        self.foreground_bias = float(foreground_bias)
        self.border_bias = float(border_bias)
        self.border_threshold = float(border_threshold)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        sizes = np.array([im.target.size for im in self.images], dtype=np.float64)
        self._p = sizes / sizes.sum()
        self._fg: dict[int, np.ndarray] = {}
        self._border: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return max(1, self.samples_per_epoch // self.world_size)

    def _candidates(self, which: dict[int, np.ndarray], i: int, kind: str) -> np.ndarray:
        if i not in which:
            im = self.images[i]
            sel = (im.target > 0) if kind == "fg" else (im.weight > self.border_threshold)
            which[i] = np.flatnonzero(sel & ~im.ignore)
        return which[i]

    def _center(self, rng: np.random.Generator, i: int) -> np.ndarray:
        im = self.images[i]
        shape = im.spatial_shape
        u = rng.random()
        pool = None
        if u < self.foreground_bias:
            pool = self._candidates(self._fg, i, "fg")
        elif u < self.foreground_bias + self.border_bias:
            pool = self._candidates(self._border, i, "border")
        # Centres sit on the tile's pixel lattice: for an even tile size the centre is between
        # two pixels, so it is a half-integer and every sampled position stays on the grid.
        half = np.array([((o - 1) / 2.0) % 1.0 for o in self.output_shape])
        if pool is not None and pool.size:
            return np.array(np.unravel_index(int(pool[rng.integers(pool.size)]), shape), dtype=np.float64) + half
        c = []
        for n, o in zip(shape, self.output_shape):
            lo = int(rng.integers(0, n - o + 1)) if n >= o else (n - o) // 2
            c.append(lo + (o - 1) / 2.0)
        return np.array(c, dtype=np.float64)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """One random tile as a dict of NumPy arrays (see :meth:`__getitem__`)."""
        i = int(rng.choice(len(self.images), p=self._p)) if len(self.images) > 1 else 0
        im = self.images[i]
        center = self._center(rng, i)
        if self.augment is not None:
            t = sample_transform(rng, self.input_shape, self.augment)
        else:
            t = Transform.identity(self.input_shape)
        if t.is_geometric_identity:
            out = _crop(im, center, self.input_shape, self.output_shape)
            if self.augment is not None:
                from ..augment import apply_gray

                out["image"] = apply_gray(out["image"], t)
            return out
        out = apply_transform(t, im.image, im.target, im.weight, im.ignore, center=center, out_shape=self.output_shape)
        return {"image": out["image"], "target": out["labels"], "weight": out["weight"], "mask": ~out["mask"]}

    def unaugmented(self) -> TileDataset:
        """The same samples without augmentation: item ``i`` is the plain crop of the image and
        centre that item ``i`` here is drawn around, as inference sees the images.

        Batch-norm statistics are recomputed over these (:mod:`unetseg.train.batchnorm`): over
        tiles with the intensity augmentation (brightness, contrast, gamma, noise) they are not
        those of real images.

        Examples
        --------
        >>> img = LabeledImage("a", np.arange(1600, dtype=np.float32).reshape(1, 40, 40), np.zeros((40, 40), np.int64),
        ...                    np.ones((40, 40), np.float32), np.zeros((40, 40), bool))
        >>> plain = TileDataset([img], (20, 20), (20, 20), augment=AugmentConfig()).unaugmented()
        >>> plain.augment is None, float(plain[0]["image"][0, 0, 1] - plain[0]["image"][0, 0, 0])
        (True, 1.0)
        """
        plain = copy.copy(self)
        plain.augment, plain.skeleton_classes = None, ()
        return plain

    def rng_for(self, index: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, self.rank, self.world_size, int(index)]))

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Tensors ``image`` (C, *in) float32, ``target`` (*out) int64, ``weight`` (*out) float32,
        ``mask`` (*out) bool (True = counts in the loss) and, with ``skeleton_classes``,
        ``skeleton`` (K, *out) bool."""
        s = self.sample(self.rng_for(index))
        out = {
            "image": torch.from_numpy(np.ascontiguousarray(s["image"], dtype=np.float32)),
            "target": torch.from_numpy(np.ascontiguousarray(s["target"], dtype=np.int64)),
            "weight": torch.from_numpy(np.ascontiguousarray(s["weight"], dtype=np.float32)),
            "mask": torch.from_numpy(np.ascontiguousarray(s["mask"], dtype=bool)),
        }
        if self.skeleton_classes:
            out["skeleton"] = torch.from_numpy(class_skeletons(out["target"].numpy(), out["mask"].numpy(), classes=self.skeleton_classes))
        return out


def _crop(im: LabeledImage, center: np.ndarray, in_shape: Sequence[int], out_shape: Sequence[int]) -> dict[str, Any]:
    """Exact integer crop (mirrored beyond the border) for an untransformed tile."""
    from ..augment import _mirror_index

    shape = im.spatial_shape
    lo = [int(round(c - (n - 1) / 2.0)) for c, n in zip(center, in_shape)]
    idx_in = [_mirror_index(np.arange(a, a + n, dtype=np.float64), s) for a, n, s in zip(lo, in_shape, shape)]
    idx_out = [ix[(n - m) // 2 : (n - m) // 2 + m] for ix, n, m in zip(idx_in, in_shape, out_shape)]
    gin, gout = np.ix_(*idx_in), np.ix_(*idx_out)
    return {
        "image": im.image[(slice(None), *gin)],
        "target": im.target[gout],
        "weight": im.weight[gout],
        "mask": ~im.ignore[gout],
    }


