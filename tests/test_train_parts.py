"""Pieces of the training package: schedules, optimisers, checkpoints, config sections."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from unetseg.errors import ConfigError, TrainingError
from unetseg.models import UNet
from unetseg.train import (
    OptimConfig,
    ScheduleConfig,
    build_optimizer,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_train_config,
    lr_factor,
    save_checkpoint,
)
from unetseg.train.loop import StepBatchSampler
from unetseg.train.optim import clip_gradients


def test_warmup_then_schedules():
    for name in ("constant", "poly", "cosine", "step"):
        cfg = ScheduleConfig(steps=100, name=name, warmup_steps=10, warmup_start=0.0, step_size=30)
        ramp = [lr_factor(cfg, s) for s in range(10)]
        assert ramp == sorted(ramp) and math.isclose(ramp[-1], 1.0) and ramp[0] == pytest.approx(0.1)
    poly = ScheduleConfig(steps=100, name="poly", power=1.0)
    assert lr_factor(poly, 0) == 1.0 and lr_factor(poly, 99) == 0.0
    assert lr_factor(ScheduleConfig(steps=100, name="cosine", min_lr_factor=0.1), 99) == pytest.approx(0.1)
    ms = ScheduleConfig(steps=100, name="step", milestones=[20, 50], gamma=0.5)
    assert [lr_factor(ms, s) for s in (19, 20, 49, 50)] == [1.0, 0.5, 0.5, 0.25]
    with pytest.raises(ConfigError, match="schedule.steps"):
        ScheduleConfig(steps=0)


def test_optimizers_and_clipping():
    m = torch.nn.Linear(3, 1)
    assert isinstance(build_optimizer(OptimConfig(name="adamw", lr=1e-3, weight_decay=0.01), m.parameters()), torch.optim.AdamW)
    sgd = build_optimizer(OptimConfig(), m.parameters())
    assert sgd.param_groups[0]["momentum"] == 0.99
    with pytest.raises(ConfigError, match="optim.lr"):
        build_optimizer(OptimConfig(lr=0), m.parameters())
    (m(torch.ones(4, 3)) * 1000).sum().backward()
    before = clip_gradients(m, 1.0)
    after = clip_gradients(m, None)
    assert before > 1.0 and after == pytest.approx(1.0, rel=1e-4)


def test_step_sampler_gives_each_rank_distinct_samples():
    r0 = [i for b in StepBatchSampler(0, 5, 2, 0, 2) for i in b]
    r1 = [i for b in StepBatchSampler(0, 5, 2, 1, 2) for i in b]
    assert not set(r0) & set(r1)
    assert list(StepBatchSampler(3, 5, 2)) == [[6, 7], [8, 9]]


def _model_opt():
    torch.manual_seed(0)
    m = UNet(1, 2, depth=2, base_channels=4)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    m(torch.randn(1, 1, 44, 44)).sum().backward()
    opt.step()
    return m, opt


def test_checkpoint_roundtrip_and_keep_last(tmp_path):
    m, opt = _model_opt()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, m, opt, state={"history": {"best": step}}, keep_last=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 3]
    m2, opt2 = UNet(1, 2, depth=2, base_channels=4), None
    opt2 = torch.optim.Adam(m2.parameters(), lr=5.0)
    meta = load_checkpoint(latest_checkpoint(tmp_path), m2, opt2)
    assert meta["step"] == 3 and meta["state"]["history"]["best"] == 3
    for a, b in zip(m.parameters(), m2.parameters()):
        assert torch.equal(a, b)
    sa, sb = opt.state_dict(), opt2.state_dict()
    assert sb["param_groups"][0]["lr"] == 1e-3
    for k in sa["state"]:
        for name, v in sa["state"][k].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(sb["state"][k][name])), name
    # no pickle anywhere: the files are safetensors and JSON
    folder = latest_checkpoint(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "optimizer.safetensors", "state.json"]
    json.loads((folder / "state.json").read_text())


def test_latest_checkpoint_skips_damaged_ones(tmp_path):
    m, opt = _model_opt()
    save_checkpoint(tmp_path, 1, m, opt)
    bad = save_checkpoint(tmp_path, 2, m, opt)
    (bad / "model.safetensors").write_bytes(b"\x80\x04garbage")
    assert latest_checkpoint(tmp_path).name == "step_00000001"
    (tmp_path / ".step_00000003.abc.tmp").mkdir()  # a write killed half-way
    assert latest_checkpoint(tmp_path).name == "step_00000001"
    with pytest.raises(TrainingError, match="unreadable checkpoint"):
        load_checkpoint(bad, m)
    other = UNet(1, 2, depth=2, base_channels=8)
    with pytest.raises(TrainingError, match="does not match the model"):
        load_checkpoint(latest_checkpoint(tmp_path), other)


@pytest.mark.parametrize("name", ["isbi2012.yaml", "isbi2012-cpu.yaml", "hela.yaml"])
def test_recipes_load(name):
    from pathlib import Path

    cfg = load_train_config(Path(__file__).resolve().parents[1] / "configs" / name)
    assert cfg.train_data.path.startswith("../shared/data/")
    assert cfg.val_data is not None


@pytest.mark.parametrize("name, most_minutes", [("isbi2012-cpu.yaml", 30), ("hela.yaml", 10)])
def test_cpu_recipes_budget_time_not_steps(name, most_minutes):
    # Issue 17: a recipe's budget is time. It stops at runtime.max_minutes (HeLa: 3 folds in at
    # most 30 minutes) with the cosine fitted to those minutes, and its step count is a ceiling
    # only a machine 50 steps/s fast would reach, so a faster machine trains longer, never stops
    # early at a step cap.
    from pathlib import Path

    cfg = load_train_config(Path(__file__).resolve().parents[1] / "configs" / name)
    assert cfg.runtime.max_minutes is not None and 0 < cfg.runtime.max_minutes <= most_minutes
    assert cfg.schedule.fit_time_limit
    assert cfg.schedule.steps >= 50 * 60 * cfg.runtime.max_minutes


def test_progress_plain_lines_without_terminal(caplog):
    import io
    import logging

    from unetseg.train.progress import Progress

    caplog.set_level(logging.INFO, logger="unetseg.train")
    p = Progress(10, 0, enabled=True, every_s=0.0, stream=io.StringIO())
    assert p.bar is None
    p.update(5, 0.5, 1e-3)
    p.close()
    assert "step 5/10  loss 0.5000  lr 1.00e-03" in caplog.text and "steps/s  ETA" in caplog.text


def test_progress_bar_on_a_terminal():
    import io

    from unetseg.train.progress import Progress

    class TTY(io.StringIO):
        def isatty(self):
            return True

    s = TTY()
    p = Progress(10, 2, enabled=True, stream=s)
    assert p.bar is not None
    p.update(4, 0.25, 1e-3)
    p.close()
    assert "loss=0.2500" in s.getvalue()


def test_progress_eta_ends_with_the_time_limit(caplog):
    # A time-budgeted recipe's step count is a far ceiling (100000); the ETA is when its time ends.
    import io
    import logging
    import re

    from unetseg.train.progress import Progress

    caplog.set_level(logging.INFO, logger="unetseg.train")
    p = Progress(100_000, 0, enabled=True, every_s=0.0, stream=io.StringIO(), time_left_s=90.0)
    p.t0 -= 1.0  # one second in, 10 steps done: by steps alone the ETA would be 2:46:39
    p.update(10, 0.5, 1e-3)
    minutes, seconds = re.search(r"ETA (\d\d):(\d\d)", caplog.text).groups()
    assert 60 <= 60 * int(minutes) + int(seconds) <= 89
    assert "step 10  loss" in caplog.text and "100000" not in caplog.text  # the far ceiling is not shown as a total
    assert Progress(100_000, 0, time_left_s=None).eta(0) == float("inf")


def test_progress_bar_with_a_time_limit_has_no_step_total():
    import io

    from unetseg.train.progress import Progress

    class TTY(io.StringIO):
        def isatty(self):
            return True

    s = TTY()
    p = Progress(100_000, 0, enabled=True, stream=s, time_left_s=60.0)
    assert p.bar.total is None
    p.update(3, 0.25, 1e-3)
    p.close()
    assert "left=" in s.getvalue() and "100000" not in s.getvalue()


def test_validation_reports_each_metric_at_its_best_threshold(monkeypatch):
    from dataclasses import dataclass

    import numpy as np

    import unetseg.train.validate as V

    gt = np.zeros((8, 8), np.int64)
    gt[1:4, 1:7] = 1
    gt[5:8, 1:7] = 1
    prob = np.where(gt == 1, 0.6, 0.4)  # right at 0.5, all cell at 0.3
    monkeypatch.setattr(V, "predict_probs", lambda model, image, **kw: np.stack([1 - prob, prob]))

    @dataclass
    class Item:
        name: str
        image: np.ndarray
        target: np.ndarray

    model = torch.nn.Conv2d(1, 2, 1)
    items = [Item("a", np.zeros((1, 8, 8), np.float32), gt)]
    at_03, _ = V.validate(model, items, device=torch.device("cpu"), thresholds=[0.3])
    best, _ = V.validate(model, items, device=torch.device("cpu"), thresholds=[0.3, 0.5])
    assert at_03["pixel_error"] > 0 and at_03["v_rand"] < 1
    assert best == {"pixel_error": 0.0, "dice": 1.0, "v_rand": 1.0}


def test_hela_recipe_edge_rule_keeps_every_annotated_cell(hela_dir):
    # configs/hela.yaml removes objects at the frame's edge under postprocess.edge_min_size pixels
    # (slivers of cells the reference leaves out); applied to the reference itself, it must keep
    # every annotated cell of the nine frames, the smallest at the edge covering 3975 px.
    from pathlib import Path

    from unetseg.io import read_image
    from unetseg.postprocess import remove_small_edge_objects

    cfg = load_train_config(Path(__file__).resolve().parents[1] / "configs" / "hela.yaml")
    assert cfg.postprocess.edge_min_size > 1
    frames = sorted((hela_dir / "01_GT" / "SEG").glob("man_seg*.tif"))
    assert len(frames) == 9
    for f in frames:
        gt = read_image(f)
        assert remove_small_edge_objects(gt, cfg.postprocess.edge_min_size).max() == len(np.unique(gt[gt > 0])), f.name
