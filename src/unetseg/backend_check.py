"""The accuracy rule for lossy backends: is int8 as good as fp32 on this model's validation images?

``unetseg check-backend RUN`` predicts the run's validation images (its recipe's ``val_data``)
with the ``fp32`` reference and with the lossy backend (``int8``, calibrated on tiles of the
run's training images), scores both with the protocol :mod:`unetseg.cv` uses (ISBI 2012 for
semantic models: V_rand and warping error; CTC SEG for instance models), and writes the result
to ``RUN/backends.json``. A lossy backend passes when no ranking metric moves by more than its
tolerance (:data:`TOLERANCE`: V_rand 0.002, warping error 0.0001, SEG 0.002). ``unetseg predict
--backend auto`` runs int8 only for a run whose ``backends.json`` says it passed, on a CPU with
torchao installed; otherwise eager PyTorch at ``precision: auto``. The result is tied to the
weights it measured (their sha256); new weights need a new check.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import ConfigError

TOLERANCE = {"v_rand": 0.002, "warping_error": 0.0001, "seg": 0.002}
RESULTS = "backends.json"


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


def _run_data(run_dir: Path, *, with_val: bool):
    """(training items, validation split or None) of a run, as its ``config.yaml`` selects them
    (one read of a folder that holds both)."""
    from .train.config import load_train_config
    from .train.setup import load_split

    config = run_dir / "config.yaml"
    cfg = load_train_config(config)
    if with_val and (cfg.val_data is None or not cfg.val_data.path):
        raise ConfigError(f"{config}: the run has no val_data; the accuracy rule needs labelled validation images")
    cache: dict = {}
    train = load_split(cfg.train_data, cfg, config, "train_data", cache=cache)
    return train.items, (load_split(cfg.val_data, cfg, config, "val_data", cache=cache) if with_val else None)


def check_backend(run_dir: str | os.PathLike, backend: str = "int8", *, tta: bool = False, calibration_images: int = 2) -> dict[str, Any]:
    """Score ``backend`` against fp32 on the run's validation images; write and return ``RUN/backends.json``'s entry."""
    import torch

    from .atomic import atomic_path
    from .cv import PROTOCOL_HEADLINES, evaluate_predictions, predict_held_out, reference_labels
    from .inference import Predictor
    from .runtime import cpu_flags

    run_dir = Path(run_dir)
    train_items, val = _run_data(run_dir, with_val=True)
    protocol = "ctc" if val.target.kind == "instances" else "isbi2012"
    gts = [reference_labels(it, protocol) for it in val.items]
    calibration = [it.image for it in train_items[:calibration_images]]  # what training_images() gives predict
    scores = {}
    for name, kwargs in (("fp32", {"precision": "fp32"}), (backend, {"backend": backend, "calibration": calibration})):
        predictor = Predictor.from_path(run_dir, device="cpu", **kwargs)
        metrics = evaluate_predictions(protocol, predict_held_out(predictor, val.items, protocol, tta=tta), gts)
        scores[name] = {k: float(metrics[k]["value"]) for k in PROTOCOL_HEADLINES[protocol] if k in metrics}
    entry = {"reference": scores["fp32"], "metrics": scores[backend], "passed": passes(scores["fp32"], scores[backend]),
             "tolerance": {k: v for k, v in TOLERANCE.items() if k in scores["fp32"]}, "protocol": protocol,
             "images": [it.name for it in val.items], "tta": tta, "weights_sha256": weights_digest(run_dir),
             "torch": torch.__version__, "cpu": cpu_flags()}
    results = read_results(run_dir)
    results[backend] = entry
    with atomic_path(run_dir / RESULTS) as tmp:
        Path(tmp).write_text(json.dumps(results, indent=1))
    return entry


def read_results(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``RUN/backends.json`` (``{}`` when the run has none or it is not a run folder)."""
    path = Path(run_dir) / RESULTS
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not a backend check result ({exc})") from exc


def training_images(run_dir: str | os.PathLike, count: int = 2) -> list:
    """The first ``count`` training images of a run, normalised (what its int8 check calibrated on)."""
    return [it.image for it in _run_data(Path(run_dir), with_val=False)[0][:count]]


def auto_backend(model_path: str | os.PathLike, device_type: str) -> str:
    """``int8`` where the run's check passed for its current weights on a CPU with torchao, else ``torch``."""
    path = Path(model_path)
    entry = read_results(path).get("int8") if path.is_dir() else None
    if device_type != "cpu" or not entry or not entry.get("passed"):
        return "torch"
    if entry.get("weights_sha256") != weights_digest(path):
        return "torch"
    try:
        import torchao  # noqa: F401
    except ImportError:
        return "torch"
    return "int8"
