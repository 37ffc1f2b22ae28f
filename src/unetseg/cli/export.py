"""``unetseg export``: a model as a bioimage.io package, an ONNX graph or TorchScript."""

from __future__ import annotations

import argparse
import getpass


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a model as a bioimage.io package (Fiji/deepImageJ, ilastik, QuPath, napari), ONNX or TorchScript",
        description=(
            "Export a run folder or model file. bioimageio: a format-0.5 .zip with pytorch_state_dict, torchscript and "
            "onnx weights, preprocessing equal to the model card's normalisation, and test tensors computed by "
            "bioimageio.core itself; `unetseg predict --model NAME.zip` runs it again. onnx/torchscript: the network "
            "alone (free batch and tile sizes), checked against PyTorch. Needs `pip install 'unetseg[export]'`."
        ),
    )
    p.add_argument("model", metavar="RUN_OR_MODEL", help="run folder or model .safetensors file")
    p.add_argument("--format", default="bioimageio", choices=["bioimageio", "onnx", "torchscript"])
    p.add_argument("--out", required=True, help="output file: NAME.zip (bioimageio), NAME.onnx or NAME.pt (torchscript)")
    p.add_argument("--author", action="append", default=[], help="author name for the package (repeatable; default: your user name)")
    p.add_argument("--license", default="CC-BY-4.0", help="SPDX licence of the package (default: CC-BY-4.0)")
    p.add_argument("--name", default=None, help="package name (default: from the architecture and classes)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..export import export_model

    authors = args.author or [getpass.getuser()]
    path = export_model(args.model, args.out, format=args.format, authors=authors, license=args.license, name=args.name)
    print(f"wrote {path}")
    return 0
