"""A full disk, two processes on one folder, an input that changes under a running job.

The small disk is a tmpfs mounted by the test (as root; the tests skip with a message where
mounting is not allowed). ENOSPC is one line naming the path and the bytes, nothing is left
under a final name, the previous checkpoint stays loadable and training resumes once space is
freed. Two trainings on one run folder: the second is refused while the first lives, and the
lock of a killed run is taken over with a warning. Two predictions into one folder leave whole
files only. An input truncated while it is read is an error, never garbage output."""

from __future__ import annotations

import logging
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

from safetensors.torch import load_file

from unetseg.cli import main
from unetseg.io import read_image, write_image
from unetseg.models import ModelCard, UNet, load, save
from unetseg.train import latest_checkpoint
from unetseg.train.checkpoint import load_checkpoint

from .test_kills import RECIPE, _dataset, _env, _last_logged_step

PY = sys.executable


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs at ``tmp_path/small``."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'}); run as root")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(folder: Path, leave: int) -> Path:
    """A file taking all but ``leave`` bytes of the disk holding ``folder``."""
    import shutil

    filler = folder / "filler.bin"
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, shutil.disk_usage(folder).free - leave))
    return filler


def _model(path: Path) -> Path:
    torch.manual_seed(0)
    return save(UNet(1, 2, depth=2, base_channels=4), path, card=ModelCard(classes=("membrane", "cell")))


def test_prediction_onto_a_full_disk_names_path_and_bytes(small_disk, tmp_path, capsys, tally):
    model = _model(tmp_path / "m.safetensors")
    image = tmp_path / "big.tif"
    tifffile.imwrite(image, np.random.default_rng(0).integers(0, 255, (1536, 1536), dtype=np.uint8))
    for fmt, expect in (("tif", f"needs {1536 * 1536 * 4} bytes"), ("zarr", f"while writing it (needs about {1536 * 1536 * 4} bytes")):
        capsys.readouterr()
        code = main(["predict", "--model", str(model), "--device", "cpu", str(image), "--out", str(small_disk / "out"),
                     "--format", fmt])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1 and len(err) == 1, err
        assert f"big.{fmt}" in err[0] and expect in err[0], err[0]
        assert list((small_disk / "out").iterdir()) == []  # nothing under a final name, no temporaries
        tally["disk-full faults injected (predict)"] += 1


