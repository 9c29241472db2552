"""Corpus figures of a ranking: top-hypothesis SemER (micro) and IRER (REFERENCE.md s.2)."""
from __future__ import annotations

import numpy as np

from rerank.metrics.corpus import corpus_semer, irer
from rerank.ranking import top_per_utterance


def top_hypothesis_outcome(utt_index, score, sem_errors, ie, sem_total_per_utt) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per utterance: the top row (-1: none), its errors and its IE.

    An utterance for which no domain emitted counts ``errors = total`` and ``IE = 1``.
    """
    totals = np.asarray(sem_total_per_utt)
    top = top_per_utterance(utt_index, score, len(totals))
    has = top >= 0
    if not has.any():  # no hypothesis at all (an empty split, or nothing emitted)
        return top, totals.astype(np.float64), np.ones(len(totals), dtype=np.int64)
    errors = np.where(has, np.asarray(sem_errors)[np.where(has, top, 0)], totals)
    ie_top = np.where(has, np.asarray(ie)[np.where(has, top, 0)], 1)
    return top, errors, ie_top


def top_hypothesis_figures(utt_index, score, sem_errors, ie, sem_total_per_utt) -> dict[str, float]:
    _, errors, ie_top = top_hypothesis_outcome(utt_index, score, sem_errors, ie, sem_total_per_utt)
    return {"semer": corpus_semer(errors, sem_total_per_utt), "irer": irer(ie_top)}


def baseline_score(dc, ic, ner) -> np.ndarray:
    """The unweighted baseline: ``dc * ic * ner``, used to rank and as the confidence."""
    return np.asarray(dc) * np.asarray(ic) * np.asarray(ner)


def oracle_score(semer) -> np.ndarray:
    """Ranking by lowest SemER: the floor that no re-ranking of these hypotheses goes below."""
    return -np.asarray(semer)
