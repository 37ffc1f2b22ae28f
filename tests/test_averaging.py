"""Weight averaging: the running mean and its config (its use in training: tests/test_train.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from unetseg.config import from_dict
from unetseg.errors import ConfigError
from unetseg.train import AveragingConfig, TrainConfig, WeightAverage
from unetseg.train.averaging import update_weight


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))


def _set(net: nn.Module, value: float) -> None:
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.fill_(value)
            else:
                t.fill_(int(value))


@pytest.mark.parametrize("decay", [1.0, 0.9, 0.5])
def test_the_average_is_a_uniform_mean_then_an_exponential_one(decay):
    net = _net()
    avg = WeightAverage(net, decay)
    values = [3.0, -1.0, 4.0, 1.0, 5.0, 9.0]
    expected = None
    for n, v in enumerate(values, start=1):
        _set(net, v)
        avg.update(net)
        a = update_weight(n, decay)
        expected = v if expected is None else (1 - a) * expected + a * v
    if decay == 1.0:
        assert expected == pytest.approx(np.mean(values))
    if decay == 0.5:  # uniform over the first two updates, then halves
        assert update_weight(2, decay) == 0.5 and update_weight(6, decay) == 0.5
    state = avg.state_dict()
    for key, t in state.items():
        if t.is_floating_point():  # weights and batch-norm statistics alike
            assert torch.allclose(t, torch.full_like(t, expected), atol=1e-6), key
    assert int(state["1.num_batches_tracked"]) == 9  # counters are copied, not averaged
    assert avg.count == len(values)
    assert not any(p.requires_grad for p in avg.module.parameters())


def test_update_weight_rejects_count_zero():
    with pytest.raises(ValueError):
        update_weight(0, 0.9)


@pytest.mark.parametrize("section, message", [
    ({"decay": 0.0}, "averaging.decay"),
    ({"decay": 1.5}, "averaging.decay"),
    ({"start": 1.0}, "averaging.start"),
    ({"strat": 0.5}, "strat"),
])
def test_bad_averaging_config_names_the_key(section, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(TrainConfig, {"averaging": section})
    assert AveragingConfig().enabled is False
