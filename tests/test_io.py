"""Readers round-trip what the writers wrote; bad files give an InputError naming the file."""

from __future__ import annotations

import numpy as np
import pytest

from unetseg.errors import InputError
from unetseg.io import (
    list_images,
    read_image,
    read_image_axes,
    read_stack,
    read_zarr,
    stack_axes,
    write_image,
    write_zarr,
)

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("compression", [None, "zlib", "lzw", "zstd", "packbits"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32])
def test_tiff_round_trip(tmp_path, dtype, compression):
    if compression == "packbits" and np.dtype(dtype).itemsize > 2:
        pytest.skip("packbits is for small integer types")
    a = (RNG.random((17, 23)) * 200).astype(dtype)
    p = tmp_path / "a.tif"
    write_image(p, a, compression=compression)
    b, axes = read_image_axes(p)
    assert axes == "YX" and b.dtype == a.dtype and np.array_equal(a, b)


def test_tiff_compression_is_applied(tmp_path):
    a = np.zeros((256, 256), np.uint16)
    write_image(tmp_path / "raw.tif", a, compression=None)
    write_image(tmp_path / "lzw.tif", a, compression="lzw")
    assert (tmp_path / "lzw.tif").stat().st_size < (tmp_path / "raw.tif").stat().st_size / 10
    import tifffile

    with tifffile.TiffFile(tmp_path / "lzw.tif") as t:
        assert t.pages[0].compression == 5  # LZW


@pytest.mark.parametrize(
    "shape,axes,stack_shape",
    [
        ((4, 9, 11), "ZYX", (4, 9, 11)),
        ((9, 11, 3), "YXC", (1, 9, 11, 3)),
        ((2, 9, 11, 5), "ZYXC", (2, 9, 11, 5)),
        ((3, 9, 11), "CYX", (1, 9, 11, 3)),
    ],
)
def test_multipage_and_channel_tiff(tmp_path, shape, axes, stack_shape):
    a = RNG.integers(0, 255, size=shape).astype(np.uint8)
    p = tmp_path / "s.tif"
    write_image(p, a, axes=axes)
    b, got = read_image_axes(p)
    assert got == axes and np.array_equal(a, b)
    assert read_stack(p).shape == stack_shape


def test_png_round_trip(tmp_path):
    for a in (
        RNG.integers(0, 255, (13, 7)).astype(np.uint8),
        RNG.integers(0, 65535, (13, 7)).astype(np.uint16),
        RNG.integers(0, 255, (13, 7, 3)).astype(np.uint8),
        RNG.integers(0, 255, (13, 7, 4)).astype(np.uint8),
    ):
        p = tmp_path / "a.png"
        write_image(p, a)
        b, axes = read_image_axes(p)
        assert np.array_equal(a, b) and b.dtype == a.dtype
        assert axes == ("YX" if a.ndim == 2 else "YXC")


def test_jpeg_read(tmp_path):
    from PIL import Image

    a = np.full((16, 16), 128, np.uint8)
    Image.fromarray(a).save(tmp_path / "a.jpg", quality=95)
    b = read_image(tmp_path / "a.jpg")
    assert b.shape == (16, 16) and np.abs(b.astype(int) - 128).max() <= 2


def test_npy_round_trip(tmp_path):
    a = RNG.random((3, 5, 6)).astype(np.float64)
    write_image(tmp_path / "a.npy", a)
    b, axes = read_image_axes(tmp_path / "a.npy")
    assert np.array_equal(a, b) and axes == "ZYX"


def test_zarr_round_trip(tmp_path):
    a = RNG.random((3, 40, 50)).astype(np.float32)
    write_zarr(tmp_path / "a.zarr", a, chunks=(1, 16, 16))
    assert np.array_equal(read_zarr(tmp_path / "a.zarr"), a)
    write_image(tmp_path / "b.zarr", a[0].astype(np.uint16), axes="YX")
    b, axes = read_image_axes(tmp_path / "b.zarr")
    assert axes == "YX" and b.dtype == np.uint16 and np.array_equal(b, a[0].astype(np.uint16))
    # Overwrite is atomic and replaces the old store.
    write_image(tmp_path / "b.zarr", np.ones((4, 4), np.uint8))
    assert read_image(tmp_path / "b.zarr").shape == (4, 4)
    assert read_stack(tmp_path / "a.zarr").shape == (3, 40, 50)


def test_ome_zarr_group(tmp_path):
    import zarr

    a = RNG.integers(0, 1000, size=(1, 2, 1, 20, 30)).astype(np.uint16)
    g = zarr.open_group(str(tmp_path / "img.ome.zarr"), mode="w")
    g.attrs["multiscales"] = [
        {
            "axes": [{"name": n} for n in "tczyx"],
            "datasets": [{"path": "0"}, {"path": "1"}],
        }
    ]
    g.create_array("0", shape=a.shape, dtype=a.dtype)[...] = a
    g.create_array("1", shape=(1, 2, 1, 10, 15), dtype=a.dtype)
    b, axes = read_image_axes(tmp_path / "img.ome.zarr")
    assert b.shape == (2, 1, 20, 30) and axes == "CZYX"
    assert np.array_equal(b, a[0])
    assert stack_axes(b, axes).shape == (1, 20, 30, 2)


