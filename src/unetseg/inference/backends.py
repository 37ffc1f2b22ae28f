"""Where the forward pass runs: PyTorch eager, compiled by inductor, int8, or ONNX Runtime.

The overlap-tile engine treats the network as a callable (MONAI's sliding-window idea), so a
backend is a module that maps an input tile batch to logits. :class:`OnnxRuntimeNetwork` runs
an ONNX graph of the network (exported with :func:`unetseg.export.graphs.to_onnx`, checked
against PyTorch, in a temporary folder) and carries the attributes the engine plans tiles with
(halo, depth, padding, ...), so tiling, TTA and the output shift are exactly those of PyTorch.
ONNX Runtime computes in fp32; the backend is chosen with ``Predictor(..., backend=...)`` or
``unetseg predict --backend``. Needs the ``export`` extra.

:class:`CompiledNetwork` is ``torch.compile`` (inductor, weights frozen, one graph per tile
shape); it runs under the Predictor's autocast precision like eager PyTorch.
:class:`Int8Network` is static post-training int8 quantisation (PyTorch 2 export with torchao's
x86 inductor quantizer: per-channel int8 weights, int8 activations, VNNI where the CPU has it),
calibrated per tile shape on tiles of the ``calibration`` images, then compiled. Both keep their
compiled code in inductor's own cache of the user (never in a run folder); the first call of
each tile shape pays the compilation (and, for int8, the calibration). Int8 needs ``torchao``
(the ``fast`` extra) and a CPU.
"""

from __future__ import annotations

import copy
import itertools
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError

BACKENDS = ("torch", "compile", "int8", "onnxruntime")
_ATTRIBUTES = ("spatial_dims", "in_channels", "num_classes", "depth", "padding", "halo", "size_divisor",
               "activation_memory_factor", "config", "arch", "affinity_offsets")


class OnnxRuntimeNetwork(nn.Module):
    """``network`` as an ONNX Runtime session (CPU), with ``network``'s tiling attributes."""

    def __init__(self, network: nn.Module, *, threads: int | None = None):
        super().__init__()
        import onnxruntime as ort

        from ..export import graphs

        _copy_attributes(network, self)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
        with tempfile.TemporaryDirectory(prefix="unetseg-onnx-") as tmp:
            path = graphs.to_onnx(network, Path(tmp) / "network.onnx", side=graphs.trace_side(network))
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self._session.run(None, {self._input: np.ascontiguousarray(x.detach().float().cpu().numpy())})[0]
        return torch.from_numpy(logits)

    def __deepcopy__(self, memo):  # the session is immutable and thread-safe: share it
        return self


def _copy_attributes(source: nn.Module, wrapper: nn.Module) -> None:
    for name in _ATTRIBUTES:
        if hasattr(source, name):
            object.__setattr__(wrapper, name, getattr(source, name))


def _frozen():
    """Inductor's weight freezing (constant folding, prepacked oneDNN weights) for the calls inside;
    the int8 graph cannot compile without it. A scoped patch: the global setting is left as it was."""
    import torch._inductor.config as inductor_config

    return inductor_config.patch(freezing=True)


