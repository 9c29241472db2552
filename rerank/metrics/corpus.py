r"""Corpus figures from the top-ranked hypothesis of each utterance, and a bootstrap.

REFERENCE.md s.2: corpus figures use the top hypothesis of each utterance.
An utterance for which no domain emitted a hypothesis counts as
``errors = total(g)`` and ``IE = 1``: **the caller fills those in** before calling
:func:`corpus_semer` / :func:`irer` (these functions only see numbers). For
:func:`slot_f1`, pass ``None`` as the hypothesis slots of such an utterance: its
gold slots then count as misses.

.. math::
    \text{SemER} = \frac{\sum_u \text{errors}_u}{\sum_u \text{total}_u}
    \ \text{(micro)}, \qquad
    \text{IRER} = \frac{1}{|U|} \sum_u IE_u
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from rerank.metrics.semer import slot_multiset

__all__ = [
    "corpus_semer",
    "irer",
    "slot_counts",
    "slot_f1_from_counts",
    "slot_f1",
    "bootstrap_ci",
    "resample_counts",
    "percentile_interval",
]


def _nonempty_1d(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError(f"{name}: empty input (need at least one utterance)")
    return a


def corpus_semer(errors, totals) -> float:
    r"""Corpus SemER, micro-averaged over utterances (REFERENCE.md s.2).

    .. math::
        \text{SemER} = \frac{\sum_u \text{errors}_u}{\sum_u \text{total}_u}

    This is *not* the mean of the per-utterance SemERs (macro): long utterances
    weigh more. An utterance without any hypothesis must be passed with
    ``errors = total`` (the caller fills it in).

    Example:
        >>> corpus_semer([0, 1, 3], [3, 3, 2])    # 4 / 8
        0.5
    """
    e = _nonempty_1d(errors, "corpus_semer")
    t = _nonempty_1d(totals, "corpus_semer")
    if e.size != t.size:
        raise ValueError(f"corpus_semer: errors and totals differ in length ({e.size} vs {t.size})")
    denom = t.sum()
    if denom <= 0:
        raise ValueError("corpus_semer: sum(totals) must be positive")
    return float(e.sum() / denom)


def irer(ie) -> float:
    r"""Interpretation error rate: the mean of the per-utterance IE in {0, 1}.

    .. math::
        \text{IRER} = \frac{1}{|U|} \sum_u IE_u

    An utterance without any hypothesis must be passed with ``IE = 1``.

    Example:
        >>> irer([0, 1, 0, 1])
        0.5
    """
    return float(_nonempty_1d(ie, "irer").mean())


def slot_counts(
    gold_slots_list: Sequence[Iterable], hyp_slots_list: Sequence[Optional[Iterable]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Per-utterance slot counts ``(tp, n_hyp, n_gold)`` as int64 arrays.

    ``tp_u = |G_u \cap H_u|`` over multisets of ``(type, normalised value)``.
    ``hyp_slots_list[u] is None`` means "no hypothesis": ``n_hyp_u = tp_u = 0``.
    Use with :func:`slot_f1_from_counts` to bootstrap slot F1 cheaply.

    Example:
        >>> tp, nh, ng = slot_counts([[("song", "a")], [("x", "b")]], [[("song", "A")], None])
        >>> tp.tolist(), nh.tolist(), ng.tolist()
        ([1, 0], [1, 0], [1, 1])
    """
    if len(gold_slots_list) != len(hyp_slots_list):
        raise ValueError(
            f"slot_counts: {len(gold_slots_list)} gold slot lists but {len(hyp_slots_list)} hypothesis slot lists"
        )
    n = len(gold_slots_list)
    tp = np.zeros(n, dtype=np.int64)
    nh = np.zeros(n, dtype=np.int64)
    ng = np.zeros(n, dtype=np.int64)
    for u, (gold, hyp) in enumerate(zip(gold_slots_list, hyp_slots_list)):
        g = slot_multiset(gold)
        ng[u] = sum(g.values())
        if hyp is None:
            continue
        h = slot_multiset(hyp)
        tp[u] = sum(min(c, g.get(key, 0)) for key, c in h.items())
        nh[u] = sum(h.values())
    return tp, nh, ng


