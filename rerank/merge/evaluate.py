"""Evaluation of a ranking on one split (REFERENCE.md s.2-4), overall and per gold domain.

A flat dict of figures per system, with bootstrap 95% intervals for SemER,
IRER and ECE (resampling utterances), in the manner of alexa/massive.
Calibration figures read the top hypothesis' score as ``P(IE = 0)``;
utterances with no hypothesis have no confidence and are left out of them
(they still count as full errors in SemER and IRER).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa

from rerank.hypotheses.figures import baseline_score, top_hypothesis_outcome
from rerank.hypotheses.schema import SLOT_TYPE
from rerank.hypotheses.tables import TableSet
from rerank.metrics.calibration import bin_index, brier, ece, ece_rows, mce, nll
from rerank.metrics.corpus import bootstrap_ci, corpus_semer, irer, slot_counts, slot_f1_from_counts

#: the figures of a system, overall and per gold domain; ``*_top``: of the top hypothesis' score read as
#: P(exactly right), ``*_all`` (overall only): of every hypothesis' score; ``*_ci``: bootstrap 95% intervals
FIGURES = ("semer", "irer", "domain_error", "intent_error", "slot_f1", "ece_top", "mce_top", "brier_top", "nll_top")


@dataclass
class SplitData:
    """The hypotheses of every domain of one split, concatenated in sorted-domain order."""

    split: str
    domains: list[str]
    tables: dict[str, pa.Table]
    gold: pa.Table
    utt_index: np.ndarray
    sem_errors: np.ndarray
    ie: np.ndarray
    semer: np.ndarray
    domain_code: np.ndarray
    intent: np.ndarray
    totals: np.ndarray
    gold_domain: np.ndarray
    gold_intent: np.ndarray

    @property
    def n_utterances(self) -> int:
        return len(self.totals)

    def slots_of(self, rows: np.ndarray) -> list[list[tuple[str, str]]]:
        # one take from every domain's slots at once: a row at a time costs a Python call per utterance
        return [[(s["type"], s["value"]) for s in slots] for slots in self._slots.take(np.asarray(rows, np.int64)).to_pylist()]

    @cached_property
    def _slots(self) -> pa.ChunkedArray:
        """Every domain's ``slots``, in row order."""
        return pa.chunked_array([c for d in self.domains for c in self.tables[d]["slots"].chunks], type=SLOT_TYPE)

    @cached_property
    def gold_slots(self) -> list[list[tuple[str, str]]]:
        """Every utterance's gold slots as ``(type, value)`` pairs (what :func:`slot_counts` reads)."""
        return [[(s["type"], s["value"]) for s in row] for row in self.gold["gold_slots"].to_pylist()]

    @cached_property
    def gold_domains(self) -> dict[str, np.ndarray]:
        """The utterances of every gold domain (sorted), as index arrays: one pass, not one comparison per domain."""
        names, codes = np.unique(self.gold_domain.astype(str), return_inverse=True)
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
        return {str(d): order[bounds[i]:bounds[i + 1]] for i, d in enumerate(names)}


def load_split(tables_set: TableSet, split: str, domains: Sequence[str] | None = None) -> SplitData:
    """Every domain's hypotheses of ``split`` (checked against the manifest) and the gold."""
    tables = {d: tables_set.read(d, split) for d in sorted(domains if domains is not None else tables_set.domains)}
    gold = tables_set.read_utterances(split)
    names = sorted(tables)

    def cat(col, dtype=None):
        parts = [tables[d][col].to_numpy(zero_copy_only=False) for d in names]
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype or np.float64)

    return SplitData(
        split=split, domains=names, tables=tables, gold=gold,
        utt_index=cat("utt_index", np.int64), sem_errors=cat("sem_errors", np.float64), ie=cat("ie", np.int64),
        semer=cat("semer", np.float64),
        domain_code=(np.concatenate([np.full(tables[d].num_rows, j, np.int32) for j, d in enumerate(names)])
                     if names else np.zeros(0, np.int32)),
        intent=cat("intent", object), totals=gold["sem_total"].to_numpy().astype(np.float64),
        gold_domain=np.array(gold["gold_domain"].to_pylist(), dtype=object),
        gold_intent=np.array(gold["gold_intent"].to_pylist(), dtype=object),
    )


def split_baseline(data: SplitData) -> np.ndarray:
    """The unweighted baseline ``dc * ic * ner`` of every hypothesis row of ``data``."""
    return baseline_score(*(np.concatenate([data.tables[d][c].to_numpy() for d in data.domains]) for c in ("dc", "ic", "ner")))


def ece_interval(conf: np.ndarray, correct: np.ndarray, n_boot: int, seed: int) -> list[float]:
    """The bootstrap interval of the ECE (over utterances), corrected for the ECE's upward bias under resampling.

    The correction can take the lower end below 0, which an ECE cannot be: it is clipped there.
    """
    lo, hi = bootstrap_ci(ece_rows, conf, correct.astype(float), bin_index(conf), n_resamples=n_boot, seed=seed,
                          vectorized=True, bias_corrected=True)
    return [max(lo, 0.0), max(hi, 0.0)]


