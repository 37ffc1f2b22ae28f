"""Model files: safetensors weights plus a JSON config. Nothing here ever unpickles.

A model saved as ``NAME.safetensors`` gets ``NAME.json`` beside it::

    {"format": "unetseg-model", "format_version": 2, "unetseg_version": "0.1.0",
     "arch": "UNet", "args": {...all constructor arguments...}, "card": {...}}

The same JSON is stored in the safetensors header metadata, so the weights file alone is enough
to rebuild the model; the separate JSON is for people and tools to read. ``card`` is the typed
:class:`~unetseg.models.card.ModelCard` (input normalisation, class meaning, output shift,
provenance). Version-1 files stored an untyped ``extra`` dict there; they are migrated on read.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic import atomic_path
from ..errors import ConfigError, ModelFileError
from .card import ModelCard, card_from_dict, card_from_extra, card_to_dict
from .fusionnet import FusionNet
from .unet import UNet

FORMAT = "unetseg-model"
FORMAT_VERSION = 2
WEIGHTS_NAME = "model.safetensors"
ARCHITECTURES: dict[str, type[nn.Module]] = {"UNet": UNet, "FusionNet": FusionNet}
_TOP_KEYS = {1: {"format", "format_version", "unetseg_version", "arch", "args", "extra"},
             2: {"format", "format_version", "unetseg_version", "arch", "args", "card"}}


def build(arch: str, args: dict[str, Any]) -> nn.Module:
    """Construct a registered architecture from its name and constructor arguments.

    Unknown architectures and unknown or badly typed arguments raise ``ModelFileError``.

    Examples
    --------
    >>> build("UNet", {"base_channels": 4}).config["base_channels"]
    4
    """
    if arch not in ARCHITECTURES:
        raise ModelFileError(f"unknown architecture {arch!r}: expected one of {', '.join(ARCHITECTURES)}")
    cls = ARCHITECTURES[arch]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(args) - accepted)
    if unknown:
        raise ModelFileError(f"{arch}: unknown argument(s) {', '.join(unknown)}; accepted: {', '.join(sorted(accepted))}")
    try:
        return cls(**args)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{arch}: invalid arguments: {exc}") from exc


def _weights_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_dir():
        return p / WEIGHTS_NAME
    if p.suffix != ".safetensors":
        return p.with_suffix(".safetensors")
    return p


def model_file(path: str | os.PathLike) -> Path:
    """The safetensors file of a run folder or model file name (``ModelFileError`` when missing)."""
    weights = _weights_path(path)
    if not weights.is_file():
        raise ModelFileError(f"{weights}: model file not found")
    return weights


def save(model: nn.Module, path: str | os.PathLike, *, card: ModelCard | None = None) -> Path:
    """Write ``model`` as safetensors plus a JSON config holding its ``card``; return the weights path.

    ``path`` is a ``.safetensors`` file name or an existing folder (then ``model.safetensors``
    inside it). Both files are written atomically with the umask's permissions; ``card``
    defaults to :class:`ModelCard`'s defaults.
    """
    from .. import __version__

    arch = getattr(model, "arch", None)
    if arch not in ARCHITECTURES or not hasattr(model, "config"):
        raise ModelFileError(f"cannot save {type(model).__name__}: only {', '.join(ARCHITECTURES)} models are supported")
    card = card if card is not None else ModelCard()
    if card.training.unetseg_version is None:
        card = card.with_training(unetseg_version=__version__)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "unetseg_version": __version__,
        "arch": arch,
        "args": dict(model.config),
        "card": card_to_dict(card),
    }
    text = json.dumps(meta, indent=2, sort_keys=True)
    weights = _weights_path(path)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp), metadata={"unetseg": text})
    with atomic_path(weights.with_suffix(".json")) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return weights


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate the JSON config stored in a model's safetensors header."""
    weights = _weights_path(path)
    if not weights.is_file():
        raise ModelFileError(f"{weights}: model file not found")
    try:
        with safe_open(str(weights), framework="pt") as fh:
            metadata = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{weights}: {_not_safetensors_reason(weights)} ({exc})") from exc
    if "unetseg" not in metadata:
        raise ModelFileError(f"{weights}: safetensors file has no unetseg config in its header")
    return _parse_config(metadata["unetseg"], weights)


