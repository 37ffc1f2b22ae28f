"""The ``unetseg train`` command: a run folder from a YAML recipe, resume, errors, SIGTERM, torchrun."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from unetseg.cli import main
from unetseg.models import load_with_config
from unetseg.train import latest_checkpoint
from unetseg.train.plots import read_metrics

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


RECIPE = """
model: {{arch: UNet, args: {{depth: 2, base_channels: 4, dropout: 0.0}}}}
train_data: {{path: {data}, select: ["00", "01"]}}
val_data: {data_val}
data:
  target: {{kind: binary, foreground_value: 255, class_names: [membrane, cell]}}
augment: {{elastic_p: 1.0, rotation_p: 1.0, flip_p: 0.5}}
optim: {{name: adam, lr: 0.003}}
schedule: {{steps: {steps}, name: cosine, warmup_steps: 2}}
loss: {{name: ce, reduction: weight}}
validation: {{every: {val_every}, metric: v_rand}}
checkpoint: {{every: {ckpt_every}, keep_last: 2}}
runtime: {{device: cpu, precision: fp32, seed: 1, log_every: 1, threads: 1}}
batch_size: 1
tile: [28, 28]
"""


def write_recipe(tmp: Path, data: Path, *, steps=6, val=True, val_every=3, ckpt_every=3) -> Path:
    data_val = f'{{path: {data}, select: ["02"]}}' if val else "null"
    cfg = tmp / "recipe.yaml"
    cfg.write_text(RECIPE.format(data=data, data_val=data_val, steps=steps, val_every=val_every, ckpt_every=ckpt_every))
    return cfg


@pytest.fixture
def dataset(tmp_path, make_em_dataset) -> Path:
    return make_em_dataset(tmp_path / "data")


def test_train_writes_run_folder_and_predict_needs_nothing_else(tmp_path, dataset, capsys):
    cfg = write_recipe(tmp_path, dataset)
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), "--set", "optim.lr=0.004", "--no-progress"]) == 0
    for name in ("model.safetensors", "model.json", "config.yaml", "metrics.jsonl", "loss.png", "val/02.png"):
        assert (out / name).is_file(), name
    model, meta = load_with_config(out)
    card = meta["card"]
    assert card.classes == ("membrane", "cell") and card.foreground_class == 1
    assert card.task == "semantic" and card.normalization["method"] == "percentile"
    assert card.training.train and card.training.val == ("02",) and card.training.tile and card.training.precision
    assert "optim:\n" in (out / "config.yaml").read_text() and "lr: 0.004" in (out / "config.yaml").read_text()
    kinds = [r["kind"] for r in read_metrics(out / "metrics.jsonl")]
    assert kinds.count("val") == 2 and kinds.count("train") == 6
    # a second run into the same folder is refused
    assert main(["train", "--config", str(cfg), "--out", str(out)]) == 1
    assert "already holds a training run" in capsys.readouterr().err


def test_config_errors_name_the_key(tmp_path, dataset, capsys):
    cfg = write_recipe(tmp_path, dataset)
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r"), "--set", "optim.lrr=1"]) == 1
    assert "optim.lrr: unknown key" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r"), "--set", "schedule.steps=many"]) == 1
    assert "schedule.steps: expected an integer" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r"), "--set", "tile=[29, 29]"]) == 1
    assert "tile:" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r"), "--set", "train_data.select=[zz]"]) == 1
    assert "train_data.select" in capsys.readouterr().err


def test_cli_resume_continues_exactly(tmp_path, dataset):
    cfg = write_recipe(tmp_path, dataset, steps=6, val=False, ckpt_every=3)
    main(["train", "--config", str(cfg), "--out", str(tmp_path / "full"), "--no-progress"])
    # interrupted after 3 steps: simulate by a run with steps=6 stopped at its 3-step checkpoint
    from unetseg.train.config import load_train_config
    from unetseg.train.setup import train_from_config

    res = train_from_config(load_train_config(cfg), tmp_path / "part", config_path=cfg, stop_after=3)
    assert res.status == "stopped"
    assert main(["train", "--resume", str(tmp_path / "part"), "--no-progress"]) == 0
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "model.safetensors"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6


def test_a_skeleton_recall_recipe_trains_on_the_skeletons_its_tiles_carry(tmp_path, dataset, monkeypatch):
    import unetseg.losses as losses
    from unetseg.train.config import load_train_config
    from unetseg.train.setup import train_from_config

    seen = []
    real = losses.skeleton_recall_loss

    def spy(logits, target, mask=None, **kw):
        seen.append(kw.get("skeletons"))
        return real(logits, target, mask, **kw)

    monkeypatch.setattr(losses, "skeleton_recall_loss", spy)
    cfg = write_recipe(tmp_path, dataset, steps=3, val=False)
    over = ["loss.skeleton_weight=1.0", "loss.skeleton_classes=[0, 1]", "runtime.num_workers=1"]
    res = train_from_config(load_train_config(cfg, over), tmp_path / "run", config_path=cfg)
    assert res.status == "completed" and len(seen) == 3
    assert all(s is not None and str(s.dtype) == "torch.bool" and tuple(s.shape[:2]) == (1, 2) for s in seen)  # from the loader


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.mark.serial
def test_sigterm_writes_checkpoint_and_exits_143(tmp_path, dataset):
    cfg = write_recipe(tmp_path, dataset, steps=100000, val=False, ckpt_every=100000)
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [PY, "-m", "unetseg", "train", "--config", str(cfg), "--out", str(out), "--no-progress"],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        recs = read_metrics(out / "metrics.jsonl")
        if len(recs) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    ckpt = latest_checkpoint(out / "checkpoints")
    assert ckpt is not None, err
    step = int(ckpt.name.split("_")[1])
    assert step >= 3 and "resume with --resume" in err


@pytest.mark.serial
def test_kill_during_checkpoint_writes_never_leaves_a_bad_checkpoint(tmp_path):
    """SIGKILL a process that writes checkpoints in a loop at random moments; the newest
    complete checkpoint must always load."""
    script = tmp_path / "writer.py"
    script.write_text(
        "import sys, torch\n"
        "from unetseg.models import UNet\n"
        "from unetseg.train.checkpoint import save_checkpoint\n"
        "m = UNet(1, 2, depth=3, base_channels=16)\n"
        "opt = torch.optim.Adam(m.parameters())\n"
        "m(torch.zeros(1, 1, 92, 92)).sum().backward(); opt.step()\n"
        "print('ready', flush=True)\n"
        "step = 0\n"
        "while True:\n"
        "    step += 1\n"
        "    save_checkpoint(sys.argv[1], step, m, opt, state={'s': step}, keep_last=2)\n"
    )
    from unetseg.models import UNet
    from unetseg.train.checkpoint import list_checkpoints, load_checkpoint

    import torch

    rng = np.random.default_rng(0)
    folder = tmp_path / "ckpt"
    kills = 0
    for _ in range(4):
        proc = subprocess.Popen([PY, str(script), str(folder)], env=_env(), stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.05, 0.6)))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        kills += 1
        latest = latest_checkpoint(folder)
        if latest is None:
            continue
        m = UNet(1, 2, depth=3, base_channels=16)
        opt = torch.optim.Adam(m.parameters())
        meta = load_checkpoint(latest, m, opt)
        assert meta["state"]["s"] == meta["step"]
        for _, path in list_checkpoints(folder):  # every complete-looking one is complete
            load_checkpoint(path, UNet(1, 2, depth=3, base_channels=16))
    assert kills == 4
    assert latest_checkpoint(folder) is not None


@pytest.mark.serial
def test_torchrun_two_processes_keep_parameters_identical(tmp_path, dataset):
    cfg = write_recipe(tmp_path, dataset, steps=4, val=True, val_every=2, ckpt_every=2)
    out = tmp_path / "ddp"
    # a time-fitted schedule all-reduces its position every step (the limit itself does not bind here)
    cmd = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "unetseg", "train",
           "--config", str(cfg), "--out", str(out), "--no-progress", "--minutes", "5", "--set", "schedule.fit_time_limit=true"]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    recs = read_metrics(out / "metrics.jsonl")
    check = [r for r in recs if r["kind"] == "ddp_check"]
    assert check and check[0]["world_size"] == 2 and check[0]["max_param_diff"] == 0.0
    assert [r["step"] for r in recs if r["kind"] == "train"] == [1, 2, 3, 4]  # only rank 0 wrote
    assert (out / "model.safetensors").is_file()
    json.loads((out / "model.json").read_text())


def test_steps_for_budget_fits_the_schedule_to_the_time(tmp_path, dataset, monkeypatch):
    import tempfile

    from unetseg.errors import ConfigError
    from unetseg.train.config import load_train_config
    from unetseg.train.setup import steps_for_budget

    cfg = load_train_config(write_recipe(tmp_path, dataset))
    # runtime.max_minutes is the budget of the real run, not of the probe
    cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, max_minutes=0.0001))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    steps, rate = steps_for_budget(cfg, 0.5, probe_steps=4, warmup=1)
    assert rate > 0
    assert steps == max(10, int(rate * 30 * 0.97))  # 0.5 min at the measured rate, 3 % margin
    assert not [p for p in scratch.iterdir() if p.name.startswith("unetseg-probe-")]  # probe folder gone
    with pytest.raises(ConfigError, match="minutes"):
        steps_for_budget(cfg, 0)


def test_a_recipe_naming_a_label_file_trains_on_that_pair(tmp_path, dataset):
    # train_data.labels points at a label file: the layout is the explicit pair, found once
    recipe = f"""