def test_read_stack_folder(tmp_path):
    for i in (10, 2, 1):
        write_image(tmp_path / f"s{i}.png", np.full((3, 4), i, np.uint8))
    st = read_stack(tmp_path)
    assert st.shape == (3, 3, 4) and st[:, 0, 0].tolist() == [1, 2, 10]
    write_image(tmp_path / "s11.png", np.zeros((5, 4), np.uint8))
    with pytest.raises(InputError, match="s11.png"):
        read_stack(tmp_path)


def test_read_stack_single_image(tmp_path):
    write_image(tmp_path / "a.tif", np.zeros((6, 7), np.uint8))
    assert read_stack(tmp_path / "a.tif").shape == (1, 6, 7)


def test_list_images_natural_order_with_zarr(tmp_path):
    for n in ("t10.tif", "t2.png", ".hidden.tif", "notes.txt"):
        (tmp_path / n).write_bytes(b"x")
    write_zarr(tmp_path / "t3.zarr", np.zeros((2, 2), np.uint8))
    assert [p.name for p in list_images(tmp_path)] == ["t2.png", "t3.zarr", "t10.tif"]


@pytest.mark.parametrize("name,content", [("bad.tif", b"II*\x00garbage"), ("bad.png", b"\x89PNG\r\n\x1a\nxx"), ("bad.npy", b"\x93NUMPYjunk"), ("bad.jpg", b"\xff\xd8\xff")])
def test_corrupt_files_name_the_file(tmp_path, name, content):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(InputError, match=name):
        read_image(p)


def test_bad_zarr_and_missing_file(tmp_path):
    (tmp_path / "x.zarr").mkdir()
    with pytest.raises(InputError, match="x.zarr"):
        read_image(tmp_path / "x.zarr")
    with pytest.raises(InputError, match="nope.tif"):
        read_image(tmp_path / "nope.tif")
    (tmp_path / "a.bmp").write_bytes(b"BM")
    with pytest.raises(InputError, match="a.bmp"):
        read_image(tmp_path / "a.bmp")


def test_max_pixels_guard(tmp_path):
    write_image(tmp_path / "a.tif", np.zeros((100, 100), np.uint8))
    with pytest.raises(InputError, match="max_pixels"):
        read_image(tmp_path / "a.tif", max_pixels=1000)


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(InputError, match="a.png"):
        write_image(tmp_path / "a.png", np.zeros((4, 4), np.float32))
    with pytest.raises(InputError, match="compression"):
        write_image(tmp_path / "a.tif", np.zeros((4, 4), np.uint8), compression="jpeg2001")
    with pytest.raises(InputError, match="axes"):
        write_image(tmp_path / "a.tif", np.zeros((4, 4), np.uint8), axes="ZYX")
    assert list(tmp_path.iterdir()) == []


def test_write_replaces_atomically(tmp_path):
    p = tmp_path / "a.tif"
    write_image(p, np.zeros((4, 4), np.uint8))
    write_image(p, np.ones((4, 4), np.uint8))
    assert read_image(p).max() == 1
    assert [q.name for q in tmp_path.iterdir()] == ["a.tif"]


def test_shared_data_readable(isbi_dir, hela_dir, dsb_dir):
    assert read_image(isbi_dir / "labels" / "00.png").shape == (512, 512)
    a, axes = read_image_axes(hela_dir / "01_GT" / "SEG" / "man_seg002.tif")  # LZW, uint16
    assert a.dtype == np.uint16 and axes == "YX"
    assert read_stack(dsb_dir / "img2d.tif").shape == (1, 512, 512)


@pytest.mark.parametrize("suffix,compression", [(".tif", "lzw"), (".tif", "zlib"), (".tif", None), (".png", None), (".npy", None)])
def test_truncated_or_flipped_bytes_only_raise_input_error(tmp_path, suffix, compression):
    rng = np.random.default_rng(1)
    good = tmp_path / f"good{suffix}"
    arr = rng.integers(0, 255, (64, 64) if suffix == ".png" else (3, 64, 64)).astype(np.uint8)
    write_image(good, arr, compression=compression)
    data = good.read_bytes()
    bad = tmp_path / f"bad{suffix}"
    for i in range(60):
        b = bytearray(data)
        if i % 2:
            b = b[: int(rng.integers(0, len(b)))]
        else:
            for _ in range(int(rng.integers(1, 20))):
                b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
        bad.write_bytes(bytes(b))
        try:
            read_image(bad)
        except InputError as exc:
            assert "bad" in str(exc)


def test_corrupt_zarr_chunk(tmp_path):
    write_zarr(tmp_path / "a.zarr", np.arange(64, dtype=np.uint16).reshape(8, 8), chunks=(4, 4))
    chunks = [p for p in (tmp_path / "a.zarr").rglob("*") if p.is_file() and p.name != "zarr.json"]
    assert chunks
    for c in chunks:
        c.write_bytes(b"\x00garbage")
    with pytest.raises(InputError, match="a.zarr"):
        read_zarr(tmp_path / "a.zarr")
