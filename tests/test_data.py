"""Dataset layouts, targets, bad-input errors, the tile sampler and the prefetching loader."""

from __future__ import annotations

import os

import numpy as np
import pytest
from scipy import ndimage

from unetseg.augment import AugmentConfig
from unetseg.data import (
    DataConfig,
    LabeledImage,
    TargetConfig,
    TileDataset,
    WeightConfig,
    discover,
    load_dataset,
    train_loader,
    make_target,
    resolved_target,
)
from unetseg.errors import ConfigError, InputError
from unetseg.io import read_image, write_image

RAW = {"method": "none"}


def make_folders(root, n=3, shape=(32, 40), label_dir="labels"):
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / label_dir).mkdir()
    for i in range(n):
        lab = np.zeros(shape, np.uint8)
        lab[4:14, 5:20] = 255
        lab[18:28, 10:30] = 255
        write_image(root / "images" / f"im{i}.png", rng.integers(0, 255, shape).astype(np.uint8))
        write_image(root / label_dir / f"im{i}.png", lab)
    return root


# ---------------------------------------------------------------- layouts


def test_folders_layout_natural_order_and_masks_name(tmp_path):
    make_folders(tmp_path, n=3, label_dir="masks")
    layout, pairs = discover(tmp_path)
    assert layout == "folders" and [p.name for p in pairs] == ["im0", "im1", "im2"]
    ds = load_dataset(tmp_path)
    assert len(ds) == 3
    s = ds[0]
    assert s.image.shape == (1, 32, 40) and s.image.dtype == np.float32
    assert s.target.dtype == np.int64 and set(np.unique(s.target)) == {0, 1}
    assert s.weight.dtype == np.float32 and s.ignore.dtype == bool and not s.ignore.any()
    assert s.instances.max() == 2


def test_flat_layout_multipage_stacks(tmp_path):
    rng = np.random.default_rng(1)
    vol = rng.integers(0, 255, (3, 24, 24)).astype(np.uint8)
    lab = np.zeros((3, 24, 24), np.uint8)
    lab[:, 5:15, 5:15] = 255
    write_image(tmp_path / "train-volume.tif", vol)
    write_image(tmp_path / "train-labels.tif", lab)
    ds = load_dataset(tmp_path, DataConfig(normalization=RAW))
    assert [s.name for s in ds] == ["train-volume_z000", "train-volume_z001", "train-volume_z002"]
    assert np.array_equal(ds[2].image[0], vol[2].astype(np.float32))
    # The same stacks as one 3D sample.
    [vol3] = load_dataset(tmp_path, DataConfig(spatial_dims=3))
    assert vol3.image.shape == (1, 3, 24, 24) and vol3.target.shape == (3, 24, 24)


def test_explicit_pair_layout(tmp_path):
    write_image(tmp_path / "a.tif", np.zeros((16, 16), np.uint8))
    write_image(tmp_path / "b.tif", np.zeros((16, 16), np.uint16))
    assert discover(tmp_path / "a.tif", tmp_path / "b.tif")[0] == "pair"
    assert len(load_dataset(tmp_path / "a.tif", DataConfig(labels=str(tmp_path / "b.tif")))) == 1
    with pytest.raises(InputError, match="a.tif"):
        discover(tmp_path / "a.tif")


def test_ctc_layout_uses_only_annotated_frames(tmp_path):
    (tmp_path / "01").mkdir()
    (tmp_path / "01_GT" / "SEG").mkdir(parents=True)
    (tmp_path / "01_GT" / "TRA").mkdir(parents=True)
    for t in range(4):
        write_image(tmp_path / "01" / f"t{t:03d}.tif", np.full((20, 20), t, np.uint8))
    lab = np.zeros((20, 20), np.uint16)
    lab[2:8, 2:8] = 1
    lab[2:8, 8:14] = 2
    write_image(tmp_path / "01_GT" / "SEG" / "man_seg002.tif", lab)
    write_image(tmp_path / "01_GT" / "TRA" / "man_track001.tif", lab)
    layout, pairs = discover(tmp_path)
    assert layout == "ctc" and [p.name for p in pairs] == ["01_t002"]
    [s] = load_dataset(tmp_path, DataConfig(normalization=RAW))
    assert s.image[0, 0, 0] == 2
    assert s.target[5, 8] == 0  # carved separation line
    assert resolved_target(tmp_path).kind == "instances"
    assert resolved_target(tmp_path).unlabeled == "partial"


