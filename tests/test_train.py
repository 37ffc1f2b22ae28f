"""The training loop on a tiny synthetic set: learning, exact resume, NaN guard, run folder."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from unetseg.config import from_dict
from unetseg.errors import TrainingError
from unetseg.models import ModelCard, UNet, load_with_config
from unetseg.train import TrainConfig, fit, latest_checkpoint, recompute_statistics, seed_model_init
from unetseg.train.batchnorm import refresh_indices
from unetseg.train.checkpoint import list_checkpoints, read_checkpoint
from unetseg.train.plots import read_metrics


class TinyTiles(torch.utils.data.Dataset):
    """Bright discs on a dark background; item i is a deterministic function of (seed, i)."""

    def __init__(self, in_size: int, out_size: int, seed: int = 0, n: int = 10**9):
        self.in_size, self.out_size, self.seed, self.n = in_size, out_size, seed, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, i])
        s = self.in_size
        yy, xx = np.mgrid[:s, :s]
        mask = np.zeros((s, s), bool)
        for _ in range(8):
            cy, cx, r = rng.uniform(0, s, 2).tolist() + [rng.uniform(4, 9)]
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        image = mask * 1.0 + rng.normal(0, 0.2, (s, s))
        c = (s - self.out_size) // 2
        target = mask[c : c + self.out_size, c : c + self.out_size].astype(np.int64)
        weight = 1.0 + target.astype(np.float32)
        return {
            "image": torch.from_numpy(image[None].astype(np.float32)),
            "target": torch.from_numpy(target),
            "weight": torch.from_numpy(weight),
            "mask": torch.ones(target.shape, dtype=torch.bool),
        }


@dataclass
class Item:
    name: str
    image: np.ndarray
    target: np.ndarray


def tiny_cfg(**over) -> TrainConfig:
    data = {
        "model": {"arch": "UNet", "args": {"in_channels": 1, "num_classes": 2, "depth": 2, "base_channels": 4, "dropout": 0.2}},
        "optim": {"name": "adam", "lr": 3e-3},
        "schedule": {"steps": 8, "name": "cosine", "warmup_steps": 2},
        "loss": {"name": "ce", "reduction": "mean"},
        "validation": {"every": 0},
        "checkpoint": {"every": 4, "keep_last": 2},
        "runtime": {"device": "cpu", "precision": "fp32", "seed": 3, "log_every": 1, "channels_last": False},
        "batch_size": 2,
        "tile": [20, 20],
    }
    for key, value in over.items():
        section, _, name = key.partition("__")
        if name:
            data.setdefault(section, {})[name] = value
        else:
            data[section] = value
    return from_dict(TrainConfig, data)


def make_model(cfg: TrainConfig) -> UNet:
    with seed_model_init(cfg.runtime.seed):
        return UNet(**cfg.model.args)


def dataset_for(model: UNet, cfg: TrainConfig) -> TinyTiles:
    in_size = model.input_shape_for(tuple(cfg.tile))[0]
    return TinyTiles(in_size, cfg.tile[0], seed=cfg.runtime.seed)


def _run(tmp: Path, cfg: TrainConfig, **kw):
    model = make_model(cfg)
    return model, fit(cfg, model, dataset_for(model, cfg), tmp, **kw)


def _fixed_loss(model, ds, cfg) -> float:
    from unetseg.losses import build_loss

    items = [ds[10**6 + i] for i in range(4)]
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    model.eval()
    with torch.no_grad():
        return float(build_loss(cfg.loss)(model(batch["image"]), batch))


def test_few_steps_lower_the_loss(tmp_path):
    cfg = tiny_cfg(schedule={"steps": 20, "name": "constant"}, optim={"name": "adam", "lr": 1e-2})
    model = make_model(cfg)
    ds = dataset_for(model, cfg)
    before = _fixed_loss(model, ds, cfg)
    model.train()
    res = fit(cfg, model, ds, tmp_path / "run")
    after = _fixed_loss(model, ds, cfg)
    assert res.status == "completed" and res.step == 20
    assert after < 0.7 * before, (before, after)
    run = tmp_path / "run"
    for name in ("model.safetensors", "model.json", "config.yaml", "metrics.jsonl", "loss.png", "model-last.safetensors"):
        assert (run / name).is_file(), name
    recs = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in recs if r["kind"] == "train"] == list(range(1, 21))
    model, meta = load_with_config(run)
    assert meta["card"].training.step == 20
    assert latest_checkpoint(run / "checkpoints").name == "step_00000020"


def test_resume_is_exact(tmp_path):
    cfg = tiny_cfg(optim={"name": "sgd", "lr": 0.05, "momentum": 0.9})
    _, full = _run(tmp_path / "full", cfg)
    _, part = _run(tmp_path / "part", cfg, stop_after=3)
    assert part.status == "stopped" and part.step == 3
    assert latest_checkpoint(tmp_path / "part" / "checkpoints").name == "step_00000003"
    _, resumed = _run(tmp_path / "part", cfg, resume=True)
    assert resumed.step == 8
    a = load_file(str(tmp_path / "full" / "model-last.safetensors"))
    b = load_file(str(tmp_path / "part" / "model-last.safetensors"))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), k
    la = [r["loss"] for r in read_metrics(tmp_path / "full" / "metrics.jsonl") if r["kind"] == "train"]
    lb = [r["loss"] for r in read_metrics(tmp_path / "part" / "metrics.jsonl") if r["kind"] == "train"]
    assert np.allclose(la, lb, atol=1e-6)


def test_resume_with_adam_batchnorm_and_workers_is_exact(tmp_path):
    cfg = tiny_cfg(
        runtime={"device": "cpu", "precision": "fp32", "seed": 5, "num_workers": 1, "channels_last": False},
        model={"arch": "UNet", "args": {"in_channels": 1, "num_classes": 2, "depth": 2, "base_channels": 4, "norm": "batch"}},
    )
    _, _ = _run(tmp_path / "full", cfg)
    _run(tmp_path / "part", cfg, stop_after=5)
    _run(tmp_path / "part", cfg, resume=True)
    a = load_file(str(tmp_path / "full" / "model-last.safetensors"))
    b = load_file(str(tmp_path / "part" / "model-last.safetensors"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6


def test_time_fitted_schedule_has_decayed_when_the_time_is_up(tmp_path):
    def slow(step, loss):  # a machine far slower than 10,000 steps in a second
        time.sleep(0.05)

    last_lr = {}
    for fitted in (False, True):
        cfg = tiny_cfg(schedule={"steps": 10_000, "name": "cosine", "fit_time_limit": fitted}, checkpoint={"every": 10**6, "keep_last": 1})
        _, res = _run(tmp_path / str(fitted), cfg, time_limit_s=1.0, on_step=slow)
        assert res.status == "time_limit" and 5 < res.step < 10_000
        lrs = [r["lr"] for r in read_metrics(tmp_path / str(fitted) / "metrics.jsonl") if r["kind"] == "train"]
        last_lr[fitted] = lrs[-1]
        if fitted:
            assert all(b <= a for a, b in zip(lrs[1:], lrs[2:]))  # decays with the clock after the warm-up
    assert last_lr[False] > 0.99 * 3e-3  # by steps alone the cosine has hardly started
    assert last_lr[True] < 0.15 * 3e-3


def test_time_limit_counts_the_time_before_a_resume(tmp_path):
    def slow(step, loss):
        time.sleep(0.3)

    cfg = tiny_cfg(schedule={"steps": 50, "name": "constant"})
    _, part = _run(tmp_path / "run", cfg, stop_after=4, on_step=slow)  # ~1.2 s of training, checkpointed
    assert part.status == "stopped"
    _, resumed = _run(tmp_path / "run", cfg, resume=True, time_limit_s=1.0)
    assert resumed.status == "time_limit" and resumed.step == 5  # the limit was already spent: one step


def test_progress_is_told_the_time_left_after_a_resume(tmp_path, monkeypatch):
    import unetseg.train.stages as stages

    seen = []

    class Spy(stages.Progress):
        def __init__(self, *args, **kwargs):
            seen.append(kwargs.get("time_left_s"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(stages, "Progress", Spy)
    cfg = tiny_cfg(schedule={"steps": 50, "name": "constant"})
    _run(tmp_path / "run", cfg, stop_after=3, time_limit_s=60.0, on_step=lambda step, loss: time.sleep(0.3))
    _run(tmp_path / "run", cfg, resume=True, time_limit_s=60.0, stop_after=4)
    _run(tmp_path / "free", cfg, stop_after=1)
    assert seen[0] == 60.0 and 50.0 < seen[1] <= 59.1 and seen[2] is None  # at least 0.9 s were spent before the resume


def test_nan_loss_stops_with_message_and_keeps_checkpoint(tmp_path):
    cfg = tiny_cfg(runtime={"device": "cpu", "precision": "fp32", "seed": 0, "debug_nan_at_step": 5, "channels_last": False})
    with pytest.raises(TrainingError, match=r"loss became nan at step 6.*step_00000004"):
        _run(tmp_path / "run", cfg)
    ckpt = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert ckpt is not None and ckpt.name == "step_00000004"


def test_nan_from_monkeypatched_loss(tmp_path, monkeypatch):
    import unetseg.train.stages as loop

    real = loop.build_loss

    def poisoned(cfg, **kw):
        fn = real(cfg, **kw)
        return lambda logits, batch: fn(logits, batch) + float("inf")

    monkeypatch.setattr(loop, "build_loss", poisoned)
    with pytest.raises(TrainingError, match="loss became inf at step 1"):
        _run(tmp_path / "run", tiny_cfg())


def test_validation_keeps_best_and_writes_overlays(tmp_path):
    cfg = tiny_cfg(validation={"every": 4, "metric": "pixel_error", "overlays": 1}, schedule={"steps": 8})
    ds = TinyTiles(60, 60, seed=99)
    val = []
    for i in range(2):
        s = ds[i]
        val.append(Item(f"v{i}", s["image"].numpy(), s["target"].numpy()))
    _, res = _run(tmp_path / "run", cfg, val_set=val, card=ModelCard(classes=("bg", "fg")))
    recs = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "val"]
    assert [r["step"] for r in recs] == [4, 8]
    assert set(recs[0]["metrics"]) >= {"pixel_error", "dice", "v_rand"}
    assert res.best_step in (4, 8)
    _, meta = load_with_config(tmp_path / "run")
    assert meta["card"].training.step == res.best_step
    assert meta["card"].classes == ("bg", "fg")
    assert (tmp_path / "run" / "val" / "v0.png").is_file()


def test_early_stopping(tmp_path):
    cfg = tiny_cfg(validation={"every": 1, "metric": "loss_never_computed_so_use_dice", "mode": "max", "patience": 1})
    ds = TinyTiles(60, 60, seed=1)
    s = ds[0]
    val = [Item("v", s["image"].numpy(), s["target"].numpy())]
    with pytest.raises(Exception, match="not computed"):
        _run(tmp_path / "bad", cfg, val_set=val)
    cfg = tiny_cfg(validation={"every": 1, "metric": "dice", "patience": 2}, optim={"name": "sgd", "lr": 1e-9, "momentum": 0.0})
    _, res = _run(tmp_path / "run", cfg, val_set=val)
    assert res.status == "early_stopped" and res.step == 3


class _TilesWithImages(TinyTiles):
    """TinyTiles plus whole training images, as :class:`unetseg.data.TileDataset` exposes them."""

    def __init__(self, images, *args, **kw):
        super().__init__(*args, **kw)
        self.images = images


def test_calibration_stores_the_output_shift_in_both_model_files(tmp_path):
    """With calibration.output_shift the run estimates the shift on its training images at the end,
    logs it and writes it into the best and the last model file, which prediction then applies."""
    ds = TinyTiles(60, 60, seed=5)
    samples = [ds[i] for i in range(3)]
    # annotations displaced one pixel down from the discs in the images
    items = [Item(f"t{i}", s["image"].numpy(), np.roll(s["target"].numpy(), 1, axis=0)) for i, s in enumerate(samples)]
    cfg = tiny_cfg(validation={"every": 4, "metric": "pixel_error"}, schedule={"steps": 8},
                   calibration={"output_shift": True, "max_images": 2, "min_gain": 0.0})
    model = make_model(cfg)
    base = dataset_for(model, cfg)
    train_set = _TilesWithImages(items, base.in_size, base.out_size, seed=cfg.runtime.seed)
    res = fit(cfg, model, train_set, tmp_path / "run", val_set=items[:1], card=ModelCard())
    assert res.status == "completed"
    recs = read_metrics(tmp_path / "run" / "metrics.jsonl")
    cal = [r for r in recs if r["kind"] == "calibration"]
    assert len(cal) == 1 and cal[0]["images"] == ["t0", "t2"] and len(cal[0]["output_shift"]) == 2
    assert [r["kind"] for r in recs].index("calibration") < max(i for i, r in enumerate(recs) if r["kind"] == "val")
    for name in ("model.safetensors", "model-last.safetensors"):
        _, meta = load_with_config(tmp_path / "run" / name)
        assert list(meta["card"].output_shift) == cal[0]["output_shift"], name
    # without the option nothing is estimated or stored
    res = fit(tiny_cfg(), make_model(tiny_cfg()), train_set, tmp_path / "plain")
    _, meta = load_with_config(tmp_path / "plain")
    assert meta["card"].output_shift is None
    assert not [r for r in read_metrics(tmp_path / "plain" / "metrics.jsonl") if r["kind"] == "calibration"]


# ------------------------------------------------------------------ weight averaging


def _checkpoint_states(run) -> dict[int, dict[str, torch.Tensor]]:
    return {step: read_checkpoint(path)[0] for step, path in list_checkpoints(run / "checkpoints")}


@pytest.mark.parametrize("decay, start, first", [(1.0, 0.5, 5), (1.0, 0.0, 1)])
def test_training_saves_the_mean_of_the_weights_since_start(tmp_path, decay, start, first):
    """With a checkpoint after every step, the saved model is the mean of the raw weights after
    steps ``first``..8 (``start`` = 0.5 of 8 steps: the updates after steps 5-8)."""
    cfg = tiny_cfg(checkpoint={"every": 1, "keep_last": 100}, averaging={"enabled": True, "decay": decay, "start": start},
                   batch_norm={"refresh_tiles": 0},  # the averaged statistics themselves, not recomputed ones
                   model={"arch": "UNet", "args": {"in_channels": 1, "num_classes": 2, "depth": 2, "base_channels": 4, "norm": "batch"}})
    _run(tmp_path / "run", cfg)
    raw = _checkpoint_states(tmp_path / "run")
    assert sorted(raw) == list(range(1, 9))
    saved = load_file(str(tmp_path / "run" / "model-last.safetensors"))
    floats = [k for k, v in saved.items() if v.is_floating_point()]
    for key in floats:
        mean = torch.stack([raw[s][key] for s in range(first, 9)]).mean(0)
        assert torch.allclose(saved[key], mean, atol=1e-6), key
    assert any(not torch.allclose(saved[k], raw[8][k], atol=1e-6) for k in floats)  # not the last weights
    _, meta = load_with_config(tmp_path / "run")
    assert meta["card"].training.averaged_steps == 9 - first


def test_without_averaging_the_last_weights_are_saved(tmp_path):
    cfg = tiny_cfg()
    _run(tmp_path / "run", cfg)
    saved = load_file(str(tmp_path / "run" / "model-last.safetensors"))
    raw = _checkpoint_states(tmp_path / "run")[8]
    assert all(torch.equal(saved[k], raw[k]) for k in saved)
    _, meta = load_with_config(tmp_path / "run")
    assert meta["card"].training.averaged_steps is None


def test_resume_with_averaging_is_exact(tmp_path):
    cfg = tiny_cfg(averaging={"enabled": True, "decay": 0.7, "start": 0.25})
    _run(tmp_path / "full", cfg)
    part = _run(tmp_path / "part", cfg, stop_after=3)[1]
    assert part.status == "stopped"
    _run(tmp_path / "part", cfg, resume=True)
    a = load_file(str(tmp_path / "full" / "model-last.safetensors"))
    b = load_file(str(tmp_path / "part" / "model-last.safetensors"))
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) < 1e-6
    _, meta = load_with_config(tmp_path / "part" / "model-last.safetensors")
    assert meta["card"].training.averaged_steps == 6


def test_resume_needs_the_average_the_config_asks_for(tmp_path):
    _run(tmp_path / "run", tiny_cfg(), stop_after=4)
    cfg = tiny_cfg(averaging={"enabled": True})
    with pytest.raises(TrainingError, match="no weight average"):
        _run(tmp_path / "run", cfg, resume=True)


# ------------------------------------------------------------------ batch-norm statistics

_BN_MODEL = {"arch": "UNet", "args": {"in_channels": 1, "num_classes": 2, "depth": 2, "base_channels": 4, "norm": "batch", "dropout": 0.0}}


def _val_items(n: int = 1) -> list[Item]:
    ds = TinyTiles(60, 60, seed=99)
    return [Item(f"v{i}", ds[i]["image"].numpy(), ds[i]["target"].numpy()) for i in range(n)]


def test_saved_batch_norm_statistics_are_the_mean_over_the_last_tiles(tmp_path):
    """The saved model's statistics are recomputed over the samples of the last 5 steps, its
    weights are the trained ones, and metrics.jsonl records the recomputation."""
    cfg = tiny_cfg(model=_BN_MODEL, batch_norm={"refresh_tiles": 10})
    model, _ = _run(tmp_path / "run", cfg)
    saved = load_file(str(tmp_path / "run" / "model-last.safetensors"))
    trained = _checkpoint_states(tmp_path / "run")[8]
    expected = make_model(cfg)
    expected.load_state_dict(trained)
    ds = dataset_for(expected, cfg)
    recompute_statistics(expected, [torch.stack([ds[i]["image"] for i in idx]) for idx in refresh_indices(8, 10, 2)])
    assert [idx[0] for idx in refresh_indices(8, 10, 2)] == [6, 8, 10, 12, 14]  # steps 3..7 of batch size 2
    want = expected.state_dict()
    stats = [k for k in saved if "running" in k]
    assert stats and all(torch.allclose(saved[k], want[k], atol=1e-5) for k in stats)
    assert all(torch.equal(saved[k], trained[k]) for k in saved if "running" not in k and "num_batches" not in k)
    recs = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "batch_norm"]
    assert [(r["step"], r["tiles"]) for r in recs] == [(8, 10)]
    # refresh_tiles 0 keeps the running averages training left
    _run(tmp_path / "off", tiny_cfg(model=_BN_MODEL, batch_norm={"refresh_tiles": 0}))
    off = load_file(str(tmp_path / "off" / "model-last.safetensors"))
    left = _checkpoint_states(tmp_path / "off")[8]
    assert all(torch.equal(off[k], left[k]) for k in off)
    assert not any(torch.allclose(off[k], saved[k], atol=1e-5) for k in stats if k.endswith("running_var"))


def test_statistics_are_recomputed_over_the_last_tiles_without_their_augmentation(tmp_path):
    """With a TileDataset, the refresh uses the plain crops around the centres of the last steps'
    tiles (``unaugmented``), not the augmented tiles: strong intensity augmentation would
    shift the statistics away from those of the images inference sees."""
    from unetseg.augment import AugmentConfig
    from unetseg.data import TileDataset
    from unetseg.data.targets import LabeledImage

    cfg = tiny_cfg(model=_BN_MODEL, batch_norm={"refresh_tiles": 10})
    model = make_model(cfg)
    src = TinyTiles(60, 60, seed=5)
    items = [LabeledImage(f"i{k}", src[k]["image"].numpy(), src[k]["target"].numpy(), np.ones((60, 60), np.float32),
                          np.zeros((60, 60), bool)) for k in range(2)]
    bright = AugmentConfig(elastic_p=0.0, rotation_p=0.0, scale_p=0.0, shift_p=0.0, flip_p=0.0, brightness_p=1.0, brightness_range=(0.5, 0.6),
                           contrast_p=0.0, gamma_p=0.0, noise_p=0.0)
    ds = TileDataset(items, model.input_shape_for(tuple(cfg.tile)), tuple(cfg.tile), augment=bright, samples_per_epoch=10**6, seed=3)
    fit(cfg, model, ds, tmp_path / "run")
    saved = load_file(str(tmp_path / "run" / "model-last.safetensors"))
    expected = make_model(cfg)
    expected.load_state_dict(_checkpoint_states(tmp_path / "run")[8])
    augmented = make_model(cfg)
    augmented.load_state_dict(_checkpoint_states(tmp_path / "run")[8])
    idx = refresh_indices(8, 10, 2)
    plain = ds.unaugmented()
    recompute_statistics(expected, [torch.stack([plain[i]["image"] for i in b]) for b in idx])
    recompute_statistics(augmented, [torch.stack([ds[i]["image"] for i in b]) for b in idx])
    means = [k for k in saved if k.endswith("running_mean")]
    assert means and all(torch.allclose(saved[k], expected.state_dict()[k], atol=1e-5) for k in means)
    assert not torch.allclose(saved[means[0]], augmented.state_dict()[means[0]], atol=1e-3)


def test_validation_sees_recomputed_statistics_and_resume_stays_exact(tmp_path):
    cfg = tiny_cfg(model=_BN_MODEL, batch_norm={"refresh_tiles": 6}, validation={"every": 4, "metric": "dice"})
    _run(tmp_path / "full", cfg, val_set=_val_items())
    recs = read_metrics(tmp_path / "full" / "metrics.jsonl")
    kinds = [(r["kind"], r["step"]) for r in recs if r["kind"] in ("batch_norm", "val")]
    assert kinds == [("batch_norm", 4), ("val", 4), ("batch_norm", 8), ("val", 8)]
    _run(tmp_path / "part", cfg, val_set=_val_items(), stop_after=5)
    _run(tmp_path / "part", cfg, val_set=_val_items(), resume=True)
    for name in ("model.safetensors", "model-last.safetensors"):
        a = load_file(str(tmp_path / "full" / name))
        b = load_file(str(tmp_path / "part" / name))
        assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) < 1e-6, name


# ------------------------------------------------------------------ memory format


@pytest.mark.parametrize("setting, probe_cl_s, channels_last",
                         [("auto", 1.33, False), ("auto", 0.88, True), (True, 1.33, True), (False, 0.88, False)])
def test_fp32_cpu_training_format_is_measured_or_asked(tmp_path, monkeypatch, setting, probe_cl_s, channels_last):
    """``runtime.channels_last: auto`` trains fp32 on a CPU in the format the CPU probe measured
    faster (contiguous where oneDNN's backward convolutions are slower in channels-last);
    ``true``/``false`` force one. The batches follow the weights."""
    from unetseg import runtime

    monkeypatch.setattr(runtime, "cpu_speed", lambda: runtime.CpuSpeed(fp32=1.0, fp32_channels_last=probe_cl_s))
    cfg = tiny_cfg(runtime={"device": "cpu", "precision": "fp32", "seed": 3, "channels_last": setting},
                   schedule={"steps": 2})
    model = make_model(cfg)
    seen = []

    def hook(module, args):
        seen.append(args[0].is_contiguous(memory_format=torch.channels_last) and not args[0].is_contiguous())

    # the second convolution: its input has several channels, so the two formats differ
    conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][1]
    conv.register_forward_pre_hook(hook)
    fit(cfg, model, dataset_for(model, cfg), tmp_path / "run")
    assert len(seen) == 2 and all(s == channels_last for s in seen)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert conv.weight.is_contiguous(memory_format=fmt)


# ------------------------------------------------------------------ compiled training step


@pytest.mark.skipif(not __import__("shutil").which("g++"), reason="torch.compile on a CPU needs a C++ compiler")
def test_compiled_training_step_trains_like_the_eager_one(tmp_path, monkeypatch):
    """``runtime.compile: true`` runs the step through torch.compile: the same schedule, a finite
    loss close to eager's at every step (no dropout; inductor reorders float sums), the same files."""
    over = {"model": {"arch": "UNet", "args": {"in_channels": 1, "num_classes": 2, "depth": 2, "base_channels": 4}},
            "schedule": {"steps": 6, "name": "constant"}}
    rt = {"device": "cpu", "precision": "fp32", "seed": 3, "log_every": 1, "channels_last": False}
    losses, compiled_modules = {}, []
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m, **kw: compiled_modules.append(m) or real_compile(m, **kw))
    for compiled in (False, True):
        cfg = tiny_cfg(**over, runtime={**rt, "compile": compiled})
        res = _run(tmp_path / str(compiled), cfg)[1]
        assert res.status == "completed" and res.step == 6
        losses[compiled] = [r["loss"] for r in read_metrics(tmp_path / str(compiled) / "metrics.jsonl") if r["kind"] == "train"]
    assert len(compiled_modules) == 1  # only the run that asked for it
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-3)
    assert load_with_config(tmp_path / "True")[1]["card"].training.step == 6


