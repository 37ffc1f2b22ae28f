"""Recomputed batch-norm statistics: the function and its config (its use in training: tests/test_train.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unetseg.config import from_dict
from unetseg.errors import ConfigError
from unetseg.train import BatchNormConfig, TrainConfig, recompute_statistics
from unetseg.train.batchnorm import has_batch_norm, refresh_indices


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2))


def test_statistics_are_the_mean_over_the_batches_and_weights_stay():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(2, 1, 9, 9, generator=g) * (i + 1) + i for i in range(5)]
    net.eval()
    assert recompute_statistics(net, batches)
    assert not net.training  # the mode given is kept
    with torch.no_grad():
        feats = [net[0](b) for b in batches]
    mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    var = torch.stack([f.var((0, 2, 3), unbiased=True) for f in feats]).mean(0)
    assert torch.allclose(net[1].running_mean, mean, atol=1e-5)
    assert torch.allclose(net[1].running_var, var, atol=1e-4)
    assert net[1].momentum == 0.1  # restored after the cumulative mean
    after = net.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_the_last_tiles_do_not_decide_the_statistics():
    """Running averages follow the last batches; the recomputed mean does not depend on their order."""
    g = torch.Generator().manual_seed(2)
    batches = [torch.randn(1, 1, 9, 9, generator=g) + (3.0 if i < 20 else -3.0) for i in range(24)]
    a, b = _net(), _net()
    recompute_statistics(a, batches)
    recompute_statistics(b, batches[::-1])
    assert torch.allclose(a[1].running_mean, b[1].running_mean, atol=1e-5)
    c = _net()
    c.train()
    with torch.no_grad():
        for x in batches:  # what training leaves: an exponential average dominated by the last four
            c(x)
    assert float((c[1].running_mean - a[1].running_mean).abs().max()) > 0.5


def test_a_network_without_batch_norm_draws_no_tiles():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.GroupNorm(1, 2))

    def boom():
        raise AssertionError("tiles drawn for a network without batch norm")

    assert not has_batch_norm(net)
    assert not recompute_statistics(net, boom)
    assert has_batch_norm(_net())


@pytest.mark.parametrize("step, tiles, batch, world, expected", [
    (10, 3, 1, 1, [[7], [8], [9]]),
    (10, 3, 2, 1, [[16, 17], [18, 19]]),
    (0, 2, 1, 1, [[0], [1]]),
    (10, 4, 2, 2, [[32, 33], [36, 37]]),  # rank 0's batches of steps 8 and 9
])
def test_refresh_indices_are_rank_zeros_samples_of_the_last_steps(step, tiles, batch, world, expected):
    from unetseg.data.loader import StepBatchSampler

    assert refresh_indices(step, tiles, batch, world) == expected
    first = max(0, step - len(expected))
    assert expected == list(StepBatchSampler(first, first + len(expected), batch, rank=0, world_size=world))


def test_config_default_and_bad_values():
    assert TrainConfig().batch_norm == BatchNormConfig(refresh_tiles=0)  # off unless a recipe asks
    assert from_dict(TrainConfig, {"batch_norm": {"refresh_tiles": 64}}).batch_norm.refresh_tiles == 64
    with pytest.raises(ConfigError, match="batch_norm.refresh_tiles"):
        from_dict(TrainConfig, {"batch_norm": {"refresh_tiles": -1}})
    with pytest.raises(ConfigError, match="batch_norm"):
        from_dict(TrainConfig, {"batch_norm": {"tiles": 3}})
