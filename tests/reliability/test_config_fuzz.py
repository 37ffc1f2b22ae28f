"""Wrong config types and values: every one is a ConfigError that names the key."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unetseg.errors import ConfigError
from unetseg.train.config import load_train_config

KEYS = [
    "model.arch", "model.args", "model.args.depth", "model.args.padding", "train_data", "train_data.path",
    "train_data.select", "data.target.kind", "data.target.foreground_value", "data.weights.w0",
    "data.normalization", "augment.elastic_sigma", "augment.rotation_p", "sampling.augment", "optim.name",
    "optim.lr", "optim.momentum", "schedule.steps", "schedule.name", "loss.name", "validation.every",
    "validation.metric", "checkpoint.every", "runtime.device", "runtime.precision", "runtime.seed",
    "batch_size", "tile", "nonexistent", "optim.nonexistent",
]
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.lists(st.integers(-5, 600), max_size=4), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def _nest(key: str, value):
    out = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


@given(key=st.sampled_from(KEYS), value=VALUES)
@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_bad_config_values_raise_config_error(tmp_path, tally, key, value):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(_nest(key, value)))
    tally["malformed inputs tried (train config)"] += 1
    try:
        load_train_config(path, [])
    except ConfigError as exc:
        top = key.split(".")[0]
        assert top in str(exc) or str(path) in str(exc), f"message does not name the key: {exc}"


@given(text=st.text(max_size=60))
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_garbage_yaml_is_a_config_error(tmp_path, tally, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    tally["malformed inputs tried (train config)"] += 1
    try:
        load_train_config(path, [])
    except ConfigError:
        pass


def test_overrides_name_the_key(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("{}")
    for override, key in (("optim.lr=abc", "optim.lr"), ("nosuch.key=1", "nosuch"), ("tile=[1, x", "tile")):
        try:
            load_train_config(path, [override])
        except ConfigError as exc:
            assert key in str(exc), exc
        else:
            raise AssertionError(f"{override} was accepted")
