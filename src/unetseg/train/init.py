"""Start training from a trained model (``model.init``): fine-tuning, as Cellpose users do.

The new network is built from the recipe as usual; :func:`init_from` then copies the weights of
the model file. The architecture must match: a differing argument is an error that lists every
difference. With ``model.reinit_head`` the class count and the affinity offsets may differ and
the output layer (whose parameters start with ``head.``) keeps its fresh initialisation.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from ..errors import ConfigError
from ..models import load_with_config

HEAD_PREFIX = "head."
_FREE_WITH_HEAD = ("num_classes", "affinity_offsets")


def arg_differences(wanted: dict, found: dict, *, ignore: tuple[str, ...] = ()) -> list[str]:
    """``"key: recipe X, model file Y"`` for every constructor argument that differs.

    Examples
    --------
    >>> arg_differences({"depth": 4, "base_channels": 16}, {"depth": 4, "base_channels": 32})
    ['base_channels: recipe 16, model file 32']
    """
    keys = sorted((set(wanted) | set(found)) - set(ignore))
    return [f"{k}: recipe {wanted.get(k)!r}, model file {found.get(k)!r}" for k in keys if wanted.get(k) != found.get(k)]


def init_from(model: nn.Module, path: str | os.PathLike, *, reinit_head: bool = False) -> list[str]:
    """Copy the weights of the model file or run folder ``path`` into ``model``.

    Returns the names of the tensors left as initialised (the head's, with ``reinit_head``).

    Raises
    ------
    ConfigError
        ``model.init`` names no model, or its architecture differs from the recipe's.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"model.init: {path} does not exist (expected a run folder or a model .safetensors file)")
    source, meta = load_with_config(path)
    if meta["arch"] != getattr(model, "arch", None):
        raise ConfigError(f"model.init: {path} holds a {meta['arch']}, the recipe builds a {getattr(model, 'arch', type(model).__name__)}")
    diffs = arg_differences(dict(model.config), dict(meta["args"]), ignore=_FREE_WITH_HEAD if reinit_head else ())
    if diffs:
        hint = "" if reinit_head or any(not d.startswith(_FREE_WITH_HEAD) for d in diffs) else " (set model.reinit_head: true to train a new output layer)"
        raise ConfigError(f"model.init: {path} does not match the recipe's model: {'; '.join(diffs)}{hint}")
    state = source.state_dict()
    target = model.state_dict()
    kept = [k for k in target if reinit_head and k.startswith(HEAD_PREFIX)]
    model.load_state_dict({k: (target[k] if k in kept else state[k]) for k in target})
    return kept
