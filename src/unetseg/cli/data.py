"""``unetseg data``: get real data sets (``fetch``, ``list``) or make synthetic ones (``synth``)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .. import __version__
from ..atomic import atomic_path
from ..errors import ConfigError, InputError

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="download public data sets or generate synthetic training data")
    actions = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    f = actions.add_parser("fetch", help="download a registered data set into the cache (checksums pinned)")
    f.add_argument("name", help="data set name (see: unetseg data list)")
    f.add_argument("--cache", metavar="DIR", help="cache folder (default: $UNETSEG_CACHE or ~/.cache/unetseg)")
    f.add_argument("--base-url", metavar="URL", help="download from this mirror instead of the registered source")
    f.add_argument(
        "--sha256", metavar="HEX",
        help="expected checksum of a single-archive data set; needed when none is pinned, replaces a pinned one",
    )
    f.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds (default: 60)")
    f.set_defaults(func=run_fetch)

    ls = actions.add_parser("list", help="the data sets 'fetch' knows, with source and licence")
    ls.set_defaults(func=run_list)

    from ..synthetic import KINDS

    s = actions.add_parser(
        "synth", help="write synthetic images and exact labels (images/ + labels/)",
        description="Kinds: " + "; ".join(f"{k}: {v}" for k, v in KINDS.items()),
    )
    s.add_argument("kind", choices=list(KINDS), help="what to generate")
    s.add_argument("--out", required=True, metavar="DIR", help="output folder (gets images/, labels/, synth.json)")
    s.add_argument("--count", type=int, default=10, help="number of images (sections for em-volume; default: 10)")
    s.add_argument("--size", default="512", metavar="S", help="image side S or HxW in px (default: 512)")
    s.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same images (default: 0)")
    s.add_argument("--force", action="store_true", help="replace an output folder written by an earlier 'data synth'")
    s.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", dest="params",
        help="generator parameter, repeatable (YAML value), e.g. --set noise=20 --set membrane_width=[2,6]",
    )
    s.set_defaults(func=run_synth)


def run_fetch(args: argparse.Namespace) -> int:
    from ..fetch import REGISTRY, fetch

    path = fetch(args.name, args.cache, base_url=args.base_url, sha256=args.sha256, progress=True, timeout=args.timeout)
    ds = REGISTRY[args.name]
    print(f"{args.name}: {path}")
    print(f"licence: {ds.licence}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from ..fetch import REGISTRY, cache_root

    print(f"cache: {cache_root()}")
    for name, ds in sorted(REGISTRY.items()):
        pinned = all(f.sha256 for f in ds.files)
        print(f"\n{name}  ({len(ds.files)} file{'s' if len(ds.files) != 1 else ''}, "
              f"{'checksums pinned' if pinned else 'NO pinned checksum: needs --sha256'})")
        print(f"  {ds.description}")
        print(f"  source:  {ds.base_url}")
        print(f"  licence: {ds.licence}")
        if ds.notes:
            print(f"  note:    {ds.notes}")
    return 0


def _chmod_like_mkdir(path: Path) -> None:
    """Give a temporary folder (mode 0700) the permissions a plain mkdir would have."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)


def parse_params(items: list[str]) -> dict:
    """``["noise=20", "membrane_width=[2, 6]"]`` -> ``{"noise": 20, "membrane_width": [2, 6]}``.

    Examples
    --------
    >>> parse_params(["noise=20", "style=dic"])
    {'noise': 20, 'style': 'dic'}
    """
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from exc
    return out


def parse_size(text: str) -> tuple[int, int]:
    """``"512"`` -> (512, 512); ``"256x384"`` -> (256, 384).

    Examples
    --------
    >>> parse_size("256x384")
    (256, 384)
    """
    parts = str(text).lower().replace("*", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError as exc:
        raise ConfigError(f"--size {text!r}: expected S or HxW in pixels") from exc
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 16 or max(values) > 16384:
        raise ConfigError(f"--size {text!r}: expected S or HxW with sides between 16 and 16384 px")
    return values[0], values[1]


def run_synth(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..synthetic import KINDS, check_params, kind_function, pairs, write_pairs

    shape = parse_size(args.size)
    params = parse_params(args.params)
    fn, fixed = kind_function(args.kind)
    check_params(fn, params, fixed)
    if args.count < 1:
        raise ConfigError(f"--count {args.count}: expected at least 1")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not args.force:
            raise InputError(f"{out}: folder is not empty; pass --force to replace it")
        if not (out / "synth.json").is_file():
            raise InputError(f"{out}: not made by 'unetseg data synth' (no synth.json); refusing to replace it, even with --force")
    out.parent.mkdir(parents=True, exist_ok=True)
    em = args.kind in ("em", "em-volume")
    with atomic_path(out, directory=True) as tmp:
        _chmod_like_mkdir(tmp)
        if args.kind == "em-volume":
            logger.info("generating a %d-section volume", args.count)
        items = pairs(args.kind, shape, args.count, args.seed, **params)
        write_pairs(tmp, items, args.count, em=em, progress=lambda it: tqdm(it, total=args.count, desc=args.kind, unit="img"))
        manifest = {
            "generator": f"unetseg {__version__} unetseg.synthetic",
            "kind": args.kind,
            "description": KINDS[args.kind],
            "count": args.count,
            "shape": list(shape),
            "seed": args.seed,
            "params": params,
            "labels": "255 = cell interior, 0 = membrane" if em else "instance ids, 0 = background",
            "per_image_rng": "numpy.random.default_rng([seed, index])" if args.kind != "em-volume" else "numpy.random.default_rng(seed)",
        }
        (tmp / "synth.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {args.count} {args.kind} image/label pairs to {out}/images and {out}/labels")
    return 0
