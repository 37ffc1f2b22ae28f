"""Reading bioimage.io packages back: ``unetseg predict --model NAME.zip``.

A package that unetseg exported names its architecture, arguments and model card in
``config.unetseg``, and ``weights: onnx``: the network is rebuilt from those and its tensors are
read from the ONNX graph's initializers (a protobuf), after every check below, so nothing in a
package is ever unpickled (the ``pytorch_state_dict`` weights of bioimage.io are pickles: they
are never loaded, ours or anyone's). Refused, with one line naming the file: a member path
that escapes the package (absolute or ``..``), a file the description names that is missing,
a sha256 that does not match, a description that is not a 0.5 model, ``config.unetseg`` asking
for weights other than the ONNX graph, and weights, arguments or classes that differ from the
description.

Packages made by other tools (no ``config.unetseg``) pass the same file checks and are run from
their ``onnx`` or ``torchscript`` weights with overlap-tile planned from their declared sizes
and halos (:mod:`unetseg.export.foreign`).
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from ..errors import ModelFileError

DESCRIPTION_NAMES = ("rdf.yaml", "bioimageio.yaml")


def is_package(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a bioimage.io package (a ``.zip`` file)."""
    p = Path(path)
    return p.suffix.lower() == ".zip" and p.is_file()


def _safe_members(archive: zipfile.ZipFile, where: Path) -> set[str]:
    names = set()
    for info in archive.infolist():
        parts = PurePosixPath(info.filename).parts
        if info.filename.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise ModelFileError(f"{where}: member {info.filename!r} would be written outside the package; refused")
        names.add(info.filename)
    return names


def read_description(path: str | os.PathLike) -> dict[str, Any]:
    """The YAML description of a package, checked to be a bioimage.io 0.5 model."""
    where = Path(path)
    try:
        with zipfile.ZipFile(where) as archive:
            names = _safe_members(archive, where)
            name = next((n for n in DESCRIPTION_NAMES if n in names), None)
            if name is None:
                raise ModelFileError(f"{where}: no {' or '.join(DESCRIPTION_NAMES)} in the package")
            rdf = yaml.safe_load(archive.read(name).decode("utf-8"))
    except zipfile.BadZipFile as exc:
        raise ModelFileError(f"{where}: not a zip file ({exc})") from exc
    if not isinstance(rdf, dict) or rdf.get("type") != "model" or not str(rdf.get("format_version", "")).startswith("0.5"):
        raise ModelFileError(f"{where}: expected a bioimage.io model description of format 0.5.x, "
                             f"got type {rdf.get('type') if isinstance(rdf, dict) else None!r}, format_version "
                             f"{rdf.get('format_version') if isinstance(rdf, dict) else None!r}")
    return rdf


def listed_files(rdf: dict[str, Any]) -> dict[str, str | None]:
    """Every file the description names, with its sha256 where it gives one.

    Examples
    --------
    >>> listed_files({"weights": {"onnx": {"source": "w.onnx", "sha256": "ab"}}, "covers": ["c.png"]})
    {'c.png': None, 'w.onnx': 'ab'}
    """
    as_entry = lambda e: {"source": e} if isinstance(e, str) else e  # noqa: E731  (0.5 writes {source, sha256})
    entries = [as_entry(c) for c in rdf.get("covers", [])] + [as_entry(rdf.get("documentation") or {})]
    entries += [w for w in (rdf.get("weights") or {}).values() if isinstance(w, dict)]
    entries += [a for a in rdf.get("attachments", []) if isinstance(a, dict)]
    for tensor in list(rdf.get("inputs", [])) + list(rdf.get("outputs", [])):
        entries += [tensor.get("test_tensor") or {}, tensor.get("sample_tensor") or {}]
    for w in (rdf.get("weights") or {}).values():
        if isinstance(w, dict) and isinstance(w.get("dependencies"), dict):
            entries.append(w["dependencies"])
    files: dict[str, str | None] = {}
    for e in entries:
        src = e.get("source") if isinstance(e, dict) else None
        if isinstance(src, str) and "://" not in src:
            files[src] = e.get("sha256") or files.get(src)
    return dict(sorted(files.items()))


