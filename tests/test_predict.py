"""Overlap-tile inference: tiled output equals the whole mirrored image at once."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

from unetseg import sizes
from unetseg.errors import ConfigError
from unetseg.models import FusionNet, ModelCard, UNet
from unetseg.predict import (
    auto_tile_shape,
    estimate_tile_memory,
    predict_dask,
    predict_image,
    predict_into,
    shift_probabilities,
    whole_image_reference,
)

TOL = 1e-5


def _net(depth=4, base=4, in_channels=1, num_classes=2, dims=2, seed=0, **kw):
    torch.manual_seed(seed)
    return UNet(in_channels, num_classes, depth=depth, base_channels=base, spatial_dims=dims, dropout=0.0, **kw).eval()


class CropProbe(nn.Module):
    """Known predictor with a valid crop: logits channel 0 = centre pixel, channel 1 = pixel -halo."""

    depth, padding, spatial_dims, in_channels, num_classes = 4, "valid", 2, 1, 2
    halo, size_divisor = 92, 16

    def forward(self, x):
        h = self.halo
        ys, xs = x.shape[-2] - 2 * h, x.shape[-1] - 2 * h
        centre = x[..., h : h + ys, h : h + xs]
        corner = x[..., :ys, :xs]
        return torch.cat([centre, corner], dim=1)


def _probe_expected(img):
    """Softmax over (centre, corner) of the symmetric-mirrored image."""
    h = 92
    big = np.pad(img.astype(np.float64), h, mode="symmetric")
    centre = big[h : h + img.shape[0], h : h + img.shape[1]]
    corner = big[: img.shape[0], : img.shape[1]]
    e = np.exp(np.stack([centre, corner]) - np.maximum(centre, corner))
    return (e / e.sum(0)).astype(np.float32)


@pytest.mark.parametrize("shape", [(1, 1), (17, 300), (5, 7), (250, 130)])
@pytest.mark.parametrize("tile", [20, 52, 388])
def test_known_predictor_lands_tiles_in_place(shape, tile):
    rng = np.random.default_rng(0)
    img = rng.uniform(-3, 3, size=shape).astype(np.float32)
    out = predict_image(CropProbe(), img, tile_shape=tile, batch_size=3)
    assert out.shape == (2, *shape)
    np.testing.assert_allclose(out, _probe_expected(img), atol=1e-6)


@pytest.mark.parametrize("shape,tiles", [((1, 1), [20, 388]), ((17, 300), [20, 116, 388]), ((60, 45), [36, 1000])])
def test_tiled_equals_whole_image_small(shape, tiles):
    net = _net()
    img = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    ref = whole_image_reference(net, img)
    assert ref.shape == (2, *shape)
    for t in tiles:
        out = predict_image(net, img, tile_shape=t, batch_size=4)
        assert out.dtype == np.float32 and out.shape == ref.shape
        assert np.abs(out - ref).max() <= TOL, t


def test_tiled_equals_whole_image_513x1027_several_tiles():
    net = _net(base=2)
    img = np.random.default_rng(2).normal(size=(513, 1027)).astype(np.float32)
    ref = whole_image_reference(net, img)
    for t in (116, 388, (196, 516)):
        out = predict_image(net, img, tile_shape=t, batch_size=2)
        assert np.abs(out - ref).max() <= TOL, t


def test_tiled_equals_whole_image_multichannel_multiclass_depth3():
    net = _net(depth=3, in_channels=3, num_classes=4, base=3)
    img = np.random.default_rng(3).normal(size=(3, 70, 101)).astype(np.float32)
    ref = whole_image_reference(net, img)
    for t in (20, 44):
        assert np.abs(predict_image(net, img, tile_shape=t) - ref).max() <= TOL
    np.testing.assert_allclose(ref.sum(0), 1.0, atol=1e-5)


def test_tiled_equals_whole_image_3d_volume():
    net = _net(depth=2, base=2, dims=3)  # halo 20, output sizes 4 (mod 4)
    vol = np.random.default_rng(4).normal(size=(9, 30, 23)).astype(np.float32)
    ref = whole_image_reference(net, vol)
    for t in ((8, 12, 12), 16):
        out = predict_image(net, vol, tile_shape=t)
        assert out.shape == (2, 9, 30, 23)
        assert np.abs(out - ref).max() <= TOL


def test_smaller_than_tile_is_one_tile():
    net = _net()
    img = np.random.default_rng(5).normal(size=(30, 40)).astype(np.float32)
    out = predict_image(net, img, tile_shape=388)
    assert np.abs(out - whole_image_reference(net, img)).max() <= TOL


class PointwiseCrop(nn.Module):
    """Exactly dihedral-equivariant: a per-pixel function of the input, then a valid crop."""

    depth, padding, spatial_dims, in_channels, num_classes = 4, "valid", 2, 1, 3
    halo, size_divisor = 92, 16

    def forward(self, x):
        h = self.halo
        c = x[..., h:-h, h:-h]
        return torch.cat([c, c * c, -c], dim=1)


def test_tta_of_equivariant_model_changes_nothing():
    img = np.random.default_rng(6).normal(size=(37, 61)).astype(np.float32)
    plain = predict_image(PointwiseCrop(), img, tile_shape=20)
    tta = predict_image(PointwiseCrop(), img, tile_shape=20, tta=True)
    np.testing.assert_allclose(tta, plain, atol=1e-6)


def test_tta_averages_eight_transforms_for_a_real_net():
    net = _net(base=2)
    img = np.random.default_rng(7).normal(size=(40, 40)).astype(np.float32)
    a = predict_image(net, img, tile_shape=388)
    b = predict_image(net, img, tile_shape=388, tta=True)
    assert b.shape == a.shape and np.abs(a - b).max() > 1e-4  # a random net is not equivariant
    np.testing.assert_allclose(b.sum(0), 1.0, atol=1e-5)


def test_same_padding_models_give_full_size_and_match_inside():
    torch.manual_seed(0)
    for net in (UNet(1, 2, base_channels=4, padding="same", norm="batch").eval(), FusionNet(1, 2, base_channels=2).eval()):
        img = np.random.default_rng(8).normal(size=(150, 90)).astype(np.float32)
        whole = whole_image_reference(net, img)
        out = predict_image(net, img, tile_shape=64, margin=16)
        assert out.shape == (2, 150, 90)
        single = predict_image(net, img, tile_shape=256)
        assert np.abs(single - whole).max() <= TOL


class SamePointwise(nn.Module):
    """Same-padding stand-in: per-pixel logits depending on the pixel value and its position parity."""

    depth, padding, spatial_dims, in_channels, num_classes = 4, "same", 2, 1, 2
    halo, size_divisor = 0, 16

    def forward(self, x):
        return torch.cat([x, -x], dim=1)


def test_same_padding_windows_land_in_place():
    img = np.random.default_rng(9).normal(size=(150, 90)).astype(np.float32)
    out = predict_image(SamePointwise(), img, tile_shape=32, margin=8)
    np.testing.assert_allclose(out[0], 1 / (1 + np.exp(-2 * img)), atol=1e-6)


def test_channels_last_and_bf16_paths_run():
    net = _net(base=4)
    img = np.random.default_rng(9).normal(size=(50, 60)).astype(np.float32)
    ref = predict_image(net, img, tile_shape=116, channels_last=False)
    cl = predict_image(net, img, tile_shape=116, channels_last=True)
    assert np.abs(cl - ref).max() <= TOL
    bf = predict_image(net, img, tile_shape=116, precision="bf16")
    assert bf.dtype == np.float32 and np.abs(bf - ref).max() < 0.1


def test_bad_inputs_raise_input_error():
    from unetseg.errors import InputError

    net = _net()
    with pytest.raises(InputError, match="channel"):
        predict_image(net, np.zeros((3, 20, 20), np.float32))
    with pytest.raises(InputError):
        predict_image(net, np.zeros((0, 20), np.float32))


def test_auto_tile_fits_budget_and_grows_with_it():
    net = UNet(1, 2, base_channels=64)
    small = auto_tile_shape(net, memory_budget=2**28)
    big = auto_tile_shape(net, memory_budget=2**31)
    assert small[0] < big[0]
    assert estimate_tile_memory(net, tuple(s + 2 * net.halo for s in small)) <= 2**28
    assert sizes.is_valid_size(small[0] + 2 * net.halo)


def test_streaming_into_a_target_with_transform():
    net = _net(base=2)
    img = np.random.default_rng(10).normal(size=(1, 90, 70)).astype(np.float32)
    target = np.zeros((90, 70), np.float32)
    predict_into(net, img, target, tile_shape=20, transform=lambda p: p[1])
    np.testing.assert_allclose(target, whole_image_reference(net, img)[1], atol=TOL)


@pytest.mark.parametrize("shape,chunk", [((1, 1), None), ((150, 333), 64), ((70, 40), 16)])
def test_dask_threaded_equals_in_memory(shape, chunk):
    import dask.array as da

    net = _net(base=2)
    img = np.random.default_rng(11).normal(size=shape).astype(np.float32)
    ref = predict_image(net, img, tile_shape=36)
    lazy = predict_dask(net, da.from_array(img, chunks=50), tile_shape=36, chunk_size=chunk)
    out = lazy.compute(scheduler="threads")
    assert out.shape == (2, *shape)
    assert np.abs(out - ref).max() <= TOL


def test_dask_distributed_local_cluster_equals_in_memory():
    import dask.array as da
    from distributed import Client, LocalCluster

    net = _net(base=2)
    img = np.random.default_rng(12).normal(size=(130, 90)).astype(np.float32)
    ref = predict_image(net, img, tile_shape=20)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
        out = client.compute(predict_dask(net, da.from_array(img, chunks=64), tile_shape=20, chunk_size=48)).result()
    assert np.abs(out - ref).max() <= TOL


# ----------------------------------------------------------------------------------------------
# Files and the command-line tool
# ----------------------------------------------------------------------------------------------
import tifffile  # noqa: E402

from unetseg.cli import main  # noqa: E402
from unetseg.models import save  # noqa: E402
from unetseg.normalize import normalize  # noqa: E402
from unetseg.predict import predict_file  # noqa: E402


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    save(_net(base=4), d, card=ModelCard(normalization={"method": "minmax"}, classes=("membrane", "cell")))
    return d


def _expected(run_dir, img, spec=None):
    from unetseg.models import load

    x = normalize(img, spec or {"method": "minmax"})
    return predict_image(load(run_dir), x, tile_shape=116)[1]


def test_cli_predict_folder_prob_and_file_types(tmp_path, run_dir):
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    src.mkdir()
    a = rng.integers(0, 255, (60, 90), dtype=np.uint8)
    b = rng.integers(0, 4000, (33, 21), dtype=np.uint16)
    tifffile.imwrite(src / "a.tif", a, compression="zlib")
    np.save(src / "b.npy", b)
    from PIL import Image

    Image.fromarray(a).save(src / "c.png")
    out = tmp_path / "out"
    assert main(["predict", "--model", str(run_dir), str(src), "--out", str(out), "--tile", "116"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "b.tif", "c.tif"]
    got = tifffile.imread(out / "a.tif")
    assert got.dtype == np.float32 and got.shape == a.shape
    np.testing.assert_allclose(got, _expected(run_dir, a), atol=1e-5)
    np.testing.assert_allclose(tifffile.imread(out / "b.tif"), _expected(run_dir, b), atol=1e-5)
    np.testing.assert_allclose(tifffile.imread(out / "c.tif"), got, atol=1e-6)


def test_cli_mask_labels_stack_and_tta(tmp_path, run_dir):
    rng = np.random.default_rng(1)
    stack = rng.integers(0, 255, (3, 40, 50), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack")
    out = tmp_path / "out"
    assert main(["predict", "--model", str(run_dir / "model.safetensors"), str(tmp_path / "s.tif"), "--out", str(out), "--output", "mask", "--tile", "52", "--tta"]) == 0
    mask = tifffile.imread(out / "s.tif")
    assert mask.shape == stack.shape and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    assert main(["predict", "--model", str(run_dir), str(tmp_path / "s.tif"), "--out", str(out), "--output", "labels", "--split", "distance", "--min-size", "3"]) == 0
    labels = tifffile.imread(out / "s.tif")
    assert labels.shape == stack.shape and labels.dtype in (np.uint16, np.uint32)
    for z in range(3):  # slice by slice, same as single images
        fg = _expected(run_dir, stack[z]) > 0.5
        assert np.all((labels[z] > 0) <= fg)  # only objects under --min-size are dropped
        assert (fg & (labels[z] == 0)).sum() <= 3 * max(1, labels[z].max() + 50)


def test_predict_file_out_of_core_zarr_and_dask_agree(tmp_path, run_dir):
    img = np.random.default_rng(2).integers(0, 255, (130, 77), dtype=np.uint8)
    np.save(tmp_path / "big.npy", img)
    a = predict_file(run_dir, tmp_path / "big.npy", tmp_path / "a.zarr", tile_shape=36)
    b = predict_file(run_dir, tmp_path / "big.npy", tmp_path / "b.tif", tile_shape=36, dask_scheduler="threads")
    import zarr

    za = np.asarray(zarr.open_array(str(a), mode="r"))
    np.testing.assert_allclose(za, _expected(run_dir, img), atol=1e-5)
    np.testing.assert_allclose(tifffile.imread(b), za, atol=1e-5)


def test_cli_corrupt_input_one_line_error_no_output(tmp_path, run_dir, capsys):
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, np.zeros((30, 30), np.uint8))
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 20)
    out = tmp_path / "out"
    assert main(["predict", "--model", str(run_dir), str(bad), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("unetseg: error:") and "bad.tif" in err[0]
    assert list(out.iterdir()) == []


def test_cli_unwritable_output_one_line_error_no_partial(tmp_path, run_dir, capsys):
    img = tmp_path / "x.tif"
    tifffile.imwrite(img, np.zeros((30, 30), np.uint8))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        assert main(["predict", "--model", str(run_dir), str(img), "--out", str(ro)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("unetseg: error:")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


def test_cli_output_name_taken_by_a_folder_one_line_error(tmp_path, run_dir, capsys):
    img = tmp_path / "x.tif"
    tifffile.imwrite(img, np.zeros((30, 30), np.uint8))
    out = tmp_path / "out"
    (out / "x.tif").mkdir(parents=True)
    (out / "x.tif" / "keep").write_text("1")
    assert main(["predict", "--model", str(run_dir), str(img), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("unetseg: error:")
    assert sorted(p.name for p in out.iterdir()) == ["x.tif"]  # no temporary left behind
    assert (out / "x.tif" / "keep").read_text() == "1"


def test_cli_out_is_a_file(tmp_path, run_dir, capsys):
    img = tmp_path / "x.tif"
    tifffile.imwrite(img, np.zeros((30, 30), np.uint8))
    (tmp_path / "file").write_text("")
    assert main(["predict", "--model", str(run_dir), str(img), "--out", str(tmp_path / "file" / "out")]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_failure_mid_write_leaves_no_partial_file(tmp_path, run_dir, monkeypatch):
    img = tmp_path / "x.tif"
    tifffile.imwrite(img, np.zeros((300, 30), np.uint8))
    from unetseg.inference import Predictor

    calls = {"n": 0}
    real = Predictor.__call__

    def boom(self, batch, **kw):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(28, "No space left on device")
        return real(self, batch, **kw)

    monkeypatch.setattr(Predictor, "__call__", boom)
    out = tmp_path / "out"
    assert main(["predict", "--model", str(run_dir), str(img), "--out", str(out), "--tile", "20"]) == 1
    assert list(out.iterdir()) == []


def test_cli_wrong_image_shape_for_model(tmp_path, run_dir, capsys):
    img = tmp_path / "rgb.npy"
    colour = np.zeros((20, 20, 3), np.uint8)
    colour[..., 1] = 200
    np.save(img, colour)
    assert main(["predict", "--model", str(run_dir), str(img), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "rgb.npy" in err and "--channel" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "rgb.tif").exists()


def test_grey_image_saved_as_rgb_png_is_read_as_one_channel(tmp_path, run_dir):
    from PIL import Image

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 255, (40, 50), dtype=np.uint8)
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / "rgb.png")
    tifffile.imwrite(tmp_path / "grey.tif", grey)
    assert main(["predict", "--model", str(run_dir), str(tmp_path / "rgb.png"), str(tmp_path / "grey.tif"), "--out", str(tmp_path / "o")]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "o" / "rgb.tif"), tifffile.imread(tmp_path / "o" / "grey.tif"))


def test_cli_channel_picks_one_channel_of_a_colour_image(tmp_path, run_dir):
    rng = np.random.default_rng(1)
    colour = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "c.tif", colour)
    tifffile.imwrite(tmp_path / "g.tif", np.ascontiguousarray(colour[..., 2]))
    assert main(["predict", "--model", str(run_dir), str(tmp_path / "c.tif"), "--out", str(tmp_path / "a"), "--channel", "2"]) == 0
    assert main(["predict", "--model", str(run_dir), str(tmp_path / "g.tif"), "--out", str(tmp_path / "b")]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "a" / "c.tif"), tifffile.imread(tmp_path / "b" / "g.tif"))
    assert main(["predict", "--model", str(run_dir), str(tmp_path / "c.tif"), "--out", str(tmp_path / "d"), "--channel", "3"]) == 1


@pytest.mark.data
def test_cli_on_real_hela_lzw_tiffs(tmp_path, run_dir, hela_dir):
    files = sorted((hela_dir / "01").glob("t*.tif"))[:2]
    out = tmp_path / "out"
    assert main(["predict", "--model", str(run_dir), *map(str, files), "--out", str(out), "--output", "labels", "--tile", "388"]) == 0
    for f in files:
        labels = tifffile.imread(out / f.name)
        assert labels.shape == tifffile.imread(f).shape and labels.dtype in (np.uint16, np.uint32)


def test_cli_dask_scheduler_address(tmp_path, run_dir):
    from distributed import LocalCluster

    img = np.random.default_rng(3).integers(0, 255, (70, 90), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "x.tif", img)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        code = main(["predict", "--model", str(run_dir), str(tmp_path / "x.tif"), "--out", str(tmp_path / "o"), "--tile", "52", "--dask-scheduler", cluster.scheduler_address])
    assert code == 0
    np.testing.assert_allclose(tifffile.imread(tmp_path / "o" / "x.tif"), _expected(run_dir, img), atol=1e-5)


def test_predict_file_rgb_png_with_three_channel_model(tmp_path):
    from PIL import Image

    net = _net(in_channels=3, num_classes=3, base=2)
    rgb = np.random.default_rng(4).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    out = predict_file(net, tmp_path / "c.png", tmp_path / "c.tif", tile_shape=36, normalization={"method": "dtype"})
    got = tifffile.imread(out)
    assert got.shape == (3, 40, 50)  # more than 2 classes: every class map
    ref = predict_image(net, np.moveaxis(rgb, -1, 0).astype(np.float32) / 255, tile_shape=36)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    mask = predict_file(net, tmp_path / "c.png", tmp_path / "m.tif", output="mask", tile_shape=36, normalization={"method": "dtype"})
    np.testing.assert_array_equal(tifffile.imread(mask), ref.argmax(0))


def test_training_model_is_handed_back_in_training_mode():
    torch.manual_seed(0)
    net = UNet(1, 2, base_channels=2, dropout=0.5)
    net.train()
    img = np.random.default_rng(5).normal(size=(30, 30)).astype(np.float32)
    a = predict_image(net, img, tile_shape=20)
    b = predict_image(net, img, tile_shape=20)
    np.testing.assert_array_equal(a, b)  # dropout off while predicting
    assert net.training
    assert all(p.is_contiguous() for p in net.parameters())


# ----------------------------------------------------------------------------------------------
# Output shift (annotations displaced from the image; unetseg.train.calibrate)
# ----------------------------------------------------------------------------------------------

SHIFTS = [(-0.5, 0.0), (0.75, -1.25), (2.0, 0.3), (-2.0, -2.0), (1.0, 0.0), (-0.25, 0.5)]


@pytest.mark.parametrize("shift", SHIFTS)
def test_streamed_output_shift_equals_shifting_the_whole_map(shift):
    """Bands are shifted as they stream (written one band late); the result is the whole map shifted."""
    net = _net(base=2)
    img = np.random.default_rng(12).normal(size=(70, 53)).astype(np.float32)
    ref = predict_image(net, img, tile_shape=20)  # 4 bands of 20 rows
    got = predict_image(net, img, tile_shape=20, output_shift=shift)
    np.testing.assert_array_equal(got, shift_probabilities(ref, shift))
    assert np.abs(got - ref).max() > 0.01
    np.testing.assert_allclose(got.sum(0), 1.0, atol=1e-6)  # still a distribution over classes
    target = np.zeros((70, 53), np.uint8)
    predict_into(net, img[None], target, tile_shape=20, output_shift=shift, transform=lambda p: (p[1] > 0.5).astype(np.uint8))
    np.testing.assert_array_equal(target, (shift_probabilities(ref, shift)[1] > 0.5).astype(np.uint8))


@pytest.mark.parametrize("shift", SHIFTS[:3])
def test_dask_output_shift_equals_in_memory(shift):
    import dask.array as da

    net = _net(base=2)
    img = np.random.default_rng(13).normal(size=(70, 53)).astype(np.float32)
    ref = predict_image(net, img, tile_shape=20, output_shift=shift)
    out = predict_dask(net, da.from_array(img, chunks=32), tile_shape=20, chunk_size=32, output_shift=shift).compute(scheduler="threads")
    assert np.abs(out - ref).max() <= TOL


def test_output_shift_integer_is_a_translation_with_edges_repeated():
    p = np.random.default_rng(0).random((2, 6, 5)).astype(np.float32)
    moved = shift_probabilities(p, (-1, 2))
    np.testing.assert_array_equal(moved[:, :-1, 2:], p[:, 1:, :-2])
    np.testing.assert_array_equal(moved[:, -1, 2:], p[:, -1, :-2])  # the last row repeats
    np.testing.assert_array_equal(moved[:, :-1, 0], p[:, 1:, 0])


@pytest.mark.parametrize("bad", [(0.5,), (3.0, 0.0), ("a", 0), (float("nan"), 0.0)])
def test_bad_output_shift_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="output_shift"):
        predict_image(_net(base=2), np.zeros((20, 20), np.float32), output_shift=bad)


def test_predict_file_applies_the_model_files_output_shift(tmp_path):
    d = tmp_path / "shifted"
    d.mkdir()
    save(_net(base=4), d, card=ModelCard(normalization={"method": "minmax"}, output_shift=(-0.5, 0.25)))
    img = np.random.default_rng(3).integers(0, 255, (90, 61), dtype=np.uint8)
    np.save(tmp_path / "x.npy", img)
    from unetseg.models import load

    x = normalize(img, {"method": "minmax"})
    plain = predict_image(load(d), x, tile_shape=36)
    predict_file(d, tmp_path / "x.npy", tmp_path / "a.tif", tile_shape=36)
    np.testing.assert_allclose(tifffile.imread(tmp_path / "a.tif"), shift_probabilities(plain, (-0.5, 0.25))[1], atol=1e-5)
    predict_file(d, tmp_path / "x.npy", tmp_path / "b.tif", tile_shape=36, dask_scheduler="threads")
    np.testing.assert_allclose(tifffile.imread(tmp_path / "b.tif"), tifffile.imread(tmp_path / "a.tif"), atol=1e-5)
    predict_file(d, tmp_path / "x.npy", tmp_path / "c.tif", tile_shape=36, output_shift=None)  # ignore it
    np.testing.assert_allclose(tifffile.imread(tmp_path / "c.tif"), plain[1], atol=1e-5)


def test_cli_applies_the_output_shift_unless_told_not_to(tmp_path):
    d = tmp_path / "shifted"
    d.mkdir()
    save(_net(base=4), d, card=ModelCard(normalization={"method": "minmax"}, output_shift=(1.0, 0.0)))
    img = np.random.default_rng(4).integers(0, 255, (50, 40), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "x.tif", img)
    assert main(["predict", "--model", str(d), str(tmp_path / "x.tif"), "--out", str(tmp_path / "a"), "--tile", "36"]) == 0
    assert main(["predict", "--model", str(d), str(tmp_path / "x.tif"), "--out", str(tmp_path / "b"), "--tile", "36", "--no-output-shift"]) == 0
    a, b = tifffile.imread(tmp_path / "a" / "x.tif"), tifffile.imread(tmp_path / "b" / "x.tif")
    np.testing.assert_allclose(a[1:], b[:-1], atol=1e-6)  # moved down by one row
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)  # the first row repeats


def test_labels_split_by_the_border_class_the_card_records(tmp_path):
    torch.manual_seed(0)
    d = tmp_path / "run3"
    d.mkdir()
    save(_net(base=2, num_classes=3), d, card=ModelCard(normalization={"method": "minmax"}, classes=("bg", "cell", "border"), border_class=2))
    tifffile.imwrite(tmp_path / "x.tif", np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8))
    assert main(["predict", "--model", str(d), str(tmp_path / "x.tif"), "--out", str(tmp_path / "o"), "--output", "labels", "--split", "border"]) == 0
    assert tifffile.imread(tmp_path / "o" / "x.tif").shape == (40, 40)
    d2 = tmp_path / "run3-nocard"
    d2.mkdir()
    save(_net(base=2, num_classes=3), d2, card=ModelCard(normalization={"method": "minmax"}, classes=("bg", "cell", "other")))
    assert main(["predict", "--model", str(d2), str(tmp_path / "x.tif"), "--out", str(tmp_path / "o2"), "--output", "labels", "--split", "border"]) == 1


def test_labels_without_flags_use_the_postprocessing_the_card_records(tmp_path):
    from unetseg.models import Postprocess

    img = np.random.default_rng(4).integers(0, 255, (48, 48), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "x.tif", img)
    runs = {}
    for name, post in (("default", Postprocess()), ("low", Postprocess(threshold=0.0)), ("big", Postprocess(threshold=0.0, min_size=10**6))):
        torch.manual_seed(0)
        runs[name] = tmp_path / name
        runs[name].mkdir()
        save(_net(base=2), runs[name], card=ModelCard(normalization={"method": "minmax"}, postprocess=post))
        assert main(["predict", "--model", str(runs[name]), str(tmp_path / "x.tif"), "--out", str(tmp_path / f"o-{name}"), "--output", "labels"]) == 0
    labels = {k: tifffile.imread(tmp_path / f"o-{k}" / "x.tif") for k in runs}
    assert (labels["low"] == 1).all()  # the card's threshold 0: everything is foreground, one object
    assert labels["big"].max() == 0  # the card's min_size removes it
    # explicit flags win over the card
    flags = ["--output", "labels", "--min-size", "0", "--threshold", "0.5"]
    assert main(["predict", "--model", str(runs["big"]), str(tmp_path / "x.tif"), "--out", str(tmp_path / "o-flag"), *flags]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "o-flag" / "x.tif"), labels["default"])


def test_the_cards_agglomeration_closes_boundaries_after_filling_in_every_output(tmp_path):
    from unetseg.membranes import agglomerate_boundaries
    from unetseg.models import Postprocess
    from unetseg.postprocess import fill_small_holes

    rng = np.random.default_rng(6)
    tifffile.imwrite(tmp_path / "x.tif", rng.integers(0, 255, (48, 56), dtype=np.uint8))
    runs = {name: tmp_path / name for name in ("plain", "closed")}

    def out(run, *flags):
        folder = tmp_path / f"o-{run}-{'-'.join(flags)}"
        assert main(["predict", "--model", str(runs[run]), str(tmp_path / "x.tif"), "--out", str(folder), *flags]) == 0
        return tifffile.imread(folder / "x.tif")

    def model(name, post):
        runs[name].mkdir()
        save(_net(base=2, seed=3), runs[name], card=ModelCard(normalization={"method": "minmax"}, postprocess=post))

    model("plain", Postprocess())
    plain = out("plain")
    level = round(float(np.median(plain)), 4)  # the random network's map sits near 0.5: merge at its median
    model("closed", Postprocess(fill_holes=50, agglomerate=level))
    closed, expected = out("closed"), agglomerate_boundaries(fill_small_holes(plain, 50), level)
    assert np.count_nonzero(expected != fill_small_holes(plain, 50)) > 0  # lines were drawn
    np.testing.assert_array_equal(closed, expected)
    np.testing.assert_array_equal(out("closed", "--output", "mask"), np.where(closed > 0.5, 255, 0))
    np.testing.assert_allclose(out("closed", "--dask-scheduler", "threads"), closed, atol=1e-5)
    np.testing.assert_array_equal(out("closed", "--agglomerate", "0", "--fill-holes", "0"), plain)  # flags win
    np.testing.assert_array_equal(out("plain", "--agglomerate", str(level), "--fill-holes", "50"), closed)
    assert main(["predict", "--model", str(runs["closed"]), str(tmp_path / "x.tif"), "--out", str(tmp_path / "bad"), "--agglomerate", "1.5"]) == 1
    assert not (tmp_path / "bad" / "x.tif").exists()


def test_the_cards_fill_holes_fills_every_output_section_by_section(tmp_path):
    from unetseg.models import Postprocess
    from unetseg.postprocess import fill_small_holes

    rng = np.random.default_rng(5)
    tifffile.imwrite(tmp_path / "x.tif", rng.integers(0, 255, (48, 56), dtype=np.uint8))
    tifffile.imwrite(tmp_path / "s.tif", rng.integers(0, 255, (2, 48, 56), dtype=np.uint8))
    runs = {}
    for name, area in (("plain", 0), ("fill", 200)):
        runs[name] = tmp_path / name
        runs[name].mkdir()
        save(_net(base=2, seed=3), runs[name], card=ModelCard(normalization={"method": "minmax"}, postprocess=Postprocess(fill_holes=area)))

    def out(run, image, *flags):
        folder = tmp_path / f"o-{run}-{image}-{'-'.join(flags)}"
        assert main(["predict", "--model", str(runs[run]), str(tmp_path / image), "--out", str(folder), *flags]) == 0
        return tifffile.imread(folder / image)

    plain, filled = out("plain", "x.tif"), out("fill", "x.tif")
    assert np.count_nonzero(filled != plain) > 0  # the random network's map has holes to fill
    np.testing.assert_array_equal(filled, fill_small_holes(plain, 200))
    np.testing.assert_array_equal(out("fill", "x.tif", "--output", "mask"), np.where(filled > 0.5, 255, 0))
    np.testing.assert_array_equal(out("fill", "x.tif", "--fill-holes", "0"), plain)  # the flag wins over the card
    np.testing.assert_allclose(out("fill", "x.tif", "--dask-scheduler", "threads"), filled, atol=1e-5)
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        np.testing.assert_allclose(out("fill", "x.tif", "--dask-scheduler", cluster.scheduler_address), filled, atol=1e-5)
    stack = out("plain", "s.tif")
    np.testing.assert_array_equal(out("fill", "s.tif"), np.stack([fill_small_holes(p, 200) for p in stack]))
    assert main(["predict", "--model", str(runs["fill"]), str(tmp_path / "x.tif"), "--out", str(tmp_path / "bad"), "--fill-holes", "-3"]) == 1


def test_the_cards_edge_min_size_drops_small_objects_at_the_image_edge(tmp_path):
    from unetseg.cv import predict_held_out
    from unetseg.models import Postprocess
    from unetseg.postprocess import remove_small_edge_objects

    rng = np.random.default_rng(6)
    tifffile.imwrite(tmp_path / "x.tif", rng.integers(0, 255, (48, 56), dtype=np.uint8))
    tifffile.imwrite(tmp_path / "s.tif", rng.integers(0, 255, (2, 48, 56), dtype=np.uint8))

    def run(name, **post):
        (tmp_path / name).mkdir(exist_ok=True)
        save(_net(base=2, seed=3), tmp_path / name, card=ModelCard(normalization={"method": "minmax"}, task="instances",
                                                                   postprocess=Postprocess(**post)))
        return tmp_path / name

    def out(model, image, *flags, output="labels"):
        folder = tmp_path / f"o-{model.name}-{image}-{output}-{'-'.join(flags)}"
        assert main(["predict", "--model", str(model), str(tmp_path / image), "--out", str(folder), "--output", output, *flags]) == 0
        return tifffile.imread(folder / image)

    # Thresholded at its median, the random network's map makes many objects, at the edge and inside.
    level = round(float(np.median(out(run("probe"), "x.tif", output="prob"))), 6)
    plain_run = run("plain", threshold=level)
    plain = out(plain_run, "x.tif")
    rim = np.concatenate([plain[0], plain[-1], plain[:, 0], plain[:, -1]])
    sizes = np.bincount(plain.ravel())[np.unique(rim[rim > 0])]
    assert sizes.min() < sizes.max()  # edge objects of several sizes
    edge = int(sizes.min()) + 1
    model = run("edge", threshold=level, edge_min_size=edge)
    got = out(model, "x.tif")
    np.testing.assert_array_equal(got, remove_small_edge_objects(plain, edge))
    assert 0 < got.max() < plain.max()
    np.testing.assert_array_equal(out(model, "x.tif", "--edge-min-size", "0"), plain)  # the flag wins over the card
    np.testing.assert_array_equal(out(model, "s.tif"), remove_small_edge_objects(out(plain_run, "s.tif"), edge, edge_dims=2))
    item = type("Item", (), {"image": tifffile.imread(tmp_path / "x.tif")[None].astype(np.float32) / 255})
    held = [predict_held_out(m, [item], "instances", tta=False)[0] for m in (plain_run, model)]
    assert held[1].max() < held[0].max()  # unetseg cv scores what the card says too
    np.testing.assert_array_equal(held[1], remove_small_edge_objects(held[0], edge))
    assert main(["predict", "--model", str(model), str(tmp_path / "x.tif"), "--out", str(tmp_path / "bad"), "--output", "labels",
                 "--edge-min-size", "-3"]) == 1
    assert not (tmp_path / "bad" / "x.tif").exists()
