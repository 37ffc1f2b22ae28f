"""Data fetching against a local HTTP server: checksums, cached reuse, resume, safe zip extraction.

No test here touches the internet: every download comes from http.server on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import stat
import threading
import zipfile
from functools import partial
from pathlib import Path

import pytest

from unetseg import fetch as F
from unetseg.cli import main


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; records request paths and Range headers; optional Range support."""

    requests: list = []
    ranges = False

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        type(self).requests.append((self.path, self.headers.get("Range")))
        header = self.headers.get("Range")
        if self.ranges and header and header.startswith("bytes="):
            path = Path(self.translate_path(self.path))
            if path.is_file():
                data = path.read_bytes()
                start = int(header[6:].split("-")[0])
                body = data[start:]
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "srv"
    root.mkdir()
    handler = type("H", (Handler,), {"requests": [], "ranges": False})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}/", handler
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


FILES = {"a/one.bin": b"first file\n" * 100, "two.txt": b"second"}


@pytest.fixture
def toy(server, monkeypatch):
    """A registered two-file data set served from the local server (sources under src/)."""
    root, url, handler = server
    for name, data in FILES.items():
        path = root / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    files = tuple(F.RemoteFile(f"src/{n}", f"data/{n}", sha(d)) for n, d in FILES.items())
    ds = F.RemoteDataset("toy", "test set", "http://unreachable.invalid/", files, "none", "test")
    monkeypatch.setitem(F.REGISTRY, "toy", ds)
    return root, url, handler


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(".") and p.name.endswith((".part", ".tmp"))]


def test_good_download(toy, tmp_path):
    _, url, handler = toy
    dest = F.fetch("toy", tmp_path / "cache", base_url=url)
    assert dest == tmp_path / "cache" / "toy"
    for name, data in FILES.items():
        assert (dest / "data" / name).read_bytes() == data
    assert len(handler.requests) == 2
    assert not leftovers(dest)
    # A SHA256SUMS listing lets users re-check the folder with `sha256sum -c`.
    assert (dest / "SHA256SUMS").read_text() == "".join(f"{sha(d)}  data/{n}\n" for n, d in FILES.items())


def test_corrupted_file_refused_and_removed(toy, tmp_path):
    root, url, _ = toy
    (root / "src" / "two.txt").write_bytes(b"tampered")
    with pytest.raises(F.ChecksumError, match="differs"):
        F.fetch("toy", tmp_path / "cache", base_url=url)
    dest = tmp_path / "cache" / "toy"
    assert not (dest / "data" / "two.txt").exists()
    assert not leftovers(dest)


def test_cached_reuse_makes_no_request(toy, tmp_path):
    _, url, handler = toy
    F.fetch("toy", tmp_path / "cache", base_url=url)
    handler.requests.clear()
    dest = F.fetch("toy", tmp_path / "cache", base_url=url)
    assert handler.requests == []
    assert (dest / "data" / "two.txt").read_bytes() == b"second"


def test_damaged_cache_entry_is_fetched_again(toy, tmp_path):
    _, url, handler = toy
    dest = F.fetch("toy", tmp_path / "cache", base_url=url)
    (dest / "data" / "two.txt").write_bytes(b"bit rot")
    handler.requests.clear()
    F.fetch("toy", tmp_path / "cache", base_url=url)
    assert (dest / "data" / "two.txt").read_bytes() == b"second"
    assert [p for p, _ in handler.requests] == ["/src/two.txt"]


def test_foreign_folder_is_used_when_it_verifies_and_never_modified(toy, tmp_path):
    _, url, handler = toy
    dest = tmp_path / "cache" / "toy"
    for name, data in FILES.items():
        (dest / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / "data" / name).write_bytes(data)
    assert F.fetch("toy", tmp_path / "cache", base_url=url) == dest
    assert handler.requests == [] and not (dest / F.MARKER).exists()
    (dest / "data" / "two.txt").write_bytes(b"user's own edit")
    with pytest.raises(F.InputError, match="not created by unetseg"):
        F.fetch("toy", tmp_path / "cache", base_url=url)
    assert (dest / "data" / "two.txt").read_bytes() == b"user's own edit"


def test_partial_download_resumes_with_range(toy, tmp_path):
    _, url, handler = toy
    handler.ranges = True
    data = FILES["a/one.bin"]
    folder = tmp_path / "cache" / "toy" / "data" / "a"
    folder.mkdir(parents=True)
    F._write_marker(tmp_path / "cache" / "toy", {"name": "toy"})  # as an interrupted fetch leaves it
    (folder / ".one.bin.part").write_bytes(data[:300])
    F.fetch("toy", tmp_path / "cache", base_url=url)
    assert (folder / "one.bin").read_bytes() == data
    assert ("/src/a/one.bin", "bytes=300-") in handler.requests
    assert not (folder / ".one.bin.part").exists()


