"""Download the public data sets the paper used into a local cache, with pinned SHA-256 checksums.

``fetch("isbi2012")`` downloads every file of a registered data set from a public copy, checks
each file's SHA-256 against the value pinned in :data:`REGISTRY`, and returns the folder that
holds them. A file whose checksum differs is deleted and refused with :class:`ChecksumError`;
nothing unverified ever appears under its final name (downloads go to a hidden ``.part`` file
that is renamed only after the check). Files already present and verified are reused, so an
interrupted fetch resumes where it stopped; a partial ``.part`` file is continued with an HTTP
range request when the server supports it.

The cache is ``$UNETSEG_CACHE`` if set, else ``~/.cache/unetseg``; each data set lives in
``CACHE/NAME/`` with the layout the rest of unetseg reads (see ``docs/data.md``).

Zip archives (the Cell Tracking Challenge sets) are checked, then extracted member by member;
members with absolute paths, ``..`` components, links or a total size over the limit are
refused with :class:`UnsafeArchiveError`.

Examples
--------
>>> sorted(REGISTRY)
['DIC-C2DH-HeLa', 'DIC-C2DH-HeLa-01', 'PhC-C2DH-U373', 'dsb2018-stardist-sample', 'isbi2012']
>>> len(REGISTRY["isbi2012"].files)
78
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import stat
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .atomic import atomic_path
from .errors import InputError, UnetsegError

logger = logging.getLogger(__name__)

__all__ = [
    "REGISTRY",
    "RemoteFile",
    "RemoteDataset",
    "ChecksumError",
    "UnsafeArchiveError",
    "FetchError",
    "cache_root",
    "fetch",
    "sha256_file",
    "safe_extract",
]

CHUNK = 1 << 20
#: Refuse archives that would unpack to more than this many bytes (zip-bomb guard).
MAX_EXTRACTED_BYTES = 20 * 2**30
MARKER = ".unetseg-fetch.json"


class ChecksumError(InputError):
    """A downloaded file's SHA-256 differs from the pinned one (the file was deleted)."""


class UnsafeArchiveError(InputError):
    """An archive member would land outside the target folder, is a link, or the archive is too big."""


class FetchError(UnetsegError):
    """A download failed (network, HTTP status) or the data set is not registered."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a data set.

    Attributes
    ----------
    source : str
        Path relative to the data set's base URL (or an absolute URL).
    target : str
        Where it goes, relative to the data set folder (POSIX separators).
    sha256 : str or None
        Pinned checksum; ``None`` means unknown, and fetching refuses unless the caller gives one.
    """

    source: str
    target: str
    sha256: str | None


@dataclass(frozen=True)
class RemoteDataset:
    """A registered data set: where it comes from, what it is, under which terms."""

    name: str
    description: str
    base_url: str
    files: tuple[RemoteFile, ...]
    licence: str
    checksum_source: str
    archive: bool = False
    strip_prefix: str = ""
    notes: str = ""


CHECKSUMS_FILE = "fetch_checksums.json"  # beside this module: the pinned SHA-256 of every file


def pinned_checksums(dataset: str) -> dict[str, str]:
    """The pinned ``{file: sha256}`` of a data set, from :data:`CHECKSUMS_FILE`.

    Examples
    --------
    >>> len(pinned_checksums("isbi2012")), pinned_checksums("dsb2018-stardist-sample")["img2d.tif"][:8]
    (78, 'f9ccc157')
    """
    from importlib.resources import files

    table = json.loads(files("unetseg").joinpath(CHECKSUMS_FILE).read_text(encoding="utf-8"))
    return dict(table[dataset])






