"""A training rank dies under ``torchrun`` (two CPU processes, gloo).

With ``--max-restarts=1`` torchrun restarts the group, which continues from the newest complete
checkpoint (``unetseg train`` resumes when torchrun restarts it) and ends with the parameters of
an uninterrupted two-process run resumed from that same checkpoint (fp32). Without restarts the
surviving rank does not hang: the job exits non-zero well within ``runtime.collective_timeout_s``."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from unetseg.train import latest_checkpoint

from .test_kills import RECIPE, _dataset, _env, _last_logged_step

PY = sys.executable
TIMEOUT_S = 60  # runtime.collective_timeout_s in these runs
STEPS, EVERY = 600, 20  # tiny steps (~100/s): long enough to be killed mid-run


def _torchrun(cfg: Path, run: Path, *extra: str, restarts: int = 0, resume: bool = False) -> subprocess.Popen:
    where = ["--resume", str(run)] if resume else ["--config", str(cfg), "--out", str(run)]
    cmd = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", f"--max-restarts={restarts}",
           "-m", "unetseg", "train", *where, "--no-progress", "--set", f"runtime.collective_timeout_s={TIMEOUT_S}", *extra]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _rank_pid(launcher: subprocess.Popen, rank: int) -> int | None:
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "unetseg" in " ".join(child.cmdline()):
                return child.pid
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def _kill_rank_1_after(launcher: subprocess.Popen, run: Path, step: int) -> None:
    deadline = time.monotonic() + 240
    while _last_logged_step(run) < step and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = _rank_pid(launcher, 1)
    assert pid is not None, "rank 1 not found"
    psutil.Process(pid).send_signal(signal.SIGKILL)


@pytest.fixture
def recipe(tmp_path):
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text(RECIPE.format(data=_dataset(tmp_path / "data"), steps=STEPS, every=EVERY).replace("keep_last: 2", "keep_last: 1000"))
    return cfg


def test_a_rank_killed_under_max_restarts_resumes_from_the_newest_checkpoint(recipe, tmp_path, tally):
    run = tmp_path / "run"
    launcher = _torchrun(recipe, run, restarts=1)
    _kill_rank_1_after(launcher, run, 5 * EVERY + 7)
    _, err = launcher.communicate(timeout=600)
    assert launcher.returncode == 0, err[-12000:]  # enough to reach the failed rank's traceback above torchrun's summary
    steps = sorted(int(p.name.split("_")[1]) for p in (run / "checkpoints").iterdir() if not p.name.startswith("."))
    assert steps[-1] == STEPS
    # The restarted group says where it continued: the newest complete checkpoint when it started.
    resumed = re.findall(r"resuming from \S+ \(step (\d+) of", err)
    assert len(resumed) == 2, err[-3000:]  # both ranks of the restarted group, from the same step
    resumed_at = int(resumed[0])
    assert resumed[0] == resumed[1]  # (the old rank 0, stopped by torchrun's SIGTERM, released RUN/.lock or left it to take over)
    assert resumed_at % EVERY == 0 and resumed_at >= 5 * EVERY
    # An uninterrupted run resumed from that same checkpoint ends with the same parameters.
    twin = tmp_path / "twin"
    (twin / "checkpoints").mkdir(parents=True)
    shutil.copy(run / "config.yaml", twin / "config.yaml")
    source = _checkpoint(run, resumed_at)
    shutil.copytree(source, twin / "checkpoints" / source.name)
    again = _torchrun(recipe, twin, resume=True)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    a, b = load_file(str(run / "model.safetensors")), load_file(str(twin / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    tally["training ranks killed under torchrun, group restarted and resumed"] += 1


def _checkpoint(run: Path, step: int) -> Path:
    return next(p for p in (run / "checkpoints").iterdir() if not p.name.startswith(".") and int(p.name.split("_")[1]) == step)


def test_without_restarts_the_surviving_rank_exits_instead_of_hanging(recipe, tmp_path, tally):
    run = tmp_path / "run"
    launcher = _torchrun(recipe, run, "--set", "schedule.steps=100000")
    _kill_rank_1_after(launcher, run, EVERY + 7)
    killed = time.monotonic()
    launcher.communicate(timeout=TIMEOUT_S + 120)
    assert launcher.returncode != 0
    assert time.monotonic() - killed < TIMEOUT_S  # torchrun stops the group; no rank waits out the timeout
    assert not [p for p in psutil.Process().children(recursive=True) if "unetseg" in " ".join(p.cmdline())]
    assert latest_checkpoint(run / "checkpoints") is not None
    tally["training ranks killed under torchrun without restarts, job ended"] += 1
