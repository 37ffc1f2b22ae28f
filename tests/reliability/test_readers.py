"""Fuzzing the image readers with malformed files: every one ends in InputError, nothing else."""

from __future__ import annotations

import io as _io
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unetseg.errors import InputError
from unetseg.io import read_image, read_stack, write_image

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _valid_bytes(tmp_path, suffix: str, shape=(37, 29), dtype=np.uint8) -> bytes:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 200, size=shape).astype(dtype)
    path = tmp_path / f"valid{suffix}"
    write_image(path, arr)
    return path.read_bytes()


def _read_outcome(path) -> str:
    """'ok' (a valid array came back) or 'refused' (InputError); anything else propagates."""
    try:
        arr = read_image(path)
    except InputError as exc:
        assert str(path) in str(exc), f"message does not name the file: {exc}"
        return "refused"
    assert isinstance(arr, np.ndarray) and arr.size > 0
    return "ok"


@pytest.mark.parametrize("suffix", [".png", ".tif", ".npy", ".jpg"])
@given(cut=st.floats(0.0, 0.995))
@FUZZ
def test_truncated_files_are_refused(tmp_path, tally, suffix, cut):
    if suffix == ".jpg":
        from PIL import Image

        buf = _io.BytesIO()
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 40), dtype=np.uint8)).save(buf, format="JPEG")
        data = buf.getvalue()
    else:
        data = _valid_bytes(tmp_path, suffix)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: int(len(data) * cut)])
    tally["malformed inputs tried (readers)"] += 1
    outcome = _read_outcome(path)
    if suffix in (".png", ".npy", ".tif") and cut < 0.9:
        assert outcome == "refused"


@pytest.mark.parametrize("suffix", [".png", ".tif", ".npy"])
@given(data=st.data())
@FUZZ
def test_corrupted_bytes_never_crash(tmp_path, tally, suffix, data):
    raw = bytearray(_valid_bytes(tmp_path, suffix))
    n = data.draw(st.integers(1, 16))
    for _ in range(n):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(bytes(raw))
    tally["malformed inputs tried (readers)"] += 1
    _read_outcome(path)


@given(blob=st.binary(min_size=0, max_size=512))
@FUZZ
def test_random_bytes_with_image_suffix(tmp_path, tally, blob):
    for suffix in (".png", ".tif", ".npy", ".jpg"):
        path = tmp_path / f"junk{suffix}"
        path.write_bytes(blob)
        tally["malformed inputs tried (readers)"] += 1
        _read_outcome(path)


def _tiff_header_declaring(width: int, height: int) -> bytes:
    """A minimal little-endian TIFF whose IFD declares a huge uint8 image with one tiny strip."""
    entries = [
        (256, 4, 1, width),  # ImageWidth (LONG)
        (257, 4, 1, height),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # Photometric: min-is-black
        (273, 4, 1, 8),  # StripOffsets
        (278, 4, 1, height),  # RowsPerStrip
        (279, 4, 1, 16),  # StripByteCounts
    ]
    ifd_offset = 8 + 16
    out = b"II*\x00" + struct.pack("<I", ifd_offset) + b"\x00" * 16
    out += struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        if typ == 3:
            out += struct.pack("<HHIHH", tag, typ, count, value, 0)
        else:
            out += struct.pack("<HHII", tag, typ, count, value)
    return out + struct.pack("<I", 0)


def _png_header_declaring(width: int, height: int) -> bytes:
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("make,suffix", [(_tiff_header_declaring, ".tif"), (_png_header_declaring, ".png")])
def test_decompression_bomb_refused_before_allocation(tmp_path, tally, make, suffix):
    path = tmp_path / f"bomb{suffix}"
    path.write_bytes(make(100_000, 100_000))
    assert path.stat().st_size < 1000
    tally["malformed inputs tried (readers)"] += 1
    with pytest.raises(InputError, match="max_pixels") as info:
        read_image(path)
    assert "10,000,000,000" in str(info.value)
    # The limit is configurable: a small limit refuses a small image, naming the limit.
    small = tmp_path / f"small{suffix}"
    write_image(small, np.zeros((64, 64), np.uint8))
    with pytest.raises(InputError, match="1,000"):
        read_image(small, max_pixels=1000)
    assert read_image(small, max_pixels=64 * 64).shape == (64, 64)


def test_npy_declaring_huge_shape(tmp_path):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000), }"
    header = header + " " * (118 - len(header)) + "\n"
    path = tmp_path / "huge.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\x00" * 64)
    with pytest.raises(InputError, match="huge.npy"):
        read_image(path)


def test_object_npy_is_never_unpickled(tmp_path):
    path = tmp_path / "evil.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="evil.npy"):
        read_image(path)


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0,)])
def test_zero_size_refused(tmp_path, shape):
    path = tmp_path / "empty.npy"
    np.save(path, np.zeros(shape, np.float32))
    with pytest.raises(InputError, match="empty"):
        read_image(path)


def test_empty_folder_stack(tmp_path):
    with pytest.raises(InputError, match=str(tmp_path)):
        read_stack(tmp_path)


def test_pixel_limit_from_environment(tmp_path, monkeypatch, capsys):
    from unetseg.cli import main

    img = tmp_path / "img.png"
    write_image(img, np.zeros((64, 64), np.uint8))
    monkeypatch.setenv("UNETSEG_MAX_PIXELS", "1000")
    with pytest.raises(InputError, match="1,000"):
        read_image(img)
    code = main(["evaluate", "--pred", str(img), "--gt", str(img), "--protocol", "binary", "--out", str(tmp_path / "ev")])
    err = capsys.readouterr().err
    assert code == 1 and "1,000" in err and err.count("\n") == 1
    monkeypatch.setenv("UNETSEG_MAX_PIXELS", "lots")
    with pytest.raises(InputError, match="UNETSEG_MAX_PIXELS"):
        read_image(img)
