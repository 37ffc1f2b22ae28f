"""Where the forward pass runs: PyTorch (eager) or ONNX Runtime.

The overlap-tile engine treats the network as a callable (MONAI's sliding-window idea), so a
backend is a module that maps an input tile batch to logits. :class:`OnnxRuntimeNetwork` runs
an ONNX graph of the network (exported with :func:`unetseg.export.graphs.to_onnx`, checked
against PyTorch, in a temporary folder) and carries the attributes the engine plans tiles with
(halo, depth, padding, ...), so tiling, TTA and the output shift are exactly those of PyTorch.
ONNX Runtime computes in fp32; the backend is chosen with ``Predictor(..., backend=...)`` or
``unetseg predict --backend``. Needs the ``export`` extra.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError

BACKENDS = ("torch", "onnxruntime")
_ATTRIBUTES = ("spatial_dims", "in_channels", "num_classes", "depth", "padding", "halo", "size_divisor",
               "activation_memory_factor", "config", "arch")


class OnnxRuntimeNetwork(nn.Module):
    """``network`` as an ONNX Runtime session (CPU), with ``network``'s tiling attributes."""

    def __init__(self, network: nn.Module, *, threads: int | None = None):
        super().__init__()
        import onnxruntime as ort

        from ..export import graphs

        for name in _ATTRIBUTES:
            if hasattr(network, name):
                object.__setattr__(self, name, getattr(network, name))
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


def backend_network(network: nn.Module, backend: str, device: torch.device) -> nn.Module:
    """``network`` itself for ``torch``; an :class:`OnnxRuntimeNetwork` for ``onnxruntime`` (CPU only)."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if backend == "torch":
        return network
    if device.type != "cpu":
        raise ConfigError(f"backend 'onnxruntime' runs on the CPU; got device {device}")
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ConfigError("backend 'onnxruntime' needs onnxruntime: pip install 'unetseg[export]'") from exc
    return OnnxRuntimeNetwork(network, threads=torch.get_num_threads())