model: {{arch: UNet, args: {{depth: 2, base_channels: 2, dropout: 0.0}}}}
train_data: {{path: {dataset / "images" / "00.png"}, labels: {dataset / "labels" / "00.png"}}}
data: {{target: {{kind: auto, class_names: [membrane, cell]}}}}
schedule: {{steps: 2}}
validation: {{every: 0}}
runtime: {{device: cpu, precision: fp32, threads: 1}}
tile: [28, 28]
"""
    cfg = tmp_path / "pair.yaml"
    cfg.write_text(recipe)
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 0
    card = load_with_config(out)[1]["card"]
    assert card.training.train == ("00",) and card.classes == ("membrane", "cell") and card.task == "semantic"


def test_a_misspelt_model_argument_is_reported_before_any_data_is_read(tmp_path, dataset, monkeypatch, capsys):
    import unetseg.data.dataset as D

    def no_reading(*a, **k):
        raise AssertionError("data was read before the config was checked")

    monkeypatch.setattr(D, "read_image_axes", no_reading)
    cfg = write_recipe(tmp_path, dataset)
    for override, key in (("model.args.base_chanels=8", "model.args.base_chanels"), ("tile=[29,29]", "tile")):
        assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r"), "--set", override]) == 1
        err = capsys.readouterr().err
        assert key in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r" / "model.safetensors").exists()


def test_checkpoints_and_model_files_are_readable_by_the_group(tmp_path, dataset):
    import stat

    old = os.umask(0o022)
    try:
        cfg = write_recipe(tmp_path, dataset, steps=3, val=False, ckpt_every=3)
        assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" and "checkpoints" in p.parts for p in files)
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) & 0o044 == 0o044, p