def _isbi2012() -> RemoteDataset:
    sums = pinned_checksums("isbi2012")
    files = []
    for target, digest in sums.items():
        folder, name = target.split("/")
        index = int(name.split(".")[0])
        source = {"images": f"train/image/{index}.png", "labels": f"train/label/{index}.png", "test": f"test/{index}.png"}[folder]
        files.append(RemoteFile(source, target, digest))
    return RemoteDataset(
        name="isbi2012",
        description="ISBI 2012 EM segmentation challenge: training sections 00-23 with membrane labels "
        "(255 = cell, 0 = membrane) and the 30 unlabelled test sections, as 512x512 PNGs",
        base_url="https://raw.githubusercontent.com/zhixuhao/unet/b45af4d458437d8281cc218a07fd4380818ece4a/data/membrane/",
        files=tuple(files),
        licence="ISBI 2012 challenge terms: non-commercial segmentation research; cite Cardona et al. (2010) "
        "PLoS Biol 8(10):e1000502 and Arganda-Carreras et al. (2015) Front. Neuroanat. 9:142",
        checksum_source="sha256 of the byte-identical copies in ../shared/data/isbi2012 (SHA256SUMS)",
        notes="Training sections 24-29 are not fetched: no checksum is pinned for them.",
    )


def _hela01() -> RemoteDataset:
    sums = pinned_checksums("DIC-C2DH-HeLa-01")
    files = tuple(RemoteFile(f"DIC-C2DH-HeLa/{t}", t, d) for t, d in sums.items())
    return RemoteDataset(
        name="DIC-C2DH-HeLa-01",
        description="Cell Tracking Challenge DIC-C2DH-HeLa, sequence 01: the 9 frames with a SEG ground truth "
        "and their instance labels (01/tNNN.tif, 01_GT/SEG/man_segNNN.tif), from a GitHub copy",
        base_url="https://raw.githubusercontent.com/oyishyi/Cell-Tracking-Challenge-CTC-/fbe15c9cb15585fcf6341ededbfa24b1923f504e/",
        files=files,
        licence=_CTC_LICENCE,
        checksum_source="sha256 of the byte-identical copies in ../shared/data/DIC-C2DH-HeLa (SHA256SUMS)",
    )


def _dsb() -> RemoteDataset:
    sums = pinned_checksums("dsb2018-stardist-sample")
    files = tuple(RemoteFile(t, t, d) for t, d in sums.items())
    return RemoteDataset(
        name="dsb2018-stardist-sample",
        description="One 512x512 fluorescence nuclei image with instance labels from the 2018 Data Science Bowl, "
        "as shipped with stardist (img2d.tif, mask2d.tif)",
        base_url="https://raw.githubusercontent.com/stardist/stardist/340332a320f3efe0ac87487da7b000c7b3c743a3/stardist/data/images/",
        files=files,
        licence="stardist is BSD-3-Clause; image data from the 2018 Data Science Bowl (BBBC038, understood to be CC0); "
        "cite Caicedo et al. (2019) Nat. Methods 16:1247-1253",
        checksum_source="sha256 of the byte-identical copies in ../shared/data/dsb2018-stardist-sample (SHA256SUMS)",
    )


_CTC_LICENCE = (
    "Cell Tracking Challenge conditions of use (celltrackingchallenge.net/datasets): cite Maska et al. (2023) "
    "Nat. Methods 20:1010-1020 (and Ulman et al. 2017) and acknowledge the challenge; public non-challenge use "
    "needs the data providers' permission, commercial use needs explicit permission"
)

# The CTC training archives' checksums come from torch-em (see the "_about" entry of the data file);
# if the challenge re-issues an archive, fetching refuses it and the user may pass an explicit
# sha256 after checking the new file by other means.


def _ctc(name: str, description: str) -> RemoteDataset:
    return RemoteDataset(
        name=name,
        description=description,
        base_url="http://data.celltrackingchallenge.net/training-datasets/",
        files=(RemoteFile(f"{name}.zip", f"{name}.zip", pinned_checksums("ctc_training_archives").get(name)),),
        licence=_CTC_LICENCE,
        checksum_source="constantinpape/torch-em torch_em/data/datasets/ctc.py @ d14c4993 (not re-verified here)",
        archive=True,
        strip_prefix=f"{name}/",
    )


