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


def _parse_sums(text: str) -> dict[str, str]:
    out = {}
    for line in text.strip().splitlines():
        digest, name = line.split(maxsplit=1)
        out[name.strip()] = digest.lower()
    return out


_ISBI2012_SUMS = """
12c0ed6f42fc09f512abf6b354f217c950e4c8223b57a0315449b62a14556523  images/00.png
2cfc7ee635a6f85d5faf5c82a71d3a37bf5af4784b554964e3e07193e3ee2166  images/01.png
fe60d8d4f93102666a23a18d718b4b59fab8e616987d11c5072f4a87fac7301f  images/02.png
636d16cbb02f99dda4c9fb6db98dfba066142afa981ffdcfaf54453982e8250c  images/03.png
991fb3a8e4abc73da1d6159ca28fa4397f0a8351f30a8ba3669c86414d2ce239  images/04.png
7e9d9fb787664336d6f2cd68b23986f04527e7f8f494410983b4d70c6de1de3b  images/05.png
7c0a87933ffc72f4ff02f5996d9c3f69fe9a0b5277507415743ad8afb5e5d308  images/06.png
19f2c25716107d41008c83ba8a814ae47a090e00dea766dde38dce1f00899270  images/07.png
a8979e4abd1a10af9ca75e614d97875659adbd8ee3a68eba483bf556cfe3023d  images/08.png
730ebf435ab0f6e625d342552ad03736799fd660d0c6af744674c61a46aa082a  images/09.png
7c3717bcd48c4b7e5c878d7f0b809b8687a4e6fac471f3863de320a82ee72b8a  images/10.png
dd7857b25ca1417f87c282750e22c50947f75e81fa032d4e0c96b902c9dc9757  images/11.png
9f8eff9239bb764d51524a998387a7babcff9f62161804651b030b81aabd5ab8  images/12.png
377e5cdbcd7f0ac7336f482fc7ead7446887863f26769b3841fe98aadca77dad  images/13.png
f50d2d77acd2df564c5f0f40b1b24cd929f5944460aa4cd90c422cb5cef33a59  images/14.png
3e13fdea09accc14f46fb2f3ffa1e882cdd9c53b28a6842c4c10229692c7d1a4  images/15.png
ffc951c12450f94129582c16fd0d4b165c4a31469b0c42d966f07c183d3132e2  images/16.png
0f4f7e8e0619e4c7d517ac68d3789a3b6248253747717eac418bb7d32bef4de3  images/17.png
1bb1edd50595861743d14e1955dfa5d3c9395fb87563eca6dc81433bf9df49de  images/18.png
999b55633f8d7082add72082656e9532c5c3d97203b376eb317f09ba88a5a5b7  images/19.png
9153d14bfd15955fab576ea23281c4f23104b45dceed6e03e0b254607f50a1b2  images/20.png
9ad07cf4f67984f17a08aa63e6d92d395ce55f5132e6ff4fa6d95d6890ea7f97  images/21.png
6278609b4c42a7cb43212de0e2e2ceded758bafe0856fb56214ce658a61668e4  images/22.png
9ef4e9fbc838b9791af83a36918d729a0ea2e90ebc71c4a3c4554059f9379756  images/23.png
13b67edd7607a1f284c09170c96a27d38422b0ffaf88024ea5b689acb5e1b4b0  labels/00.png
cff60a00de2901e67165c91d7708d784e4c5bcc9d1c8c677922c905d63bbc3d1  labels/01.png
a578af998c017f56763b81941c4dc612dde5731809b2cea0e8ebc37aecb84dbb  labels/02.png
c8ae3b843fed02e09411a24c10850160922c331041b17c2674025f05a99b8834  labels/03.png
a2f19c01b5d982a97923a0d29e64127a05e3f496731480ac9d9d302b5427f7ff  labels/04.png
2dd5779118f6f4d87f88ec112f1cea20663b50acb8c748b0db1f23eda82b5118  labels/05.png
2b0984e9f31fb41d4c5f4a754a3e080036b7321a0cbd9591a62010d20a574ce7  labels/06.png
2ebc8c835999589bfd7d80d81f83d24e5c41138362b0faafef0f009e1ce82144  labels/07.png
db979010ca4fbdb38c8b32d455aed0da90d598153f2a0046b63d02a6efa32b9e  labels/08.png
8ee6c79adbb740595c4d61776e065e7164c00d52c7dd7562b5279041e7f3567b  labels/09.png
b0156cc8186b0ee521927ac95645b406a42d27564607a6fea3a59c34add78f7c  labels/10.png
e47b3aa0cfb3106476af1666e631d45bd16dbf2aff88260ee65d16e4134332db  labels/11.png
85a7a899c0b72b81633ad122887ba5161d650385d7775a5b3074eb00131b3620  labels/12.png
88549c22fd647312d6b37e17d33e90800d347d60ccb1156a8dde5e67394f9f3d  labels/13.png
bcd775017eb4fdbdfe7ad6cc6420b2f16aa9d0576894d08370edcf564b46680a  labels/14.png
59a854887b504ff00a5b4b93b2299bbc0bf0cbe54dea58d2b31969229b28b369  labels/15.png
b34eb88cdc3313a6f4190f5753465df7f69d8f3c243a5c25427b1b99ecfe2499  labels/16.png
4fa076cbeb744803d987dc46cf308dc3026408e7a5188838e30e25fe3ea67dbe  labels/17.png
bd009dda57f204804732f592ed1d41ba18961d83c492413fe71548efa4a288d9  labels/18.png
bf38407c55b6033c1677230228ecb100a11294aa74a7b92e5edfdc4abadcfef9  labels/19.png
7af7296f2e892866669d4e4f9c0d4178987e6ec6e7d0751ec238d1bbe2da9c55  labels/20.png
772c722acb2eac01769b53fa5037a3d62745e53102398bf9b2202df605cadda4  labels/21.png
b19f5533ec24077a2395a085fe53af75dd350ef03798c4ff40ba9ebecb2ee0ad  labels/22.png
2d8f1df5c9ee83e59eb2d709eb153b0570f12e726690f586154b01b0a88bb540  labels/23.png
3c67a0f520d6504eecffe20fc2799287cad05e3d8915466c4127ee8463db03b6  test/00.png
73b2d6c585dd130b9e04c06ce4f7dd2c21496bc760c6088b948933d7a3ff44d8  test/01.png
33d0ba0f00760a8223d33e0d00f1fbd8992783c216f9fc386a2c7d62a31a3263  test/02.png
0507ff479733fefcbc00c68dc1b848dd7c15546e49241414d5a05beaf2092fbf  test/03.png
c75debf18db3b7e4476712d28bb6925e1d3b99287fc8808a3f8611f1f1ac9e6c  test/04.png
e2756965f5f7162c9bee9f05d6a6856d0ca310c736644000234cae634883c8f6  test/05.png
832c23a05680902deec4efe639373892b2cdc83ecfcdd6bc7b90f6f1d474379c  test/06.png
e673e89ac632bc3f13ff6dcd9d0f733b39d6618f21f015ed4106e1f32b3518f1  test/07.png
8064a6d599edadb9ebd0d23b3fe1a61a0c165445e2dfc1289af4e16509424344  test/08.png
6fe32299f09cfbff582cb90a39d1bd9214614a675be99e6729686f3a4d9b5a5f  test/09.png
8f907e1cfc8593527fb48c7fe08ba80eb380e0bfc0cdfe5eec8da0044eec0309  test/10.png
27ae843bb0a63ceded00acb182469a20292d70d717dc16296e6e1ea3e760dc7f  test/11.png
eb9eacb4cd836e84a36655e59c67c6ffc9be860ade97e585d21b1caf721acb2b  test/12.png
f7d454b79c73789c644c56d38a1adc57614fd45bbdaaeab25ad84aa9f36188f1  test/13.png
5e68324d85e271a23fb96da4425d12fb182ccad885edf63b5a33a4929e9f3788  test/14.png
874d88be3e6fb24ff4cc70cae292ec27462365c418a332631cb2ab17bac1bb47  test/15.png
69e09074fd73e5e9458067e77ba1d42bb212c350413f01b64e5d7269a1130588  test/16.png
95468c5106091112bff1fe694f06ac7af5f1b052e700fcbbe4492bcdd8cf47bf  test/17.png
090accd8da157be1f739a2bde77335216209ec854351d18d7d328ea2d3065c6a  test/18.png
fe7e8dd86300e462c2574f1c409510bb8bcb8b3ceb3c2bb28583e7241ab22f05  test/19.png
260b6e3e43a1c63da9779992ca90e692cd04e854029ef2f964010daf58ff4daf  test/20.png
cd82df9e4f7aa44a8d1172d4bac6f50dd3bc6dd063c1b3ad65647c4bc7749042  test/21.png
242289a02a83161b98553606654c17868818bdea638bc25c1208298501b92bfa  test/22.png
496786c0636607b2e086528d517e00c4444270d40972940c70f7ca93cc0cc173  test/23.png
a1979d58bceac2cd352a4aeb7a047c0e92d94c52a3cbc60abac67bb7a68865a1  test/24.png
8a078743880a854f2127cc59425c5a47bbf348b31ac2524cf7621eb108748c5a  test/25.png
2643df636a202d53bdc870bd1239db761d1b586e048cb6ddeb83310c9b76f6f4  test/26.png
36c4983e85e127a622e395842642dd0762657831901e70ff94647f3f808e53fe  test/27.png
0c2d296e0cd652b69198e9399e91bf2693101e58a8c878c6fe5a902d2b9448c5  test/28.png
e417ddbdcfed6b08b1c97d5a7796ed5b167ccc4caaf1226dc41dbb69cd724e25  test/29.png
"""

