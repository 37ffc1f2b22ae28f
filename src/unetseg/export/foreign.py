"""Running bioimage.io 0.5 packages made by other tools, with exact overlap-tile.

A package that unetseg did not export carries no unetseg model file, so its network is run
from the weights it declares: ``onnx`` (ONNX Runtime; a protobuf graph, nothing executed but
its operators) or ``torchscript`` (``torch.jit.load``, which rebuilds TorchScript code and
tensors only). ``pytorch_state_dict`` weights are pickles and are never loaded.

The description is read once, at the boundary (:func:`geometry`, :func:`normalization`,
:func:`output_steps`), and turned into what the overlap-tile engine already plans with:

- an output of the input's size with a ``halo`` (a same-padding network) becomes same-padding
  windows on the grid of the input's ``size.step`` that overlap by the halo, whose margins are
  discarded (``tile_margin``);
- an output smaller than its input by ``offset`` (a valid network) is tiled exactly when the
  sizes are those of a valid U-Net (``min``, ``step = 2**depth``, ``offset = -2 * halo``);
- preprocessing ``scale_range`` (per sample and channel) and ``zero_mean_unit_variance``
  become the card's normalisation; ``ensure_dtype`` to a float type is a no-op here;
- postprocessing ``sigmoid``, ``softmax``, ``clip`` and ``binarize`` are applied to each tile.

Anything else (several inputs or outputs, ``time``/``index`` axes, per-dataset statistics,
fixed-size inputs, other operators) is refused with one line naming the package and the entry.
"""

from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import sizes, tiling
from ..errors import ModelFileError
from ..models.card import ModelCard

AXIS_TYPES = ("batch", "channel", "index", "time", "space")
SPACE_IDS = ("z", "y", "x")


@dataclass(frozen=True)
class Geometry:
    """How a package's single input and output tensors are laid out and tiled.

    ``order`` gives, for each package axis, ``"batch"``, ``"channel"`` or a space id; ``depth``
    and ``padding`` are what :func:`unetseg.tiling.plan_tiles` plans with.
    """

    in_order: tuple[str, ...]
    out_order: tuple[str, ...]
    in_channels: int
    out_channels: int
    spatial: tuple[str, ...]
    min_size: int
    step: int
    padding: str
    depth: int
    halo: int


def _fail(where: Path, what: str) -> ModelFileError:
    return ModelFileError(f"{where}: {what}")


def _axes(tensor: dict[str, Any], where: Path) -> list[dict[str, Any]]:
    axes = tensor.get("axes")
    if not isinstance(axes, list) or not all(isinstance(a, dict) for a in axes):
        raise _fail(where, f"tensor {tensor.get('id')!r}: axes must be a list of 0.5 axis descriptions")
    for a in axes:
        if a.get("type") not in AXIS_TYPES:
            raise _fail(where, f"tensor {tensor.get('id')!r}: unknown axis type {a.get('type')!r} (expected one of {', '.join(AXIS_TYPES)})")
        if a["type"] in ("index", "time"):
            raise _fail(where, f"tensor {tensor.get('id')!r}: {a['type']} axes are not supported (batch, channel and space only)")
        if a["type"] == "space" and a.get("id") not in SPACE_IDS:
            raise _fail(where, f"tensor {tensor.get('id')!r}: space axis {a.get('id')!r} is not one of z, y, x")
    return axes


def check_axes(rdf: dict[str, Any], where: Path) -> None:
    """Every axis of every tensor has a known 0.5 type (packages of any origin)."""
    for tensor in list(rdf.get("inputs") or []) + list(rdf.get("outputs") or []):
        _axes(tensor, where)


def _order(axes: list[dict[str, Any]]) -> tuple[str, ...]:
    return tuple(a["id"] if a["type"] == "space" else a["type"] for a in axes)


def _channels(axes: list[dict[str, Any]]) -> int:
    channel = next((a for a in axes if a["type"] == "channel"), None)
    return 1 if channel is None else len(channel.get("channel_names") or []) or 1