REGISTRY: dict[str, RemoteDataset] = {
    d.name: d
    for d in (
        _isbi2012(),
        _hela01(),
        _dsb(),
        _ctc(
            "DIC-C2DH-HeLa",
            "Cell Tracking Challenge DIC-C2DH-HeLa training archive: sequences 01 and 02 (84 frames each), "
            "SEG/TRA ground truth and silver truth; unpacked to 01/, 01_GT/, 02/, 02_GT/, ...",
        ),
        _ctc(
            "PhC-C2DH-U373",
            "Cell Tracking Challenge PhC-C2DH-U373 training archive (phase contrast, glioblastoma-astrocytoma "
            "U373 cells): sequences 01 and 02 with SEG/TRA ground truth",
        ),
    )
}


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$UNETSEG_CACHE``, else ``~/.cache/unetseg``.

    Examples
    --------
    >>> cache_root("/tmp/x").as_posix()
    '/tmp/x'
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("UNETSEG_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "unetseg"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a"
    >>> _ = p.write_bytes(b"abc")
    >>> sha256_file(p)[:16]
    'ba7816bf8f01cfea'
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _check_digest(value: str, what: str) -> str:
    value = value.strip().lower()
    if not _HEX64.match(value):
        raise InputError(f"{what}: {value!r} is not a SHA-256 checksum (expected 64 hex digits)")
    return value


def _url(base: str, source: str) -> str:
    if re.match(r"^[a-z][a-z0-9+.-]*://", source):
        return source
    return base.rstrip("/") + "/" + urllib.parse.quote(source)


def _safe_target(root: Path, relative: str) -> Path:
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or ".." in parts or "\\" in relative or ":" in relative:
        raise UnsafeArchiveError(f"{relative!r}: refusing a path that is absolute or leaves {root}")
    return root.joinpath(*parts)


def fetch(
    name: str,
    cache_dir: str | os.PathLike | None = None,
    *,
    base_url: str | None = None,
    sha256: str | None = None,
    progress: bool = False,
    timeout: float = 60.0,
    max_extracted_bytes: int = MAX_EXTRACTED_BYTES,
) -> Path:
    """Download a registered data set into the cache (or reuse it) and return ``cache_dir/NAME``.

    ``name`` is a key of :data:`REGISTRY`; ``cache_dir`` defaults to ``$UNETSEG_CACHE`` or
    ``~/.cache/unetseg``; ``base_url`` names a mirror with the same relative paths; ``sha256``
    is the expected checksum of a single-file (archive) data set, required when none is pinned
    and replacing a pinned one (use only after checking the new file by other means);
    ``timeout`` is in seconds per connect and read; archives unpacking to more than
    ``max_extracted_bytes`` are refused.

    Raises
    ------
    FetchError
        Unknown name, network or HTTP failure.
    ChecksumError
        A downloaded file does not match its checksum (it is deleted), or no checksum is known.
    UnsafeArchiveError
        An archive member would escape the target folder, is a link, or the archive is too big.
    """
    if name not in REGISTRY:
        raise FetchError(f"unknown data set {name!r}: expected one of {', '.join(sorted(REGISTRY))}")
    ds = REGISTRY[name]
    files = _verified_files(ds, sha256)
    root = cache_root(cache_dir)
    dest = root / name
    base = base_url or ds.base_url
    if ds.archive:
        return _fetch_archive(ds, files[0], root, dest, base, progress=progress, timeout=timeout, limit=max_extracted_bytes)
    if _foreign(dest):
        # A folder unetseg did not create (for example a copy the user made): use it when
        # every file verifies, but never delete or overwrite anything in it.
        if all(_safe_target(dest, f.target).is_file() and sha256_file(_safe_target(dest, f.target)) == f.sha256 for f in files):
            logger.info("%s: every file in %s verifies; using it", name, dest)
            return dest
        raise InputError(
            f"{dest}: exists, was not created by unetseg fetch and does not verify; "
            "remove it or choose another cache folder (--cache)"
        )
    dest.mkdir(parents=True, exist_ok=True)
    _write_marker(dest, {"name": name, "source": base})
    _fetch_files(name, files, dest, base, progress=progress, timeout=timeout)
    return dest


def _verified_files(ds: RemoteDataset, sha256: str | None) -> list[RemoteFile]:
    """The files of ``ds``, each with the checksum to verify it against (``sha256`` for a single file)."""
    files = list(ds.files)
    if sha256 is not None:
        if len(files) != 1:
            raise InputError(f"--sha256 applies to single-file data sets; {ds.name} has {len(files)} files with pinned checksums")
        digest = _check_digest(sha256, "--sha256")
        if files[0].sha256 and files[0].sha256 != digest:
            logger.warning("%s: using the given sha256 %s instead of the pinned %s", ds.name, digest, files[0].sha256)
        files = [RemoteFile(files[0].source, files[0].target, digest)]
    unknown = [f.target for f in files if not f.sha256]
    if unknown:
        raise ChecksumError(
            f"{ds.name}: no checksum is pinned for {', '.join(unknown)}; refusing to download unverified data. "
            "Pass sha256=... (CLI: --sha256 HEX) with a checksum you obtained from a trusted source."
        )
    return files


def _fetch_files(name: str, files: list[RemoteFile], dest: Path, base: str, *, progress: bool, timeout: float) -> None:
    """Download each file that is missing or does not verify; write ``SHA256SUMS``."""
    fetched = reused = 0
    for f in files:
        target = _safe_target(dest, f.target)
        if target.is_file():
            if sha256_file(target) == f.sha256:
                reused += 1
                continue
            logger.warning("%s: cached copy has a different checksum; downloading it again", target)
            target.unlink()
        target.parent.mkdir(parents=True, exist_ok=True)
        _download(_url(base, f.source), target, f.sha256, progress=progress, timeout=timeout)
        fetched += 1
    sums = "".join(f"{f.sha256}  {f.target}\n" for f in files)
    listing = dest / "SHA256SUMS"
    if not (listing.is_file() and listing.read_text() == sums):
        with atomic_path(listing) as tmp:
            tmp.write_text(sums)
    logger.info("%s: %d file(s) downloaded, %d reused from %s", name, fetched, reused, dest)


def _fetch_archive(ds: RemoteDataset, f: RemoteFile, root: Path, dest: Path, base: str, *, progress: bool, timeout: float, limit: int) -> Path:
    marker = dest / MARKER
    if marker.is_file():
        try:
            recorded = json.loads(marker.read_text()).get("sha256")
        except (OSError, ValueError):
            recorded = None
        if recorded == f.sha256:
            logger.info("%s: reusing %s", ds.name, dest)
            return dest
    elif _foreign(dest):
        raise InputError(
            f"{dest}: exists and was not created by unetseg fetch; remove it or choose another cache folder (--cache)"
        )
    downloads = root / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    archive = _safe_target(downloads, f.target)
    if not (archive.is_file() and sha256_file(archive) == f.sha256):
        archive.unlink(missing_ok=True)
        _download(_url(base, f.source), archive, f.sha256, progress=progress, timeout=timeout)
    try:
        with atomic_path(dest, directory=True) as tmp:
            safe_extract(archive, tmp, strip_prefix=ds.strip_prefix, max_bytes=limit)
            _write_marker(tmp, {"name": ds.name, "source": _url(base, f.source), "sha256": f.sha256})
    except UnsafeArchiveError:
        archive.unlink(missing_ok=True)
        raise
    archive.unlink(missing_ok=True)
    logger.info("%s: unpacked to %s", ds.name, dest)
    return dest


def _foreign(dest: Path) -> bool:
    """True when ``dest`` is a non-empty folder without the marker that fetch writes."""
    return dest.is_dir() and not (dest / MARKER).is_file() and any(dest.iterdir())


def _write_marker(folder: Path, info: dict) -> None:
    with atomic_path(folder / MARKER) as tmp:
        tmp.write_text(json.dumps(info) + "\n")


def _download(url: str, target: Path, expected: str, *, progress: bool, timeout: float) -> None:
    """Stream ``url`` to ``.target.part``, continue a partial one, verify, then rename to ``target``."""
    part = target.with_name(f".{target.name}.part")
    h = hashlib.sha256()
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "unetseg-fetch"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    logger.info("downloading %s", url)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if offset and getattr(response, "status", 200) == 206:
                with open(part, "rb") as fh:
                    for chunk in iter(lambda: fh.read(CHUNK), b""):
                        h.update(chunk)
                mode = "ab"
            else:
                offset, mode = 0, "wb"
            _stream(response, part, mode, h, offset, target.name if progress else None)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            part.unlink(missing_ok=True)
            return _download(url, target, expected, progress=progress, timeout=timeout)
        raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"{url}: download failed ({reason}); run the command again to resume") from exc
    got = h.hexdigest()
    if got != expected:
        part.unlink(missing_ok=True)
        raise ChecksumError(f"{url}: SHA-256 {got} differs from the expected {expected}; the file was deleted")
    os.replace(part, target)


