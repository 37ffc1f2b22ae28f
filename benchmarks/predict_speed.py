"""Inference speed and memory of overlap-tile prediction, all figures side by side in one run.

(a) tiling efficiency: ``predict_image`` on a SIZE x SIZE image versus the same network run on
    the same tiles already in memory (tiling, mirroring and copy overhead);
(b) against MONAI ``sliding_window_inference`` (roi 512, Gaussian blending, overlap 0.25 and
    0.5) running the padded U-Net of the same width (``UNet(padding="same", norm="batch")``):
    output megapixels per second, unetseg's valid overlap-tile divided by MONAI's; (a) and (b)
    run every contender at ``--precision`` (fp32, or bf16 autocast for all of them);
(c) peak resident memory (``VmHWM`` of a fresh subprocess) while segmenting a BIG x BIG
    uint8 TIFF from disk to a float32 BigTIFF on disk with ``predict_file``;
(d) bf16 autocast versus fp32: speed ratio and Dice of the thresholded masks;
(e) with ``--backends``: the Predictor backends (eager fp32, eager at ``precision: auto``, compiled,
    int8) on the (d) image side by side, as ``benchmarks/backend_speed.py --predictor`` measures them;
(f) with ``--tile-sweep SIDE ...``: output megapixels per second of the network alone on square
    output tiles of each side, at ``--precision`` (where a larger tile stops paying).

Ends with one JSON line: vs_monai_025, vs_monai_05, tiling_efficiency, peak_rss_gib,
bf16_speedup (plus bf16_dice and the settings). Run it alone (``flock /tmp/unetseg-bench.lock``);
timings are the best of ``--repeats`` runs after a warm-up.

    python benchmarks/predict_speed.py --width 8 --size 4096 --tile 772 --big 16384
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import torch

from unetseg import runtime, tiling
from unetseg.sizes import input_shape_for
from unetseg.models import ModelCard, UNet, save
from unetseg.inference import Predictor, probabilities, read_mirrored


def _image(size: int, seed: int = 0) -> np.ndarray:
    """A smooth random field with blob-like structure, normalised to [0, 1] (float32)."""
    rng = np.random.default_rng(seed)
    small = rng.random((size // 32 + 2, size // 32 + 2)).astype(np.float32)
    from scipy import ndimage as ndi

    img = ndi.zoom(small, 32, order=1)[:size, :size]
    img += 0.1 * rng.standard_normal((size, size)).astype(np.float32)
    img -= img.min()
    return (img / img.max()).astype(np.float32)


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _autocast(precision: str):
    """bf16 autocast on the CPU, or nothing (fp32)."""
    import contextlib

    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def bench_ab(net, img, tile, repeats, width, precision="fp32"):
    """(a) and (b) in interleaved rounds (best of each): other processes share the cores, so
    the load drifts during a run and must hit every contender alike. Every contender runs at
    ``precision``."""
    plan = tiling.plan_tiles(img.shape, tile, depth=net.depth, padding=net.padding)
    src = img[None]
    windows = {}
    for t in plan:
        w = read_mirrored(src, 1, list(zip(t.in_start, t.in_stop)))
        windows.setdefault(t.in_shape, []).append(torch.from_numpy(np.ascontiguousarray(w[None])).contiguous(memory_format=torch.channels_last))
    fmt = torch.channels_last
    net.to(memory_format=fmt)

    def net_only():
        with torch.inference_mode(), _autocast(precision):
            for xs in windows.values():
                for x in xs:
                    probabilities(net(x).float()).numpy()

    predictor = Predictor(net, device="cpu", precision=precision, channels_last=True)  # prepared once, as the CLI does

    def tiled():
        predictor.predict(img, tile_shape=tile)

    contenders = {"tiled": tiled, "net": net_only, "monai25": monai_runner(width, img, 0.25, precision=precision),
                  "monai50": monai_runner(width, img, 0.5, precision=precision)}
    tiled()  # warm-up: primitives for every tile shape
    net_only()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(repeats):
        for name, fn in contenders.items():
            times[name].append(_best(fn, 1))
        print(f"    round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()), flush=True)
    return {k: min(v) for k, v in times.items()}, plan


def monai_runner(width, img, overlap, roi=512, precision="fp32"):
    """A callable running MONAI's sliding window with the padded U-Net of the same width
    (its forward pass in bf16 autocast for ``precision="bf16"``, blending in fp32)."""
    from monai.inferers import sliding_window_inference

    torch.manual_seed(0)
    net = UNet(1, 2, base_channels=width, padding="same", norm="batch", dropout=0.0).eval()
    net.to(memory_format=torch.channels_last)

    def predictor(x):
        with _autocast(precision):
            return torch.softmax(net(x.contiguous(memory_format=torch.channels_last)).float(), dim=1)

    x = torch.from_numpy(img)[None, None]

    def run():
        with torch.inference_mode():
            sliding_window_inference(x, (roi, roi), 1, predictor, overlap=overlap, mode="gaussian")

    with torch.inference_mode():
        predictor(torch.zeros(1, 1, roi, roi))
    return run


_RSS_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    import numpy as np
    from unetseg.predict import predict_file
    t = time.perf_counter()
    predict_file(sys.argv[1], sys.argv[2], sys.argv[3], tile_shape=int(sys.argv[4]), precision="fp32")
    dt = time.perf_counter() - t
    # VmHWM is this process's own peak: ru_maxrss may carry the parent's peak over fork+exec.
    hwm = None
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    print(json.dumps({"maxrss_kib": hwm or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "seconds": dt}))
    """
)


