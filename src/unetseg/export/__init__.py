"""Taking a model elsewhere: bioimage.io packages, ONNX and TorchScript graphs.

:func:`export_model` is what ``unetseg export`` calls. The bioimage.io package
(:mod:`unetseg.export.bioimageio`) is generated from the model card and checked by running
bioimageio.core's own prediction on its test input; ONNX and TorchScript graphs
(:mod:`unetseg.export.graphs`) are checked against eager PyTorch on another tile size before
they are kept. :func:`unetseg.export.package.load_package` reads a package back without
unpickling anything. Exporting needs the ``export`` extra (``pip install 'unetseg[export]'``).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError
from . import graphs
from .bioimageio import export_bioimageio

FORMATS = ("bioimageio", "onnx", "torchscript")
SUFFIXES = {"bioimageio": ".zip", "onnx": ".onnx", "torchscript": ".pt"}
REQUIRES = {"bioimageio": ("onnx", "onnxruntime", "onnxscript", "bioimageio.spec", "bioimageio.core"),
            "onnx": ("onnx", "onnxruntime", "onnxscript"), "torchscript": ()}


def export_model(source: str | os.PathLike, out: str | os.PathLike, *, format: str = "bioimageio",
                 authors: list[str] | None = None, license: str = "CC-BY-4.0", name: str | None = None) -> Path:
    """Export a run folder or model file as ``format`` to ``out``; return the path written.

    ``out`` must end in the format's suffix (``.zip``, ``.onnx``, ``.pt``). Graph exports are
    checked against eager PyTorch; a package also against bioimageio.core's prediction.
    """
    if format not in FORMATS:
        raise ConfigError(f"--format {format!r}: expected one of {', '.join(FORMATS)}")
    _require(*REQUIRES[format])
    out = Path(out)
    if out.suffix.lower() != SUFFIXES[format]:
        raise ConfigError(f"--out {out}: a {format} export is written to a {SUFFIXES[format]} file")
    if format == "bioimageio":
        return export_bioimageio(source, out, authors=list(authors or ["unetseg user"]), license=license, name=name)
    return (export_onnx if format == "onnx" else export_torchscript)(source, out)


def _network(model_or_path):
    from torch import nn

    from ..models import load

    return model_or_path if isinstance(model_or_path, nn.Module) else load(model_or_path)


def export_onnx(model_or_path, out: str | os.PathLike) -> Path:
    """An ONNX graph (opset 20, free batch and tile sizes) of a network, a model file or a run
    folder, checked against eager PyTorch on a larger tile before it is kept; the path written."""
    _require(*REQUIRES["onnx"])
    network = _network(model_or_path)
    return graphs.to_onnx(network, Path(out), side=graphs.trace_side(network))


def export_torchscript(model_or_path, out: str | os.PathLike) -> Path:
    """A traced TorchScript module of a network, a model file or a run folder, checked against
    eager PyTorch on a larger tile before it is kept; the path written."""
    network = _network(model_or_path)
    return graphs.to_torchscript(network, Path(out), side=graphs.trace_side(network))


def _require(*modules: str, purpose: str = "export") -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m.split(".")[0]) is None
               or ("." in m and importlib.util.find_spec(m) is None)]
    if missing:
        raise ConfigError(f"{purpose} needs {', '.join(missing)}: pip install 'unetseg[export]'")


__all__ = ["FORMATS", "export_bioimageio", "export_model", "export_onnx", "export_torchscript"]