def _input_size(axes: list[dict[str, Any]], where: Path) -> tuple[int, int]:
    found = {(int(a["size"]["min"]), int(a["size"]["step"])) for a in axes
             if a["type"] == "space" and isinstance(a.get("size"), dict) and "min" in a["size"]}
    fixed = [a["id"] for a in axes if a["type"] == "space" and not (isinstance(a.get("size"), dict) and "min" in a["size"])]
    if fixed or len(found) != 1:
        raise _fail(where, "input space axes must all have the same size {min, step} (fixed-size inputs cannot be tiled: "
                    f"{', '.join(fixed) or 'sizes differ between axes'})")
    (low, step), = found
    if step < 1:
        raise _fail(where, f"input size step {step}: overlap-tile needs a step of at least 1")
    return low, step


def _output_offset(axes: list[dict[str, Any]], where: Path) -> tuple[int, int]:
    """(offset, halo) shared by the output's space axes."""
    found = set()
    for a in (a for a in axes if a["type"] == "space"):
        size = a.get("size")
        if not isinstance(size, dict) or "tensor_id" not in size or a.get("scale", 1.0) != 1.0:
            raise _fail(where, f"output axis {a['id']!r}: only sizes referencing the input axis at scale 1 are supported")
        found.add((int(size.get("offset", 0)), int(a.get("halo", 0))))
    if len(found) != 1:
        raise _fail(where, "output space axes differ in offset or halo; not supported")
    return found.pop()


def geometry(rdf: dict[str, Any], where: Path) -> Geometry:
    """The tiling geometry of a package with one input and one output tensor."""
    inputs, outputs = list(rdf.get("inputs") or []), list(rdf.get("outputs") or [])
    if len(inputs) != 1 or len(outputs) != 1:
        raise _fail(where, f"{len(inputs)} inputs and {len(outputs)} outputs; only one of each is supported")
    in_axes, out_axes = _axes(inputs[0], where), _axes(outputs[0], where)
    spatial = tuple(a for a in SPACE_IDS if a in _order(in_axes))
    if not spatial or set(spatial) != {a for a in _order(out_axes) if a in SPACE_IDS}:
        raise _fail(where, f"input and output must share their space axes (input {_order(in_axes)}, output {_order(out_axes)})")
    low, step = _input_size(in_axes, where)
    offset, halo = _output_offset(out_axes, where)
    depth = int(math.log2(step)) if step & (step - 1) == 0 else 0
    if offset == 0:
        padding, depth = sizes.SAME, depth
    elif (step == 2**depth and depth >= 1 and offset == -2 * sizes.halo(depth, sizes.VALID) and halo == 0
          and sizes.is_valid_size(low, depth, sizes.VALID)):
        padding, halo = sizes.VALID, sizes.halo(depth, sizes.VALID)
    else:
        raise _fail(where, f"output offset {offset} with input size min {low}, step {step} is not the geometry of a "
                    "valid U-Net; only same-size outputs (with a halo) and valid U-Nets are tiled")
    if padding == sizes.SAME and (step != 2**depth or low % step):
        raise _fail(where, f"input size min {low}, step {step}: same-size outputs are tiled on a power-of-two step "
                    "that divides the smallest size; not supported")
    return Geometry(_order(in_axes), _order(out_axes), _channels(in_axes), _channels(out_axes), spatial, low, step,
                    padding, depth, halo)


