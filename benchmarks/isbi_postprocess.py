"""Post-processing on out-of-fold ISBI 2012 maps: does it raise V_rand and lower the warping error?

    .venv/bin/unetseg cv --config configs/isbi2012-cpu.yaml --folds 4 --minutes 7 --out /tmp/cv
    flock /tmp/unetseg-bench.lock .venv/bin/python benchmarks/isbi_postprocess.py --cv /tmp/cv
    flock /tmp/unetseg-bench.lock .venv/bin/python benchmarks/isbi_postprocess.py --cv /tmp/cv \
        --fill-holes 100 300 1000 --rule warping
    flock /tmp/unetseg-bench.lock .venv/bin/python benchmarks/isbi_postprocess.py --cv /tmp/cv \
        --agglomerate 0.05 0.07 0.1 0.15
    flock /tmp/unetseg-bench.lock .venv/bin/python benchmarks/isbi_postprocess.py --cv /tmp/cv-raw --card-post 300 0.1

Reads the held-out maps that ``unetseg cv`` keeps (``OUT/foldK/held_out/NAME.tif``: each section
predicted by the fold model that never trained on it) and scores, with the full ISBI 2012
protocol, the plain maps and :func:`unetseg.membranes.close_membranes` with each candidate of a
small grid, or (``--fill-holes AREA ...``) :func:`unetseg.postprocess.fill_small_holes` with
each area, or (``--agglomerate AFFINITY ...``) :func:`unetseg.membranes.agglomerate_boundaries`
with each merge affinity (on maps the card has already post-processed, as ``unetseg cv`` keeps
them), or (``--card-post AREA AFFINITY``) both in the card's order, on maps a CV kept without
post-processing (``--set postprocess.fill_holes=0 --set postprocess.agglomerate=0``): the
summary's ``card`` entry is then what ``unetseg cv`` would have pooled with that card. Per candidate it prints the mean over folds of the per-fold metrics. The honest
figure is the nested one: for each fold a candidate is chosen on the *other* folds and applied
to it, and all sections are then scored together (``nested``), against the plain maps scored the
same way (``plain``). No parameter is chosen on the sections it scores. ``--rule v_rand`` picks
the best mean V_rand of the other folds; ``--rule warping`` the lowest mean warping error among
the candidates whose mean V_rand there is at most ``--tolerance`` below the plain maps' (the
leaderboard's metric kept, the topology improved). One JSON line per candidate and a final
``summary`` line, with the CPU's flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402

from unetseg.data import DataConfig, TargetConfig, load_dataset  # noqa: E402
from unetseg.evaluate import evaluate_isbi2012  # noqa: E402
from unetseg.io import read_image  # noqa: E402
from unetseg.membranes import Closure, agglomerate_boundaries, close_membranes  # noqa: E402
from unetseg.models import Postprocess  # noqa: E402
from unetseg.postprocess import fill_small_holes, foreground_postprocess  # noqa: E402
from unetseg.runtime import cpu_flags  # noqa: E402

KEYS = ("v_rand", "pixel_error", "warping_error", "warping_error_splits_mergers", "v_info")


def load_folds(cv: Path, data: Path) -> list[tuple[list[str], np.ndarray, np.ndarray]]:
    """(names, maps, 0/255 labels) per fold, in fold order."""
    cfg = DataConfig(target=TargetConfig(kind="binary", foreground_value=255),
                     weights=dataclasses.replace(DataConfig().weights, enabled=False))
    truth = {it.name: (np.asarray(it.target) > 0).astype(np.uint8) * 255 for it in load_dataset(data, cfg)}
    folds = []
    for folder in sorted(cv.glob("fold*/held_out"), key=lambda p: int(p.parent.name[4:])):
        names = sorted(p.stem for p in folder.glob("*.tif"))
        maps = np.stack([read_image(folder / f"{n}.tif").astype(np.float32) for n in names])
        folds.append((names, maps, np.stack([truth[n] for n in names])))
    if not folds:
        raise SystemExit(f"{cv}: no fold*/held_out/*.tif (run unetseg cv first)")
    return folds


def score(maps: np.ndarray, gts: np.ndarray) -> dict:
    res = evaluate_isbi2012(maps, gts)
    return {k: float(res[k]["value"]) for k in KEYS}


@dataclasses.dataclass(frozen=True)
class Agglomerate:
    affinity: float


@dataclasses.dataclass(frozen=True)
class CardChain:
    """What a card with ``postprocess: {fill_holes: area, agglomerate: affinity}`` does to a map."""
    area: int
    affinity: float


def candidates(args) -> list[Closure | Agglomerate | CardChain | int | None]:
    if args.card_post:
        return [None, CardChain(int(args.card_post[0]), args.card_post[1])]
    if args.fill_holes:
        return [None] + list(args.fill_holes)
    if args.agglomerate:
        return [None] + [Agglomerate(a) for a in args.agglomerate]
    grid = itertools.product(args.seed, args.sigma, args.min_seed, args.merge, args.h)
    return [None] + [Closure(seed_threshold=s, sigma=g, min_seed_size=m, merge=None if c < 0 else c, h=h) for s, g, m, c, h in grid]


def name(c: Closure | Agglomerate | int | None) -> str:
    if c is None:
        return "plain"
    if isinstance(c, int):
        return f"fill{c}"
    if isinstance(c, Agglomerate):
        return f"agglomerate{c.affinity}"
    if isinstance(c, CardChain):
        return f"fill{c.area}+agglomerate{c.affinity}"
    return f"seed{c.seed_threshold}-sigma{c.sigma}-min{c.min_seed_size}-merge{c.merge}-h{c.h}"


def apply(c: Closure | Agglomerate | int | None, maps: np.ndarray) -> np.ndarray:
    if c is None:
        return maps
    if isinstance(c, int):
        return np.stack([fill_small_holes(m, c) for m in maps])
    if isinstance(c, Agglomerate):
        return agglomerate_boundaries(maps, c.affinity)
    if isinstance(c, CardChain):  # the card's own chain, section by section, on a 2-class stack
        probs = np.stack([1.0 - maps, maps]).astype(np.float32)
        return foreground_postprocess(probs, 1, Postprocess(fill_holes=c.area, agglomerate=c.affinity), sections=True)[1]
    return close_membranes(maps, c)


def choose(table: dict, k: int, rule: str, tolerance: float) -> str:
    """The candidate chosen for fold ``k`` from the other folds' metrics (see the module docstring)."""
    def mean(n: str, key: str) -> float:
        return float(np.mean([f[key] for j, f in enumerate(table[n][1]) if j != k]))

    if rule == "v_rand":
        return max(table, key=lambda n: mean(n, "v_rand"))
    floor = mean("plain", "v_rand") - tolerance
    return min((n for n in table if mean(n, "v_rand") >= floor), key=lambda n: mean(n, "warping_error"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cv", type=Path, required=True, help="an unetseg cv output folder")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "isbi2012")
    ap.add_argument("--seed", type=float, nargs="+", default=[0.8, 0.9, 0.95])
    ap.add_argument("--sigma", type=float, nargs="+", default=[0.0, 1.0, 2.0])
    ap.add_argument("--min-seed", type=int, nargs="+", default=[20])
    ap.add_argument("--h", type=float, nargs="+", default=[0.0], help="distance-maxima seeds of this height (0: threshold seeds)")
    ap.add_argument("--merge", type=float, nargs="+", default=[-1.0], help="merge thresholds; -1 = no merging")
    ap.add_argument("--fill-holes", type=int, nargs="+", default=None, metavar="AREA",
                    help="score hole filling with these areas (pixels) instead of the closure grid")
    ap.add_argument("--agglomerate", type=float, nargs="+", default=None, metavar="AFFINITY",
                    help="score waterz agglomeration with these merge affinities instead of the closure grid")
    ap.add_argument("--card-post", type=float, nargs=2, default=None, metavar=("AREA", "AFFINITY"),
                    help="score the card's chain (holes filled, then agglomerated) on maps a CV kept without post-processing; "
                         "the summary's 'card' line pools it over all sections")
    ap.add_argument("--rule", choices=["v_rand", "warping"], default="v_rand", help="how each fold's candidate is chosen")
    ap.add_argument("--tolerance", type=float, default=0.001, help="--rule warping: V_rand allowed below the plain maps'")
    args = ap.parse_args()
    folds = load_folds(args.cv, args.data)
    table = {}
    for c in candidates(args):
        t0 = time.perf_counter()
        per_fold = [score(apply(c, maps), gts) for _, maps, gts in folds]
        table[name(c)] = (c, per_fold)
        mean = {k: float(np.mean([f[k] for f in per_fold])) for k in KEYS}
        print(json.dumps({"candidate": name(c), "mean_over_folds": mean, "per_fold_v_rand": [f["v_rand"] for f in per_fold],
                          "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    chosen = [choose(table, k, args.rule, args.tolerance) for k in range(len(folds))]
    nested = np.concatenate([apply(table[chosen[k]][0], maps) for k, (_, maps, _) in enumerate(folds)])
    gts = np.concatenate([g for _, _, g in folds])
    plain = np.concatenate([maps for _, maps, _ in folds])
    nested_scores, card = score(nested, gts), {}
    if args.card_post:
        chain = next(c for c, _ in table.values() if isinstance(c, CardChain))
        card["card"] = nested_scores if set(chosen) == {name(chain)} else score(apply(chain, plain), gts)
    print(json.dumps({"summary": True, "chosen_per_fold": chosen, "plain": score(plain, gts), "nested": nested_scores, **card,
                      "sections": int(gts.shape[0]), "cv": str(args.cv),
                      "rule": args.rule, **cpu_flags()}), flush=True)


if __name__ == "__main__":
    main()
