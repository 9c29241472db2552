"""The one sigmoid and the one logit of the project (merge, serving, training figures, calibration, benchmark)."""
from __future__ import annotations

import numpy as np

#: logits are clipped to this before the sigmoid, so that exp() never overflows
LOGIT_CLIP = 60.0


def sigmoid(s) -> np.ndarray:
    r"""The calibrated score of a logit: :math:`1 / (1 + e^{-s})`, ``s`` clipped to ``[-60, 60]``.

    Example:
        >>> sigmoid([0.0, 1e9]).tolist()
        [0.5, 1.0]
    """
    s = np.asarray(s, dtype=np.float64)
    # np.clip without its per-call overhead (same values)
    return 1.0 / (1.0 + np.exp(-np.minimum(np.maximum(s, -LOGIT_CLIP), LOGIT_CLIP)))


def logit(p, eps: float = 1e-6) -> np.ndarray:
    r""":math:`\log(p / (1 - p))` of ``p`` clipped to ``[eps, 1 - eps]``: a probability read as a logit.

    Example:
        >>> float(logit(0.5))
        0.0
    """
    # np.clip without its per-call overhead (same values)
    p = np.minimum(np.maximum(np.asarray(p, dtype=np.float64), eps), 1 - eps)
    return np.log(p) - np.log1p(-p)