_HELA01_SUMS = """
b269ef4cda9180cadcf5aef99918ed98c7be9d84bc54206a3afef266a9d1491b  01/t002.tif
4134de8c4cfd2293e66969c16ef7c0257445c5ac4ac07398c2c4647ba3bfd55f  01/t005.tif
ac6e5b07a2eb28ff6a454aea950295f68bbaf4c41aa4478cabb398a9d7c6937f  01/t021.tif
668e477ec2e9bef1309aec66fbec57bbde4d9a5f2b00bbd8722312d86b944218  01/t031.tif
83fc23e883dac6316e30c2921f2e76592dc1a4ac8fc52dc8446c8aff2ad6358d  01/t033.tif
e379ed3e981532f7c19e941765638d6997fab0fce1a3c5bf9030ee0014b54d02  01/t034.tif
8676ae98b869e1b2af252f98299615425c4606317870a4105bcae77a5957593b  01/t039.tif
9e58c4c56ca012c1c509944b8a85c803bfd3d21ab8461e1a3066fc073393d489  01/t054.tif
2afaef8ebd3c60a1e6438e6da2bc5b61c86bfe748bb64f98861d61fcff9e9a79  01/t067.tif
6ed551618cfbdba6e47dadadc3e01a58690c7a34d8cc6f9052fc7ea68d35cbcd  01_GT/SEG/man_seg002.tif
021dc9fe98f33cde133b5144693fe0a199f3df1f0a21e8803cf3750518d2798f  01_GT/SEG/man_seg005.tif
a43689332c719e826c90600ff555e28a8e39143eb641d15789a34b90358ec129  01_GT/SEG/man_seg021.tif
309e7a1fc8e89b260cda430ea7cc1b8fc5bac3283685abf0d34f344fd4099491  01_GT/SEG/man_seg031.tif
689a14bab069a4276a706bdda0936395b0b8a24202753e98964de743a7e6ca63  01_GT/SEG/man_seg033.tif
4b59a57a86f63bd3c1ab6e941477dcdb3c8d00a653707fba98fdf947cdef80d7  01_GT/SEG/man_seg034.tif
54699f12b25d07057b82a6f2158075111a41002a302c08b9afd4bae529d62426  01_GT/SEG/man_seg039.tif
8b71933c642c7ef5c126b070339194d25f1243fa06b6a1c1798f438a4e4dd282  01_GT/SEG/man_seg054.tif
2f3fe9b33e4872b79fcfa3b1e4ea7fd7d541dce22b2bfe7253b52fe1d499f705  01_GT/SEG/man_seg067.tif
"""