def bench_rss(width, big, tile, workdir: Path) -> dict[str, tuple[float, float]]:
    """(c): disk-to-disk segmentation of a big image in a fresh process, once to a float32 TIFF
    and once to an OME-Zarr pyramid; returns {"tif": (GiB, seconds), "ome-zarr": (GiB, seconds)}."""
    import tifffile

    run_dir = workdir / "run"
    run_dir.mkdir()
    torch.manual_seed(0)
    save(UNet(1, 2, base_channels=width, dropout=0.0), run_dir, card=ModelCard())
    src = workdir / "big.tif"
    rows = 1024
    rng = np.random.default_rng(0)
    with tifffile.TiffWriter(src, bigtiff=True) as tw:  # written in strips: never the whole image in RAM
        def strips():
            for y in range(0, big, rows):
                yield rng.integers(0, 255, (min(rows, big - y), big), dtype=np.uint8)

        tw.write(strips(), shape=(big, big), dtype=np.uint8, rowsperstrip=rows)
    found = {}
    for kind, name in (("tif", "big_prob.tif"), ("ome-zarr", "big_prob.ome.zarr")):
        out = workdir / name
        proc = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(run_dir), str(src), str(out), str(tile)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"RSS child ({kind}) failed: {proc.stderr[-2000:]}")
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        found[kind] = (info["maxrss_kib"] / 2**20, info["seconds"])
    with tifffile.TiffFile(workdir / "big_prob.tif") as tif:
        assert tif.series[0].shape == (big, big)
    import zarr

    assert zarr.open_group(str(workdir / "big_prob.ome.zarr"), mode="r")["0"].shape == (big, big)
    return found


def _rss(args) -> dict[str, tuple[float, float]] | None:
    if not args.big:
        return None
    with tempfile.TemporaryDirectory(dir=os.environ.get("UNETSEG_BENCH_TMP")) as tmp:
        rss = bench_rss(args.width, args.big, args.tile, Path(tmp))
    for kind, (gib, secs) in rss.items():
        print(f"(c) {args.big}^2 uint8 TIFF -> float32 {kind} on disk, width {args.width}: peak RSS {gib:.2f} GiB in {secs:.0f} s",
              flush=True)
    print(f"(c) OME-Zarr / TIFF peak RSS: {rss['ome-zarr'][0] / rss['tif'][0]:.3f}", flush=True)
    return rss


def report_rss(args) -> int:
    """``--rss-only``: (c) alone, with its JSON line."""
    rss = _rss(args)
    print(json.dumps({"peak_rss_gib": round(rss["tif"][0], 3), "peak_rss_ome_zarr_gib": round(rss["ome-zarr"][0], 3),
                      "ome_zarr_over_tif": round(rss["ome-zarr"][0] / rss["tif"][0], 3), "width": args.width, "big": args.big,
                      "tile": args.tile, "cpu_flags": runtime.cpu_flags()}))
    return 0