def _check_files(archive: zipfile.ZipFile, rdf: dict[str, Any], where: Path) -> None:
    names = set(archive.namelist())
    for name, sha in listed_files(rdf).items():
        if name not in names:
            raise ModelFileError(f"{where}: {name} is named by the description but missing from the package")
        if sha is not None:
            digest = hashlib.sha256()
            with archive.open(name) as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            if digest.hexdigest() != str(sha).lower():
                raise ModelFileError(f"{where}: {name} has sha256 {digest.hexdigest()[:12]}..., the description says {str(sha)[:12]}...")


def load_package(path: str | os.PathLike, *, device: str = "cpu", backend: str = "torch"):
    """The network and model config (as :func:`unetseg.models.load_with_config`) of a package.

    A package unetseg exported gives back its network (tensors from the ONNX graph) and card;
    any other 0.5 package a :class:`~unetseg.export.foreign.PackageNetwork` running its onnx
    (``backend="onnxruntime"``, or when it has no torchscript) or torchscript weights.
    """
    from ..models import with_state
    from . import _require, graphs
    from .foreign import check_axes, load_foreign

    where = Path(path)
    rdf = read_description(where)
    check_axes(rdf, where)
    ours = (rdf.get("config") or {}).get("unetseg")
    with zipfile.ZipFile(where) as archive:
        _check_files(archive, rdf, where)
        if not isinstance(ours, dict):
            import torch

            return load_foreign(where, rdf, archive, backend=backend, threads=torch.get_num_threads())
        meta = _our_config(rdf, ours, where)
        member = _our_weights(rdf, ours, where)
        _require("onnx", purpose="reading a bioimage.io package")
        state = graphs.onnx_state_dict(archive.read(member), f"{where}: {member}")
    # the exporter leaves out batch norm's step counter, which inference never reads
    network = with_state(meta, state, where=f"{where}: {member}", may_lack=("num_batches_tracked",))
    return network.to(device), meta


def _our_weights(rdf: dict[str, Any], ours: dict[str, Any], where: Path) -> str:
    """The package member unetseg reads its tensors from: the ONNX graph, listed with a sha256."""
    if "model_file" in ours:
        raise ModelFileError(f"{where}: made by an earlier unetseg (a safetensors attachment); export the model again")
    if ours.get("weights") != "onnx":
        raise ModelFileError(f"{where}: config.unetseg.weights is {ours.get('weights')!r}; unetseg reads its own packages' "
                             "tensors only from the onnx weights (pytorch_state_dict and torchscript are pickles and are never loaded)")
    member = str(((rdf.get("weights") or {}).get("onnx") or {}).get("source", ""))
    if not member or listed_files(rdf).get(member) is None:
        raise ModelFileError(f"{where}: the onnx weights must be listed with a sha256")
    return member


def _our_config(rdf: dict[str, Any], ours: dict[str, Any], where: Path) -> dict[str, Any]:
    """``config.unetseg`` as a model config (``arch``, ``args``, typed ``card``), checked against the description."""
    from ..errors import ConfigError
    from ..models import card_from_dict

    if not isinstance(ours.get("arch"), str) or not isinstance(ours.get("args"), dict):
        raise ModelFileError(f"{where}: config.unetseg needs 'arch' (a name) and 'args' (an object)")
    try:
        card = card_from_dict(ours.get("card"), where="config.unetseg.card")
    except ConfigError as exc:
        raise ModelFileError(f"{where}: {exc}") from exc
    state = (rdf.get("weights") or {}).get("pytorch_state_dict") or {}
    kwargs = (state.get("architecture") or {}).get("kwargs")
    if kwargs is not None and dict(kwargs) != dict(ours["args"]):
        differ = sorted(k for k in set(kwargs) | set(ours["args"]) if kwargs.get(k) != ours["args"].get(k))
        raise ModelFileError(f"{where}: config.unetseg does not match the weights' architecture (arguments {', '.join(differ)} differ)")
    channels = [a for a in rdf["outputs"][0].get("axes", []) if isinstance(a, dict) and a.get("type") == "channel"]
    if channels and len(channels[0].get("channel_names", [])) != len(card.classes):
        raise ModelFileError(f"{where}: the description has {len(channels[0]['channel_names'])} output channels, "
                             f"config.unetseg.card {len(card.classes)} classes")
    return {"arch": ours["arch"], "args": dict(ours["args"]), "card": card, "unetseg_version": ours.get("unetseg_version")}
