"""The :class:`Predictor`: a network and its model card, prepared once for inference.

Every entry point goes through it (nnU-Net's ``nnUNetPredictor``): the CLI and ``predict_file``
build one from a run folder or model file, validation and calibration during training build one
from the module being trained, the demo and the benchmarks from their models. It holds its own
copy of the network in eval mode, on its device, in its memory format, so the model it was
given is never changed (tested), and threads (Dask blocks) can share it.

The functions :func:`predict_image` and :func:`predict_into` are the same operations for a
plain module (or a Predictor) in one call.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import tiling
from ..errors import InputError
from ..models.card import ModelCard
from ..runtime import configure_allocator, memory_format, resolve_device, resolve_precision
from .backends import backend_network
from .engine import as_channels_first, auto_tile_shape, prepared_copy, resolve_channels_last, run_plan, tta_forward
from .shift import check_output_shift

CARD = "card"  # default of ``output_shift``: the shift the model card records


class Predictor:
    """A network prepared for overlap-tile inference, with its :class:`~unetseg.models.ModelCard`.

    Parameters
    ----------
    model_or_path : nn.Module, Predictor or path
        A module (copied; its card is ``card`` or a default one), a run folder, a model file or
        a ``.zip`` bioimage.io package exported by unetseg (:mod:`unetseg.export.package`).
    device : str or torch.device, optional
        ``"cpu"``, ``"cuda[:N]"`` or ``None``/``"auto"``.
    precision : {"auto", "fp32", "bf16", "fp16"}
        Autocast precision; ``auto`` picks bf16 where the hardware runs it natively and, on a
        CPU, measurably faster than fp32 (:func:`unetseg.runtime.resolve_precision`).
    channels_last : bool or "auto"
        Memory format of the network's copy (``auto``: channels-last on CUDA and in 2D).
    card : ModelCard, optional
        The card of a module (a model file brings its own).
    backend : {"torch", "compile", "int8", "onnxruntime", "auto"}
        Where the forward pass runs (:mod:`unetseg.inference.backends`): eager PyTorch,
        ``torch.compile`` (same precision), int8 (CPU; ``precision`` becomes ``"int8"``; needs
        the ``fast`` extra), or ONNX Runtime (CPU and fp32; needs the ``export`` extra); ``auto``:
        for a run folder, the backend (and, with ``precision="auto"``, the precision) that
        ``unetseg check-backend`` measured fastest within the accuracy rule on this CPU, torch
        version and weights (:mod:`unetseg.backend_check`); eager fp32 (with ``precision="auto"``)
        without such a check, a module included: no lossy path is used unmeasured.
    calibration : list of arrays, optional
        ``int8`` only: ``(channels, *spatial)`` images, normalised as the model expects, that
        calibrate the activation ranges (tiles of the training images are the right choice).

    Examples
    --------
    >>> from unetseg.models import UNet
    >>> net = UNet(1, 2, base_channels=2, depth=2)
    >>> p = Predictor(net, device="cpu")
    >>> p.predict(np.zeros((30, 41), np.float32), tile_shape=20).shape
    (2, 30, 41)
    >>> net.training  # the module given is untouched
    True
    """

    def __init__(self, model_or_path: nn.Module | str | os.PathLike, *, device: str | torch.device | None = None,
                 precision: str = "auto", channels_last: bool | str = "auto", card: ModelCard | None = None,
                 backend: str = "torch", calibration: Sequence[np.ndarray] | None = None):
        if isinstance(model_or_path, Predictor):
            model_or_path, card = model_or_path.network, card or model_or_path.card
        if backend == "auto":  # what this machine's check of the run chose (unetseg.backend_check), else eager
            from ..backend_check import auto_backend

            path_given = not isinstance(model_or_path, nn.Module)
            backend, chosen = auto_backend(model_or_path, resolve_device(device).type) if path_given else ("torch", "fp32")
            precision = chosen if chosen is not None and precision == "auto" else precision
        if isinstance(model_or_path, nn.Module):
            module, card = model_or_path, card or ModelCard()
        else:
            from ..export.package import is_package, load_package
            from ..models import load_with_config

            if is_package(model_or_path):
                module, meta = load_package(model_or_path, backend=backend)
            else:
                module, meta = load_with_config(model_or_path)
            card = card or meta["card"]
        self.device = resolve_device(device)
        bound = getattr(module, "standalone_backend", None)  # a foreign package's graph: runs as it is, in fp32
        self.backend = bound or backend
        self.spatial_dims = int(getattr(module, "spatial_dims", 2))
        if bound is None and backend in ("torch", "compile"):
            self.precision = resolve_precision(precision, self.device)
            use_cl = resolve_channels_last(channels_last, self.device, self.spatial_dims)
        else:  # ONNX Runtime computes in fp32, int8 in int8, both on contiguous arrays
            self.precision, use_cl = "int8" if backend == "int8" and bound is None else "fp32", False
        self.memory_format = memory_format(self.device, self.spatial_dims) if use_cl else torch.contiguous_format
        network = prepared_copy(module, self.device, self.memory_format)
        self.network = network if bound else backend_network(network, backend, self.device, calibration)
        self.card = card
        if self.device.type == "cpu":
            configure_allocator()

    def calibrate(self, images: Sequence[np.ndarray]) -> None:
        """Calibrate an ``int8`` backend on ``images`` (``(channels, *spatial)``, normalised); other backends need none."""
        if hasattr(self.network, "set_calibration"):
            self.network.set_calibration(list(images))

    @classmethod
    def from_path(cls, path: str | os.PathLike, **kwargs: Any) -> Predictor:
        """A Predictor from a run folder, a model file or a bioimage.io package that unetseg exported
        (keyword arguments as for the constructor)."""
        return cls(Path(path), **kwargs)

    @property
    def in_channels(self) -> int:
        return int(getattr(self.network, "in_channels", 1))

    @property
    def num_classes(self) -> int:
        return int(getattr(self.network, "num_classes", 1))

    @property
    def affinity_offsets(self) -> tuple[tuple[int, ...], ...]:
        """The offsets of the network's affinity channels (:mod:`unetseg.affinities`; none for most)."""
        return tuple(getattr(self.network, "affinity_offsets", ()))

    @property
    def num_outputs(self) -> int:
        """Output channels: the classes, then one per affinity offset."""
        return self.num_classes + len(self.affinity_offsets)

    @property
    def bytes_per_value(self) -> int:
        return 2 if self.precision in ("bf16", "fp16") else 4

    def needs_affinities(self, post: Any = None) -> bool:
        """Whether the post-processing ``post`` (the card's by default) reads this network's
        affinity channels (the mutex watershed), so :meth:`predict` must keep them."""
        post = self.card.postprocess if post is None else post
        return bool(post.mutex_watershed and self.affinity_offsets)

    def postprocess(self, outputs: np.ndarray, post: Any = None, *, sections: bool = False) -> np.ndarray:
        """The post-processing ``post`` (the card's by default) of ``outputs`` of :meth:`predict`,
        in place (:func:`unetseg.postprocess.foreground_postprocess`, with the affinity channels
        when ``outputs`` holds them after the classes); returns the class channels."""
        from ..postprocess import foreground_postprocess

        post = self.card.postprocess if post is None else post
        c = self.num_classes
        affinities = outputs[c:] if outputs.shape[0] > c else None
        return foreground_postprocess(outputs[:c], self.card.foreground_class, post, sections=sections, affinities=affinities,
                                      offsets=self.affinity_offsets)

    def __call__(self, batch: np.ndarray, *, tta: bool = False) -> np.ndarray:
        """Probabilities ``(N, classes, *tile)`` of a batch of input tiles ``(N, channels, *in)``."""
        return tta_forward(self.network, batch, device=self.device, precision=self.precision, fmt=self.memory_format, tta=tta)

    def shift_for(self, output_shift: Sequence[float] | None | str) -> tuple[float, ...] | None:
        """The output shift to apply: the card's for ``"card"``, else ``output_shift`` checked."""
        shift = self.card.output_shift if isinstance(output_shift, str) and output_shift == CARD else output_shift
        return check_output_shift(shift, self.spatial_dims)

    def tile_shape_for(self, tile_shape: Sequence[int] | int | None, batch_size: int = 1, memory_budget: int | None = None):
        """``tile_shape``, or the largest tile whose activations fit the memory budget."""
        if tile_shape is not None:
            return tile_shape
        return auto_tile_shape(self.network, memory_budget=memory_budget, batch_size=batch_size, device=self.device,
                               bytes_per_value=self.bytes_per_value)

    def predict_into(self, source: Any, target: Any, *, tile_shape: Sequence[int] | int | None = None, tta: bool = False,
                     batch_size: int | None = None, margin: int | None = None, memory_budget: int | None = None,
                     preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
                     transform: Callable[[np.ndarray], np.ndarray] | None = None, progress: bool | Any = False,
                     source_shape: Sequence[int] | None = None, source_offset: Sequence[int] = (),
                     output_shift: Sequence[float] | None | str = CARD, affinities: bool = False) -> tiling.TilePlan:
        """Segment ``source`` ``(channels, *spatial)`` into ``target`` band by band; return the tile plan.

        ``target`` receives ``target[(slice(None), *band)] = probs`` (or ``target[band] = ...``
        when ``transform`` drops the class axis). ``preprocess`` is applied to every input band
        (e.g. normalisation), ``transform`` to every band of probabilities (e.g. keep class 1).
        ``source_shape``/``source_offset``: the image's spatial size and where its position 0
        lies in ``source`` (Dask blocks carry their context this way). ``output_shift``: the
        card's by default; ``None`` applies none. ``affinities``: the bands hold the affinity
        channels after the classes (:attr:`num_outputs`), for a network that has them.
        """
        shape = tuple(int(s) for s in (source_shape if source_shape is not None else source.shape[1:]))
        if len(shape) != self.spatial_dims:
            raise InputError(f"image has {len(shape)} spatial axes {shape}, the model expects {self.spatial_dims}")
        bs = int(batch_size or 1)
        net = self.network
        tiles = self.tile_shape_for(tile_shape, bs, memory_budget)
        margin = margin if margin is not None else getattr(net, "tile_margin", None)
        plan = tiling.plan_tiles(shape, tiles, depth=int(net.depth), padding=net.padding, margin=margin)
        if self.affinity_offsets and not affinities:  # computed with the classes (one forward pass), kept only on request
            transform = _classes_only(self.num_classes, transform)
        run_plan(functools.partial(self, tta=tta), source, target, plan, channels=self.in_channels, num_classes=self.num_outputs,
                 preprocess=preprocess, transform=transform, progress=progress, batch_size=bs, source_offset=source_offset,
                 shift=self.shift_for(output_shift))
        return plan

    def predict(self, image: np.ndarray, *, tta: bool = False, tile_shape: Sequence[int] | int | None = None,
                batch_size: int | None = None, margin: int | None = None, memory_budget: int | None = None,
                progress: bool | Any = False, output_shift: Sequence[float] | None | str = CARD,
                affinities: bool = False) -> np.ndarray:
        """Float32 class probabilities ``(classes, *spatial)`` of an image already normalised
        (with ``affinities``: ``(num_outputs, *spatial)``, the affinity channels after the classes).

        ``image`` is ``(*spatial)`` or ``(channels, *spatial)``, any size (even 1x1); see
        :meth:`predict_into` for the other arguments.
        """
        x = as_channels_first(image, self.spatial_dims, self.in_channels)
        out = np.empty((self.num_outputs if affinities else self.num_classes, *x.shape[1:]), dtype=np.float32)
        self.predict_into(x, out, tile_shape=tile_shape, tta=tta, batch_size=batch_size, margin=margin,
                          memory_budget=memory_budget, progress=progress, output_shift=output_shift, affinities=affinities)
        return out

    def predict_dask(self, darr: Any, **kwargs: Any) -> Any:
        """Lazy probabilities of a ``dask.array`` (:func:`unetseg.inference.dask.predict_dask`)."""
        from .dask import predict_dask

        kwargs.setdefault("output_shift", CARD)
        return predict_dask(self, darr, **kwargs)

    def predict_file(self, input_path: str | os.PathLike, output_path: str | os.PathLike, **kwargs: Any) -> Path:
        """Segment one image file into an output file (:func:`unetseg.inference.files.predict_file`)."""
        from .files import predict_file

        return predict_file(self, input_path, output_path, **kwargs)