def test_train_lines_say_how_long_the_loop_waited_for_data(tmp_path):
    from types import SimpleNamespace

    from unetseg.train.stages import waited_for

    def slow(n):
        for i in range(n):
            time.sleep(0.05)
            yield i

    state = SimpleNamespace(window={"wait": 0.0})
    got = []
    for item in waited_for(slow(3), state):
        got.append(item)
        time.sleep(0.1)  # the step's own time is not waiting
    assert got == [0, 1, 2] and 0.15 <= state.window["wait"] < 0.3
    cfg = tiny_cfg(schedule__steps=4)
    _run(tmp_path, cfg)
    waits = [r["data_wait"] for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "train"]
    assert len(waits) == 4 and all(0.0 <= w <= 1.0 for w in waits)


def test_a_run_records_what_it_computed_in(tmp_path, monkeypatch):
    """``precision``/``channels_last: auto`` are decided by the CPU probe; the run's first
    metrics line says what was decided and what the probe measured."""
    from unetseg import runtime

    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: True)  # native flags, but bf16 measured slower
    monkeypatch.setattr(runtime, "cpu_speed", lambda: runtime.CpuSpeed(fp32=1.0, fp32_channels_last=0.9, bf16_channels_last=2.0))
    cfg = tiny_cfg(runtime={"device": "cpu", "precision": "auto", "channels_last": "auto", "seed": 3, "log_every": 1})
    model = make_model(cfg)
    res = fit(cfg, model, dataset_for(model, cfg), tmp_path / "run", stop_after=1)
    first = read_metrics(tmp_path / "run" / "metrics.jsonl")[0]
    assert first["kind"] == "runtime" and first["precision"] == "fp32" and first["channels_last"] is True
    assert first["probe_s"] == {"fp32": 1.0, "fp32_channels_last": 0.9, "bf16_channels_last": 2.0}
    assert first["threads"] == torch.get_num_threads() and "avx512_bf16" in first
    assert res.history[0] == first