def slot_f1_from_counts(tp, n_hyp, n_gold, zero_division: float = 1.0) -> float:
    r"""Micro slot F1 from per-utterance counts (see :func:`slot_counts`).

    .. math::
        F_1 = \frac{2\,TP}{\sum_u n^{hyp}_u + \sum_u n^{gold}_u}

    (equivalently ``2 P R / (P + R)`` with micro precision and recall). When the
    corpus has no gold and no hypothesis slots at all, returns ``zero_division``.

    Example:
        >>> slot_f1_from_counts([1, 0], [1, 0], [1, 1])   # 2*1 / (1 + 2)
        0.6666666666666666
    """
    denom = float(np.sum(n_hyp)) + float(np.sum(n_gold))
    if denom == 0:
        return float(zero_division)
    return 2.0 * float(np.sum(tp)) / denom


def slot_f1(gold_slots_list, hyp_slots_list, zero_division: float = 1.0) -> float:
    r"""Micro slot F1 over the top hypothesis of each utterance.

    Per utterance, slots are multisets of ``(type, normalised value)``;
    :math:`TP_u = |G_u \cap H_u|`, :math:`FP_u = |H_u| - TP_u`,
    :math:`FN_u = |G_u| - TP_u`, summed over the corpus:

    .. math::
        P = \frac{TP}{TP + FP}, \quad R = \frac{TP}{TP + FN}, \quad
        F_1 = \frac{2 P R}{P + R} = \frac{2\,TP}{2\,TP + FP + FN}

    An utterance without a hypothesis (``None`` in ``hyp_slots_list``)
    contributes its gold slots as misses (FN). With no slots anywhere the result
    is ``zero_division`` (default 1.0: nothing to find, nothing wrongly found).

    Example:
        >>> gold = [[("song", "thriller"), ("artist", "michael jackson")], [("date", "today")]]
        >>> hyp = [[("song", "Thriller"), ("artist", "prince")], None]
        >>> round(slot_f1(gold, hyp), 4)   # TP=1, FP=1, FN=2 -> 2/5
        0.4
    """
    return slot_f1_from_counts(*slot_counts(gold_slots_list, hyp_slots_list), zero_division=zero_division)


# rows of the index matrix drawn at once: bounds memory to ~_CHUNK_ELEMS indices
_CHUNK_ELEMS = 1 << 22


