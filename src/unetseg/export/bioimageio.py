"""bioimage.io model packages (format 0.5, as the pinned ``bioimageio.spec`` implements it).

:func:`export_bioimageio` writes everything from the model file and its
:class:`~unetseg.models.ModelCard`; nothing is written by hand per model:

- input ``raw``: axes batch, channel, space (``z``,) ``y``, ``x``; the tile sizes the network
  accepts as ``size: {min, step}``; preprocessing that reproduces the card's normalisation
  (``scale_range`` percentiles, ``zero_mean_unit_variance``, ``scale_linear``);
- output ``probabilities``: a valid U-Net's spatial sizes as ``{tensor_id, axis_id, offset}``
  (the halo is cropped by the network itself), a same-padding model's with a ``halo``;
  postprocessing ``softmax`` over the channel axis (``sigmoid`` for one channel);
- weights ``pytorch_state_dict`` (architecture ``unetseg.models.<Arch>`` and its kwargs),
  ``torchscript`` and ``onnx`` (both traced from it, ``parent: pytorch_state_dict``), each with
  its sha256;
- the test output is what bioimageio.core's own pipeline computes from the test input (so the
  consumer's preprocessing is what is tested), checked against unetseg's prediction first;
- a cover (input | probability, 2:1), a README, the U-Net citation, licence and authors;
- ``config.unetseg``: the model card (output shift, post-processing, provenance: what the
  description cannot express), the architecture and its arguments, and ``weights: onnx``:
  ``unetseg predict --model NAME.zip`` (:mod:`unetseg.export.package`) reads the network's
  tensors from the ONNX graph's initializers (a protobuf, written unoptimised so each keeps
  its state-dict name), never from the consumers' ``.pt`` state dict, which is a pickle. So
  the package holds each weight format once, each read by a consumer, and no fourth copy.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_path
from ..errors import ModelFileError
from ..fetch import sha256_file
from ..models.card import ModelCard, card_to_dict
from . import graphs, readme

log = logging.getLogger(__name__)

INPUT_ID, OUTPUT_ID = "raw", "probabilities"
UNET_CITATION = {"text": "Ronneberger, O., Fischer, P., Brox, T.: U-Net: Convolutional Networks for Biomedical Image "
                         "Segmentation. MICCAI 2015, LNCS 9351, pp. 234-241", "doi": "10.1007/978-3-319-24574-4_28"}
UNETSEG_READS = "onnx"  # the weight format unetseg itself loads from a package (no pickle)


def identifier(name: str) -> str:
    """A bioimage.io identifier from a free-text name (letters, digits, ``_``, ``-``).

    Examples
    --------
    >>> identifier("cell interior"), identifier("2nd")
    ('cell_interior', 'c_2nd')
    """
    text = re.sub(r"[^A-Za-z0-9_-]+", "_", name.strip()).strip("_") or "c"
    return text if text[0].isalpha() else f"c_{text}"


def spatial_ids(dims: int) -> list[str]:
    return ["z", "y", "x"][-dims:]


def preprocessing(card: ModelCard, dims: int = 2) -> list[dict[str, Any]]:
    """The bioimage.io preprocessing equal to the card's normalisation (per sample and channel).

    Examples
    --------
    >>> steps = preprocessing(ModelCard())
    >>> steps[1]["id"], steps[1]["kwargs"]["max_percentile"], steps[1]["kwargs"]["axes"]
    ('scale_range', 99.8, ['y', 'x'])
    """
    spec = dict(card.normalization)
    method = spec.get("method", "percentile")
    axes = spatial_ids(dims)
    steps: list[dict[str, Any]] = [{"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}]
    if method in ("percentile", "minmax"):
        low, high = (float(spec.get("low", 1.0)), float(spec.get("high", 99.8))) if method == "percentile" else (0.0, 100.0)
        steps.append({"id": "scale_range", "kwargs": {"axes": axes, "min_percentile": low, "max_percentile": high, "eps": 1e-6}})
    elif method == "zscore":
        steps.append({"id": "zero_mean_unit_variance", "kwargs": {"axes": axes, "eps": 1e-6}})
    elif method != "none":  # 'dtype' divides by the input's integer maximum, which a description cannot name
        raise ModelFileError(f"normalisation {method!r} has no bioimage.io equivalent; export a model trained with "
                             "'percentile', 'minmax', 'zscore' or 'none'")
    return steps


def tensor_axes(network: torch.nn.Module, card: ModelCard) -> tuple[list[dict], list[dict]]:
    """Input and output axes: sizes the network accepts and the output they give."""
    from .. import sizes

    dims = int(getattr(network, "spatial_dims", 2))
    channels = int(getattr(network, "in_channels", 1))
    padding, depth = getattr(network, "padding", sizes.SAME), int(getattr(network, "depth", 4))
    step = int(getattr(network, "size_divisor", 2**depth))
    context = sizes.halo(depth, sizes.VALID)  # a same-padding model's halo: the margin unetseg's own tiling discards
    smallest = graphs.valid_tile(network, 1 if padding == sizes.VALID else 2 * context + 1)
    names = ["raw"] if channels == 1 else [f"channel{c}" for c in range(channels)]
    inputs = [{"type": "batch"}, {"type": "channel", "channel_names": names}]
    inputs += [{"type": "space", "id": a, "size": {"min": smallest, "step": step}} for a in spatial_ids(dims)]
    outputs = [{"type": "batch"}, {"type": "channel", "channel_names": [identifier(c) for c in card.classes]}]
    for a in spatial_ids(dims):
        if padding == sizes.VALID:
            size = {"tensor_id": INPUT_ID, "axis_id": a, "offset": -2 * int(network.halo)}
            outputs.append({"type": "space", "id": a, "size": size})
        else:  # same padding: the consumer crops the context its tiles lack, as unetseg's tiling does
            outputs.append({"type": "space", "id": a, "size": {"tensor_id": INPUT_ID, "axis_id": a, "offset": 0},
                            "halo": context})
    return inputs, outputs


def postprocessing(num_classes: int) -> list[dict[str, Any]]:
    return [{"id": "sigmoid"}] if num_classes == 1 else [{"id": "softmax", "kwargs": {"axis": "channel"}}]


def write_weights(network: torch.nn.Module, root: Path, side: int) -> dict[str, Path]:
    """The three weight formats, in ``root``."""
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    files = {"pytorch_state_dict": root / "weights.pt", "torchscript": root / "weights_torchscript.pt",
             "onnx": root / "weights.onnx"}
    torch.save(state, files["pytorch_state_dict"])  # what consumers load (torch.load, weights_only)
    graphs.to_torchscript(network, files["torchscript"], side=side)
    graphs.to_onnx(network, files["onnx"], side=side)
    return files


def test_input(network: torch.nn.Module, side: int, sample: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """``(1, channels, *tile)`` float32: the centre of ``sample`` (channels first) or a synthetic EM section."""
    dims, channels = int(getattr(network, "spatial_dims", 2)), int(getattr(network, "in_channels", 1))
    if sample is None and dims != 2:
        raise ModelFileError("a 3D model needs a sample image for its test input")
    if sample is None:
        from ..synthetic import em_membranes

        image = em_membranes((side, side), rng=rng)[0].astype(np.float32)
        sample = np.broadcast_to(image, (channels, side, side))
    sample = np.asarray(sample, dtype=np.float32)
    if sample.ndim != dims + 1 or sample.shape[0] != channels or min(sample.shape[1:]) < side:
        raise ModelFileError(f"sample image of shape {sample.shape}: expected (channels={channels}, *spatial) with every "
                             f"spatial side >= {side}")
    starts = [(n - side) // 2 for n in sample.shape[1:]]
    crop = sample[(slice(None),) + tuple(slice(s, s + side) for s in starts)]
    return np.ascontiguousarray(crop[None])


def unetseg_probabilities(network: torch.nn.Module, card: ModelCard, raw: np.ndarray) -> np.ndarray:
    """What unetseg computes for one whole input tile: normalisation, network, softmax/sigmoid.

    A same-padding model sees the tile mirrored by its declared halo and the halo cropped
    again, which is what bioimage.io consumers do with an output ``halo``.
    """
    from .. import sizes, tiling
    from ..normalize import normalize

    x = normalize(raw[0], card.normalization, channel_axis=0)
    dims = x.ndim - 1
    pad = 0 if getattr(network, "padding", sizes.SAME) == sizes.VALID else sizes.halo(int(network.depth), sizes.VALID)
    x = tiling.mirror_pad(x, [(0, 0)] + [(pad, pad)] * dims)
    with torch.no_grad():
        logits = network.eval()(torch.from_numpy(np.ascontiguousarray(x[None])))
    probs = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
    inner = (slice(None), slice(None)) + (slice(pad, probs.shape[-1] - pad),) * dims
    return probs[inner].numpy().astype(np.float32)


def description(*, name: str, text: str, authors: list[str], license: str, card: ModelCard, meta: dict[str, Any],
                network: torch.nn.Module, files: dict[str, Path], tags: list[str]) -> dict[str, Any]:
    """The rdf content (a plain dict, validated by :func:`build`) of a package with ``files`` beside it."""
    dims = int(getattr(network, "spatial_dims", 2))
    in_axes, out_axes = tensor_axes(network, card)
    version = torch.__version__.split("+")[0]
    weight = {k: {"source": files[k].name, "sha256": sha256_file(files[k])} for k in ("pytorch_state_dict", "torchscript", "onnx")}
    weight["pytorch_state_dict"].update(architecture={"callable": meta["arch"], "import_from": "unetseg.models",
                                                      "kwargs": dict(meta["args"])},
                                        pytorch_version=version, dependencies={"source": files["environment"].name})
    weight["torchscript"].update(pytorch_version=version, parent="pytorch_state_dict")
    weight["onnx"].update(opset_version=graphs.ONNX_OPSET, parent="pytorch_state_dict")
    return {
        "type": "model", "format_version": "0.5.12", "name": name, "description": text,
        "authors": [{"name": a} for a in authors], "cite": [UNET_CITATION], "license": license, "tags": tags,
        "documentation": {"source": files["readme"].name}, "covers": [{"source": files["cover"].name}],
        "inputs": [{"id": INPUT_ID, "axes": in_axes, "test_tensor": {"source": files["test_input"].name},
                    "data": {"type": "float32"}, "preprocessing": preprocessing(card, dims)}],
        "outputs": [{"id": OUTPUT_ID, "axes": out_axes, "test_tensor": {"source": files["test_output"].name},
                     "data": {"type": "float32", "range": [0.0, 1.0]}, "postprocessing": postprocessing(len(card.classes))}],
        "weights": weight,
        "config": {"unetseg": {"weights": UNETSEG_READS, "card": card_to_dict(card), "arch": meta["arch"],
                               "args": dict(meta["args"]), "unetseg_version": meta.get("unetseg_version")}},
    }


def build(content: dict[str, Any], root: Path):
    """Validate ``content`` against the pinned spec with its files in ``root``; the ModelDescr."""
    from bioimageio.spec import ValidationContext, build_description
    from bioimageio.spec.common import InvalidDescr

    with ValidationContext(root=root, perform_io_checks=True):
        descr = build_description(content)
    if isinstance(descr, InvalidDescr):
        errors = "; ".join([f"{'.'.join(map(str, e.loc))}: {e.msg}" for d in descr.validation_summary.details for e in d.errors][:8])
        raise ModelFileError(f"the bioimage.io description does not validate: {errors}")
    return descr


def consumer_prediction(descr, raw: np.ndarray, weight_format: str | None = None) -> np.ndarray:
    """bioimageio.core's prediction of ``raw`` from the description: its preprocessing, weights, postprocessing."""
    from bioimageio.core import create_prediction_pipeline, predict

    pipeline = create_prediction_pipeline(descr, weight_format=weight_format, devices=["cpu"])
    sample = predict(model=pipeline, inputs={INPUT_ID: raw})
    return np.asarray(sample.members[OUTPUT_ID].data.values, dtype=np.float32)


