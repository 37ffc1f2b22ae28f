"""A Dask cluster loses workers under ``unetseg predict --dask-scheduler``: scheduler and worker
processes (no nannies, so a killed worker stays dead) on the loopback address, started here.

One of two workers SIGKILLed mid-run: the prediction completes, equals the in-memory result to
1e-6, and every block's write finished exactly once (the scheduler's own transition log). Every
worker killed: one error line, exit 1, nothing under the final name."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

distributed = pytest.importorskip("distributed")

from unetseg.models import ModelCard, UNet, save  # noqa: E402
from unetseg.predict import predict_file  # noqa: E402

DASK = str(Path(sys.executable).with_name("dask"))
SIDE = 3072  # several blocks of unetseg's Dask path (with the tile _predict sets)


def _env(**extra) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    env["DASK_DISTRIBUTED__ADMIN__LOW_LEVEL_LOG_LENGTH"] = "1000000"  # keep every transition
    return env


class Cluster:
    """``dask scheduler`` + ``n`` ``dask worker --no-nanny`` processes on 127.0.0.1."""

    def __init__(self, folder: Path, n: int):
        self.file = folder / "scheduler.json"
        base = ["--no-dashboard"]
        self.scheduler = subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--scheduler-file",
                                           str(self.file), *base], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for(self.file.is_file, 60, "the scheduler file")
        self.workers = [subprocess.Popen([DASK, "worker", "--scheduler-file", str(self.file), "--nthreads", "1", "--no-nanny",
                                          "--host", "127.0.0.1", "--memory-limit", "0", *base], env=_env(),
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(n)]
        self.client = distributed.Client(scheduler_file=str(self.file), timeout=60)
        self.client.wait_for_workers(n, timeout=120)
        self.address = self.client.scheduler.address

    def busy_worker_pid(self) -> int | None:
        """The pid of a worker running a task of the prediction right now."""
        busy = [w for w, keys in self.client.processing().items() if keys]
        return self.client.run(os.getpid, workers=busy[:1])[busy[0]] if busy else None

    def writes_to_memory(self) -> dict[str, int]:
        """How many times each block-write task finished, from the scheduler's transition log."""
        def count(dask_scheduler):
            out = {}
            for t in dask_scheduler.transition_log:
                if str(t.key).startswith("_write_block") and t.finish == "memory":
                    out[str(t.key)] = out.get(str(t.key), 0) + 1
            return out

        return self.client.run_on_scheduler(count)

    def close(self) -> None:
        self.client.close()
        for p in [*self.workers, self.scheduler]:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)


def _ended(run: subprocess.Popen) -> None:
    """Fail at once, with its error, if the prediction ended before a worker could be killed."""
    if run.poll() is not None:
        pytest.fail(f"the prediction ended (exit {run.returncode}) before a worker was killed: {run.stderr.read()[-2000:]}")


def _wait_for(condition, seconds: float, what: str):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"waited {seconds} s for {what}")


@pytest.fixture
def model_and_image(tmp_path):
    torch.manual_seed(0)
    model = save(UNet(1, 2, depth=2, base_channels=4), tmp_path / "m.safetensors",
                 card=ModelCard(classes=("membrane", "cell"), task="semantic"))
    image = tmp_path / "big.tif"
    tifffile.imwrite(image, np.random.default_rng(0).integers(0, 255, (SIDE, SIDE), dtype=np.uint8))
    return model, image


def _predict(model, image, out, address, **env):
    # 1028-px tiles: 2048-px blocks, so 2 x 2 blocks of the 3072-px image whatever the memory budget's tile
    cmd = [sys.executable, "-m", "unetseg", "predict", "--model", str(model), "--device", "cpu", "--precision", "fp32",
           "--tile", "1028", str(image), "--out", str(out), "--dask-scheduler", address]
    return subprocess.Popen(cmd, env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_worker_killed_mid_run_loses_nothing(model_and_image, tmp_path, tally):
    model, image = model_and_image
    cluster = Cluster(tmp_path, 2)
    try:
        run = _predict(model, image, tmp_path / "out", cluster.address)
        victim = _wait_for(lambda: cluster.busy_worker_pid() or _ended(run), 240, "the prediction to start")
        os.kill(victim, signal.SIGKILL)
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err
        writes = cluster.writes_to_memory()
    finally:
        cluster.close()
    assert len(writes) >= 4 and set(writes.values()) == {1}, writes  # each block's write finished once; none missed: below
    want = tmp_path / "want.tif"
    predict_file(model, image, want, precision="fp32", device="cpu")
    np.testing.assert_allclose(tifffile.imread(tmp_path / "out" / "big.tif"), tifffile.imread(want), atol=1e-6)
    tally["dask workers killed mid-run, prediction completed"] += 1


def test_all_workers_killed_is_one_line_and_no_output(model_and_image, tmp_path, tally):
    model, image = model_and_image
    cluster = Cluster(tmp_path, 1)
    try:
        run = _predict(model, image, tmp_path / "out", cluster.address, UNETSEG_DASK_NO_WORKERS_S="3")
        _wait_for(lambda: cluster.busy_worker_pid() or _ended(run), 240, "the prediction to start")
        cluster.workers[0].kill()
        _, err = run.communicate(timeout=300)
    finally:
        cluster.close()
    lines = err.strip().splitlines()
    assert run.returncode == 1 and len(lines) == 1 and "no worker for 3 s" in lines[0], err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []
    tally["dask clusters left without workers, refused cleanly"] += 1


class _RefusingTarget:
    """A target whose every write fails as a changed input would."""

    shape = (64, 64)

    def __setitem__(self, index, value):
        from unetseg.errors import InputError

        raise InputError("big.tif: the input was modified while it was being read")


def test_an_error_inside_a_block_reaches_the_caller_as_it_was():
    import dask.array as da

    from unetseg.errors import InputError
    from unetseg.inference.dask import store_on_cluster

    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        with pytest.raises(InputError, match="modified while it was being read"):
            store_on_cluster(da.zeros((64, 64), chunks=32), _RefusingTarget(), client)
        assert store_on_cluster(da.ones((64, 64), chunks=32), np.zeros((64, 64)), client) == 64 * 64 * 8  # a NumPy target