def test_partial_download_restarts_without_range_support(toy, tmp_path):
    _, url, _ = toy
    folder = tmp_path / "cache" / "toy" / "data" / "a"
    folder.mkdir(parents=True)
    F._write_marker(tmp_path / "cache" / "toy", {"name": "toy"})  # as an interrupted fetch leaves it
    (folder / ".one.bin.part").write_bytes(b"garbage that is not a prefix")
    F.fetch("toy", tmp_path / "cache", base_url=url)
    assert (folder / "one.bin").read_bytes() == FILES["a/one.bin"]


def test_missing_file_is_a_fetch_error(toy, tmp_path):
    root, url, _ = toy
    (root / "src" / "two.txt").unlink()
    with pytest.raises(F.FetchError, match="404"):
        F.fetch("toy", tmp_path / "cache", base_url=url)


def test_unreachable_server_is_a_fetch_error(toy, tmp_path):
    with pytest.raises(F.FetchError, match="resume"):
        F.fetch("toy", tmp_path / "cache", base_url="http://127.0.0.1:9/", timeout=2)


def test_unknown_name():
    with pytest.raises(F.FetchError, match="isbi2012"):
        F.fetch("no-such-set")


def test_cache_from_environment(toy, tmp_path, monkeypatch):
    _, url, _ = toy
    monkeypatch.setenv("UNETSEG_CACHE", str(tmp_path / "envcache"))
    assert F.fetch("toy", base_url=url) == tmp_path / "envcache" / "toy"
    monkeypatch.delenv("UNETSEG_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert F.cache_root() == tmp_path / "home" / ".cache" / "unetseg"


# ---------------------------------------------------------------------------------- archives


def make_zip(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def register_archive(monkeypatch, name: str, digest: str | None) -> None:
    files = (F.RemoteFile(f"{name}.zip", f"{name}.zip", digest),)
    ds = F.RemoteDataset(name, "zip", "http://unreachable.invalid/", files, "none", "test", archive=True, strip_prefix=f"{name}/")
    monkeypatch.setitem(F.REGISTRY, name, ds)


def test_archive_extracted_with_prefix_stripped_and_reused(server, tmp_path, monkeypatch):
    root, url, handler = server
    data = make_zip(root / "ctc.zip", {"ctc/01/t000.tif": b"img", "ctc/01_GT/SEG/man_seg000.tif": b"seg"})
    register_archive(monkeypatch, "ctc", sha(data))
    dest = F.fetch("ctc", tmp_path / "cache", base_url=url)
    assert (dest / "01" / "t000.tif").read_bytes() == b"img"
    assert (dest / "01_GT" / "SEG" / "man_seg000.tif").read_bytes() == b"seg"
    from unetseg.data import discover

    assert discover(dest)[0] == "ctc"  # the Cell Tracking Challenge layout the loader reads
    assert not (tmp_path / "cache" / "downloads" / "ctc.zip").exists()
    handler.requests.clear()
    assert F.fetch("ctc", tmp_path / "cache", base_url=url) == dest
    assert handler.requests == []


def test_archive_never_replaces_a_foreign_folder(server, tmp_path, monkeypatch):
    root, url, handler = server
    data = make_zip(root / "ctc.zip", {"ctc/a.txt": b"x"})
    register_archive(monkeypatch, "ctc", sha(data))
    mine = tmp_path / "cache" / "ctc" / "precious.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("keep")
    with pytest.raises(F.InputError, match="not created by unetseg"):
        F.fetch("ctc", tmp_path / "cache", base_url=url)
    assert mine.read_text() == "keep" and handler.requests == []


def test_corrupted_archive_refused(server, tmp_path, monkeypatch):
    root, url, _ = server
    make_zip(root / "ctc.zip", {"ctc/a.txt": b"x"})
    register_archive(monkeypatch, "ctc", sha(b"something else"))
    with pytest.raises(F.ChecksumError):
        F.fetch("ctc", tmp_path / "cache", base_url=url)
    assert not (tmp_path / "cache" / "ctc").exists()
    assert not (tmp_path / "cache" / "downloads" / "ctc.zip").exists()
    assert not leftovers(tmp_path / "cache")


@pytest.mark.parametrize(
    "members",
    [
        {"ctc/../../escaped.txt": b"x"},
        {"/abs/escaped.txt": b"x"},
        {"ctc/ok.txt": b"ok", "..\\escaped.txt": b"x"},
        {"C:/escaped.txt": b"x"},
    ],
)
def test_zip_traversal_refused(server, tmp_path, monkeypatch, members):
    root, url, _ = server
    data = make_zip(root / "ctc.zip", members)
    register_archive(monkeypatch, "ctc", sha(data))
    cache = tmp_path / "cache"
    with pytest.raises(F.UnsafeArchiveError):
        F.fetch("ctc", cache, base_url=url)
    assert not (cache / "ctc").exists()
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not Path("/abs/escaped.txt").exists()


def test_zip_symlink_refused(tmp_path):
    make_zip(tmp_path / "l.zip", {"a.txt": b"a"}, links={"link": "/etc/passwd"})
    (tmp_path / "out").mkdir()
    with pytest.raises(F.UnsafeArchiveError, match="link"):
        F.safe_extract(tmp_path / "l.zip", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_zip_bomb_guard(tmp_path):
    make_zip(tmp_path / "big.zip", {"a.bin": b"\0" * 10_000})
    (tmp_path / "out").mkdir()
    with pytest.raises(F.UnsafeArchiveError, match="more than"):
        F.safe_extract(tmp_path / "big.zip", tmp_path / "out", max_bytes=5_000)


def test_unpinned_checksum_needs_explicit_sha256(server, tmp_path, monkeypatch):
    root, url, handler = server
    data = make_zip(root / "ctc.zip", {"ctc/a.txt": b"x"})
    register_archive(monkeypatch, "ctc", None)
    with pytest.raises(F.ChecksumError, match="--sha256"):
        F.fetch("ctc", tmp_path / "cache", base_url=url)
    assert handler.requests == []  # refused before downloading anything
    with pytest.raises(F.InputError, match="64 hex"):
        F.fetch("ctc", tmp_path / "cache", base_url=url, sha256="abc")
    dest = F.fetch("ctc", tmp_path / "cache", base_url=url, sha256=sha(data).upper())
    assert (dest / "a.txt").read_bytes() == b"x"


def test_sha256_override_is_for_single_file_sets(toy, tmp_path):
    with pytest.raises(F.InputError, match="single-file"):
        F.fetch("toy", tmp_path / "cache", sha256="0" * 64)


# ---------------------------------------------------------------------------------- registry


def test_registry_entries_are_well_formed():
    for name, ds in F.REGISTRY.items():
        assert ds.name == name and ds.licence and ds.checksum_source
        targets = [f.target for f in ds.files]
        assert len(set(targets)) == len(targets)
        for f in ds.files:
            assert f.sha256 is None or len(f.sha256) == 64 and int(f.sha256, 16) >= 0
            F._safe_target(Path("/x"), f.target)  # no traversal in registered targets
    ctc = F.REGISTRY["DIC-C2DH-HeLa"]
    assert ctc.archive and ctc.files[0].sha256 and ctc.base_url.startswith("http://data.celltrackingchallenge.net/")


@pytest.mark.parametrize("name,fixture", [("isbi2012", "isbi_dir"), ("DIC-C2DH-HeLa-01", "hela_dir"), ("dsb2018-stardist-sample", "dsb_dir")])
def test_pinned_checksums_match_shared_copies(name, fixture, request):
    folder = request.getfixturevalue(fixture)
    pinned = {f.target: f.sha256 for f in F.REGISTRY[name].files}
    listed = dict(line.split()[::-1] for line in (folder / "SHA256SUMS").read_text().splitlines() if line.strip())
    assert pinned == listed


def test_isbi2012_end_to_end_from_a_local_mirror(isbi_dir, server, tmp_path):
    """Serve ../shared/data/isbi2012 in the source repository's layout; fetch must rebuild it."""
    root, url, _ = server
    for f in F.REGISTRY["isbi2012"].files:
        link = root / f.source
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(isbi_dir / f.target, link)
    dest = F.fetch("isbi2012", tmp_path / "cache", base_url=url)
    for sub, count in (("images", 24), ("labels", 24), ("test", 30)):
        names = sorted(p.name for p in (dest / sub).iterdir())
        assert len(names) == count and names[0] == "00.png"
        assert (dest / sub / "07.png").read_bytes() == (isbi_dir / sub / "07.png").read_bytes()
    assert (dest / "SHA256SUMS").read_bytes() == (isbi_dir / "SHA256SUMS").read_bytes()
    from unetseg.data import discover

    layout, pairs = discover(dest)
    assert layout == "folders" and len(pairs) == 24


# ---------------------------------------------------------------------------------------- CLI


def test_cli_fetch(toy, tmp_path, capsys):
    root, url, _ = toy
    assert main(["data", "fetch", "toy", "--cache", str(tmp_path / "c"), "--base-url", url]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "c" / "toy") in out and "licence" in out
    (root / "src" / "a" / "one.bin").write_bytes(b"evil")
    assert main(["data", "fetch", "toy", "--cache", str(tmp_path / "d"), "--base-url", url]) == 1
    last = capsys.readouterr().err.rstrip("\n").split("\r")[-1].splitlines()
    assert len(last) == 1 and last[0].startswith("unetseg: error:") and "SHA-256" in last[0]


def test_cli_list(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in F.REGISTRY:
        assert name in out