def _stream(response, part: Path, mode: str, h, offset: int, bar_name: str | None) -> None:
    """Append (``mode="ab"``) or write the response body to ``part``, hashing it into ``h``."""
    total = response.headers.get("Content-Length")
    total = int(total) + offset if total and total.isdigit() else None
    bar = None
    if bar_name is not None:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=bar_name, leave=False)
    try:
        with open(part, mode) as out:
            for chunk in iter(lambda: response.read(CHUNK), b""):
                out.write(chunk)
                h.update(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
    finally:
        if bar is not None:
            bar.close()


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike, *, strip_prefix: str = "", max_bytes: int = MAX_EXTRACTED_BYTES) -> list[Path]:
    """Extract a zip archive into ``dest``, refusing anything that could escape it.

    Every member is checked before anything is written: absolute paths, drive letters,
    backslashes, ``..`` components, symbolic links and a total uncompressed size above
    ``max_bytes`` raise :class:`UnsafeArchiveError`.

    Parameters
    ----------
    archive : path-like
        The zip file.
    dest : path-like
        Existing folder to extract into.
    strip_prefix : str
        Leading folder (for example ``"DIC-C2DH-HeLa/"``) removed from member names that have it.
    max_bytes : int
        Upper bound on the total uncompressed size.

    Returns
    -------
    list of pathlib.Path
        The extracted files.

    Examples
    --------
    >>> import tempfile, pathlib, zipfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with zipfile.ZipFile(d / "a.zip", "w") as z:
    ...     z.writestr("../evil.txt", "x")
    >>> safe_extract(d / "a.zip", d)
    Traceback (most recent call last):
    ...
    unetseg.fetch.UnsafeArchiveError: ...a.zip: member '../evil.txt' is absolute or contains '..'; refusing to extract
    """
    archive, dest = Path(archive), Path(dest)
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise InputError(f"{archive}: not a valid zip archive ({exc})") from exc
    with zf:
        written = []
        for info, target in _extraction_plan(zf, archive, dest, strip_prefix, max_bytes):
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
            written.append(target)
    return written


def _extraction_plan(zf: zipfile.ZipFile, archive: Path, dest: Path, strip_prefix: str, max_bytes: int) -> list:
    """``(member, target)`` of every file to extract, after checking every member."""
    plan, total = [], 0
    for info in zf.infolist():
        name = info.filename
        pure = PurePosixPath(name)
        if pure.is_absolute() or ".." in pure.parts or "\\" in name or re.match(r"^[A-Za-z]:", name):
            raise UnsafeArchiveError(f"{archive}: member {name!r} is absolute or contains '..'; refusing to extract")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UnsafeArchiveError(f"{archive}: member {name!r} is a symbolic link; refusing to extract")
        total += info.file_size
        if total > max_bytes:
            raise UnsafeArchiveError(f"{archive}: unpacks to more than {max_bytes} bytes; refusing to extract")
        if strip_prefix and name.startswith(strip_prefix):
            name = name[len(strip_prefix):]
        if not name or name.endswith("/"):
            continue
        target = dest.joinpath(*PurePosixPath(name).parts)
        if not target.resolve().is_relative_to(dest.resolve()):
            raise UnsafeArchiveError(f"{archive}: member {info.filename!r} would land outside {dest}")
        plan.append((info, target))
    return plan