def _classes_only(num_classes: int, transform: Callable[[np.ndarray], np.ndarray] | None) -> Callable[[np.ndarray], np.ndarray]:
    """``transform`` applied to the class channels of a band only."""
    if transform is None:
        return lambda rows: rows[:num_classes]
    return lambda rows: transform(rows[:num_classes])


def as_predictor(model: nn.Module | Predictor | str | os.PathLike, *, device: str | torch.device | None = None,
                 precision: str | None = None, channels_last: bool | str = "auto") -> Predictor:
    """``model`` itself when it is a Predictor whose device and precision fit (``None``: any),
    else a new Predictor (precision ``None`` means fp32 for a module)."""
    if isinstance(model, Predictor):
        same_device = device is None or resolve_device(device) == model.device
        same_precision = precision is None or resolve_precision(precision, model.device) == model.precision
        if same_device and same_precision:
            return model
    return Predictor(model, device=device, precision=precision or "fp32", channels_last=channels_last)


def predict_into(model: nn.Module | Predictor, source: Any, target: Any, *, device: str | torch.device | None = None,
                 precision: str | None = None, channels_last: bool | str = "auto", output_shift: Sequence[float] | None = None,
                 **kwargs: Any) -> tiling.TilePlan:
    """:meth:`Predictor.predict_into` for a module in one call (the module is not changed)."""
    predictor = as_predictor(model, device=device, precision=precision, channels_last=channels_last)
    return predictor.predict_into(source, target, output_shift=output_shift, **kwargs)