def test_partial_annotations_are_decided_per_frame_from_the_data(tmp_path):
    # three complete frames (6 cells each) and one with a single annotated cell, CTC layout
    (tmp_path / "01").mkdir()
    (tmp_path / "01_GT" / "SEG").mkdir(parents=True)
    for t in range(4):
        write_image(tmp_path / "01" / f"t{t:03d}.tif", np.full((120, 120), 50, np.uint8))
        lab = np.zeros((120, 120), np.uint16)
        for i in range(6 if t < 3 else 1):
            lab[5 + 18 * i : 15 + 18 * i, 5:15] = i + 1
        write_image(tmp_path / "01_GT" / "SEG" / f"man_seg{t:03d}.tif", lab)
    items = load_dataset(tmp_path, DataConfig(normalization=RAW))
    far = (slice(100, 120), slice(100, 120))  # > 40 px from every annotated cell in every frame
    assert [bool(it.ignore[far].all()) for it in items] == [False, False, False, True]
    assert not any(it.ignore[far].any() for it in items[:3])  # complete frames: far background is background
    explicit = load_dataset(tmp_path, DataConfig(normalization=RAW, target=TargetConfig(unlabeled="ignore_far")))
    assert all(it.ignore[far].all() for it in explicit)


def test_rgb_images_become_channels(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    write_image(tmp_path / "images" / "a.png", np.zeros((10, 12, 3), np.uint8))
    write_image(tmp_path / "labels" / "a.png", np.zeros((10, 12), np.uint8))
    [s] = load_dataset(tmp_path)
    assert s.image.shape == (3, 10, 12)
    with pytest.raises(InputError, match="channel"):
        load_dataset(tmp_path, DataConfig(in_channels=1))


# ---------------------------------------------------------------- targets


def test_binary_foreground_value_and_instances():
    lab = np.array([[255, 255, 0, 255], [255, 255, 0, 255]], np.uint8)
    t, ign, inst = make_target(lab, TargetConfig(kind="binary", foreground_value=255, unlabeled="background"))
    assert np.array_equal(t, (lab == 255).astype(np.int64)) and not ign.any()
    assert inst.max() == 2
    # Which value is foreground is configurable: here the 0-valued "membrane" would be class 1.
    t0, _, _ = make_target(lab, TargetConfig(kind="binary", foreground_value=0, unlabeled="background"))
    assert np.array_equal(t0, (lab == 0).astype(np.int64))


def test_multiclass_and_ignore_value():
    lab = np.array([[0, 128, 255, 7]], np.uint8)
    cfg = TargetConfig(kind="multiclass", class_values=(0, 128, 255), ignore_value=7, unlabeled="background")
    t, ign, _ = make_target(lab, cfg)
    assert t.tolist() == [[0, 1, 2, 0]] and ign.tolist() == [[False, False, False, True]]
    assert cfg.num_classes == 3 and cfg.names == ["background", "class_128", "class_255"]
    with pytest.raises(ConfigError):
        TargetConfig(kind="multiclass")


def test_border_class_marks_each_objects_rim_and_keeps_interiors_apart():
    from unetseg.data import card_for_target

    lab = np.zeros((12, 20), np.uint16)
    lab[2:10, 2:10] = 1
    lab[2:10, 10:18] = 2  # touching cell 1
    cfg = TargetConfig(kind="instances", border_class_width=2, unlabeled="background")
    t, _, _ = make_target(lab, cfg)
    assert cfg.num_classes == 3 and cfg.names == ["background", "foreground", "border"]
    assert set(np.unique(t)) == {0, 1, 2}
    assert (t[2:4, 2:10] == 2).all() and (t[8:10, 11:18] == 2).all()  # rims two pixels wide
    assert t[6].tolist()[:19] == [0, 0, 2, 2, 1, 1, 1, 1, 2, 2, 0, 2, 2, 1, 1, 1, 2, 2, 0]  # rim, carved line, rim
    interiors, n = ndimage.label(t == 1)
    assert n == 2  # the interiors that seed the watershed stay apart
    assert card_for_target(cfg).border_class == 2
    with pytest.raises(ConfigError, match="border_class_width"):
        TargetConfig(kind="binary", border_class_width=2)
    with pytest.raises(ConfigError, match="border_class_width"):
        TargetConfig(kind="instances", border_class_width=-1)


def test_ignore_far_rule():
    lab = np.zeros((100, 100), np.uint16)
    lab[10:20, 10:20] = 1
    cfg = TargetConfig(kind="instances", unlabeled="ignore_far", unlabeled_margin=10)
    t, ign, _ = make_target(lab, cfg)
    assert not ign[10:20, 10:20].any()  # annotated cells count
    assert not ign[22, 15]  # background near a cell counts
    assert ign[80, 80]  # far from every annotation: maybe an unlabelled cell, ignored
    w = load_weight(lab, cfg)
    assert (w[ign] == 0).all() and (w[~ign] > 0).all()


def load_weight(lab, tcfg):
    from unetseg.weights import weight_map

    t, ign, inst = make_target(lab, tcfg)
    return weight_map(inst, target=t, mask=~ign)


# ---------------------------------------------------------------- bad input


def test_empty_folder(tmp_path):
    with pytest.raises(InputError, match=str(tmp_path.name)):
        load_dataset(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(InputError, match="images"):
        load_dataset(tmp_path)


def test_missing_label_partner(tmp_path):
    make_folders(tmp_path, n=2)
    write_image(tmp_path / "images" / "lonely.png", np.zeros((32, 40), np.uint8))
    with pytest.raises(InputError, match="lonely.png"):
        load_dataset(tmp_path)


def test_missing_image_partner(tmp_path):
    make_folders(tmp_path, n=2)
    write_image(tmp_path / "labels" / "orphan.png", np.zeros((32, 40), np.uint8))
    with pytest.raises(InputError, match="orphan.png"):
        load_dataset(tmp_path)


def test_shape_mismatch(tmp_path):
    make_folders(tmp_path, n=2)
    write_image(tmp_path / "labels" / "im1.png", np.zeros((30, 40), np.uint8))
    with pytest.raises(InputError, match="im1.png"):
        load_dataset(tmp_path)


def test_undeclared_label_values(tmp_path):
    make_folders(tmp_path, n=2)
    lab = read_image(tmp_path / "labels" / "im1.png").copy()
    lab[0, 0] = 128
    write_image(tmp_path / "labels" / "im1.png", lab)
    cfg = DataConfig(target=TargetConfig(kind="binary", foreground_value=255))
    with pytest.raises(InputError, match=r"im1.png.*\[128\]"):
        load_dataset(tmp_path, cfg)
    with pytest.raises(InputError, match="im1.png"):
        load_dataset(tmp_path, DataConfig(target=TargetConfig(kind="multiclass", class_values=(0, 255))))


def test_nan_in_image(tmp_path):
    make_folders(tmp_path, n=1)
    (tmp_path / "images" / "im0.png").unlink()
    img = np.zeros((32, 40), np.float32)
    img[3, 3] = np.nan
    write_image(tmp_path / "images" / "im0.tif", img)
    with pytest.raises(InputError, match=r"im0.tif.*NaN"):
        load_dataset(tmp_path)


def test_corrupt_image(tmp_path):
    make_folders(tmp_path, n=2)
    (tmp_path / "images" / "im1.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage")
    with pytest.raises(InputError, match="im1.png"):
        load_dataset(tmp_path)


def test_config_from_dict_is_strict():
    cfg = DataConfig.from_dict({"target": {"kind": "binary", "foreground_value": 255}, "weights": {"w0": 5}})
    assert cfg.target.foreground_value == 255 and cfg.weights.w0 == 5
    with pytest.raises(ConfigError, match="data.target"):
        DataConfig.from_dict({"target": {"colour": 1}})


# ---------------------------------------------------------------- shared data


@pytest.mark.data
def test_isbi2012_loads(isbi_dir):
    ds = load_dataset(isbi_dir, DataConfig(weights=WeightConfig(enabled=False)))
    assert len(ds) == 24
    lab = read_image(isbi_dir / "labels" / "00.png")
    s = ds[0]
    assert s.name == "00" and s.image.shape == (1, 512, 512) and s.target.shape == (512, 512)
    assert np.array_equal(s.target, (lab == 255).astype(np.int64))  # 255 = cell = class 1
    assert resolved_target(isbi_dir).foreground_value == 255
    assert not any(x.ignore.any() for x in ds)
    # Instances are the 4-connected cell regions.
    _, n = ndimage.label(lab == 255)
    assert s.instances.max() == n


@pytest.mark.data
def test_hela_loads_with_separated_cells(hela_dir):
    ds = load_dataset(hela_dir)
    assert len(ds) == 9
    assert [s.name for s in ds][:2] == ["01_t002", "01_t005"]
    for s in ds:
        assert s.image.shape == (1, 512, 512) and set(np.unique(s.target)) == {0, 1}
        raw = read_image(s.source[1])
        comps, n = ndimage.label(s.target)
        # Every component lies inside one annotated cell: touching cells were separated.
        for c in range(1, n + 1):
            assert len(np.unique(raw[comps == c])) == 1
        assert n >= len(np.unique(raw)) - 1
        assert s.weight.max() > 5  # separation lines get the large border weight
    # Partial annotation: man_seg067 labels only 3 cells, so most of its frame is ignored.
    assert ds[-1].name == "01_t067" and ds[-1].ignore.mean() > 0.5
    assert all(s.ignore.mean() < 0.3 for s in ds[:-1])


@pytest.mark.data
def test_dsb_sample_loads(dsb_dir):
    [s] = load_dataset(dsb_dir)
    assert s.name == "img2d" and s.image.shape == (1, 512, 512)
    raw = read_image(dsb_dir / "mask2d.tif")
    assert len(np.unique(raw)) - 1 == 125
    assert set(np.unique(s.instances)) <= set(np.unique(raw))
    assert not s.ignore.any()


# ---------------------------------------------------------------- tile sampler


def ramp_image(shape=(60, 70)):
    """Image whose intensity encodes the label, so tile and target crops can be compared."""
    lab = np.zeros(shape, np.int64)
    lab[10:30, 15:50] = 1
    lab[35:55, 5:25] = 1
    img = lab[None].astype(np.float32)
    return LabeledImage("r", img, lab, np.ones(shape, np.float32), np.zeros(shape, bool))


def center_crop(a, out):
    sl = tuple(slice((n - m) // 2, (n - m) // 2 + m) for n, m in zip(a.shape[-len(out) :], out))
    return a[(..., *sl)]


def test_tiles_shapes_and_alignment_without_augmentation():
    ds = TileDataset([ramp_image()], (44, 44), (20, 20), samples_per_epoch=10)
    assert len(ds) == 10
    for i in range(10):
        s = ds[i]
        assert tuple(s["image"].shape) == (1, 44, 44) and s["image"].dtype.is_floating_point
        assert tuple(s["target"].shape) == (20, 20) and str(s["target"].dtype) == "torch.int64"
        assert str(s["weight"].dtype) == "torch.float32" and str(s["mask"].dtype) == "torch.bool"
        assert np.array_equal(center_crop(s["image"].numpy()[0], (20, 20)), s["target"].numpy())


def test_tiles_alignment_with_augmentation():
    cfg = AugmentConfig(brightness_p=0, contrast_p=0, gamma_p=0, noise_p=0)
    ds = TileDataset([ramp_image()], (44, 44), (20, 20), augment=cfg, samples_per_epoch=20, seed=3)
    agree = []
    for i in range(20):
        s = ds[i]
        img = center_crop(s["image"].numpy()[0], (20, 20)) > 0.5
        agree.append((img == s["target"].numpy().astype(bool)).mean())
        assert set(np.unique(s["target"].numpy())) <= {0, 1}
    assert np.mean(agree) > 0.97


def test_mirroring_beyond_the_border():
    im = ramp_image((30, 30))
    im.image[0] = np.arange(900, dtype=np.float32).reshape(30, 30)
    ds = TileDataset([im], (60, 60), (40, 40), samples_per_epoch=1)
    s = ds[0]
    padded = np.pad(im.image[0], 15, mode="reflect")
    assert np.allclose(s["image"].numpy()[0], padded, atol=1e-3)
    assert np.array_equal(s["target"].numpy(), np.pad(im.target, 5, mode="reflect"))


def test_seeding_per_index_and_rank():
    im = ramp_image()
    cfg = AugmentConfig()
    a = TileDataset([im], (44, 44), (20, 20), augment=cfg, seed=1)
    b = TileDataset([im], (44, 44), (20, 20), augment=cfg, seed=1)
    r1 = TileDataset([im], (44, 44), (20, 20), augment=cfg, seed=1, rank=1, world_size=2)
    assert np.array_equal(a[5]["image"], b[5]["image"])
    assert not np.array_equal(a[5]["image"], a[6]["image"])
    assert not np.array_equal(a[5]["image"], r1[5]["image"])
    assert len(r1) == 50


def test_foreground_bias():
    im = ramp_image((200, 200))
    im.target[:] = 0
    im.target[150:160, 150:160] = 1
    ds = TileDataset([im], (20, 20), (8, 8), foreground_bias=1.0, samples_per_epoch=20)
    assert all(ds[i]["target"].numpy().any() for i in range(20))
    with pytest.raises(ConfigError):
        TileDataset([im], (20, 20), (8, 8), foreground_bias=0.8, border_bias=0.5)


def test_ignore_becomes_mask_false():
    im = ramp_image()
    im.ignore[:, :35] = True
    ds = TileDataset([im], (44, 44), (20, 20), samples_per_epoch=30)
    seen = [ds[i]["mask"].numpy() for i in range(30)]
    assert any((~m).any() for m in seen) and any(m.all() for m in seen)


def test_train_loader_batches_are_the_steps_items():
    ds = TileDataset([ramp_image()], (44, 44), (20, 20), augment=AugmentConfig(), samples_per_epoch=6)
    first = list(train_loader(ds, batch_size=4, start=0, stop=2, prefetch_depth=2))
    later = list(train_loader(ds, batch_size=4, start=2, stop=3))
    assert [tuple(b["image"].shape) for b in first] == [(4, 1, 44, 44), (4, 1, 44, 44)]
    assert not np.array_equal(first[0]["image"], later[0]["image"])  # every step new tiles
    assert np.array_equal(first[0]["image"][1], ds[1]["image"]) and np.array_equal(later[0]["image"][0], ds[8]["image"])
    # rank 1 of 2 takes the items after rank 0's in every step
    r1 = list(train_loader(ds, batch_size=2, start=1, stop=2, rank=1, world_size=2))
    assert np.array_equal(r1[0]["image"][0], ds[6]["image"])


def test_background_loader_reraises_errors():
    class Broken(TileDataset):
        def __getitem__(self, i):
            raise InputError("broken sample")

    ds = Broken([ramp_image()], (44, 44), (20, 20), samples_per_epoch=3)
    with pytest.raises(InputError, match="broken"):
        list(train_loader(ds, batch_size=1, start=0, stop=3))


def test_worker_process_loader_matches_in_process_samples():
    ds = TileDataset([ramp_image()], (44, 44), (20, 20), augment=AugmentConfig(), samples_per_epoch=4, seed=2)
    batches = list(train_loader(ds, batch_size=2, start=0, stop=2, num_workers=1))
    assert np.array_equal(batches[1]["target"][0], ds[2]["target"])
    assert torch_equal(batches[0]["image"][1], ds[1]["image"])


def torch_equal(a, b):
    return bool((a == b).all())


def test_3d_tiles():
    shape = (20, 40, 40)
    lab = np.zeros(shape, np.int64)
    lab[5:15, 10:30, 10:30] = 1
    im = LabeledImage("v", lab[None].astype(np.float32), lab, np.ones(shape, np.float32), np.zeros(shape, bool))
    ds = TileDataset([im], (16, 32, 32), (8, 16, 16), augment=AugmentConfig(elastic_sigma=3.0), samples_per_epoch=3)
    s = ds[0]
    assert tuple(s["image"].shape) == (1, 16, 32, 32) and tuple(s["target"].shape) == (8, 16, 16)
    assert set(np.unique(s["target"].numpy())) <= {0, 1}


def test_tiles_carry_the_skeletons_of_their_own_target():
    import torch

    from unetseg.losses import class_skeletons

    im = ramp_image()
    im.ignore[:, :12] = True
    ds = TileDataset([im], (44, 44), (30, 30), augment=AugmentConfig(), samples_per_epoch=4, seed=5, skeleton_classes=(0, 1))
    plain = TileDataset([im], (44, 44), (30, 30), augment=AugmentConfig(), samples_per_epoch=4, seed=5)
    for i in range(4):
        s = ds[i]
        assert "skeleton" not in plain[i] and torch_equal(plain[i]["target"], s["target"])
        assert s["skeleton"].dtype == torch.bool and tuple(s["skeleton"].shape) == (2, 30, 30)
        assert np.array_equal(s["skeleton"].numpy(), class_skeletons(s["target"].numpy(), s["mask"].numpy(), classes=(0, 1)))
        assert not s["skeleton"].numpy()[:, ~s["mask"].numpy()].any()  # nothing of the ignored pixels
    assert ds[0]["skeleton"][1].any()
    vol = np.zeros((8, 8, 8), np.int64)
    im3 = LabeledImage("v", vol[None].astype(np.float32), vol, np.ones(vol.shape, np.float32), np.zeros(vol.shape, bool))
    with pytest.raises(ConfigError, match="2D"):
        TileDataset([im3], (8, 8, 8), (4, 4, 4), skeleton_classes=(0,))


def test_tile_dataset_is_a_torch_dataset():
    from torch.utils.data import Dataset

    assert isinstance(TileDataset([ramp_image()], (44, 44), (20, 20)), Dataset)


def test_image_axes_override_for_npy(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    np.save(tmp_path / "images" / "a.npy", np.zeros((10, 12, 3), np.float32))
    np.save(tmp_path / "labels" / "a.npy", np.zeros((10, 12), np.uint8))
    with pytest.raises(InputError, match="a.npy"):  # read as a 10-page stack: shapes disagree
        load_dataset(tmp_path)
    [s] = load_dataset(tmp_path, DataConfig(image_axes="YXC"))
    assert s.image.shape == (3, 10, 12)
    with pytest.raises(ConfigError, match="image_axes"):
        DataConfig(image_axes="QYX")


def test_background_loader_stops_its_thread_on_break():
    import threading

    ds = TileDataset([ramp_image()], (44, 44), (20, 20), samples_per_epoch=50)
    for _ in train_loader(ds, batch_size=1, start=0, stop=50, prefetch_depth=1):
        break
    assert not any(t.name == "unetseg-prefetch" and t.is_alive() for t in threading.enumerate())


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="thread priorities are a POSIX feature")
def test_tiles_are_made_at_a_lower_priority_than_the_training_threads():
    import threading

    from unetseg.data.loader import prefetch

    def priorities():
        for _ in range(2):
            yield os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert list(prefetch(priorities())) == [min(own + 10, 19)] * 2
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == own  # the training thread keeps its own