def normalization(rdf: dict[str, Any], where: Path) -> dict[str, Any]:
    """The card normalisation equal to the input's preprocessing (per sample and channel)."""
    spec: dict[str, Any] = {"method": "none"}
    for step in rdf["inputs"][0].get("preprocessing") or []:
        op, kw = step.get("id"), dict(step.get("kwargs") or {})
        if op == "ensure_dtype" and str(kw.get("dtype", "")).startswith("float"):
            continue
        if spec["method"] != "none" or op not in ("scale_range", "zero_mean_unit_variance"):
            raise _fail(where, f"input preprocessing {op!r} (after {spec['method']!r}) is not supported; "
                        "one scale_range or zero_mean_unit_variance per sample is")
        if "channel" in (kw.get("axes") or []) or kw.get("mode", "per_sample") != "per_sample" or kw.get("reference_tensor"):
            raise _fail(where, f"input preprocessing {op!r}: only per-sample statistics over space axes are supported")
        if op == "scale_range":
            spec = {"method": "percentile", "low": float(kw.get("min_percentile", 0.0)), "high": float(kw.get("max_percentile", 100.0))}
        else:
            spec = {"method": "zscore"}
    return spec


def output_steps(rdf: dict[str, Any], where: Path) -> tuple[tuple[str, dict[str, Any]], ...]:
    """The output's postprocessing, checked to be per pixel (it is applied tile by tile)."""
    steps = []
    for step in rdf["outputs"][0].get("postprocessing") or []:
        op, kw = step.get("id"), dict(step.get("kwargs") or {})
        if op == "ensure_dtype" and str(kw.get("dtype", "")).startswith("float"):
            continue
        bad_axis = op == "softmax" and kw.get("axis", "channel") != "channel"
        if bad_axis or op not in ("sigmoid", "softmax", "clip", "binarize") or (op == "binarize" and not np.isscalar(kw.get("threshold"))):
            raise _fail(where, f"output postprocessing {op!r} is not supported tile by tile (sigmoid, softmax, clip, binarize are)")
        steps.append((op, kw))
    return tuple(steps)


def _postprocess(y: torch.Tensor, steps: tuple[tuple[str, dict[str, Any]], ...]) -> torch.Tensor:
    for op, kw in steps:
        if op == "sigmoid":
            y = torch.sigmoid(y)
        elif op == "softmax":
            y = torch.softmax(y, dim=1)
        elif op == "clip":
            y = y.clamp(kw.get("min"), kw.get("max"))
        else:
            y = (y > float(kw["threshold"])).float()
    return y


def _to_package(x: torch.Tensor, order: tuple[str, ...], spatial: tuple[str, ...]) -> torch.Tensor:
    """``x`` ``(N, C, *spatial)`` in the package's axis order; absent batch/channel axes (size 1) dropped."""
    ours = ("batch", "channel", *spatial)
    missing = [a for a in ("batch", "channel") if a not in order]
    y = x.permute(*[ours.index(a) for a in (*missing, *order)])
    for _ in missing:
        y = y[0]
    return y


def _from_package(y: torch.Tensor, order: tuple[str, ...], spatial: tuple[str, ...]) -> torch.Tensor:
    """The package's output back in ``(N, C, *spatial)`` order."""
    missing = [a for a in ("batch", "channel") if a not in order]
    for _ in missing:
        y = y[None]
    present = (*missing, *order)
    return y.permute(*[present.index(a) for a in ("batch", "channel", *spatial)])


