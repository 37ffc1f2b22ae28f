"""The model card: typed, versioned, strict; old model files migrate on read."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch

from unetseg.errors import ConfigError, ModelFileError
from unetseg.models import ModelCard, Postprocess, TrainingInfo, UNet, card_from_dict, card_to_dict, load, load_card, load_with_config, save

FIXTURES = Path(__file__).parent / "fixtures"


def test_card_round_trips_through_a_model_file(tmp_path):
    card = ModelCard(
        normalization={"method": "zscore"}, classes=("bg", "cell", "border"), border_class=2, task="instances",
        output_shift=(-0.5, 0.25), postprocess=Postprocess(split="border", min_size=20, threshold=0.4, fill_holes=30, agglomerate=0.1, edge_min_size=500), training=TrainingInfo(train=("a", "b"), tile=(36, 36), precision="bf16", step=7, metrics={"v_rand": 0.9}),
    )
    save(UNet(1, 3, base_channels=2, depth=2), tmp_path, card=card)
    got = load_card(tmp_path)
    assert got.training.unetseg_version  # filled in by save
    assert got == card.with_training(unetseg_version=got.training.unetseg_version)
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["format_version"] == 2 and "extra" not in meta and meta["card"]["classes"] == ["bg", "cell", "border"]


def test_a_model_file_saved_by_format_version_1_migrates_on_read(tmp_path):
    # tests/fixtures/model-v1.* were written by unetseg's save() before the card existed
    assert json.loads((FIXTURES / "model-v1.json").read_text())["format_version"] == 1
    net, meta = load_with_config(FIXTURES / "model-v1.safetensors")
    card = meta["card"]
    assert card.classes == ("membrane", "cell") and card.output_shift == (-0.75, -0.25)
    assert card.training.step == 40 and card.training.metrics == {"v_rand": 0.93} and card.training.averaged_steps == 3
    assert card.training.train == ("00", "01") and card.training.unetseg_version == "0.1.0"
    # saving it again writes the current format, which loads to the same card and weights
    save(net, tmp_path, card=card)
    assert load_card(tmp_path) == card
    for a, b in zip(load(tmp_path).state_dict().values(), net.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("change, message", [
    ({"colour": "red"}, "card.colour"),
    ({"training": {"stepz": 3}}, "card.training.stepz"),
    ({"task": "panoptic"}, "card.task"),
    ({"card_version": 99}, "card_version"),
    ({"foreground_class": 5}, "foreground_class"),
])
def test_unknown_or_bad_card_keys_are_refused_naming_the_key(tmp_path, change, message):
    save(UNet(1, 2, base_channels=2, depth=2), tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["card"].update(change)
    text = json.dumps(meta)
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(tmp_path / "model.safetensors")), str(tmp_path / "model.safetensors"), metadata={"unetseg": text})
    (tmp_path / "model.json").write_text(text)
    with pytest.raises(ModelFileError, match=message):
        load_card(tmp_path)


def test_version_1_extra_with_unknown_keys_is_refused(tmp_path):
    shutil.copy(FIXTURES / "model-v1.safetensors", tmp_path / "m.safetensors")
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as fh:
        meta = json.loads(fh.metadata()["unetseg"])
    meta["extra"]["surprise"] = {"a": 1}
    save_file(load_file(str(tmp_path / "m.safetensors")), str(tmp_path / "m.safetensors"), metadata={"unetseg": json.dumps(meta)})
    with pytest.raises(ModelFileError, match="surprise"):
        load_card(tmp_path / "m.safetensors")


def test_card_from_dict_is_strict_and_to_dict_is_json():
    card = card_from_dict({"classes": ["a", "b"], "output_shift": [0.5, 0]})
    assert card.output_shift == (0.5, 0.0)
    assert json.loads(json.dumps(card_to_dict(card)))["output_shift"] == [0.5, 0.0]


def test_model_files_get_the_umask_permissions_like_every_other_output(tmp_path):
    old = os.umask(0o022)
    try:
        weights = save(UNet(1, 2, base_channels=2, depth=2), tmp_path)
    finally:
        os.umask(old)
    for p in (weights, weights.with_suffix(".json")):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p


@pytest.mark.parametrize("bad", [1.0, -0.1, True, "0.1"])
def test_a_bad_agglomerate_names_the_key(bad):
    with pytest.raises(ConfigError, match="postprocess.agglomerate"):
        Postprocess(agglomerate=bad)


@pytest.mark.parametrize("bad", [-1, 2.5, True, "500"])
def test_a_bad_edge_min_size_names_the_key(bad):
    with pytest.raises(ConfigError, match="postprocess.edge_min_size"):
        Postprocess(edge_min_size=bad)
