"""Pre-training on synthetic images before the recipe's data (the ``pretrain`` section)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from unetseg.cli import main
from unetseg.errors import ConfigError
from unetseg.io import read_image
from unetseg.models import ModelCard, UNet, load_card, save
from unetseg.train.config import TrainConfig, load_train_config
from unetseg.train.pretrain import PretrainConfig, pretrain

RECIPE = """
model: {{arch: UNet, args: {{depth: 2, base_channels: 4, dropout: 0.0}}}}
train_data: {{path: {data}}}
data: {{target: {{kind: binary, foreground_value: 255, class_names: [membrane, cell]}}}}
schedule: {{steps: 3}}
validation: {{every: 0}}
runtime: {{device: cpu, precision: fp32, threads: 1, max_minutes: 5}}
pretrain: {{synthetic: em, count: 2, size: 64, share: 0.5}}
tile: [28, 28]
"""


def test_pretrain_trains_on_synthetic_images_for_its_share_of_the_budget(tmp_path):
    seen = {}

    def fake_train(cfg, out, *, time_limit_s, device, progress):
        folder = Path(cfg.train_data.path)
        seen.update(folder=folder, out=out, limit=time_limit_s, val=cfg.val_data, shift=cfg.calibration.output_shift,
                    images=sorted(p.name for p in (folder / "images").iterdir()), label=read_image(folder / "labels" / "000.png"))
        out.mkdir(parents=True)
        save(UNet(1, 2, depth=1, base_channels=2), out / "model-last.safetensors", card=ModelCard().with_training(step=7))
        return SimpleNamespace(step=7)

    cfg = TrainConfig(pretrain=PretrainConfig(synthetic="em", count=2, size=48, seed=3, share=0.25))
    new, left, note = pretrain(cfg, tmp_path, time_limit_s=100.0, device="cpu", progress=False, train=fake_train)
    assert seen["out"] == tmp_path / "pretrain" and seen["limit"] == 25.0
    assert seen["val"] is None and seen["shift"] is False and seen["images"] == ["000.png", "001.png"]
    assert set(seen["label"].ravel().tolist()) == {0, 255} and seen["label"].shape == (48, 48)
    assert new.model.init == str(tmp_path / "pretrain" / "model-last.safetensors") and 99.0 < left <= 100.0
    assert "synthetic em: 2 images of 48 px, seed 3; 7 steps" in note
    assert seen["folder"].is_absolute() and not seen["folder"].exists()  # the images lived in a temporary folder


def test_pretrain_refuses_a_second_start_and_a_run_without_a_time_budget(tmp_path):
    cfg = TrainConfig(pretrain=PretrainConfig(synthetic="em"))
    with pytest.raises(ConfigError, match="time budget"):
        pretrain(cfg, tmp_path, time_limit_s=None, device="cpu", progress=False, train=None)
    with_init = load_train_config(None, ["pretrain.synthetic=em", "model.init=run"])
    with pytest.raises(ConfigError, match="model.init"):
        pretrain(with_init, tmp_path, time_limit_s=10.0, device="cpu", progress=False, train=None)
    for bad in (["pretrain.synthetic=em-volume"], ["pretrain.synthetic=em", "pretrain.share=1.0"], ["pretrain.synthetic=em", "pretrain.count=0"]):
        with pytest.raises(ConfigError, match="pretrain"):
            load_train_config(None, bad)


def test_train_with_pretrain_starts_from_the_pretrained_weights(tmp_path, monkeypatch, make_em_dataset):
    import unetseg.train.setup as setup

    starts = []
    real = setup.init_from
    monkeypatch.setattr(setup, "init_from", lambda model, path, **kw: starts.append(Path(path)) or real(model, path, **kw))
    data = make_em_dataset(tmp_path / "data", n=2, size=64)
    (tmp_path / "recipe.yaml").write_text(RECIPE.format(data=data))
    assert main(["train", "--config", str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    pre = tmp_path / "run" / "pretrain"
    assert starts == [pre / "model-last.safetensors"]
    assert load_card(pre).training.train == ("000", "001") and load_card(pre).training.val == ()
    card = load_card(tmp_path / "run")
    assert card.training.train == ("00", "01") and card.training.init.startswith("pretrain/ (synthetic em: 2 images of 64 px")
    # resuming continues the recipe's own training; it never pre-trains again, and the card still says where the weights began
    assert main(["train", "--resume", str(tmp_path / "run"), "--no-progress", "--set", "schedule.steps=5"]) == 0
    assert starts == [pre / "model-last.safetensors"]
    resumed = load_card(tmp_path / "run")
    assert resumed.training.step == 5 and resumed.training.init == card.training.init


def test_a_bad_data_path_is_reported_before_any_pre_training(tmp_path):
    (tmp_path / "recipe.yaml").write_text(RECIPE.format(data=tmp_path / "missing"))
    assert main(["train", "--config", str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "run"), "--no-progress"]) == 1
    assert not (tmp_path / "run" / "pretrain").exists()
