"""Backends chosen by measurement: the accuracy rule and the speed of each backend on this machine.

``unetseg check-backend RUN`` predicts the run's validation images (its recipe's ``val_data``)
with the ``fp32`` eager reference and with each candidate backend (:data:`CANDIDATES`: eager
bf16 where the CPU runs it natively, ``torch.compile``, ``int8`` calibrated on tiles of the
run's training images, ONNX Runtime), scores each with the protocol :mod:`unetseg.cv` uses
(ISBI 2012 for semantic models: V_rand and warping error; CTC SEG for instance models), and
times each once warm (the first call's export, calibration and compilation are reported
apart). A lossy candidate passes when no ranking metric moves by more than its tolerance
(:data:`TOLERANCE`: V_rand 0.002, warping error 0.0001, SEG 0.002); the choice is the fastest
candidate that passes (the fp32 reference always does). The result goes to ``RUN/backends.json``
as one record per machine: keyed by the CPU's flags, the torch version and the weights' sha256,
so a run folder handed to another machine, another torch or new weights is measured again
rather than trusted. ``unetseg predict`` (``--backend auto``, its default) uses the record of
this machine; without one it runs the lossless eager fp32 path. Recipes with
``validation.check_backends`` run the check when training ends. Compiled code lives only in
inductor's own cache, never in the run folder.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from .errors import ConfigError

TOLERANCE = {"v_rand": 0.002, "warping_error": 0.0001, "seg": 0.002}
RESULTS = "backends.json"
RESULTS_FORMAT = 2
# name -> (Predictor backend, precision, the module it needs)
CANDIDATES = {"torch-bf16": ("torch", "bf16", None), "compile": ("compile", "auto", None), "int8": ("int8", "auto", "torchao"),
              "onnxruntime": ("onnxruntime", "fp32", "onnxruntime")}
REFERENCE = "torch-fp32"


def weights_digest(run_dir: Path) -> str:
    """sha256 of the run's ``model.safetensors`` (what a check result belongs to)."""
    from .fetch import sha256_file

    return sha256_file(run_dir / "model.safetensors")


def passes(reference: dict[str, float], candidate: dict[str, float]) -> bool:
    """Whether every ranking metric of ``candidate`` is within :data:`TOLERANCE` of ``reference``.

    Examples
    --------
    >>> passes({"v_rand": 0.95, "warping_error": 0.003}, {"v_rand": 0.9485, "warping_error": 0.00305})
    True
    >>> passes({"v_rand": 0.95, "warping_error": 0.003}, {"v_rand": 0.947, "warping_error": 0.003})
    False
    """
    checked = [k for k in TOLERANCE if k in reference]
    return bool(checked) and all(abs(candidate[k] - reference[k]) <= TOLERANCE[k] + 1e-12 for k in checked)


def _run_data(run_dir: Path, *, with_train: bool, with_val: bool):
    """(training items or None, validation split or None) of a run, as its ``config.yaml``
    selects them; only what is asked for is read (one read of a folder that holds both)."""
    from .train.config import load_train_config
    from .train.setup import load_split

    config = run_dir / "config.yaml"
    cfg = load_train_config(config)
    if with_val and (cfg.val_data is None or not cfg.val_data.path):
        raise ConfigError(f"{config}: the run has no val_data; the accuracy rule needs labelled validation images")
    cache: dict = {}
    train = load_split(cfg.train_data, cfg, config, "train_data", cache=cache).items if with_train else None
    return train, (load_split(cfg.val_data, cfg, config, "val_data", cache=cache) if with_val else None)


def available(names: list[str] | None = None) -> list[str]:
    """The candidates (of ``names``, default all) that can run here: eager bf16 only where the CPU
    has native bf16, compiled and int8 code only with a C++ compiler, int8 and ONNX Runtime only
    with their libraries installed."""
    import importlib.util

    from .runtime import cpu_supports_bf16

    names = list(CANDIDATES) if names is None else list(names)
    unknown = sorted(set(names) - set(CANDIDATES))
    if unknown:
        raise ConfigError(f"backend(s) {', '.join(unknown)}: expected some of {', '.join(CANDIDATES)}")
    native_bf16 = cpu_supports_bf16()
    compiler = shutil.which("g++") or shutil.which("c++")  # inductor writes C++ for the CPU
    return [n for n in names if (n != "torch-bf16" or native_bf16) and (CANDIDATES[n][0] not in ("compile", "int8") or compiler)
            and (CANDIDATES[n][2] is None or importlib.util.find_spec(CANDIDATES[n][2]) is not None)]