_DSB_SUMS = """
f9ccc1571b92c861ff87e28463068b43f61bd47357ed0503f711e5cd1eb97750  img2d.tif
59ad5e820b7982ca9d13e946fa6e7f64e2714899e00a2ae6c69aa79aad53d46f  mask2d.tif
"""


def _isbi2012() -> RemoteDataset:
    sums = _parse_sums(_ISBI2012_SUMS)
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
    sums = _parse_sums(_HELA01_SUMS)
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
    sums = _parse_sums(_DSB_SUMS)
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

# sha256 of the training archives as documented in constantinpape/torch-em,
# torch_em/data/datasets/ctc.py (CTC_CHECKSUMS["train"]), commit d14c49939c401cd996c33af403ca3dd040293d52.
# Not re-verified here (no network); if the challenge re-issues an archive, fetching refuses it
# and the user may pass an explicit sha256 after checking the new file by other means.
_CTC_TRAIN_SHA256 = {
    "DIC-C2DH-HeLa": "832fed2d05bb7488cf9c51a2994b75f8f3f53b3c3098856211f2d39023c34e1a",
    "PhC-C2DH-U373": "b18185c18fce54e8eeb93e4bbb9b201d757add9409bbf2283b8114185a11bc9e",
}


def _ctc(name: str, description: str) -> RemoteDataset:
    return RemoteDataset(
        name=name,
        description=description,
        base_url="http://data.celltrackingchallenge.net/training-datasets/",
        files=(RemoteFile(f"{name}.zip", f"{name}.zip", _CTC_TRAIN_SHA256.get(name)),),
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
    """Download a registered data set into the cache (or reuse it) and return its folder.

    Parameters
    ----------
    name : str
        A key of :data:`REGISTRY` (``isbi2012``, ``DIC-C2DH-HeLa``, ``PhC-C2DH-U373``,
        ``DIC-C2DH-HeLa-01``, ``dsb2018-stardist-sample``).
    cache_dir : path-like, optional
        Cache folder; default ``$UNETSEG_CACHE`` or ``~/.cache/unetseg``. The data set goes to
        ``cache_dir/NAME``.
    base_url : str, optional
        Download from this mirror instead of the registered URL (same relative file paths).
    sha256 : str, optional
        Expected checksum of a single-file (archive) data set. Required when the registry has
        no pinned checksum; when it has one, an explicit value replaces it (use only after
        checking the new file by other means).
    progress : bool
        Show a progress bar per file.
    timeout : float
        Seconds to wait for the server on connect and on each read.
    max_extracted_bytes : int
        Refuse archives that unpack to more than this.

    Returns
    -------
    pathlib.Path
        ``cache_dir/NAME``, holding the data set's files.

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
    files = list(ds.files)
    if sha256 is not None:
        if len(files) != 1:
            raise InputError(f"--sha256 applies to single-file data sets; {name} has {len(files)} files with pinned checksums")
        digest = _check_digest(sha256, "--sha256")
        if files[0].sha256 and files[0].sha256 != digest:
            logger.warning("%s: using the given sha256 %s instead of the pinned %s", name, digest, files[0].sha256)
        files = [RemoteFile(files[0].source, files[0].target, digest)]
    unknown = [f.target for f in files if not f.sha256]
    if unknown:
        raise ChecksumError(
            f"{name}: no checksum is pinned for {', '.join(unknown)}; refusing to download unverified data. "
            "Pass sha256=... (CLI: --sha256 HEX) with a checksum you obtained from a trusted source."
        )
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
            tmp.chmod(0o666 & ~_umask())
    logger.info("%s: %d file(s) downloaded, %d reused from %s", name, fetched, reused, dest)
    return dest


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
            tmp.chmod(0o777 & ~_umask())
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
        tmp.chmod(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
            status = getattr(response, "status", 200)
            if offset and status == 206:
                with open(part, "rb") as fh:
                    for chunk in iter(lambda: fh.read(CHUNK), b""):
                        h.update(chunk)
                mode = "ab"
            else:
                offset, mode = 0, "wb"
            total = response.headers.get("Content-Length")
            total = int(total) + offset if total and total.isdigit() else None
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=target.name, leave=False)
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
        plan = []
        total = 0
        for info in zf.infolist():
            name = info.filename
            pure = PurePosixPath(name)
            if pure.is_absolute() or ".." in pure.parts or "\\" in name or re.match(r"^[A-Za-z]:", name):
                raise UnsafeArchiveError(f"{archive}: member {name!r} is absolute or contains '..'; refusing to extract")
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
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
        written = []
        for info, target in plan:
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
            written.append(target)
    return written
