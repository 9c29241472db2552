"""The service's path through :class:`CrossDomainRanker`: one utterance's hypotheses as columns, without a dict each.

The service's decoder (:mod:`rerank.serving.fast`) builds :class:`HypothesisColumns` straight from a request's
bytes; :func:`score_columns` gives the numbers of :meth:`CrossDomainRanker.rank` (the offline ranker): the same
operations on every hypothesis, whole columns at once where that takes one domain at a time.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from rerank.hypotheses.evidence import TEXT_FIELDS
from rerank.hypotheses.figures import baseline_score
from rerank.merge.scorers import BASELINE, DomainScorer, _sigmoid
from rerank.model.features import log_scores
from rerank.model.many import LinearDomains
from rerank.model.records import features_from_records, given_ranks
from rerank.model.spec import BadFeatures, _evidence_plan

if TYPE_CHECKING:
    from rerank.merge.ranker import CrossDomainRanker

#: from this many linear domains in one utterance's list, they are scored together (rerank.model.many)
RANK_TOGETHER = 2


@dataclass
class HypothesisColumns:
    """One utterance's checked hypotheses as columns: what :meth:`CrossDomainRanker.rank` reads from its dicts.

    The service's decoder (:mod:`rerank.serving.fast`) builds it without a dict per hypothesis.
    """

    domain: list[str]
    intent: list[str]  # domain-qualified
    slot_types: list[Sequence[str]]  # each hypothesis' slot types, in order
    scores: np.ndarray  # [n, 3] float64 dc, ic, ner (finite)
    rank: list  # the domain's own rank, or None (given for all of a domain's hypotheses or for none)
    context: Mapping[str, list[str]]  # every context field's value per hypothesis
    evidence: np.ndarray | None  # [n, len(evidence_fields)] float64, NaN where not given
    evidence_fields: Sequence[str] = ()
    #: the hypothesis dicts of some rows (what a model scored one domain at a time reads)
    records: Callable[[list[int]], list[dict]] | None = None
    #: the utterance's tokens (:func:`rerank.model.text_evidence.request_tokens`), None without a text
    tokens: Sequence[str] | None = None
    #: every hypothesis' slots (pairs or objects with ``type`` and ``value``: the text-derived evidence reads the values)
    slots: Sequence[Sequence[Any]] | None = None


def score_columns(self: "CrossDomainRanker", cols: HypothesisColumns, unknown: str = "error"
                  ) -> tuple[np.ndarray, list[int], dict[str, str]]:
    """:meth:`CrossDomainRanker.rank` of hypotheses given as columns, without a dict per hypothesis: per hypothesis its
    calibrated score and its rank in its domain's list, and the version of every domain. The numbers of :meth:`rank`
    (the same operations on every hypothesis; whole columns at once where it takes one domain at a time).
    A :class:`BadFeatures` here says less than :meth:`rank` would: ask it for the message."""
    domains = cols.domain
    n = len(domains)
    distinct = dict.fromkeys(domains)
    if unknown == "baseline":
        scorers = {d: self.scorers.get(d) or DomainScorer(d, BASELINE) for d in distinct}
    else:
        scorers = {d: self._scorer(d) for d in distinct}
    by_domain_rows: dict[str, list[int]] = {}

    def by_domain() -> dict[str, list[int]]:  # (only where one domain at a time is needed)
        if not by_domain_rows:
            for i, d in enumerate(domains):
                by_domain_rows.setdefault(d, []).append(i)
        return by_domain_rows

    raw = cols.scores
    logs = log_scores(raw)
    needs = {d: r for d in distinct if (r := scorers[d].text_resources) is not None} if cols.tokens is not None else None
    if needs and cols.evidence is not None:
        T = self._text_index().values(cols.tokens, [d if d in needs else "" for d in domains], cols.intent,
                                                    cols.slots)
        at = [cols.evidence_fields.index(f) for f in TEXT_FIELDS]
        given = cols.evidence[:, at]
        if np.isnan(given).any():  # (a field the client sends takes precedence)
            cols.evidence = cols.evidence.copy()
            cols.evidence[:, at] = np.where(np.isnan(given), T, given)
    if None in cols.rank:
        ranks = [0] * n
        for d, idx in by_domain().items():
            for i, r in zip(idx, given_ranks([cols.rank[i] for i in idx], raw[idx], d)):
                ranks[i] = r
    else:
        ranks = cols.rank
        if n and min(ranks) < 0:
            raise BadFeatures("a hypothesis has a negative rank; ranks are 0-based")
    scores = np.empty(n)
    model = np.zeros(n, dtype=bool)
    linear_names = self._linear_names()
    linear = [d for d in distinct if d in linear_names]
    if len(linear) < RANK_TOGETHER:
        linear = []
    if linear:
        many = self._linear_domains()
        code_list = list(map(many.code.get, domains, repeat(-1)))
        code = np.array(code_list, dtype=np.int64)
        rows = np.flatnonzero(code >= 0)
        every = len(rows) == n
        take = (lambda a: a) if every else (lambda a: a[rows])
        c = code if every else code[rows]
        ev = None
        if many.evidence:
            ev = _evidence_values(many, cols, take(raw[:, 0]), rows if not every else None)
            if not np.isfinite(ev).all() and not np.isfinite(ev[many.evidence_used[c]]).all():
                raise BadFeatures("an evidence field a model needs is not given")
        pick = (lambda col: col) if every else (lambda col: [col[i] for i in rows.tolist()])
        types = pick(cols.slot_types)
        logits = many.column_logits(code_list if every else c.tolist(), take(raw), take(logs), pick(ranks), list(map(len, types)),
                                    pick(cols.intent), [pick(cols.context[f]) for f in many.context_fields], types, ev)
        if every:  # (every row a linear model's: nothing else to score)
            return _sigmoid(logits), list(ranks), {d: s.version for d, s in scorers.items()}
        scores[rows] = logits
        model[rows] = True
    rest = [d for d in distinct if d not in linear]
    base = [i for d in rest if scorers[d].is_baseline for i in by_domain()[d]]
    if base:
        scores[base] = baseline_score(*raw[base].T)
    for d in rest:
        scorer = scorers[d]
        if scorer.is_baseline:
            continue
        idx = by_domain()[d]
        evidence = None
        if scorer.spec.evidence:
            fields, plan = _evidence_plan(scorer.spec.evidence)
            if cols.evidence is None or any(f not in cols.evidence_fields for f in fields):
                raise BadFeatures(f"{d}: evidence fields {list(fields)} not given")
            E = cols.evidence[idx][:, [cols.evidence_fields.index(f) for f in fields]]
            if not np.isfinite(E).all():
                raise BadFeatures(f"{d}: an evidence field its model needs is not given")
            evidence = np.empty((len(idx), len(plan)))
            for j, (src, transform) in enumerate(plan):
                v = raw[idx, 0] if src < 0 else E[:, src]
                evidence[:, j] = transform(v) if transform is not None else v
        if cols.records is None:
            raise BadFeatures(f"{d}: its model needs the hypotheses' records")
        scores[idx] = scorer.logit(features_from_records(cols.records(idx), scorer.spec, raw[idx], logs[idx], evidence))
        model[idx] = True
    scores[model] = _sigmoid(scores[model])
    return scores, list(ranks), {d: s.version for d, s in scorers.items()}

def _evidence_values(many: LinearDomains, cols: HypothesisColumns, dc: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    """Every evidence feature of ``many``'s union, for every row (NaN where a field is not given)."""
    key = tuple(cols.evidence_fields)
    layout = many.__dict__.setdefault("_column_layout", {}).get(key)
    if layout is None:  # where each feature's field is among [dc, *cols.evidence_fields], and its transform
        fields, plan = _evidence_plan(tuple(many.evidence))
        if any(f not in key for f in fields):
            raise BadFeatures(f"evidence fields {list(fields)} not given")
        at = np.array([0 if src < 0 else 1 + key.index(fields[src]) for src, _ in plan], dtype=np.int64)
        layout = many._column_layout[key] = (at, [(j, t) for j, (_, t) in enumerate(plan) if t is not None])
    at, transforms = layout
    E = cols.evidence if rows is None else cols.evidence[rows]
    out = np.concatenate([dc[:, None], E], axis=1)[:, at]
    for j, transform in transforms:
        out[:, j] = transform(out[:, j])
    return out
