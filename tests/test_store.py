"""Lazy sources and atomic tile-by-tile writers."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import tifffile

from unetseg.errors import InputError
from unetseg.store import RawSource, create_writer, open_source


@pytest.fixture
def arr():
    return np.random.default_rng(0).integers(0, 60000, size=(3, 37, 53)).astype(np.uint16)


def _windows(a):
    yield (slice(None), slice(5, 20), slice(0, 53))
    yield (slice(1, 2), slice(0, 37), slice(10, 11))
    yield (0, slice(3, 4), slice(None))
    yield (slice(None), slice(36, 37), slice(52, 53))


@pytest.mark.parametrize("kind", ["npy", "tif", "tif-zlib", "tif-bigendian", "zarr", "tif-tiled"])
def test_sources_read_windows_like_numpy(tmp_path, arr, kind):
    if kind == "npy":
        path = tmp_path / "a.npy"
        np.save(path, arr)
    elif kind == "zarr":
        import zarr

        path = tmp_path / "a.zarr"
        z = zarr.create_array(store=str(path), shape=arr.shape, chunks=(1, 16, 16), dtype=arr.dtype)
        z[...] = arr
    else:
        path = tmp_path / "a.tif"
        kw = {"compression": "zlib"} if kind == "tif-zlib" else {}
        if kind == "tif-bigendian":
            kw = {"byteorder": ">"}
        if kind == "tif-tiled":
            kw = {"tile": (16, 16), "compression": "zlib"}
        tifffile.imwrite(path, arr, photometric="minisblack", **kw)
    src = open_source(path)
    assert src.shape == arr.shape and src.dtype == arr.dtype
    if kind in ("npy", "tif", "tif-bigendian"):
        assert isinstance(src, RawSource)  # read with pread, never fully loaded
    for w in _windows(arr):
        np.testing.assert_array_equal(src[w], arr[w])
    clone = pickle.loads(pickle.dumps(src))  # Dask workers get sources by pickling
    np.testing.assert_array_equal(clone[0, 1:3, 2:4], arr[0, 1:3, 2:4])


def test_png_source_is_decoded(tmp_path):
    from PIL import Image

    img = (np.arange(100, dtype=np.uint8).reshape(10, 10))
    Image.fromarray(img).save(tmp_path / "a.png")
    src = open_source(tmp_path / "a.png")
    np.testing.assert_array_equal(src[2:4, 3:5], img[2:4, 3:5])


@pytest.mark.parametrize("content", [b"", b"not a tiff at all", b"II*\x00\x08\x00\x00\x00garbage"])
def test_corrupt_inputs_raise_input_error(tmp_path, content):
    path = tmp_path / "bad.tif"
    path.write_bytes(content)
    with pytest.raises(InputError, match="bad.tif"):
        open_source(path)


def test_truncated_raw_files_are_refused(tmp_path, arr):
    path = tmp_path / "a.npy"
    np.save(path, arr)
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) - 100)
    with pytest.raises(InputError, match="truncated"):
        open_source(path)
    tif = tmp_path / "b.tif"
    tifffile.imwrite(tif, arr, photometric="minisblack")
    with open(tif, "r+b") as fh:
        fh.truncate(os.path.getsize(tif) // 2)
    with pytest.raises(InputError):
        src = open_source(tif)
        src[:, :, :]
    with pytest.raises(InputError, match="not found"):
        open_source(tmp_path / "missing.tif")


@pytest.mark.parametrize("suffix", [".tif", ".npy", ".zarr"])
def test_writers_assemble_tiles_and_rename_atomically(tmp_path, suffix):
    path = tmp_path / f"out{suffix}"
    want = np.random.default_rng(1).random((2, 30, 41)).astype(np.float32)
    with create_writer(path, want.shape, np.float32) as w:
        assert not path.exists()
        for y in range(0, 30, 7):
            for x in range(0, 41, 9):
                w[:, y : y + 7, x : x + 9] = want[:, y : y + 7, x : x + 9]
    got = np.asarray(open_source(path)[:, :, :])
    np.testing.assert_array_equal(got, want)
    if suffix == ".tif":
        mm = tifffile.memmap(path)  # plain contiguous TIFF: memory-mappable by other tools
        np.testing.assert_array_equal(mm, want)
        with tifffile.TiffFile(path) as tif:  # a stack ImageJ can hold: a hyperstack Fiji opens as Z slices
            assert tif.is_imagej and tif.series[0].axes == "ZYX"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_tiff_writer_falls_back_to_bigtiff_for_what_imagej_cannot_hold(tmp_path):
    path = tmp_path / "out.tif"
    want = np.random.default_rng(2).random((2, 3, 10, 12)).astype(np.float32)
    with create_writer(path, want.shape, np.float32, axes="CZYX") as w:  # classes first: not ImageJ's order
        w[:, :, :, :] = want
    np.testing.assert_array_equal(tifffile.memmap(path), want)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff and not tif.is_imagej


def test_writer_leaves_nothing_on_error(tmp_path):
    path = tmp_path / "out.tif"
    with pytest.raises(RuntimeError):
        with create_writer(path, (10, 10), np.float32) as w:
            w[0:5, :] = 1.0
            raise RuntimeError("crash while writing")
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_unknown_suffix_and_missing_folder(tmp_path):
    with pytest.raises(InputError):
        with create_writer(tmp_path / "out.png", (3, 3), np.uint8):
            pass
    with pytest.raises(FileNotFoundError):
        with create_writer(tmp_path / "nope" / "out.tif", (3, 3), np.uint8):
            pass