def _measure(run_dir: Path, kwargs: dict[str, Any], val, protocol: str, gts: list, tta: bool) -> dict[str, Any]:
    """Scores and timings of one backend: the first pass over the validation images (export,
    calibration, compilation included), then one warm prediction of the first image."""
    from .cv import PROTOCOL_HEADLINES, evaluate_predictions, predict_held_out
    from .inference import Predictor

    t0 = time.perf_counter()
    predictor = Predictor.from_path(run_dir, device="cpu", **kwargs)
    predictions = predict_held_out(predictor, val.items, protocol, tta=tta)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    predictor.predict(val.items[0].image, tta=tta)
    warm = time.perf_counter() - t0
    metrics = evaluate_predictions(protocol, predictions, gts)
    return {"backend": predictor.backend, "precision": predictor.precision, "seconds": round(warm, 4),
            "first_seconds": round(first, 2), "metrics": {k: float(metrics[k]["value"]) for k in PROTOCOL_HEADLINES[protocol] if k in metrics}}


def machine_key(run_dir: Path) -> dict[str, Any]:
    """What a record of ``backends.json`` belongs to: this CPU's flags, this torch, these weights."""
    import torch

    from .runtime import cpu_flags

    return {"cpu": cpu_flags(), "torch": torch.__version__, "weights_sha256": weights_digest(run_dir)}


def check_backends(run_dir: str | os.PathLike, names: list[str] | None = None, *, tta: bool = False,
                   calibration_images: int = 2) -> dict[str, Any]:
    """Score and time the candidate backends against fp32 on the run's validation images; write
    this machine's record to ``RUN/backends.json`` and return it."""
    from .atomic import atomic_path
    from .cv import reference_labels

    run_dir = Path(run_dir)
    measured = available(names)
    int8 = any(CANDIDATES[n][0] == "int8" for n in measured)
    train_items, val = _run_data(run_dir, with_train=int8, with_val=True)  # training images only to calibrate int8
    protocol = "ctc" if val.target.kind == "instances" else "isbi2012"
    gts = [reference_labels(it, protocol) for it in val.items]
    calibration = [it.image for it in train_items[:calibration_images]] if int8 else None  # what training_images() gives predict
    candidates = {REFERENCE: _measure(run_dir, {"precision": "fp32"}, val, protocol, gts, tta)}
    reference = candidates[REFERENCE]["metrics"]
    for name in measured:
        backend, precision, _ = CANDIDATES[name]
        kwargs = {"backend": backend, "precision": precision, "calibration": calibration if backend == "int8" else None}
        entry = _measure(run_dir, kwargs, val, protocol, gts, tta)
        candidates[name] = {**entry, "passed": passes(reference, entry["metrics"])}
    candidates[REFERENCE]["passed"] = True
    choice = min((n for n, e in candidates.items() if e["passed"]), key=lambda n: candidates[n]["seconds"])
    record = {**machine_key(run_dir), "protocol": protocol, "images": [it.name for it in val.items], "tta": tta,
              "tolerance": {k: v for k, v in TOLERANCE.items() if k in reference}, "candidates": candidates, "choice": choice}
    checks = [r for r in read_results(run_dir) if any(r.get(k) != record[k] for k in ("cpu", "torch", "weights_sha256"))]
    with atomic_path(run_dir / RESULTS) as tmp:
        Path(tmp).write_text(json.dumps({"format": RESULTS_FORMAT, "checks": checks + [record]}, indent=1))
    return record


def read_results(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of ``RUN/backends.json`` (none when the run has no file or it is not a run folder)."""
    path = Path(run_dir) / RESULTS
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{path}: not a backend check result ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT or not isinstance(data.get("checks"), list):
        raise ConfigError(f"{path}: not a backend check result of format {RESULTS_FORMAT}; run `unetseg check-backend` again")
    return [r for r in data["checks"] if isinstance(r, dict)]


def training_images(run_dir: str | os.PathLike, count: int = 2) -> list:
    """The first ``count`` training images of a run, normalised (what its int8 check calibrated on)."""
    return [it.image for it in _run_data(Path(run_dir), with_train=True, with_val=False)[0][:count]]


def auto_backend(model_path: str | os.PathLike, device_type: str) -> tuple[str, str | None]:
    """``(backend, precision)`` that this machine's check of the run chose.

    Without a record for this CPU, torch version and weights (a bare model file, a package, a
    GPU, which the check does not measure) the lossless default: eager fp32.
    """
    path = Path(model_path)
    records = read_results(path) if path.is_dir() and device_type == "cpu" else []
    key = machine_key(path) if records else {}
    record = next((r for r in records if all(r.get(k) == v for k, v in key.items())), None)
    entry = record.get("candidates", {}).get(record.get("choice")) if record else None
    if not isinstance(entry, dict) or entry.get("backend") not in ("torch", "compile", "int8", "onnxruntime"):
        return "torch", "fp32"
    if record["choice"] in CANDIDATES and not available([record["choice"]]):  # a library since uninstalled
        return "torch", "fp32"
    return str(entry["backend"]), str(entry["precision"]) if entry["backend"] in ("torch", "compile") else None
