"""Exact decoding of a linear-chain CRF: the k best labellings and ``log Z``, batched.

Both work on ``B`` sentences of equal length at once: emissions ``E [B, n, L]``
(``E[b, t]``: the summed weights of token ``t``'s attributes per label) and
transitions ``T [L, L]``, scored as in :mod:`rerank.recognizers.crfsuite_model`.
:func:`kbest` keeps top-k (score, back-pointer) lists per label and position,
vectorised over labels and sentences; :func:`log_partition` is the forward
algorithm, so that ``P(y | x) = exp(score(y) - log Z(x))``.
"""
from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

__all__ = ["kbest", "kbest_probabilities", "log_partition", "tag_marginals", "path_marginals"]

# The pairs depend on (k, kp) only, and every step of every call asks for them again.
_PAIRS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _pairs(k: int, kp: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidate (m, r) pairs of the pruned k-best step: ``m + r < k`` and ``r < kp``."""
    key = (k, kp)
    if key not in _PAIRS:
        mr = [(m, r) for m in range(k) for r in range(min(kp, k - m))]
        _PAIRS[key] = (np.array([m for m, _ in mr], dtype=np.intp), np.array([r for _, r in mr], dtype=np.intp))
    return _PAIRS[key]


def kbest(E: np.ndarray, T: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-best labellings of ``B`` sentences of equal length ``n``.

    ``E`` is ``[B, n, L]``, ``T`` is ``[L, L]``. Returns ``(paths [B, kf, n]`` label
    indices, ``scores [B, kf])``, best first, ``kf = min(k, L**n)``.

    Works on costs (negated scores), so that an ascending sort gives the best first.
    ``cost[b, j, r]`` is the r-th best cost of a prefix ending in label ``j`` (sorted
    along ``r``); its width is ``min(k, L**(t+1))``, so every entry is a real,
    distinct prefix and no infinite padding is needed. ``backptrs[t-1][b, j, r]``
    is the flat index ``i * width_{t-1} + r'`` of its predecessor.

    A step extends the prefixes of every label ``i`` by ``j``. Only the k labels
    ``i`` with the best heads ``cost[i, 0] - T[i, j]`` can contribute to ``j``'s
    k best, and the m-th of them (0-based) only with ranks ``r < k - m``: any
    other candidate has at least k candidates at least as good (the heads of the
    better labels and its own better ranks). So a step sorts k(k+1)/2 candidates
    per label instead of L*k. Ties are broken arbitrarily but the scores are exact.
    """
    B, n, L = E.shape
    negTT = np.ascontiguousarray(-T.T)                         # [L_to, L_from]
    cost = -E[:, 0, :, None]                                   # [B, L, 1]
    b3 = np.arange(B)[:, None, None]
    j3 = np.arange(L)[None, :, None]
    backptrs, widths = [], [1]
    for t in range(1, n):
        kp = widths[-1]
        kt = min(k, L * kp)
        heads = cost[:, None, :, 0] + negTT                    # [B, L_to, L_from]
        if kt == 1:
            best = heads.argmin(axis=2)[:, :, None]            # kp == 1 here
            new = heads[b3, j3, best]
            bp = best
        elif L <= k:
            # No pruning possible: sort all L * kp candidates.
            cand = (cost[:, None, :, :] + negTT[None, :, :, None]).reshape(B, L, L * kp)
            order = np.argsort(cand, axis=2)[:, :, :kt]
            new = cand[b3, j3, order]
            bp = order
        else:
            m_idx, r_idx = _pairs(k, kp)
            top = np.argsort(heads, axis=2)[:, :, :k]          # [B, L_to, k] labels, best head first
            labs = top[:, :, m_idx]                            # [B, L_to, P]
            cand = cost[b3, labs, r_idx] + negTT[j3, labs]     # [B, L_to, P]
            order = np.argsort(cand, axis=2)[:, :, :kt]
            new = cand[b3, j3, order]
            bp = labs[b3, j3, order] * kp + r_idx[order]
        new -= E[:, t, :, None]
        cost = new
        backptrs.append(bp)
        widths.append(kt)
    kp = widths[-1]
    final = cost.reshape(B, L * kp)
    kf = min(k, L * kp)
    order = np.argsort(final, axis=1)[:, :kf]  # flat index j * kp + r
    b2 = np.arange(B)[:, None]
    scores = -final[b2, order]
    paths = np.empty((B, kf, n), dtype=np.intp)
    flat = order
    for t in range(n - 1, 0, -1):
        lab, rank = np.divmod(flat, widths[t])
        paths[:, :, t] = lab
        flat = backptrs[t - 1][b2, lab, rank]
    paths[:, :, 0] = flat  # widths[0] == 1
    return paths, scores


def log_partition(E: np.ndarray, T: np.ndarray) -> np.ndarray:
    """``log Z`` of ``B`` sentences of equal length: the forward algorithm, ``[B]``.

    Runs in probability space with emissions and transitions shifted by their
    maxima (every factor is <= 1, so alpha grows by at most L per step) and
    rescaled every few steps, as crfsuite scales its forward pass; falls back to
    log-space if anything under/overflows (weights spanning hundreds of nats).
    """
    B, n, L = E.shape
    m = E.max(axis=2, keepdims=True)
    expE = np.exp(E - m).transpose(1, 0, 2)  # [n, B, L]
    tmax = float(T.max())
    expT = np.exp(T - tmax)
    alpha = expE[0]
    log_scale = np.zeros(B)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        for t in range(1, n):
            alpha = (alpha @ expT) * expE[t]
            if t % 4 == 0:
                s = alpha.sum(axis=1)
                log_scale += np.log(s)
                alpha = alpha / s[:, None]
        logZ = log_scale + np.log(alpha.sum(axis=1)) + m.sum(axis=(1, 2)) + tmax * (n - 1)
    if np.all(np.isfinite(logZ)):
        return logZ
    # Log-space fallback (never needed with realistic weights).
    la = E[:, 0, :]
    for t in range(1, n):
        x = la[:, :, None] + T[None, :, :]
        mx = x.max(axis=1)
        la = mx + np.log(np.exp(x - mx[:, None, :]).sum(axis=1)) + E[:, t, :]
    mx = la.max(axis=1)
    return mx + np.log(np.exp(la - mx[:, None]).sum(axis=1))


def kbest_probabilities(E: np.ndarray, T: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best labellings (:func:`kbest`) and their probabilities ``exp(score - log Z)``, ``[B, k]``.

    Capped at 1: rounding can take the best of a peaked distribution to 1 + 1e-16.
    """
    paths, scores = kbest(E, T, k)
    return paths, np.minimum(np.exp(scores - log_partition(E, T)[:, None]), 1.0)


def tag_marginals(E: np.ndarray, T: np.ndarray) -> np.ndarray:
    r"""``P(y_t = j | x)`` of ``B`` sentences of equal length: forward-backward in log space, ``[B, n, L]``.

    .. math::
        P(y_t = j \mid x) = \exp(\alpha_t(j) + \beta_t(j) - \log Z(x))

    with :math:`\alpha_t(j) = E_{t,j} + \log\sum_i \exp(\alpha_{t-1}(i) + T_{ij})` and
    :math:`\beta_t(i) = \log\sum_j \exp(T_{ij} + E_{t+1,j} + \beta_{t+1}(j))`, :math:`\beta_{n-1} = 0`.

    Example:
        >>> E = np.log(np.array([[[0.9, 0.1], [0.5, 0.5]]]))
        >>> tag_marginals(E, np.zeros((2, 2)))[0].round(3).tolist()
        [[0.9, 0.1], [0.5, 0.5]]
    """
    B, n, L = E.shape
    alpha = np.empty((B, n, L))
    beta = np.zeros((B, n, L))
    alpha[:, 0] = E[:, 0]
    for t in range(1, n):
        alpha[:, t] = E[:, t] + logsumexp(alpha[:, t - 1, :, None] + T[None], axis=1)
    for t in range(n - 2, -1, -1):
        beta[:, t] = logsumexp(T[None] + (E[:, t + 1] + beta[:, t + 1])[:, None, :], axis=2)
    log_z = logsumexp(alpha[:, -1], axis=1)
    return np.exp(alpha + beta - log_z[:, None, None])


def path_marginals(marginals: np.ndarray, paths: np.ndarray) -> np.ndarray:
    """``(min, mean)`` over the tokens of ``P(y_t = path_t | x)`` of every path, ``[B, k, 2]``.

    ``marginals`` from :func:`tag_marginals` ``[B, n, L]``, ``paths`` from :func:`kbest` ``[B, k, n]``:
    how sure the tagger is of the labelling's least certain token, and on average.
    """
    B, k, n = paths.shape
    picked = marginals[np.arange(B)[:, None, None], np.arange(n)[None, None, :], paths]  # [B, k, n]
    return np.stack([picked.min(axis=2), picked.mean(axis=2)], axis=2)