class CompiledNetwork(nn.Module):
    """``network`` compiled by inductor with frozen weights, one static graph per input shape."""

    def __init__(self, network: nn.Module):
        super().__init__()
        _copy_attributes(network, self)
        self.network = network.eval().requires_grad_(False)
        self._compiled = torch.compile(self.network, dynamic=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _frozen():
            return self._compiled(x)

    def __deepcopy__(self, memo):  # compiled graphs are read-only at inference: share them
        return self


class Int8Network(nn.Module):
    """``network`` quantised to int8 (PT2E, x86 inductor quantizer) and compiled, per input shape.

    For each new input shape ``(N, C, *tile)`` the float network is exported for that shape,
    observed on up to ``max_tiles`` tiles of that size cut from ``calibration`` (``(C, *spatial)``
    arrays, mirrored where smaller than the tile, tiles taken on a regular grid so the choice is
    deterministic), converted to int8 and compiled. Without calibration images the first batch
    of each shape calibrates it (then results depend on which image came first: pass images).
    """

    def __init__(self, network: nn.Module, calibration: list[np.ndarray] | None = None, *, max_tiles: int = 8):
        super().__init__()
        _copy_attributes(network, self)
        self.network = network.eval().requires_grad_(False)
        self.calibration = [np.asarray(c, np.float32) for c in calibration or ()]
        self.max_tiles = int(max_tiles)
        self._graphs: dict[tuple[int, ...], Any] = {}
        self._building = threading.Lock()  # Dask threads share one Predictor: build each shape's graph once

    def set_calibration(self, images: list[np.ndarray]) -> None:
        """Calibrate on ``images`` from now on (graphs built so far are dropped)."""
        self.calibration = [np.asarray(c, np.float32) for c in images]
        self._graphs.clear()

    def calibration_tiles(self, shape: tuple[int, ...]) -> list[torch.Tensor]:
        """Up to ``max_tiles`` batches of ``shape`` ``(N, C, *tile)`` from the calibration images."""
        from .engine import read_mirrored

        tile, tiles = shape[2:], []
        for image in self.calibration:
            starts = [np.unique(np.linspace(0, max(n - t, 0), 2).astype(int)) for n, t in zip(image.shape[1:], tile)]
            for origin in itertools.product(*starts):
                ranges = [(int(o), int(o) + t) for o, t in zip(origin, tile)]
                tiles.append(read_mirrored(image, shape[1], ranges))
        tiles = tiles[: self.max_tiles * shape[0]]
        return [torch.from_numpy(np.stack(tiles[i : i + shape[0]])) for i in range(0, len(tiles) - shape[0] + 1, shape[0])]

    def _graph(self, x: torch.Tensor):
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            X86InductorQuantizer,
            get_default_x86_inductor_quantization_config,
        )

        quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
        example = x.float().contiguous()
        exported = torch.export.export(copy.deepcopy(self.network), (example,)).module()
        prepared = prepare_pt2e(exported, quantizer)
        for batch in self.calibration_tiles(tuple(x.shape)) or [example]:
            prepared(batch)
        graph = torch.compile(convert_pt2e(prepared), dynamic=False)
        with _frozen():  # compile now, inside the caller's lock: torch.compile is lazy
            graph(example)
        return graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = tuple(x.shape)
        with self._building:
            if key not in self._graphs:
                with torch.inference_mode(False), torch.no_grad(), torch.autocast("cpu", enabled=False):
                    self._graphs[key] = self._graph(x)
        with torch.autocast("cpu", enabled=False), _frozen():
            return self._graphs[key](x.float().contiguous()).float()

    def __deepcopy__(self, memo):
        return self


def _int8_network(network: nn.Module, device: torch.device, calibration) -> nn.Module:
    if device.type != "cpu":
        raise ConfigError(f"backend 'int8' runs on the CPU; got device {device}")
    try:
        import torchao  # noqa: F401
    except ImportError as exc:
        raise ConfigError("backend 'int8' needs torchao: pip install 'unetseg[fast]'") from exc
    return Int8Network(network, calibration)


def backend_network(network: nn.Module, backend: str, device: torch.device, calibration=None) -> nn.Module:
    """``network`` itself for ``torch``; a :class:`CompiledNetwork` for ``compile``, an
    :class:`Int8Network` for ``int8`` (CPU, calibrated on ``calibration`` images) and an
    :class:`OnnxRuntimeNetwork` for ``onnxruntime`` (CPU only)."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if backend == "torch":
        return network
    if backend == "compile":
        return CompiledNetwork(network)
    if backend == "int8":
        return _int8_network(network, device, calibration)
    if device.type != "cpu":
        raise ConfigError(f"backend 'onnxruntime' runs on the CPU; got device {device}")
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ConfigError("backend 'onnxruntime' needs onnxruntime: pip install 'unetseg[export]'") from exc
    return OnnxRuntimeNetwork(network, threads=torch.get_num_threads())