def bootstrap_ci(
    statistic: Callable[..., float],
    *arrays,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    vectorized: bool = False,
    bias_corrected: bool = False,
) -> tuple[float, float]:
    r"""Percentile bootstrap confidence interval over utterances.

    Rows (utterances, axis 0) of all ``arrays`` are resampled *jointly* with
    replacement: index matrix :math:`J \in \{0..n-1\}^{B \times n}`,
    :math:`\theta^*_r = \text{statistic}(a_1[J_r], \dots, a_k[J_r])`, and

    .. math::
        \text{CI} = \big[q_{\alpha/2}(\theta^*), \ q_{1 - \alpha/2}(\theta^*)\big],
        \qquad \alpha = 1 - \text{confidence}

    with ``np.quantile`` (linear interpolation). The indices come from
    ``np.random.default_rng(seed)``; they are drawn in row blocks to bound memory,
    which yields exactly the same matrix as one ``rng.integers(0, n, (B, n))``
    draw, so the result depends only on ``seed`` (not on the block size).

    With ``bias_corrected=True`` both ends move by the bootstrap's estimate of
    the statistic's bias, :math:`\hat b = \overline{\theta^*} - \hat\theta`:

    .. math::
        \text{CI} = \big[q_{\alpha/2}(\theta^*) - \hat b, \ q_{1 - \alpha/2}(\theta^*) - \hat b\big]

    For a statistic that is biased upwards, such as a binned ECE (a resample
    repeats utterances, which makes every bin look less calibrated), the plain
    percentile interval can lie entirely above the estimate itself.

    Args:
        statistic: called as ``statistic(*resampled_arrays)``, returning a float.
            With ``vectorized=True`` it receives arrays of shape
            ``(block, n, ...)`` and must return ``block`` values (e.g.
            ``lambda e, t: e.sum(1) / t.sum(1)``).
        arrays: per-utterance arrays of equal length ``n`` (numeric; for slot F1
            pass the counts of :func:`slot_counts`).
        n_resamples: number of resamples ``B``.
        confidence: coverage of the interval, in (0, 1).
        seed: seed of the generator.
        bias_corrected: shift the interval by the estimated bias (above).

    Example:
        >>> ie = [0] * 80 + [1] * 20
        >>> lo, hi = bootstrap_ci(irer, ie, n_resamples=200, seed=0)
        >>> lo < irer(ie) < hi
        True
    """
    if not arrays:
        raise ValueError("bootstrap_ci: pass at least one array to resample")
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"bootstrap_ci: confidence must lie in (0, 1), got {confidence!r}")
    if int(n_resamples) < 1:
        raise ValueError(f"bootstrap_ci: n_resamples must be >= 1, got {n_resamples!r}")
    n_resamples = int(n_resamples)
    arrs = [np.asarray(a) for a in arrays]
    n = len(arrs[0]) if arrs[0].ndim else 0
    for i, a in enumerate(arrs):
        if a.ndim == 0 or len(a) != n:
            raise ValueError(
                f"bootstrap_ci: all arrays need the same length; array 0 has {n} rows, "
                f"array {i} has {len(a) if a.ndim else 'no'} rows"
            )
    if n == 0:
        raise ValueError("bootstrap_ci: empty input (need at least one utterance)")

    rng = np.random.default_rng(seed)
    block = max(1, min(n_resamples, _CHUNK_ELEMS // n))
    stats = np.empty(n_resamples, dtype=np.float64)
    done = 0
    while done < n_resamples:
        b = min(block, n_resamples - done)
        idx = rng.integers(0, n, size=(b, n))
        if vectorized:
            stats[done : done + b] = np.asarray(statistic(*(a[idx] for a in arrs)), dtype=np.float64).reshape(b)
        else:
            for r in range(b):
                row = idx[r]
                stats[done + r] = statistic(*(a[row] for a in arrs))
        done += b
    lo, hi = percentile_interval(stats, confidence)
    if bias_corrected:
        whole = statistic(*(a[None] for a in arrs)) if vectorized else statistic(*arrs)
        bias = float(stats.mean()) - float(np.asarray(whole, dtype=np.float64).reshape(-1)[0])
        lo, hi = lo - bias, hi - bias
    return float(lo), float(hi)


def resample_counts(n: int, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    r"""How often each of ``n`` utterances appears in each bootstrap resample: a ``(B, n)`` matrix ``C``.

    The resamples are :func:`bootstrap_ci`'s (the same draws of ``np.random.default_rng(seed)``),
    so for a ratio of sums :math:`\theta^*_r = \frac{\sum_j C_{rj} a_j}{\sum_j C_{rj} b_j}` equals
    ``bootstrap_ci``'s resampled statistic. A statistic that is a sum over a few utterances (a
    paired difference that is zero almost everywhere) then costs a product with those columns only,
    which is what lets a release planner evaluate thousands of worlds.

    Example:
        >>> C = resample_counts(5, n_resamples=3, seed=0)
        >>> C.shape, bool((C.sum(1) == 5).all())
        ((3, 5), True)
    """
    if n < 1 or n_resamples < 1:
        raise ValueError(f"resample_counts: need n >= 1 and n_resamples >= 1, got {n} and {n_resamples}")
    rng = np.random.default_rng(seed)
    block = max(1, min(n_resamples, _CHUNK_ELEMS // n))
    out = np.zeros((n_resamples, n), dtype=np.uint16 if n < 65536 else np.uint32)
    done = 0
    while done < n_resamples:
        b = min(block, n_resamples - done)
        idx = rng.integers(0, n, size=(b, n))
        for r in range(b):
            out[done + r] = np.bincount(idx[r], minlength=n)
        done += b
    return out


def percentile_interval(stats: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The percentile interval of resampled statistics (``bootstrap_ci``'s, without its resampling)."""
    alpha = 1.0 - confidence
    lo, hi = np.quantile(np.asarray(stats, np.float64), [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)
