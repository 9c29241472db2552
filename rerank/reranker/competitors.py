"""Logits of the other domains, held fixed for ``loss.candidates=utterance``.

``loss.competitors=baseline``: the unweighted baseline read as a probability,
``logit(dc*ic*ner)``. ``published``: the other domains' latest published
re-rankers (a domain without one falls back to the baseline, with a warning).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from rerank.hypotheses.figures import baseline_score
from rerank.registry import Registry, RegistryError
from rerank.reranker.data import read_table
from rerank.reranker.features import features_from_table

log = logging.getLogger(__name__)
EPS = 1e-6


def baseline_logit(dc, ic, ner) -> np.ndarray:
    p = np.clip(baseline_score(dc, ic, ner), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def other_domains(
    data_dir: Path, domains: list[str], domain: str, split: str, corpus: str, competitors: str, registry: Registry | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(utt_index, logit, semer) of every hypothesis of the other domains in ``split``."""
    if competitors not in ("baseline", "published"):
        raise ValueError(f"loss.competitors must be 'baseline' or 'published', not {competitors!r}")
    utts, logits, semers = [], [], []
    for d in domains:
        if d == domain:
            continue
        table = read_table(data_dir, d, split)
        logit = None
        if competitors == "published" and registry is not None:
            try:
                published = registry.load(corpus, d)
                logit = published.model.numpy_scorer()(features_from_table(table, published.spec))
            except RegistryError as err:
                log.warning("competitor %s: %s; using the baseline for it", d, err)
        if logit is None:
            logit = baseline_logit(table["dc"].to_numpy(), table["ic"].to_numpy(), table["ner"].to_numpy())
        utts.append(table["utt_index"].to_numpy())
        logits.append(np.asarray(logit, dtype=np.float64))
        semers.append(table["semer"].to_numpy())
    if not utts:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    return np.concatenate(utts), np.concatenate(logits), np.concatenate(semers)
