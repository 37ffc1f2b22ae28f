"""kill -9 at random moments: training resumes from a loadable checkpoint losing at most one
checkpoint interval; a killed prediction never leaves a half-written file under its final name."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from unetseg.io import read_image, write_image
from unetseg.models import ModelCard, UNet, load, save
from unetseg.train import latest_checkpoint

PY = sys.executable
CKPT_EVERY = 4

RECIPE = """
model: {{arch: UNet, args: {{depth: 2, base_channels: 4, dropout: 0.0}}}}
train_data: {{path: {data}}}
data:
  target: {{kind: binary, foreground_value: 255, class_names: [membrane, cell]}}
optim: {{name: adam, lr: 0.003}}
schedule: {{steps: {steps}, name: cosine, warmup_steps: 2}}
loss: {{name: ce, reduction: weight}}
checkpoint: {{every: {every}, keep_last: 2}}
runtime: {{device: cpu, precision: fp32, seed: 1, log_every: 1, threads: 1}}
batch_size: 1
tile: [28, 28]
"""


def _env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(2):
        label = np.where(rng.random((48, 48)) < 0.2, 0, 255).astype(np.uint8)
        write_image(root / "images" / f"{i}.png", (label // 2 + rng.integers(0, 60, label.shape)).astype(np.uint8))
        write_image(root / "labels" / f"{i}.png", label)
    return root


def _last_logged_step(run: Path) -> int:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return 0
    steps = [0]
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by the kill
        if rec.get("kind") == "train":
            steps.append(int(rec["step"]))
    return max(steps)


def _checkpoint_step(run: Path) -> int:
    ckpt = latest_checkpoint(run / "checkpoints")
    return 0 if ckpt is None else int(ckpt.name.split("_")[1])


def test_training_survives_random_kills(tmp_path, tally):
    data = _dataset(tmp_path / "data")
    steps = 120
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text(RECIPE.format(data=data, steps=steps, every=CKPT_EVERY))
    run = tmp_path / "run"
    rng = np.random.default_rng(7)
    kills = 0
    for attempt in range(12):
        before = _checkpoint_step(run)
        argv = [PY, "-m", "unetseg", "train", "--no-progress"]
        # Resume whenever a checkpoint exists; a run killed before its first one starts over.
        argv += ["--resume", str(run)] if before else ["--config", str(cfg), "--out", str(run)]
        if not before:
            shutil.rmtree(run, ignore_errors=True)
        proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if attempt < 4:
            # Kill at a random moment once training is under way (often mid-checkpoint).
            deadline = time.monotonic() + 60
            while _last_logged_step(run) <= before + 1 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(float(rng.uniform(0.0, 0.3)))
            if proc.poll() is None:
                logged = _last_logged_step(run)
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                kills += 1
                tally["kill -9 of training survived"] += 1
                after = _checkpoint_step(run)
                assert after >= before, "a kill must never lose an older checkpoint"
                assert logged - after <= CKPT_EVERY + 1, f"lost {logged - after} steps (> one interval)"
                continue
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        break
    assert kills >= 3
    assert _checkpoint_step(run) == steps or (run / "model.safetensors").is_file()
    model = load(run)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_prediction_killed_leaves_no_partial_output(tmp_path, tally):
    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    save(UNet(1, 2, depth=2, base_channels=4), model_dir, card=ModelCard(normalization={"method": "minmax"}))
    image = tmp_path / "big.npy"
    np.save(image, np.random.default_rng(0).random((2048, 2048), dtype=np.float32))
    out = tmp_path / "out"
    rng = np.random.default_rng(3)
    argv = [PY, "-m", "unetseg", "predict", "--model", str(model_dir), str(image), "--out", str(out), "--tile", "256"]
    for _ in range(3):
        proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(float(rng.uniform(1.5, 4.0)))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            tally["kill -9 of prediction survived"] += 1
        proc.wait(timeout=120)
        final = out / "big.tif"
        if final.exists():  # finished before the kill: then it must be complete
            assert read_image(final).shape == (2048, 2048)
            final.unlink()
        # Only hidden temporaries may remain, never a file under the final name.
        assert all(p.name.startswith(".") for p in out.iterdir()) if out.exists() else True
    # A normal run afterwards succeeds and is complete.
    subprocess.run(argv, env=_env(), check=True, capture_output=True, timeout=300)
    assert read_image(out / "big.tif").shape == (2048, 2048)
