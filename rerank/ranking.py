"""Vectorised per-utterance ranking over flat hypothesis arrays."""
from __future__ import annotations

import numpy as np


def order_within_utterances(utt_index: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Permutation that groups rows by utterance and sorts each group by descending score.

    Ties keep the input order (a stable sort), so a ranking is reproducible.
    """
    return np.lexsort((-np.asarray(score, dtype=np.float64), np.asarray(utt_index)))


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
