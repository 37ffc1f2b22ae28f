"""The protocol names and :func:`run_protocol`, which dispatches to them."""

from __future__ import annotations

import logging



from ..errors import InputError
from .instances import evaluate_binary, evaluate_ctc, evaluate_instances
from .isbi import evaluate_isbi2012

log = logging.getLogger(__name__)

PROTOCOLS = ("isbi2012", "ctc", "binary", "instances")

#: Keys of the isbi2012 protocol, in the order they are reported.
ISBI_KEYS = (
    "pixel_error",
    "pixel_error_f1",
    "rand_error",
    "v_rand",
    "v_info",
    "warping_error",
    "warping_error_splits_mergers",
)


def run_protocol(protocol: str, pred, gt, *, progress: bool = False) -> dict:
    """Evaluate ``pred`` against ``gt`` (arrays or paths) with a named protocol.

    Examples
    --------
    >>> import numpy as np
    >>> gt = np.array([[1, 1, 0, 2, 2]])
    >>> run_protocol("ctc", gt, gt)["seg"]
    {'value': 1.0, 'threshold': None}
    """
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    log.debug("evaluating with protocol %s", protocol)
    if protocol == "isbi2012":
        return evaluate_isbi2012(pred, gt, progress=progress)
    if protocol == "ctc":
        return evaluate_ctc(pred, gt)
    if protocol == "binary":
        return evaluate_binary(pred, gt)
    return evaluate_instances(pred, gt)
