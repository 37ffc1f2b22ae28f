"""Training checkpoints: safetensors for tensors, JSON for everything else; never pickle.

A checkpoint is a folder ``checkpoints/step_00001234/`` holding

- ``model.safetensors``: the network's state dict,
- ``optimizer.safetensors``: every tensor of the optimiser state (``state.<param>.<name>``),
- ``state.json``: step, optimiser param groups and scalar state, RNG states, the training
  history needed to continue (best metric, early-stopping counter) and free-form ``extra``.

The folder is written under a temporary name and renamed in one step, so a ``kill -9`` at any
moment leaves either the complete folder or none (plus a hidden ``.step_*.tmp`` folder that is
ignored and cleaned up later). :func:`latest_checkpoint` only ever returns complete folders.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic import atomic_path, ensure_space
from ..errors import TrainingError

log = logging.getLogger(__name__)

FORMAT = "unetseg-checkpoint"
FORMAT_VERSION = 1
_NAME = re.compile(r"^step_(\d{8,})$")


@dataclass(frozen=True)
class CheckpointConfig:
    """When to write checkpoints and how many to keep.

    Attributes
    ----------
    every : int
        Write a checkpoint every this many steps (and at the end, on Ctrl-C and on SIGTERM).
    keep_last : int
        Keep this many most recent checkpoints (older ones are deleted).
    """

    every: int = 500
    keep_last: int = 3


def checkpoint_name(step: int) -> str:
    """Folder name of the checkpoint taken after ``step`` optimiser steps.

    Examples
    --------
    >>> checkpoint_name(42)
    'step_00000042'
    """
    return f"step_{step:08d}"


def _rng_state() -> dict[str, torch.Tensor]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    return tensors


def _set_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available():
        states = [tensors[k] for k in cuda][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)


def _split_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimiser state dict -> (tensors for safetensors, JSON-able rest)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in state["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{name}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    groups = json.loads(json.dumps(state["param_groups"], default=_json_default))
    return tensors, {"param_groups": groups, "scalars": scalars, "param_ids": [str(p) for p in state["state"]]}


def _join_optimizer(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    for pid, entry in rest.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(entry)
    groups = rest["param_groups"]
    for g in groups:
        if "betas" in g and isinstance(g["betas"], list):
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint's JSON")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, default=_json_default)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def save_checkpoint(
    folder: str | os.PathLike,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    state: dict[str, Any] | None = None,
    keep_last: int | None = None,
    averaged: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write the checkpoint after ``step`` steps into ``folder`` atomically; return its path.

    ``state`` is JSON-able training state (history, best metric, sampler position...).
    ``keep_last`` deletes all but the newest ``keep_last`` checkpoints afterwards.
    ``averaged`` is the state of a weight average (:mod:`unetseg.train.averaging`), written to
    ``averaged.safetensors`` (read back by :func:`read_averaged`).
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    model_state = {k: v.detach().to("cpu").contiguous() for k, v in _unwrap(model).state_dict().items()}
    opt_tensors: dict[str, torch.Tensor] = {}
    opt_rest: dict[str, Any] | None = None
    if optimizer is not None:
        opt_tensors, opt_rest = _split_optimizer(optimizer.state_dict())
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "step": int(step),
        "optimizer": opt_rest,
        "state": state or {},
    }
    tensors = [*model_state.values(), *opt_tensors.values(), *(averaged or {}).values()]
    ensure_space(final, sum(t.numel() * t.element_size() for t in tensors))
    with atomic_path(final, directory=True) as tmp:
        save_file(model_state, str(tmp / "model.safetensors"))
        _fsync_file(tmp / "model.safetensors")
        save_file({**opt_tensors, **_rng_state()}, str(tmp / "optimizer.safetensors"))
        _fsync_file(tmp / "optimizer.safetensors")
        if averaged is not None:
            save_file({k: v.detach().to("cpu").contiguous() for k, v in averaged.items()}, str(tmp / "averaged.safetensors"))
            _fsync_file(tmp / "averaged.safetensors")
        _write_json(tmp / "state.json", meta)  # written last: its presence marks completeness
    _fsync_dir(root)
    if keep_last is not None:
        prune_checkpoints(root, keep_last)
    return final


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def list_checkpoints(folder: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``folder`` as ``(step, path)``, oldest first."""
    root = Path(folder)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir() and (p / "state.json").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def prune_checkpoints(folder: str | os.PathLike, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints, and stale temporary folders."""
    root = Path(folder)
    found = list_checkpoints(root)
    for _, path in found[: max(0, len(found) - max(1, keep_last))]:
        shutil.rmtree(path, ignore_errors=True)
    for p in root.glob(".step_*.tmp"):
        shutil.rmtree(p, ignore_errors=True)


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """Read one checkpoint folder: ``(model tensors, optimizer+RNG tensors, state.json)``."""
    p = Path(path)
    try:
        meta = json.loads((p / "state.json").read_text(encoding="utf-8"))
        model_state = load_file(str(p / "model.safetensors"))
        opt = load_file(str(p / "optimizer.safetensors"))
    except (OSError, ValueError, SafetensorError) as exc:
        raise TrainingError(f"{p}: unreadable checkpoint ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise TrainingError(f"{p}/state.json: not a {FORMAT} file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise TrainingError(f"{p}/state.json: format_version {meta.get('format_version')!r} is not supported")
    return model_state, opt, meta


def read_averaged(path: str | os.PathLike) -> dict[str, torch.Tensor] | None:
    """The weight average stored in a checkpoint folder, or None when it holds none."""
    p = Path(path) / "averaged.safetensors"
    if not p.is_file():
        return None
    try:
        return load_file(str(p))
    except (OSError, SafetensorError) as exc:
        raise TrainingError(f"{p}: unreadable weight average ({exc})") from exc


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Restore ``model`` (and ``optimizer``, RNG) from a checkpoint folder; return ``state.json``."""
    model_state, opt, meta = read_checkpoint(path)
    target = _unwrap(model)
    try:
        target.load_state_dict(model_state)
    except RuntimeError as exc:
        raise TrainingError(f"{path}: checkpoint does not match the model of this config ({str(exc).splitlines()[0]})") from exc
    if optimizer is not None and meta.get("optimizer") is not None:
        tensors = {k: v for k, v in opt.items() if k.startswith("state.")}
        device = next(target.parameters()).device
        tensors = {k: v.to(device) if not k.endswith(".step") else v for k, v in tensors.items()}
        try:
            optimizer.load_state_dict(_join_optimizer(tensors, meta["optimizer"]))
        except (ValueError, KeyError, RuntimeError) as exc:
            raise TrainingError(f"{path}: optimiser state does not match this config's optimiser ({exc})") from exc
    if restore_rng:
        _set_rng_state({k: v for k, v in opt.items() if k.startswith("rng.")})
    return meta


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """Newest complete checkpoint in ``folder`` that can be read, or ``None``."""
    for _step, path in reversed(list_checkpoints(folder)):
        try:
            read_checkpoint(path)
        except TrainingError as exc:
            log.warning("skipping unreadable checkpoint %s: %s", path, exc)
            continue
        return path
    return None
