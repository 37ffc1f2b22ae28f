"""Evaluation protocols: sweep thresholds over probability maps, report each metric's best.

Every protocol returns the ``metrics.json`` dictionary: top-level metric entries of the form
``{"value": float, "threshold": float | None}``, plus ``curves`` (the value at every
threshold), ``per_image`` values and a few definitions under ``notes``.

* ``isbi2012`` (:func:`evaluate_isbi2012`): predicted maps are cell probabilities (high
  inside cells), the ground truth is 0 = membrane / nonzero = cell. One threshold for the
  whole stack; thresholds accumulate as ``th += 0.1`` in doubles.

  ============================== =========================================== ==============
  key                            definition                                  thresholds
  ============================== =========================================== ==============
  pixel_error                    min plain pixel error (pooled)              0.0 ... 0.9
  pixel_error_f1                 1 - max pixel F1, TP/FP/FN pooled           0.0 ... 0.9
  rand_error                     1 - max V_rand before thinning, pooled      0.0 ... 0.9
  v_rand                         max V_rand after thinning, per-slice mean   0.0 ... 1.0
  v_info                         max V_info after thinning, per-slice mean   0.0 ... 1.0
  warping_error                  min warping error, per-slice mean           0.0 ... 0.9
  warping_error_splits_mergers   min SPLIT+MERGE warping error               0.0 ... 0.9
  ============================== =========================================== ==============

* ``ctc`` (:func:`evaluate_ctc`): Cell Tracking Challenge SEG over instance labels.
* ``binary`` (:func:`evaluate_binary`): pooled Dice and IoU (best threshold for maps).
* ``instances`` (:func:`evaluate_instances`): object precision/recall/F1 at IoU 0.5 and the
  DSB2018 mean AP.
"""

from .common import best, entry
from .instances import as_instances, evaluate_binary, evaluate_ctc, evaluate_instances
from .isbi import evaluate_isbi2012, isbi_error_maps
from .output import evaluate_to_folder, format_table, headline, jsonable, write_metrics
from .protocols import ISBI_KEYS, PROTOCOLS, run_protocol
from .stacks import as_probability, check_label_inputs, load_stack, require_labels, stack_names

__all__ = [
    "ISBI_KEYS",
    "PROTOCOLS",
    "as_instances",
    "as_probability",
    "best",
    "check_label_inputs",
    "entry",
    "evaluate_binary",
    "evaluate_ctc",
    "evaluate_instances",
    "evaluate_isbi2012",
    "evaluate_to_folder",
    "format_table",
    "headline",
    "isbi_error_maps",
    "jsonable",
    "load_stack",
    "require_labels",
    "run_protocol",
    "stack_names",
    "write_metrics",
]
