"""``unetseg cv``: folds that never score an image they trained on, per-fold and pooled metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from unetseg.cli import main
from unetseg.cv import fold_config, fold_groups, pool_split
from unetseg.errors import ConfigError
from unetseg.io import read_image
from unetseg.models import load_card
from unetseg.train.config import load_train_config


RECIPE = """
model: {{arch: UNet, args: {{depth: 2, base_channels: 2, dropout: 0.0}}}}
train_data: {{path: {data}, select: ["00", "01", "02"]}}
val_data: {{path: {data}, select: ["03"]}}
data: {{target: {{kind: binary, foreground_value: 255, class_names: [membrane, cell]}}}}
schedule: {{steps: 3}}
validation: {{every: 2, metric: v_rand}}
calibration: {{output_shift: true, max_images: 1}}
runtime: {{device: cpu, precision: fp32, threads: 1}}
tile: [28, 28]
"""


def test_fold_groups_are_contiguous_and_cover_every_image_once():
    groups = fold_groups([f"{i:02d}" for i in range(10)], 4)
    assert [len(g) for g in groups] == [3, 3, 2, 2]
    assert sum(groups, []) == [f"{i:02d}" for i in range(10)]
    with pytest.raises(ConfigError, match="--folds"):
        fold_groups(["a", "b"], 3)


def test_pool_joins_train_and_val_of_one_dataset_and_folds_never_validate(tmp_path):
    (tmp_path / "r.yaml").write_text(RECIPE.format(data=tmp_path))
    cfg = load_train_config(tmp_path / "r.yaml")
    pool = pool_split(cfg)
    assert pool.select == ["00", "01", "02", "03"]
    fold = fold_config(cfg, pool, ["00", "03"])
    assert fold.train_data.select == ["00", "03"] and fold.val_data is None and fold.validation.every == 0


def test_cv_command_trains_each_fold_without_its_held_out_images(tmp_path, capsys, make_em_dataset):
    data = make_em_dataset(tmp_path / "data", n=4, size=48)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(data=data))
    out = tmp_path / "cv"
    assert main(["cv", "--config", str(recipe), "--folds", "2", "--out", str(out), "--no-progress", "--final"]) == 0
    summary = json.loads((out / "cv.json").read_text())
    assert [f["held_out"] for f in summary["folds"]] == [["00", "01"], ["02", "03"]]
    for fold in summary["folds"]:
        card = load_card(out / f"fold{fold['fold']}")
        assert not set(card.training.train) & set(fold["held_out"]) and card.training.val == ()
        assert set(card.training.train) | set(fold["held_out"]) == {"00", "01", "02", "03"}
        assert 0.0 <= fold["v_rand"] <= 1.0 and fold["steps"] == 3
        assert yaml.safe_load((out / f"fold{fold['fold']}" / "config.yaml").read_text())["val_data"] is None
        kept = sorted(p.stem for p in (out / f"fold{fold['fold']}" / "held_out").glob("*.tif"))
        assert kept == fold["held_out"]
        prob = read_image(out / f"fold{fold['fold']}" / "held_out" / f"{kept[0]}.tif")
        assert prob.dtype == np.float32 and prob.shape == (48, 48) and 0.0 <= prob.min() <= prob.max() <= 1.0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == 4 and metrics["v_rand"]["value"] == pytest.approx(summary["pooled"]["v_rand"])
    assert (out / "report.html").is_file()
    assert set(load_card(out / "final").training.train) == {"00", "01", "02", "03"}
    printed = capsys.readouterr().out
    assert "pooled" in printed and "v_rand" in printed
    # a second run into the same folder is refused
    assert main(["cv", "--config", str(recipe), "--folds", "2", "--out", str(out)]) == 1


def test_held_out_maps_are_post_processed_as_the_card_says(tmp_path):
    from types import SimpleNamespace

    import torch

    from unetseg.cv import predict_held_out
    from unetseg.models import ModelCard, Postprocess, UNet, save
    from unetseg.postprocess import fill_small_holes

    items = [SimpleNamespace(image=np.random.default_rng(1).random((1, 40, 44), dtype=np.float32))]
    maps = {}
    for area in (0, 150):
        torch.manual_seed(2)
        save(UNet(1, 2, depth=2, base_channels=2), tmp_path / str(area), card=ModelCard(postprocess=Postprocess(fill_holes=area)))
        maps[area] = predict_held_out(tmp_path / str(area), items, "isbi2012", tta=False)[0]
    assert np.count_nonzero(maps[150] != maps[0]) > 0
    np.testing.assert_array_equal(maps[150], fill_small_holes(maps[0], 150))


def test_held_out_maps_are_agglomerated_after_filling_as_the_card_says(tmp_path):
    from types import SimpleNamespace

    import torch

    from unetseg.cv import predict_held_out
    from unetseg.membranes import agglomerate_boundaries
    from unetseg.models import ModelCard, Postprocess, UNet, save
    from unetseg.postprocess import fill_small_holes

    items = [SimpleNamespace(image=np.random.default_rng(1).random((1, 40, 44), dtype=np.float32))]
    maps = {}

    def held_out(name, post):
        torch.manual_seed(2)
        save(UNet(1, 2, depth=2, base_channels=2), tmp_path / name, card=ModelCard(postprocess=post))
        maps[name] = predict_held_out(tmp_path / name, items, "isbi2012", tta=False)[0]

    held_out("plain", Postprocess())
    level = round(float(np.median(maps["plain"])), 4)  # the random network's map sits near 0.5
    held_out("closed", Postprocess(fill_holes=150, agglomerate=level))
    expected = agglomerate_boundaries(fill_small_holes(maps["plain"], 150), level)
    assert np.count_nonzero(expected != fill_small_holes(maps["plain"], 150)) > 0
    np.testing.assert_array_equal(maps["closed"], expected)