def export_bioimageio(model_or_path: str | os.PathLike | torch.nn.Module, out: str | os.PathLike, *,
                      authors: list[str] | None = None, license: str = "CC-BY-4.0", name: str | None = None,
                      sample: np.ndarray | None = None, seed: int = 0) -> Path:
    """Write the bioimage.io package of a run folder, model file or network to ``out`` (a ``.zip``, atomically).

    A network is saved with its own ``card`` attribute or the default card first. ``authors``
    defaults to the user's login name. The test output is bioimageio.core's own prediction of
    the test input; it must equal unetseg's (:func:`unetseg_probabilities`) within 1e-4 or
    nothing is written.
    """
    from ..models import save

    authors = list(authors) if authors else [_login_name()]
    if isinstance(model_or_path, torch.nn.Module):
        with tempfile.TemporaryDirectory(prefix="unetseg-export-model-") as tmp:
            saved = save(model_or_path, Path(tmp) / "model.safetensors", card=getattr(model_or_path, "card", None))
            return export_bioimageio(saved, out, authors=authors, license=license, name=name, sample=sample, seed=seed)
    return _write_package(model_or_path, Path(out), authors=authors, license=license, name=name, sample=sample, seed=seed)


def _login_name() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a container
        return "unetseg user"


def _write_package(source: str | os.PathLike, out: Path, *, authors: list[str], license: str, name: str | None,
                   sample: np.ndarray | None, seed: int) -> Path:
    from bioimageio.spec import save_bioimageio_package

    from ..models import load_with_config

    network, meta = load_with_config(source)
    if getattr(network, "affinity_offsets", ()):
        raise ModelFileError(f"{source}: a model with affinity outputs cannot be described as a bioimage.io package yet (its "
                             "consumers would read every channel as a class); export it as ONNX or TorchScript, whose output "
                             "holds the class logits and then one affinity logit per offset")
    network.eval()
    card: ModelCard = meta["card"]
    side = graphs.trace_side(network)
    raw = test_input(network, side, sample, np.random.default_rng(seed))
    ours = unetseg_probabilities(network, card, raw)
    name = name or f"unetseg {meta['arch']} {' '.join(card.classes)}"
    with tempfile.TemporaryDirectory(prefix="unetseg-export-") as tmp:
        root = Path(tmp)
        files = write_weights(network, root, side)
        files.update(test_input=root / "test_input.npy", test_output=root / "test_output.npy", readme=root / "README.md",
                     cover=root / "cover.png", environment=root / "environment.yaml")
        np.save(files["test_input"], raw)
        np.save(files["test_output"], ours)
        overlay = readme.validation_overlay(source)
        if overlay is not None:
            readme.cover_from_overlay(files["cover"], overlay)
        else:
            readme.write_cover(files["cover"], raw, ours, card)
        files["readme"].write_text(readme.readme_text(name, card, meta, network), encoding="utf-8")
        files["environment"].write_text(readme.environment_yaml(meta.get("unetseg_version")), encoding="utf-8")
        text = readme.summary(card, network)
        content = description(name=name, text=text, authors=authors, license=license, card=card, meta=meta, network=network,
                              files=files, tags=readme.tags(card, network))
        theirs = consumer_prediction(build(content, root), raw)
        _check_same(ours, theirs)
        np.save(files["test_output"], theirs)
        content["outputs"][0]["test_tensor"]["sha256"] = sha256_file(files["test_output"])
        descr = build(content, root)
        staged_bytes = sum(f.stat().st_size for f in Path(root).rglob("*") if f.is_file())  # before compression
        with atomic_path(out, expected_bytes=staged_bytes) as target:
            staged = target.with_suffix(".zip")  # the spec's writer insists on the suffix
            try:
                save_bioimageio_package(descr, output_path=staged)
                staged.replace(target)
            finally:
                staged.unlink(missing_ok=True)
    log.info("wrote %s (%s)", out, ", ".join(sorted(content["weights"])))
    return out


def _check_same(ours: np.ndarray, theirs: np.ndarray, atol: float = 1e-4) -> None:
    if ours.shape != theirs.shape:
        raise ModelFileError(f"bioimageio.core predicts shape {theirs.shape} for the test input, unetseg {ours.shape}")
    diff = float(np.abs(ours - theirs).max())
    if diff > atol:
        raise ModelFileError(f"bioimageio.core's prediction of the test input differs from unetseg's by {diff:.2e} (> {atol:g})")