def _parse_config(text: str, source: Path) -> dict[str, Any]:
    """The config as a dict whose ``"card"`` is a :class:`ModelCard` (migrated from version 1)."""
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{source}: config is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{source}: config is not a {FORMAT} config")
    version = meta.get("format_version")
    if version not in _TOP_KEYS:
        raise ModelFileError(f"{source}: format_version {version!r} is not supported (expected {FORMAT_VERSION} or older)")
    unknown = sorted(set(meta) - _TOP_KEYS[version])
    if unknown:
        raise ModelFileError(f"{source}: unknown config key(s) {', '.join(unknown)}")
    missing = sorted({"arch", "args"} - set(meta))
    if missing:
        raise ModelFileError(f"{source}: config lacks key(s) {', '.join(missing)}")
    if not isinstance(meta["args"], dict):
        raise ModelFileError(f"{source}: 'args' must be an object")
    if version == 1:
        card = card_from_extra(meta.pop("extra", None), unetseg_version=meta.get("unetseg_version"), where=f"{source}: extra")
    else:
        try:
            card = card_from_dict(meta.get("card"), where="card")
        except ConfigError as exc:
            raise ModelFileError(f"{source}: {exc}") from exc
    meta["card"] = card
    return meta


def _not_safetensors_reason(path: Path) -> str:
    """Why a file that safetensors could not parse was refused (it is never unpickled)."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    # Pickle protocol 2+ starts with 0x80; torch.save zip archives start with "PK".
    if head[:1] == b"\x80" or head[:2] == b"PK":
        return "this is a pickle/torch.save file; unetseg only loads safetensors (pickles can run code)"
    if len(head) < 8:
        return f"file is truncated ({len(head)} bytes)"
    return "not a valid safetensors file (corrupt or truncated)"


def load_with_config(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from its file alone; return it (in eval mode) with its config."""
    weights = _weights_path(path)
    meta = read_config(weights)
    side = weights.with_suffix(".json")
    if side.is_file():
        side_meta = _parse_config(side.read_text(encoding="utf-8"), side)
        if side_meta["arch"] != meta["arch"] or side_meta["args"] != meta["args"]:
            raise ModelFileError(f"{side}: does not match the config stored in {weights.name}")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{weights}: cannot read weights ({exc})") from exc
    return with_state(meta, state, where=str(weights)).to(device), meta


def with_state(meta: dict[str, Any], state: dict[str, torch.Tensor], *, where: str, may_lack: tuple[str, ...] = ()) -> nn.Module:
    """The model ``meta`` describes (``arch``, ``args``) holding ``state``, in eval mode.

    Every tensor the architecture has must be in ``state`` with its shape, except those whose
    last name is in ``may_lack`` (they keep their initial values); ``where`` (the file the
    tensors came from) names the culprit otherwise.

    Examples
    --------
    >>> net = UNet(base_channels=2, depth=1)
    >>> meta = {"arch": "UNet", "args": dict(net.config)}
    >>> with_state(meta, net.state_dict(), where="w.safetensors").training
    False
    >>> with_state(meta, {}, where="w.safetensors")
    Traceback (most recent call last):
    ...
    unetseg.errors.ModelFileError: w.safetensors: tensors do not match the UNet config (missing: downs.0.1.0.bias, downs.0.1.0.weight, downs.0.1.3.bias; unexpected: none)
    """
    model = build(meta["arch"], meta["args"])
    expected = model.state_dict()
    missing = sorted(k for k in set(expected) - set(state) if k.rsplit(".", 1)[-1] not in may_lack)
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelFileError(
            f"{where}: tensors do not match the {meta['arch']} config "
            f"(missing: {', '.join(missing[:3]) or 'none'}; unexpected: {', '.join(unexpected[:3]) or 'none'})"
        )
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ModelFileError(f"{where}: tensor {key} has shape {tuple(value.shape)}, config expects {tuple(expected[key].shape)}")
    model.load_state_dict(state, strict=not may_lack)
    return model.eval()


def load_card(path: str | os.PathLike) -> ModelCard:
    """The :class:`ModelCard` of a model file or run folder, without reading the weights.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> _ = save(UNet(base_channels=2, depth=1), folder, card=ModelCard(classes=("bg", "cell")))
    >>> load_card(folder).classes
    ('bg', 'cell')
    """
    return read_config(path)["card"]


def load(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by :func:`save` (a ``.safetensors`` file or a folder holding one).

    The model is returned in eval mode. Pickles, truncated files and configs with unknown keys
    raise :class:`~unetseg.errors.ModelFileError`.
    """
    return load_with_config(path, device=device)[0]
