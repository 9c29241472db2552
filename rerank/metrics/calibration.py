r"""Calibration figures (REFERENCE.md s.4): reliability bins, ECE, MCE, Brier, NLL.

Inputs are numpy-like: ``confidence`` in :math:`[0, 1]` (the score read as
``P(correct)``), ``correct`` in :math:`\{0, 1\}` (or bool), same length, at least
one element. Outputs are Python floats. Everything is vectorised numpy (these
run inside bootstraps), no torch.

Binning. ``n_bins`` equal-width bins on :math:`[0, 1]` with edges
:math:`e_k = k / n_{bins}` (computed in float64 as ``k / n_bins``, i.e. the
correctly rounded double nearest to :math:`k/n_{bins}`). Bin :math:`b` holds
:math:`e_b \le c < e_{b+1}` (a bin holds its lower edge) and ``c == 1.0`` goes
in the last bin. Confidences are converted to float64 *before* binning, so a
float32 input is binned by its exact value: e.g. ``float32(2/15)`` is
``0.13333334...`` > ``2/15``, so it lands in bin 2 (for ``n_bins = 15`` every
``float32(k/15)`` is >= the double ``k/15``, so edge values in float32 land in
bin ``k`` too).

.. math::
    \text{ECE} = \sum_b \frac{n_b}{n} |acc_b - conf_b|, \qquad
    \text{MCE} = \max_{b:\, n_b > 0} |acc_b - conf_b|

Relation to torchmetrics (checked against torchmetrics 1.9
``binary_calibration_error``, tests/test_calibration.py): torchmetrics bins with
``torch.bucketize(c, torch.linspace(0, 1, n_bins + 1, dtype=c.dtype), right=True) - 1``,
which is the same lower-edge rule, and gives the same ECE (``norm="l1"``) and MCE
(``norm="max"``; its empty bins contribute 0 to the max) on data off the edges. It
differs from REFERENCE.md in two places, where this module follows REFERENCE.md:

1. ``c == 1.0`` gets index ``n_bins``: an extra, 16th bin of its own instead of
   the last bin. ECE then differs iff some ``c == 1.0`` is wrong while the
   ``[14/15, 1)`` part of the last bin is under-confident (sum of
   ``correct - c`` > 0): torchmetrics' ECE is larger by
   ``(|S_a| + |S_b| - |S_a + S_b|) / n`` with ``S_a = sum(correct - c)`` over
   ``[14/15, 1)`` and ``S_b = -#(wrong with c == 1)``. MCE differs whenever
   both parts are non-empty with different gaps.
2. ``torch.linspace`` edges are not always the correctly rounded ``k/15``: in
   float64 edge 11 is ``0.7333333333333334`` (``11/15`` is ``...333``), so
   ``c = 11/15`` falls in bin 10; in float32 edges 3, 6, 7 lie above
   ``float32(k/15)``, so those values fall in bin ``k - 1``. Here they are in
   bin ``k``.
"""
from __future__ import annotations

import numpy as np

from rerank.metrics.logistic import sigmoid

__all__ = ["N_BINS", "bin_index", "reliability_bins", "ece", "ece_rows", "mce", "brier", "nll", "platt"]

N_BINS = 15


def _validate(confidence, correct) -> tuple[np.ndarray, np.ndarray]:
    """Return float64 1-D ``(confidence, correct)``, raising ValueError on bad input."""
    c = np.asarray(confidence, dtype=np.float64).reshape(-1)
    y = np.asarray(correct)
    if y.dtype == bool:
        y = y.astype(np.float64)
    else:
        y = y.astype(np.float64, copy=False)
    y = y.reshape(-1)
    if c.size == 0:
        raise ValueError("calibration metrics need at least one (confidence, correct) pair; got empty input")
    if c.size != y.size:
        raise ValueError(
            f"confidence and correct must have the same length; got {c.size} confidences and {y.size} labels"
        )
    bad = ~((c >= 0.0) & (c <= 1.0))  # NaN counts as out of range
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"confidences must lie in [0, 1]: {int(bad.sum())} of {c.size} are out of range "
            f"(first at index {first}: {float(c[first])!r})"
        )
    bad = (y != 0.0) & (y != 1.0)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"correct must be 0/1 (or bool): {int(bad.sum())} of {y.size} values are not "
            f"(first at index {first}: {float(y[first])!r})"
        )
    return c, y


def _check_n_bins(n_bins) -> int:
    if isinstance(n_bins, (bool, np.bool_)) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    return int(n_bins)


