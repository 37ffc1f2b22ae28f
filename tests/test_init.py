"""``model.init``: training starts from a trained model; the architecture must match."""

from __future__ import annotations

import pytest
import torch

from unetseg.cli import main
from unetseg.errors import ConfigError
from unetseg.models import UNet, load_card, save
from unetseg.train.init import init_from



def _net(num_classes=2, base=2, seed=0):
    torch.manual_seed(seed)
    return UNet(1, num_classes, depth=2, base_channels=base, dropout=0.0)


def test_init_copies_every_weight(tmp_path):
    save(_net(seed=1), tmp_path)
    net = _net(seed=2)
    assert init_from(net, tmp_path) == []
    for a, b in zip(net.state_dict().values(), _net(seed=1).state_dict().values()):
        assert torch.equal(a, b)


def test_a_new_head_is_reinitialised_on_request_only(tmp_path):
    save(_net(num_classes=2, seed=1), tmp_path)
    net = _net(num_classes=3, seed=2)
    fresh_head = {k: v.clone() for k, v in net.state_dict().items() if k.startswith("head.")}
    with pytest.raises(ConfigError, match=r"num_classes: recipe 3, model file 2.*reinit_head"):
        init_from(net, tmp_path)
    kept = init_from(net, tmp_path, reinit_head=True)
    assert sorted(kept) == sorted(fresh_head)
    state, source = net.state_dict(), _net(seed=1).state_dict()
    assert all(torch.equal(state[k], v) for k, v in fresh_head.items())
    assert all(torch.equal(state[k], source[k]) for k in state if not k.startswith("head."))


def test_a_different_architecture_is_refused_naming_every_difference(tmp_path):
    save(_net(base=4), tmp_path)
    with pytest.raises(ConfigError, match="base_channels: recipe 2, model file 4"):
        init_from(_net(base=2), tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        init_from(_net(), tmp_path / "nothing")


RECIPE = """
model: {{arch: UNet, args: {{depth: 2, base_channels: 2, dropout: 0.0}}}}
train_data: {{path: {data}}}
data: {{target: {{kind: binary, foreground_value: 255}}}}
schedule: {{steps: 2}}
validation: {{every: 0}}
runtime: {{device: cpu, precision: fp32, threads: 1}}
tile: [28, 28]
"""


def test_train_from_a_run_records_it_in_the_card(tmp_path, capsys, make_em_dataset):
    data = make_em_dataset(tmp_path / "data", n=3, size=64)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(data=data))
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["train", "--config", str(recipe), "--out", str(first), "--no-progress"]) == 0
    assert main(["train", "--config", str(recipe), "--out", str(second), "--no-progress", "--set", f"model.init={first}"]) == 0
    assert load_card(second).training.init == str(first)
    bad = ["train", "--config", str(recipe), "--out", str(tmp_path / "third"), "--set", f"model.init={first}", "--set", "model.args.base_channels=8"]
    assert main(bad) == 1
    assert "base_channels" in capsys.readouterr().err