def _backends(net, args) -> dict[str, dict]:
    """(e): ``backend_speed.predictor_mode`` on the (d) image; seconds and speed-up over eager fp32 per backend."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from backend_speed import predictor_mode

    print(f"(e) every Predictor backend on a {args.bf16_size}^2 image, width {args.width}:", flush=True)
    found = predictor_mode(net, args.bf16_size, args.repeats)
    fp32 = found["torch-fp32"]["best_s"]
    return {k: {"s": v["best_s"], "vs_fp32": round(fp32 / v["best_s"], 3), "first_s": v["first_s"],
                "mask_agreement": round(v["mask_agreement"], 5)} for k, v in found.items()}


def tile_sweep(net, sides: list[int], precision: str) -> dict[int, float]:
    """(f) Output megapixels per second of the network alone (channels-last, as the Predictor
    runs it on the CPU) for square output tiles of each side: where the tile size stops paying."""
    net.to(memory_format=torch.channels_last)
    out = {}
    for side in sides:
        x = torch.randn(1, 1, *input_shape_for((side, side), net.depth, net.padding)).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), _autocast(precision):
            net(x)  # warm-up: oneDNN primitives for this shape
            t = _best(lambda: net(x), 1)
        out[side] = round(side * side / t / 1e6, 4)
        print(f"(f) output tile {side}^2, {precision}: {t:.2f} s per tile, {out[side]:.3f} Mpx/s", flush=True)
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.logical_and(a, b).sum()
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * inter / total)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=64, help="base channels of every network compared (the paper's: 64)")
    ap.add_argument("--size", type=int, default=4096, help="side of the in-memory test image")
    ap.add_argument("--tile", type=int, default=772,
                    help="output tile side of unetseg (valid U-Net); 0: the Predictor's own choice on this machine, as the CLI makes it")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="(a) and (b): every contender's precision")
    ap.add_argument("--big", type=int, default=16384, help="side of the disk-to-disk image for peak RSS (0: skip)")
    ap.add_argument("--bf16-size", type=int, default=1024, help="side of the image for the bf16 comparison")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved timed rounds (best of each is kept)")
    ap.add_argument("--rss-only", action="store_true", help="only (c): peak memory of the TIFF and OME-Zarr outputs")
    ap.add_argument("--backends", action="store_true", help="(e): every Predictor backend on the --bf16-size image, side by side")
    ap.add_argument("--tile-sweep", type=int, nargs="+", default=None, metavar="SIDE",
                    help="(f): the network alone on output tiles of these sides, at --precision")
    args = ap.parse_args(argv)
    runtime.configure_threads()
    # Process-wide, so MONAI's sliding window below runs with the same allocator setting.
    tuned = runtime.configure_allocator()
    print(f"threads {torch.get_num_threads()}  torch {torch.__version__}  bf16-native-cpu {runtime.cpu_supports_bf16()}  "
          f"malloc-tuned {tuned}", flush=True)

    if args.rss_only:
        return report_rss(args)
    torch.manual_seed(0)
    net = UNet(1, 2, base_channels=args.width, dropout=0.0).eval()
    img = _image(args.size)
    mpx = img.size / 1e6
    if args.tile == 0:
        args.tile = int(Predictor(net, device="cpu", precision=args.precision).tile_shape_for(None)[0])
        print(f"    output tiles of {args.tile} px: the Predictor's choice (largest within its memory budget)", flush=True)

    best, plan = bench_ab(net, img, args.tile, args.repeats, args.width, args.precision)
    t_net, t_tiled, t_m25, t_m50 = best["net"], best["tiled"], best["monai25"], best["monai50"]
    eff = t_net / t_tiled
    print(f"(a) {args.size}^2, width {args.width}, {args.precision}, {len(plan)} tiles of <= {args.tile} px (plan efficiency {plan.efficiency:.3f}): "
          f"overlap-tile {t_tiled:.1f} s ({mpx / t_tiled:.3f} Mpx/s), network alone on the same tiles {t_net:.1f} s "
          f"-> tiling efficiency {eff:.3f}", flush=True)

    print(f"(b) MONAI sliding_window_inference roi 512 gaussian overlap 0.25: {t_m25:.1f} s ({mpx / t_m25:.3f} Mpx/s) -> unetseg {t_m25 / t_tiled:.2f}x", flush=True)
    print(f"(b) MONAI sliding_window_inference roi 512 gaussian overlap 0.50: {t_m50:.1f} s ({mpx / t_m50:.3f} Mpx/s) -> unetseg {t_m50 / t_tiled:.2f}x", flush=True)

    small = img[: args.bf16_size, : args.bf16_size]
    p32, p16 = Predictor(net, device="cpu", precision="fp32"), Predictor(net, device="cpu", precision="bf16")
    fp32 = p32.predict(small, tile_shape=args.tile)
    bf = p16.predict(small, tile_shape=args.tile)
    t32s, t16s = [], []
    for _ in range(args.repeats):  # interleaved, best of each
        t32s.append(_best(lambda: p32.predict(small, tile_shape=args.tile), 1))
        t16s.append(_best(lambda: p16.predict(small, tile_shape=args.tile), 1))
    t32, t16 = min(t32s), min(t16s)
    d = dice(fp32[1] > 0.5, bf[1] > 0.5)
    print(f"(d) {args.bf16_size}^2 fp32 {t32:.1f} s, bf16 autocast {t16:.1f} s -> speed-up {t32 / t16:.2f}x, mask Dice {d:.4f}", flush=True)

    backends = _backends(net, args) if args.backends else None
    sweep = tile_sweep(net, args.tile_sweep, args.precision) if args.tile_sweep else None
    rss = _rss(args)
    print(f"    (this process: ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB)", flush=True)
    print(json.dumps({
        "vs_monai_025": round(t_m25 / t_tiled, 3),
        "vs_monai_05": round(t_m50 / t_tiled, 3),
        "tiling_efficiency": round(eff, 3),
        "peak_rss_gib": None if rss is None else round(rss["tif"][0], 3),
        "peak_rss_ome_zarr_gib": None if rss is None else round(rss["ome-zarr"][0], 3),
        "bf16_speedup": round(t32 / t16, 3),
        "bf16_dice": round(d, 4),
        "backends": backends,
        "tile_sweep_mpx_s": sweep,
        "width": args.width,
        "precision": args.precision,
        "size": args.size,
        "tile": args.tile,
        "big": args.big,
        "cpu_flags": runtime.cpu_flags(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
