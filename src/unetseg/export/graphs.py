"""The network as a graph other runtimes load: TorchScript and ONNX.

Both are traced from the eval-mode network with an example input of a valid tile size, with the
spatial sizes (and the batch) left free, so a consumer can run any valid tile. Each export is
checked against eager PyTorch on a second, larger tile before it is kept; a graph that
disagrees beyond ``atol`` is an :class:`~unetseg.errors.ModelFileError`, never a file.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..atomic import atomic_path
from ..errors import ModelFileError

log = logging.getLogger(__name__)

ONNX_OPSET = 20  # the newest opset the pinned torch exporter emits by default; onnxruntime 1.32 runs it
INPUT_NAME, OUTPUT_NAME = "input", "output"
TOLERANCE = 1e-4


def valid_tile(network: nn.Module, at_least: int) -> int:
    """The smallest input side >= ``at_least`` that ``network`` accepts (valid U-Nets: 16k + const).

    Examples
    --------
    >>> from unetseg.models import UNet
    >>> valid_tile(UNet(1, 2, depth=2, base_channels=2), 50)
    52
    """
    from .. import sizes

    padding, depth = getattr(network, "padding", sizes.SAME), int(getattr(network, "depth", 4))
    if padding == sizes.VALID:
        return sizes.next_valid_size(at_least, depth, padding)
    step = int(getattr(network, "size_divisor", 2**depth))
    return -(-at_least // step) * step


def trace_side(network: nn.Module) -> int:
    """The tile side graphs are traced at and test tensors cut to: the halo (for a same-padding
    model the one a valid model of its depth has, which its package declares) plus four pooling steps.

    Examples
    --------
    >>> from unetseg.models import UNet
    >>> trace_side(UNet(1, 2, depth=2, base_channels=2))  # 2 * 20 + 4 * 4 = 56, a valid size
    56
    """
    from .. import sizes

    depth = int(getattr(network, "depth", 4))
    at_least = 2 * sizes.halo(depth, sizes.VALID) + 4 * int(getattr(network, "size_divisor", 2**depth))
    return valid_tile(network, at_least)


def _frozen(network: nn.Module) -> nn.Module:
    """An eval-mode fp32 CPU copy: exporting never changes the module it is given."""
    return copy.deepcopy(network).eval().cpu().float()


def example_input(network: nn.Module, side: int, *, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A reproducible random input ``(batch, channels, side, ...)`` for tracing and checks."""
    dims, channels = int(getattr(network, "spatial_dims", 2)), int(getattr(network, "in_channels", 1))
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.standard_normal((batch, channels) + (side,) * dims).astype(np.float32))


def eager(network: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return network(x).float().numpy()


def to_torchscript(network: nn.Module, path: str | os.PathLike, *, side: int) -> Path:
    """Trace ``network`` (a copy in eval mode, CPU, fp32) to TorchScript at ``path``; checked on another tile size."""
    network = _frozen(network)
    example = example_input(network, side)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit", DeprecationWarning)  # bioimage.io still reads TorchScript
        warnings.simplefilter("error", torch.jit.TracerWarning)  # a size baked into the graph is an error
        try:
            traced = torch.jit.trace(network, example, check_trace=False)
        except torch.jit.TracerWarning as exc:
            raise ModelFileError(f"{type(network).__name__} cannot be traced with free tile sizes: {exc}") from exc
    check_graph(lambda x: eager(traced, x), network, side, "torchscript")
    path = Path(path)
    with atomic_path(path, expected_bytes=parameter_bytes(network)) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit", DeprecationWarning)
        torch.jit.save(traced, str(tmp))
    return path


def to_onnx(network: nn.Module, path: str | os.PathLike, *, side: int, opset: int = ONNX_OPSET) -> Path:
    """Export ``network`` (a copy in eval mode, CPU, fp32) to ONNX (dynamo exporter, free batch and spatial sizes);
    checked with onnxruntime.

    The graph is written unoptimised, so every parameter and buffer is an initializer under
    its state-dict name with its exact values (the exporter's optimiser would fold biases and
    batch norm into constants named ``val_N``): :func:`onnx_state_dict` reads the weights back
    without a pickle. ONNX Runtime optimises the graph itself when it loads it.
    """
    network = _frozen(network)
    example = example_input(network, side, batch=2)
    dims = int(getattr(network, "spatial_dims", 2))
    free = {0: torch.export.Dim("batch", min=1, max=1024)}
    free.update({2 + d: torch.export.Dim(f"s{d}", min=1, max=1 << 16) for d in range(dims)})
    path = Path(path)
    with atomic_path(path, expected_bytes=parameter_bytes(network)) as tmp, contextlib.redirect_stdout(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(network, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                                    output_names=[OUTPUT_NAME], dynamic_shapes={"x": free}, verbose=False,
                                    optimize=False)
        program.save(str(tmp), external_data=False)
        check_graph(onnx_runner(tmp), network, side, "onnx")
    return path


def onnx_state_dict(data: bytes, where: str) -> dict[str, torch.Tensor]:
    """The initializers of a serialised ONNX graph as named tensors (a protobuf: nothing is unpickled).

    Examples
    --------
    >>> import onnx
    >>> w = onnx.numpy_helper.from_array(np.ones((2, 3), np.float32), "inc.0.weight")
    >>> model = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [], initializer=[w]))
    >>> {k: tuple(v.shape) for k, v in onnx_state_dict(model.SerializeToString(), "w.onnx").items()}
    {'inc.0.weight': (2, 3)}
    """
    import onnx
    from google.protobuf.message import DecodeError
    from onnx import numpy_helper

    try:
        graph = onnx.load_model_from_string(data).graph
    except (DecodeError, ValueError) as exc:
        raise ModelFileError(f"{where}: not an ONNX model ({type(exc).__name__}: {exc})") from exc
    return {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in graph.initializer}


def parameter_bytes(network: nn.Module) -> int:
    """Bytes of a network's parameters and buffers: about the size of its exported graph.

    Examples
    --------
    >>> parameter_bytes(nn.Conv2d(1, 2, 3))
    80
    """
    return sum(t.numel() * t.element_size() for t in [*network.parameters(), *network.buffers()])


def onnx_runner(path: str | os.PathLike):
    """A function ``x -> outputs`` running the ONNX graph at ``path`` with onnxruntime on the CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: np.ascontiguousarray(x.numpy() if torch.is_tensor(x) else x)})[0]


def check_graph(run, network: nn.Module, side: int, what: str, *, atol: float = TOLERANCE) -> float:
    """Largest difference between ``run`` and eager PyTorch on a larger tile than the example."""
    bigger = valid_tile(network, side + 2 * int(getattr(network, "size_divisor", 16)) + 1)
    x = example_input(network, bigger, seed=1)
    want, got = eager(network, x), run(x)
    if got.shape != want.shape:
        raise ModelFileError(f"{what} export gives output {got.shape} for input {tuple(x.shape)}, PyTorch {want.shape}")
    diff = float(np.abs(got - want).max())
    if not diff <= atol:
        raise ModelFileError(f"{what} export differs from PyTorch by {diff:.2e} (> {atol:g}) on a {bigger}-pixel tile")
    log.info("%s export matches PyTorch to %.1e on a %d-pixel tile", what, diff, bigger)
    return diff