class PackageNetwork(nn.Module):
    """The network of a foreign package as a callable ``(N, C, *tile) -> outputs`` for the engine.

    Carries what :func:`unetseg.tiling.plan_tiles` and the engine read (``depth``, ``padding``,
    ``halo``, ``tile_margin``, channels); ``returns_probabilities``: the package's own
    postprocessing is applied here, so the engine applies no softmax of its own.
    """

    returns_probabilities = True

    def __init__(self, geo: Geometry, post: tuple[tuple[str, dict[str, Any]], ...], *, onnx_bytes: bytes | None = None,
                 script: torch.jit.ScriptModule | None = None, threads: int | None = None):
        super().__init__()
        self.geo, self.post = geo, post
        self.spatial_dims, self.in_channels, self.num_classes = len(geo.spatial), geo.in_channels, geo.out_channels
        self.depth, self.padding = geo.depth, geo.padding
        self.halo = geo.halo if geo.padding == sizes.VALID else 0
        self.tile_margin = geo.halo if geo.padding == sizes.SAME else None
        self.size_divisor = 2**geo.depth
        self.standalone_backend = "onnxruntime" if onnx_bytes is not None else "torchscript"
        self.script = script
        self._session = None
        if onnx_bytes is not None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.log_severity_level = 3
            if threads:
                options.intra_op_num_threads = int(threads)
            self._session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self._session is None:
            return self.script(x).float()
        feed = {self._session.get_inputs()[0].name: np.ascontiguousarray(x.detach().float().cpu().numpy())}
        return torch.from_numpy(self._session.run(None, feed)[0]).float()

    def _at_least_min(self, x: torch.Tensor) -> torch.Tensor:
        """A same-padding tile smaller than the package's smallest size, mirrored up to it."""
        for axis in range(2, x.ndim):
            n = x.shape[axis]
            if n < self.geo.min_size:
                index = torch.as_tensor(tiling.mirror_indices(0, self.geo.min_size, n), device=x.device)
                x = x.index_select(axis, index)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, spatial_in = self.geo, x.shape[2:]
        x = self._at_least_min(x) if g.padding == sizes.SAME else x
        if "batch" not in g.in_order:
            outs = [self._run(_to_package(x[i:i + 1], g.in_order, g.spatial)) for i in range(x.shape[0])]
            y = torch.stack([_from_package(o, g.out_order, g.spatial)[0] for o in outs])
        else:
            y = _from_package(self._run(_to_package(x, g.in_order, g.spatial)), g.out_order, g.spatial)
        y = y[(slice(None), slice(None), *(slice(0, n) for n in spatial_in))] if g.padding == sizes.SAME else y
        return _postprocess(y.to(x.device), self.post)

    def __deepcopy__(self, memo):  # a session is immutable: the engine's prepared copy shares it
        return self


def weights_format(weights: dict[str, Any], backend: str, where: Path) -> str:
    """The weights to run: ``onnx`` for ONNX Runtime; for PyTorch ``torchscript``, else ``onnx``."""
    usable = [f for f in (("onnx",) if backend == "onnxruntime" else ("torchscript", "onnx")) if f in weights]
    if not usable:
        found = ", ".join(sorted(weights)) or "none"
        raise _fail(where, f"no weights unetseg can run with backend {backend!r} (found: {found}; onnx or torchscript "
                    "are run, pytorch_state_dict is a pickle and is never loaded)")
    return usable[0]


def package_card(rdf: dict[str, Any], spec: dict[str, Any]) -> ModelCard:
    """A model card for a foreign package: its output channel names and its normalisation."""
    from .bioimageio import identifier

    axes = rdf["outputs"][0]["axes"]
    channel = next((a for a in axes if a.get("type") == "channel"), {})
    classes = tuple(identifier(str(c)) for c in channel.get("channel_names") or [rdf["outputs"][0].get("id", "output")])
    return ModelCard(normalization=spec, classes=classes, foreground_class=1 if len(classes) >= 2 else 0)


def load_foreign(where: Path, rdf: dict[str, Any], archive: zipfile.ZipFile, *, backend: str = "torch",
                 threads: int | None = None) -> tuple[PackageNetwork, dict[str, Any]]:
    """The network and card of a package made by another tool (files already checked)."""
    geo, post, spec = geometry(rdf, where), output_steps(rdf, where), normalization(rdf, where)
    weights = rdf.get("weights") or {}
    fmt = weights_format(weights, backend, where)
    data = archive.read(str(weights[fmt]["source"]))
    if fmt == "onnx":
        try:
            net = PackageNetwork(geo, post, onnx_bytes=data, threads=threads)
        except ImportError as exc:
            raise _fail(where, "onnx weights need onnxruntime: pip install 'unetseg[export]'") from exc
    else:
        net = PackageNetwork(geo, post, script=torch.jit.load(io.BytesIO(data), map_location="cpu"))
    return net, {"card": package_card(rdf, spec), "arch": "bioimageio-package", "args": {}, "weights_format": fmt}