def bin_index(confidence, n_bins: int = N_BINS) -> np.ndarray:
    """The bin of every confidence in ``[0, 1]``: :math:`e_b \\le c < e_{b+1}`, ``1.0`` in the last bin.

    The one binning of the project (ECE, MCE, the reliability diagram, the bootstrapped ECE).

    Example:
        >>> bin_index([0.0, 0.5, 0.99, 1.0], n_bins=2).tolist()
        [0, 1, 1, 1]
    """
    edges = np.arange(n_bins + 1, dtype=np.float64) / n_bins
    idx = np.searchsorted(edges, np.asarray(confidence, dtype=np.float64), side="right") - 1  # e_b <= c < e_{b+1}
    return np.clip(idx, 0, n_bins - 1)  # c == 1.0 -> last bin


def _bin_sums(c: np.ndarray, y: np.ndarray, n_bins: int):
    """Per-bin count, sum of confidence and sum of correct (lower-edge rule, 1.0 in last bin)."""
    edges = np.arange(n_bins + 1, dtype=np.float64) / n_bins
    idx = bin_index(c, n_bins)
    count = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=c, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=y, minlength=n_bins)
    return edges, count, conf_sum, acc_sum


def reliability_bins(confidence, correct, n_bins: int = N_BINS) -> dict:
    r"""Per-bin statistics for a reliability diagram.

    Bin :math:`b` holds the confidences :math:`e_b \le c < e_{b+1}`,
    :math:`e_k = k / n_{bins}`; ``1.0`` goes in the last bin.

    .. math::
        conf_b = \frac{1}{n_b} \sum_{i \in b} c_i, \qquad
        acc_b = \frac{1}{n_b} \sum_{i \in b} y_i

    Returns:
        dict of arrays of length ``n_bins``: ``count`` (int), ``conf`` (mean
        confidence), ``acc`` (accuracy), ``lower`` and ``upper`` (bin edges).
        Empty bins have ``count == 0`` and NaN ``conf`` / ``acc``.

    Example:
        >>> bins = reliability_bins([0.1, 0.15, 0.9, 1.0], [0, 1, 1, 1], n_bins=2)
        >>> bins["count"].tolist(), bins["acc"].tolist(), bins["lower"].tolist()
        ([2, 2], [0.5, 1.0], [0.0, 0.5])
        >>> bins["conf"].round(3).tolist()
        [0.125, 0.95]
    """
    n_bins = _check_n_bins(n_bins)
    c, y = _validate(confidence, correct)
    edges, count, conf_sum, acc_sum = _bin_sums(c, y, n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = conf_sum / count
        acc = acc_sum / count
    return {"count": count, "conf": conf, "acc": acc, "lower": edges[:-1].copy(), "upper": edges[1:].copy()}


def ece(confidence, correct, n_bins: int = N_BINS) -> float:
    r"""Expected calibration error (REFERENCE.md s.4).

    .. math::
        \text{ECE} = \sum_b \frac{n_b}{n} |acc_b - conf_b|
                   = \frac{1}{n} \sum_b \Big| \sum_{i \in b} (y_i - c_i) \Big|

    Equal to torchmetrics' ``binary_calibration_error(norm="l1")`` except for
    values exactly on an edge where torch's ``linspace`` is off by an ulp, and
    for ``c == 1.0`` (torchmetrics puts it in an extra bin): see the module
    docstring.

    Example:
        >>> round(ece([0.25, 0.25, 0.55, 0.75, 0.75], [0, 0, 1, 1, 1], n_bins=2), 4)
        0.29
    """
    n_bins = _check_n_bins(n_bins)
    c, y = _validate(confidence, correct)
    _, _, conf_sum, acc_sum = _bin_sums(c, y, n_bins)
    return float(np.abs(acc_sum - conf_sum).sum() / c.size)


def ece_rows(c: np.ndarray, y: np.ndarray, b: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    r"""ECE of every row of ``[B, n]`` arrays (bootstrap resamples): confidence, correct, :func:`bin_index`.

    .. math::
        \text{ECE}_r = \frac{1}{n} \sum_b \Big| \sum_{i \in b} (y_{ri} - c_{ri}) \Big|

    Example:
        >>> c = np.array([[0.25, 0.25, 0.55, 0.75, 0.75]]); y = np.array([[0, 0, 1, 1, 1.0]])
        >>> round(float(ece_rows(c, y, bin_index(c, 2), 2)[0]), 4)
        0.29
    """
    B, n = c.shape
    flat = (np.arange(B)[:, None] * n_bins + b).ravel()
    sc = np.bincount(flat, weights=c.ravel(), minlength=B * n_bins).reshape(B, n_bins)
    sy = np.bincount(flat, weights=y.ravel(), minlength=B * n_bins).reshape(B, n_bins)
    return np.abs(sy - sc).sum(axis=1) / n


def mce(confidence, correct, n_bins: int = N_BINS) -> float:
    r"""Maximum calibration error: the largest gap over non-empty bins.

    .. math::
        \text{MCE} = \max_{b:\, n_b > 0} |acc_b - conf_b|

    Same as torchmetrics' ``binary_calibration_error(norm="max")`` with the same
    edge / ``1.0`` caveats as :func:`ece`.

    Example:
        >>> round(mce([0.25, 0.25, 0.55, 0.75, 0.75], [0, 0, 1, 1, 1], n_bins=2), 4)
        0.3167
    """
    n_bins = _check_n_bins(n_bins)
    c, y = _validate(confidence, correct)
    _, count, conf_sum, acc_sum = _bin_sums(c, y, n_bins)
    nz = count > 0
    return float(np.max(np.abs(acc_sum[nz] - conf_sum[nz]) / count[nz]))


def brier(confidence, correct) -> float:
    r"""Brier score.

    .. math::
        \text{Brier} = \frac{1}{n} \sum_i (c_i - y_i)^2

    Example:
        >>> round(brier([0.9, 0.2], [1, 1]), 6)   # (0.01 + 0.64) / 2
        0.325
    """
    c, y = _validate(confidence, correct)
    d = c - y
    return float(np.dot(d, d) / c.size)


def nll(confidence, correct, eps: float = 1e-7) -> float:
    r"""Negative log-likelihood: mean binary log loss (natural log).

    .. math::
        \text{NLL} = -\frac{1}{n} \sum_i \big[ y_i \log \tilde c_i + (1 - y_i) \log(1 - \tilde c_i) \big],
        \qquad \tilde c_i = \mathrm{clip}(c_i, \epsilon, 1 - \epsilon)

    Example:
        >>> round(nll([0.5, 0.5], [1, 0]), 6)   # log 2
        0.693147
        >>> round(nll([1.0], [0]), 4)           # -log(1e-7), finite thanks to the clipping
        16.1181
    """
    if not (0.0 < eps < 0.5):
        raise ValueError(f"eps must lie in (0, 0.5), got {eps!r}")
    c, y = _validate(confidence, correct)
    p = np.clip(c, eps, 1.0 - eps)
    ll = np.where(y == 1.0, np.log(p), np.log1p(-p))
    return float(-ll.mean())


def platt(logits, correct, max_iter: int = 50, tol: float = 1e-10) -> tuple[float, float]:
    r"""Platt scaling: the ``(a, b)`` that minimise the log loss of :math:`\sigma(a s + b)` against ``correct``.

    .. math::
        (a, b) = \arg\min_{a, b} -\frac{1}{n} \sum_i \big[ y_i \log \sigma(a s_i + b)
                 + (1 - y_i) \log(1 - \sigma(a s_i + b)) \big]

    Newton's method on the two parameters (the loss is convex), from ``(1, 0)``. The one Platt
    fit of the project: a domain's output on its dev (``calibration=platt``), the merged top
    hypothesis' score (:mod:`rerank.merge.top_calibration`), the benchmark's Platt baseline.
    ``(1, 0)`` (the scores as they are) when there is nothing to fit: no rows, one class only,
    or a fit that does not keep the order of the scores (``a <= 0``) or is not finite.

    Example:
        >>> a, b = platt([-2.0, -1.0, 0.0, 1.0, 2.0, 0.5], [0, 0, 1, 0, 1, 1])
        >>> a > 0
        True
        >>> platt([0.3, 0.7], [1, 1])
        (1.0, 0.0)
    """
    s = np.asarray(logits, dtype=np.float64).reshape(-1)
    y = np.asarray(correct, dtype=np.float64).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"logits and correct must have the same length, got {s.size} and {y.size}")
    if s.size == 0 or y.min() == y.max() or not np.all(np.isfinite(s)):
        return 1.0, 0.0
    X = np.stack([s, np.ones_like(s)], axis=1)

    def loss(t: np.ndarray) -> float:
        z = X @ t
        return float(np.mean(np.logaddexp(0.0, z) - y * z))

    theta = np.array([1.0, 0.0])
    current = loss(theta)
    for _ in range(max_iter):
        z = X @ theta
        p = sigmoid(z)
        grad = X.T @ (p - y) / s.size
        w = p * (1.0 - p)
        hess = (X * w[:, None]).T @ X / s.size + 1e-12 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        # Halve the Newton step until the loss goes down: far from the optimum (large, saturated
        # logits) the full step overshoots.
        for _ in range(60):
            trial = theta - step
            if (value := loss(trial)) <= current:
                break
            step = step / 2
        else:
            break
        theta, current = trial, value
        if np.max(np.abs(step)) < tol:
            break
    a, b = float(theta[0]), float(theta[1])
    if not (np.isfinite(a) and np.isfinite(b)) or a <= 0:
        return 1.0, 0.0
    return a, b