def figures(errors, totals, ie_top, dom_err, int_err, tp, nh, ng, conf, correct, n_boot: int, seed: int) -> dict:
    """The flat dict of one system on one set of utterances; ``conf`` None when not calibrated."""
    out: dict = {
        "n": int(len(totals)),
        "semer": corpus_semer(errors, totals),
        "irer": irer(ie_top),
        "domain_error": float(dom_err.mean()),
        "intent_error": float(int_err.mean()),
        "slot_f1": slot_f1_from_counts(tp, nh, ng),
    }
    if n_boot:
        out["semer_ci"] = list(bootstrap_ci(lambda e, t: e.sum(1) / t.sum(1), errors, totals,
                                            n_resamples=n_boot, seed=seed, vectorized=True))
        out["irer_ci"] = list(bootstrap_ci(lambda i: i.mean(1), ie_top.astype(float), n_resamples=n_boot, seed=seed, vectorized=True))
    if conf is not None and len(conf):
        out.update(ece_top=ece(conf, correct), mce_top=mce(conf, correct), brier_top=brier(conf, correct), nll_top=nll(conf, correct))
        if n_boot:
            out["ece_top_ci"] = ece_interval(conf, correct, n_boot, seed)
    else:
        out.update(ece_top=None, mce_top=None, brier_top=None, nll_top=None)
    return out


@dataclass
class TopHypotheses:
    """The top hypothesis' confidence and correctness of every utterance that has one (for the diagrams)."""

    conf: np.ndarray
    correct: np.ndarray
    gold_domain: np.ndarray


def top_hypotheses(data: SplitData, score: np.ndarray, top_calibration: Callable | None = None) -> TopHypotheses:
    top, _, ie_top = top_hypothesis_outcome(data.utt_index, score, data.sem_errors, data.ie, data.totals)
    has = top >= 0
    conf = score[top[has]]
    return TopHypotheses(top_calibration(conf) if top_calibration is not None else conf, 1.0 - ie_top[has], data.gold_domain[has])


def evaluate(data: SplitData, score: np.ndarray, calibrated: bool = True, n_boot: int = 1000, seed: int = 0,
             top_calibration: Callable | None = None) -> dict:
    """Figures of the ranking by ``score`` (one per hypothesis row of ``data``): flat dicts of :data:`FIGURES`.

    Returns ``{"overall": {...}, "per_domain": {gold domain: {...}}}``; ``calibrated=False``
    (a score that is no probability, e.g. the oracle's) leaves the calibration figures ``None``.
    :func:`top_hypotheses` gives the arrays behind the calibration figures, for diagrams.
    ``top_calibration`` (the merge's, :mod:`rerank.merge.top_calibration`) maps the top scores to the
    confidence the top-hypothesis figures measure; the ``*_all`` figures read the scores as they are.
    """
    top, errors, ie_top = top_hypothesis_outcome(data.utt_index, score, data.sem_errors, data.ie, data.totals)
    has = top >= 0
    t = np.where(has, top, 0)
    top_domain = np.where(has, np.array(data.domains, dtype=object)[data.domain_code[t]] if len(data.domain_code) else "", None)
    dom_err = (~has | (top_domain != data.gold_domain)).astype(float)
    int_err = (~has | (np.where(has, data.intent[t] if len(data.intent) else "", None) != data.gold_intent)).astype(float)
    hyp_slots: list = [None] * data.n_utterances
    for u, slots in zip(np.flatnonzero(has), data.slots_of(top[has])):
        hyp_slots[u] = slots
    tp, nh, ng = slot_counts(data.gold_slots, hyp_slots)
    conf = (top_calibration(score[top[has]]) if top_calibration is not None else score[top[has]]) if calibrated else None
    correct = 1.0 - ie_top[has]
    result = {"overall": figures(errors, data.totals, ie_top, dom_err, int_err, tp, nh, ng, conf, correct, n_boot, seed), "per_domain": {}}
    # the position of every utterance among those with a hypothesis (where conf and correct have a row)
    among_has = np.cumsum(has) - 1
    for d, m in data.gold_domains.items():
        mc = among_has[m[has[m]]]
        result["per_domain"][d] = figures(errors[m], data.totals[m], ie_top[m], dom_err[m], int_err[m], tp[m], nh[m], ng[m],
                                          conf[mc] if conf is not None else None, correct[mc], n_boot, seed)
    if calibrated and len(score):
        # All hypotheses, not just the top: is every score a probability of being right?
        c_all, y_all = np.clip(score, 0, 1), 1.0 - data.ie
        result["overall"].update(ece_all=ece(c_all, y_all), brier_all=brier(c_all, y_all), nll_all=nll(c_all, y_all))
    return result


def semer_change(data: SplitData, score: np.ndarray, reference: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict:
    """Per gold domain, SemER when ranking by ``score`` minus SemER when ranking by ``reference``:
    ``{domain: {"semer_vs_baseline": x, "semer_vs_baseline_ci": [low, high]}}``.

    The interval is a paired bootstrap (both rankings on the same resampled utterances): much narrower than
    the two SemER intervals side by side, whose errors are strongly correlated.
    """
    _, errors, _ = top_hypothesis_outcome(data.utt_index, score, data.sem_errors, data.ie, data.totals)
    _, ref_errors, _ = top_hypothesis_outcome(data.utt_index, reference, data.sem_errors, data.ie, data.totals)
    out = {}
    for d, m in data.gold_domains.items():
        e, r, t = errors[m], ref_errors[m], data.totals[m]
        out[d] = {"semer_vs_baseline": float((e.sum() - r.sum()) / t.sum())}
        if n_boot:
            out[d]["semer_vs_baseline_ci"] = list(bootstrap_ci(lambda e, r, t: (e.sum(1) - r.sum(1)) / t.sum(1), e, r, t,
                                                               n_resamples=n_boot, seed=seed, vectorized=True))
    return out
