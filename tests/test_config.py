"""The strict YAML -> frozen dataclass loader, overrides and dumping."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from unetseg.config import apply_overrides, dump_config, from_dict, load_config, parse_override, to_dict
from unetseg.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    lr: float = 0.01
    name: Literal["sgd", "adam"] = "sgd"
    betas: tuple[float, float] = (0.9, 0.999)
    clip: float | None = None


@dataclass(frozen=True)
class Outer:
    optim: Inner = field(default_factory=Inner)
    steps: int = 100
    tile: list[int] = field(default_factory=lambda: [64, 64])
    flag: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def test_defaults_and_nested():
    cfg = from_dict(Outer, {"optim": {"lr": 1, "name": "adam"}, "steps": 5})
    assert cfg.optim == Inner(lr=1.0, name="adam")
    assert isinstance(cfg.optim.lr, float)
    assert cfg.steps == 5 and cfg.tile == [64, 64]


@pytest.mark.parametrize(
    "data, key",
    [
        ({"optim": {"lr": "x"}}, "optim.lr"),
        ({"optim": {"lrr": 1}}, "optim.lrr"),
        ({"steps": 1.5}, "steps"),
        ({"steps": True}, "steps"),
        ({"flag": "yes"}, "flag"),
        ({"optim": {"name": "rmsprop"}}, "optim.name"),
        ({"tile": [1, "a"]}, r"tile\[1\]"),
        ({"optim": {"betas": [0.9]}}, "optim.betas"),
        ({"optim": 3}, "optim"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_errors_name_the_key(data, key):
    with pytest.raises(ConfigError, match=f"^{key}"):
        from_dict(Outer, data)


def test_optional_and_tuple():
    cfg = from_dict(Outer, {"optim": {"clip": 1, "betas": [0.5, 0.6]}})
    assert cfg.optim.clip == 1.0 and cfg.optim.betas == (0.5, 0.6)
    assert from_dict(Outer, {"optim": {"clip": None}}).optim.clip is None


def test_overrides_are_yaml_typed():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=true") == (["a"], True)
    assert parse_override("a=1e-4") == (["a"], 1e-4)
    assert parse_override("a=[1, 2]") == (["a"], [1, 2])
    assert parse_override("a=null") == (["a"], None)
    assert parse_override("a=hello") == (["a"], "hello")
    data = apply_overrides({"optim": {"lr": 1}}, ["optim.name=adam", "steps=7"])
    assert data == {"optim": {"lr": 1, "name": "adam"}, "steps": 7}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("novalue")
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"steps": 1}, ["steps.x=1"])


def test_load_dump_roundtrip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1e-3\n  name: adam\nsteps: 3\n")
    cfg = load_config(Outer, path, ["optim.lr=0.5", "extra.k=[1]"])
    assert cfg.optim.lr == 0.5 and cfg.steps == 3 and cfg.extra == {"k": [1]}
    out = dump_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(Outer, out)
    assert again == cfg
    assert to_dict(again)["optim"]["betas"] == [0.9, 0.999]


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {lr: [\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(Outer, bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("optim:\n  lt: 1\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: optim.lt: unknown key"):
        load_config(Outer, typo)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Outer, lst)
