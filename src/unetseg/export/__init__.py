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
        from .bioimageio import export_bioimageio

        return export_bioimageio(source, out, authors=list(authors or ["unetseg user"]), license=license, name=name)
    from ..models import load
    from . import graphs

    network = load(source)
    if format == "onnx":
        return graphs.to_onnx(network, out, side=graphs.trace_side(network))
    return graphs.to_torchscript(network, out, side=graphs.trace_side(network))


def _require(*modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m.split(".")[0]) is None
               or ("." in m and importlib.util.find_spec(m) is None)]
    if missing:
        raise ConfigError(f"export needs {', '.join(missing)}: pip install 'unetseg[export]'")


__all__ = ["FORMATS", "export_model"]