def predict_image(
    model: nn.Module | Predictor,
    image: np.ndarray,
    *,
    tile_shape: Sequence[int] | int | None = None,
    tta: bool = False,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    precision: str | None = None,
    channels_last: bool | str = "auto",
    margin: int | None = None,
    memory_budget: int | None = None,
    progress: bool | Any = False,
    output_shift: Sequence[float] | None = None,
) -> np.ndarray:
    """Class probabilities of ``image`` by overlap-tile inference; the model is not changed.

    A pure function of the array: **no normalisation is applied** (see
    :func:`~unetseg.inference.files.predict_file`). ``model`` is a unetseg model, any module
    with ``halo``, ``depth``, ``padding``, ``spatial_dims``, ``in_channels`` and ``num_classes``
    that returns logits, or a :class:`Predictor`. ``tile_shape``: largest output tile (valid
    models) or window (same models), default from the memory budget; ``tta``: average over the
    8 rotations/flips; ``precision``: autocast (fp32 for a module by default); ``margin``: same-padding models' discarded edge;
    ``output_shift``: pixels per axis to move the result (none by default).

    Returns
    -------
    ndarray
        float32 ``(num_classes, *spatial)`` probabilities (sigmoid for a one-channel model).

    Examples
    --------
    >>> from unetseg.models import UNet
    >>> net = UNet(1, 2, base_channels=2)
    >>> predict_image(net, np.zeros((17, 30), np.float32), tile_shape=20).shape
    (2, 17, 30)
    """
    predictor = as_predictor(model, device=device, precision=precision, channels_last=channels_last)
    return predictor.predict(image, tile_shape=tile_shape, tta=tta, batch_size=batch_size, margin=margin,
                             memory_budget=memory_budget, progress=progress, output_shift=output_shift)
