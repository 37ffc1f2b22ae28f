"""How long `unetseg export` takes for the paper network (31 M parameters, all three weight formats).

    flock /tmp/unetseg-bench.lock .venv/bin/python benchmarks/export_speed.py [--base-channels 64]

Saves a randomly initialised paper U-Net (depth 4, 64 base channels, valid convolutions), then
exports it as a bioimage.io package (pytorch_state_dict + torchscript + onnx, each checked, test
tensors by bioimageio.core), reads it back as `unetseg predict --model NAME.zip` does, and prints
one JSON line: seconds, package size, the time to load the package, the CPU's flags. The issue's
target is under a minute on this CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from unetseg.export import export_model  # noqa: E402
from unetseg.inference import Predictor  # noqa: E402
from unetseg.runtime import cpu_flags  # noqa: E402
from unetseg.models import ModelCard, UNet, parameter_count, save  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-channels", type=int, default=64)
    args = ap.parse_args()
    torch.manual_seed(0)
    net = UNet(1, 2, depth=4, base_channels=args.base_channels)
    with tempfile.TemporaryDirectory() as tmp:
        model = save(net, Path(tmp) / "paper.safetensors", card=ModelCard(classes=("membrane", "cell")))
        t0 = time.perf_counter()
        out = export_model(model, Path(tmp) / "paper.zip", format="bioimageio", authors=["benchmark"])
        seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        Predictor.from_path(out, device="cpu")
        load_seconds = time.perf_counter() - t0
        with zipfile.ZipFile(out) as z:
            members = {i.filename: i.compress_size for i in z.infolist()}
        print(json.dumps({"benchmark": "export_speed", "parameters": parameter_count(net), "seconds": round(seconds, 1),
                          "load_seconds": round(load_seconds, 1),
                          "package_mb": round(out.stat().st_size / 2**20, 1),
                          "largest_members_mb": {k: round(v / 2**20, 1) for k, v in sorted(members.items(), key=lambda kv: -kv[1])[:4]},
                          "threads": torch.get_num_threads(), **cpu_flags()}))


if __name__ == "__main__":
    main()