def test_training_on_a_full_disk_keeps_its_checkpoint_and_resumes(small_disk, tmp_path, capsys, tally):
    data = _dataset(tmp_path / "data")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(data=data, steps=8, every=2))
    run = small_disk / "run"
    assert main(["train", "--no-progress", "--config", str(recipe), "--out", str(run), "--set", "schedule.steps=4"]) == 0
    assert latest_checkpoint(run / "checkpoints").name.endswith("4")
    filler = _fill(small_disk, leave=8192)  # room for log lines, not for a checkpoint
    capsys.readouterr()
    assert main(["train", "--no-progress", "--resume", str(run), "--set", "schedule.steps=8"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint" in err[0] and "needs" in err[0] and "bytes" in err[0], err
    newest = latest_checkpoint(run / "checkpoints")
    assert newest.name.endswith("4")  # the previous checkpoint is still the newest, and loads
    load_checkpoint(newest, UNet(1, 2, depth=2, base_channels=4, dropout=0.0))
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    filler.unlink()
    assert main(["train", "--no-progress", "--resume", str(run), "--set", "schedule.steps=8"]) == 0
    assert latest_checkpoint(run / "checkpoints").name.endswith("8") and load(run) is not None
    tally["disk-full faults injected (training), resumed after"] += 1


def test_a_second_training_on_a_live_run_folder_is_refused(tmp_path, capsys, tally):
    data = _dataset(tmp_path / "data")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(data=data, steps=100000, every=1000))
    run = tmp_path / "run"
    first = subprocess.Popen([PY, "-m", "unetseg", "train", "--no-progress", "--config", str(recipe), "--out", str(run)],
                             env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while _last_logged_step(run) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert main(["train", "--no-progress", "--config", str(recipe), "--out", str(run)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"pid {first.pid} on" in err[0] and "another training run" in err[0], err
        tally["second trainings on a live run folder refused"] += 1
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    assert (run / ".lock").read_text().startswith(f"{first.pid} ")  # the killed run's pid is still there


def test_the_lock_of_a_killed_run_is_taken_over_with_a_warning(tmp_path, caplog):
    data = _dataset(tmp_path / "data")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(data=data, steps=4, every=2))
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text("999999 on a-host-that-died\n")  # left by a kill -9: nobody holds the flock
    with caplog.at_level(logging.WARNING, logger="unetseg.train.runlock"):
        assert main(["train", "--no-progress", "--config", str(recipe), "--out", str(run)]) == 0
    assert "took over the lock of a run that ended without releasing it (pid 999999" in caplog.text
    assert (run / ".lock").read_text() == ""  # a clean end empties it


def test_two_predictions_into_one_folder_leave_whole_files(tmp_path, tally):
    models = [_model(tmp_path / "a.safetensors")]
    torch.manual_seed(1)
    models.append(save(UNet(1, 2, depth=2, base_channels=4), tmp_path / "b.safetensors", card=ModelCard(classes=("m", "c"))))
    image = tmp_path / "img.tif"
    tifffile.imwrite(image, np.random.default_rng(0).integers(0, 255, (1024, 1024), dtype=np.uint8))
    wants = []
    for m in models:
        assert main(["predict", "--model", str(m), "--device", "cpu", str(image), "--out", str(tmp_path / f"want-{m.stem}")]) == 0
        wants.append(tifffile.imread(tmp_path / f"want-{m.stem}" / "img.tif"))
    out = tmp_path / "shared-out"
    for _ in range(3):
        procs = [subprocess.Popen([PY, "-m", "unetseg", "predict", "--model", str(m), "--device", "cpu", str(image), "--out", str(out)],
                                  env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for m in models]
        for p in procs:
            assert p.wait(timeout=300) == 0, p.stderr.read()
        got = tifffile.imread(out / "img.tif")
        assert any(np.array_equal(got, w) for w in wants)  # one whole result, never a mix
        assert [p.name for p in out.iterdir()] == ["img.tif"]
        tally["concurrent predictions into one folder"] += 2


def test_an_input_truncated_while_it_is_read_is_an_error(tmp_path, capsys, monkeypatch):
    """A streamed prediction reads the input band by band; the file is cut short after the first."""
    from unetseg import store

    model = _model(tmp_path / "m.safetensors")
    image = tmp_path / "big.tif"
    tifffile.imwrite(image, np.random.default_rng(0).integers(0, 255, (1024, 1024), dtype=np.uint8))
    reads = []
    original = store.RawSource.__getitem__

    def cut_after_first_read(self, index):
        reads.append(index)
        if len(reads) == 2:
            with open(image, "r+b") as fh:
                fh.truncate(os.path.getsize(image) // 2)
        return original(self, index)

    monkeypatch.setattr(store.RawSource, "__getitem__", cut_after_first_read)
    assert main(["predict", "--model", str(model), "--device", "cpu", str(image), "--out", str(tmp_path / "out"), "--tile", "256"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "big.tif" in err[0] and ("changed" in err[0] or "truncated" in err[0]), err
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("change", ["rewritten in place", "replaced"])
def test_an_input_changed_while_it_is_read_is_an_error(tmp_path, capsys, monkeypatch, change, tally):
    from unetseg import store

    model = _model(tmp_path / "m.safetensors")
    image = tmp_path / "big.tif"
    pixels = np.random.default_rng(0).integers(0, 255, (1024, 1024), dtype=np.uint8)
    tifffile.imwrite(image, pixels)
    reads, original = [], store.RawSource.__getitem__

    def change_after_first_read(self, index):
        reads.append(index)
        if len(reads) == 2:
            if change == "replaced":  # a new file renamed over the input; the reader reopens by path
                tifffile.imwrite(tmp_path / "new.tif", 255 - pixels)
                os.replace(tmp_path / "new.tif", image)
                self.close()
            else:  # same size, same inode, other pixels
                with tifffile.TiffFile(image) as tif:
                    offset = tif.pages.first.dataoffsets[0]
                with open(image, "r+b") as fh:
                    fh.seek(offset)
                    fh.write((255 - pixels).tobytes())
                os.utime(image, ns=(time.time_ns(), time.time_ns() + 10**9))
        return original(self, index)

    monkeypatch.setattr(store.RawSource, "__getitem__", change_after_first_read)
    assert main(["predict", "--model", str(model), "--device", "cpu", str(image), "--out", str(tmp_path / "out"), "--tile", "256"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    word = "replaced" if change == "replaced" else "modified"
    assert len(err) == 1 and f"the input was {word}" in err[0] and "big.tif" in err[0], err
    assert list((tmp_path / "out").iterdir()) == []
    tally["inputs changed under a prediction, refused"] += 1


def test_a_training_image_edited_during_training_changes_nothing(tmp_path, tally):
    """Training reads every image once, at the start (and again at a resume): an edit made while
    it runs does not reach the run."""
    data = _dataset(tmp_path / "data")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(data=data, steps=300, every=1000))
    finals = []
    for name, edit in (("calm", False), ("edited", True)):
        run = tmp_path / name
        proc = subprocess.Popen([PY, "-m", "unetseg", "train", "--no-progress", "--config", str(recipe), "--out", str(run)],
                                env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if edit:
            deadline = time.monotonic() + 120
            while _last_logged_step(run) < 5 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert proc.poll() is None, "training ended before the edit"
            image = data / "images" / "0.png"
            write_image(image, 255 - read_image(image))
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        finals.append(load_file(str(run / "model.safetensors")))
    assert all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0])
    tally["training images edited mid-run, run unaffected"] += 1


@pytest.mark.parametrize("fmt", ["onnx", "bioimageio"])
def test_export_onto_a_full_disk_is_one_line_and_no_file(small_disk, tmp_path, capsys, fmt, tally):
    pytest.importorskip("onnx", reason="needs the export extra (make test installs it)")
    model = _model(tmp_path / "m.safetensors")
    out = small_disk / ("m.onnx" if fmt == "onnx" else "m.zip")
    _fill(small_disk, leave=8192)
    capsys.readouterr()
    assert main(["export", str(model), "--format", fmt, "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and out.name in err[0] and "no space left on the device" in err[0] and "needs about" in err[0], err
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler.bin"]
    tally["disk-full faults injected (export)"] += 1
