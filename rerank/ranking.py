"""Vectorised per-utterance ranking over flat hypothesis arrays."""
from __future__ import annotations

import numpy as np

#: below this many rows a plain lexsort is as fast as the grouped sort
_SMALL = 4096


def _grouped_order(utt_index: np.ndarray, score) -> tuple[np.ndarray, np.ndarray]:
    """``np.lexsort((-score, utt_index))`` and the 0-based position of each of its rows inside its utterance."""
    neg = -np.asarray(score, dtype=np.float64)
    n = len(utt_index)
    if n >= _SMALL:
        # Stable sort by utterance (cheap: the input is usually a few sorted runs, one per domain),
        # then a stable sort of every utterance's scores at once in a [utterances, longest] matrix,
        # padded with NaN after the real entries: NaN sorts last and a stable sort keeps the padding
        # after real NaNs, so every row sorts its real entries first, in the lexsort's order.
        by_utt = np.argsort(utt_index, kind="stable")
        u = utt_index[by_utt]
        start = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
        sizes = np.diff(np.r_[start, n])
        width = int(sizes.max())
        if len(start) * width <= 4 * n + 1024:  # else very uneven utterances: the matrix would be mostly padding
            padded = np.full((len(start), width), np.nan)
            padded[np.repeat(np.arange(len(start)), sizes), np.arange(n) - np.repeat(start, sizes)] = neg[by_utt]
            within = np.argsort(padded, axis=1, kind="stable")
            real = within < sizes[:, None]
            order = by_utt[(start[:, None] + within)[real]]
            pos = np.broadcast_to(np.arange(width), within.shape)[real]
            return order, pos
    order = np.lexsort((neg, utt_index))
    sorted_utt = utt_index[order]
    start = np.ones(n, dtype=bool)
    start[1:] = sorted_utt[1:] != sorted_utt[:-1]
    group_start = np.maximum.accumulate(np.where(start, np.arange(n), 0)) if n else np.zeros(0, np.int64)
    return order, np.arange(n) - group_start


def order_within_utterances(utt_index: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Permutation that groups rows by utterance and sorts each group by descending score.

    Ties keep the input order (a stable sort), so a ranking is reproducible:
    the result is ``np.lexsort((-score, utt_index))``.
    """
    return _grouped_order(np.asarray(utt_index), score)[0]


def top_per_utterance(utt_index: np.ndarray, score: np.ndarray, n_utts: int) -> np.ndarray:
    """Row of the best-scored hypothesis of every utterance ``0..n_utts-1``; -1 where there is none."""
    utt_index = np.asarray(utt_index)
    top = np.full(n_utts, -1, dtype=np.int64)
    if len(utt_index) == 0:
        return top
    order, pos = _grouped_order(utt_index, score)
    first = order[pos == 0]
    top[utt_index[first]] = first
    return top


def rank_within_utterances(utt_index: np.ndarray, score: np.ndarray) -> np.ndarray:
    """0-based rank of every row inside its utterance by descending score."""
    utt_index = np.asarray(utt_index)
    order, pos = _grouped_order(utt_index, score)
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = pos
    return ranks
