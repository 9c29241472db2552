"""Vectorised per-utterance ranking over flat hypothesis arrays."""
from __future__ import annotations

import numpy as np


#: below this many rows a plain lexsort is as fast as the grouped sort
_SMALL = 4096


def order_within_utterances(utt_index: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Permutation that groups rows by utterance and sorts each group by descending score.

    Ties keep the input order (a stable sort), so a ranking is reproducible.
    The result is ``np.lexsort((-score, utt_index))``, computed faster for many rows.
    """
    utt_index = np.asarray(utt_index)
    neg = -np.asarray(score, dtype=np.float64)
    n = len(utt_index)
    if n < _SMALL:
        return np.lexsort((neg, utt_index))
    # Stable sort by utterance (cheap: the input is usually a few sorted runs, one per domain),
    # then a stable sort of every utterance's scores at once in a [utterances, longest] matrix,
    # padded with +inf after the real entries; a stable sort keeps the padding last among
    # equal values and it is dropped, so the order equals the lexsort's.
    by_utt = np.argsort(utt_index, kind="stable")
    u = utt_index[by_utt]
    start = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    sizes = np.diff(np.r_[start, n])
    width = int(sizes.max())
    if len(start) * width > 4 * n + 1024:  # very uneven utterances: the matrix would be mostly padding
        return np.lexsort((neg, utt_index))
    padded = np.full((len(start), width), np.inf)
    padded[np.repeat(np.arange(len(start)), sizes), np.arange(n) - np.repeat(start, sizes)] = neg[by_utt]
    within = np.argsort(padded, axis=1, kind="stable")
    real = within < sizes[:, None]
    return by_utt[(start[:, None] + within)[real]]


def top_per_utterance(utt_index: np.ndarray, score: np.ndarray, n_utts: int) -> np.ndarray:
    """Row of the best-scored hypothesis of every utterance ``0..n_utts-1``; -1 where there is none."""
    utt_index = np.asarray(utt_index)
    top = np.full(n_utts, -1, dtype=np.int64)
    if len(utt_index) == 0:
        return top
    order = order_within_utterances(utt_index, score)
    sorted_utt = utt_index[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_utt[1:] != sorted_utt[:-1]
    top[sorted_utt[first]] = order[first]
    return top


def rank_within_utterances(utt_index: np.ndarray, score: np.ndarray) -> np.ndarray:
    """0-based rank of every row inside its utterance by descending score."""
    utt_index = np.asarray(utt_index)
    order = order_within_utterances(utt_index, score)
    sorted_utt = utt_index[order]
    start = np.ones(len(order), dtype=bool)
    start[1:] = sorted_utt[1:] != sorted_utt[:-1]
    group_start = np.maximum.accumulate(np.where(start, np.arange(len(order)), 0))
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(len(order)) - group_start
    return ranks
