"""The feature matrix of a list of one domain's hypothesis dicts: a request's, in the layout of the table builder.

A request holds a few dozen hypotheses: Python's item assignment into a flat list costs less there than
converting them to Arrow for :func:`rerank.model.features.features_from_table`. The columns are written by the
spec's named slices (:func:`rerank.model.spec.layout`); ``tests/test_merge_ranking.py`` and
``tests/test_evidence.py`` check that both builders give the same matrix.
"""
from __future__ import annotations

import operator
from typing import Any, Mapping, Sequence

import numpy as np

from rerank.corpus.massive import qualify_intent
from rerank.hypotheses.fields import TEXT_FIELDS
from rerank.model.features import check_finite, log_scores
from rerank.model.spec import BadFeatures, FeatureSpec, _evidence_plan, layout


def evidence_matrix(records: Sequence[Mapping[str, Any]], families: tuple[str, ...], scores: np.ndarray,
                    domain: str = "", positions: Sequence[int] | None = None, text: np.ndarray | None = None) -> np.ndarray:
    """The evidence features ``[n, k]`` (float64) of hypothesis dicts: one pass over their fields.

    ``scores``: their ``[n, 3]`` dc, ic, ner (:func:`record_scores`). ``text``: their text-derived fields
    (``[n, len(TEXT_FIELDS)]``, :class:`rerank.model.text_evidence.TextIndex`), for the records that do not
    give them (a field a record gives takes precedence). Refuses, naming the field and the
    hypothesis (its number in ``positions``, e.g. in the request, else in ``records``), a missing,
    non-numeric, NaN or infinite value.
    """
    fields, plan = _evidence_plan(tuple(families))
    own = fields if text is None else tuple(f for f in fields if f not in TEXT_FIELDS)
    raw = np.empty((len(records), len(fields)))
    try:
        if own:
            get = operator.itemgetter(*own)  # a tuple per dict (one field: the value), in C
            values = np.array(list(map(get, records)), dtype=np.float64).reshape(len(records), len(own))
            raw[:, [fields.index(f) for f in own]] = values
        given = set().union(*records) if own != fields else ()  # every field some record gives
        for f in fields if own != fields else ():
            column = text[:, TEXT_FIELDS.index(f)]
            if f in given:
                column = np.array([r.get(f, v) for r, v in zip(records, column.tolist())], dtype=np.float64)
            raw[:, fields.index(f)] = column
        ok = bool(np.isfinite(raw).all())
    except (KeyError, TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        for f in fields:
            if f in own or not np.isfinite(text[:, TEXT_FIELDS.index(f)]).all():
                _record_field(records, f, domain, positions)  # raises, naming the field and the hypothesis
        raise BadFeatures(f"{domain}: the evidence fields {list(fields)} are not numbers in every hypothesis")
    out = np.empty((len(records), len(plan)))
    for j, (src, transform) in enumerate(plan):
        v = scores[:, 0] if src < 0 else raw[:, src]
        out[:, j] = transform(v) if transform is not None else v
    return out


def record_scores(records: Sequence[Mapping[str, Any]], where: str = "hypotheses") -> np.ndarray:
    """``[n, 3]`` float64 ``dc, ic, ner`` of hypothesis dicts; refuses missing, non-numeric, NaN and infinite ones."""
    try:
        scores = np.array([(r["dc"], r["ic"], r["ner"]) for r in records], dtype=np.float64).reshape(len(records), 3)
    except KeyError as err:
        raise BadFeatures(f"a hypothesis lacks the field {err.args[0]!r}") from None
    except (TypeError, ValueError) as err:
        raise BadFeatures(f"dc/ic/ner must be numbers: {err}") from None
    check_finite(scores, None, where=where)
    return scores


def record_ranks(records: Sequence[Mapping[str, Any]], scores: np.ndarray, domain: str) -> list[int]:
    """The rank of each of one domain's hypothesis dicts in its own list: given (all or none, >= 0), else by ``ic * ner``."""
    return given_ranks([r.get("rank") for r in records], scores, domain)


def given_ranks(ranks: Sequence[int | None], scores: np.ndarray, domain: str) -> list[int]:
    """:func:`record_ranks` of the ``rank`` values of one domain's hypotheses (None: not given)."""
    if None in ranks:
        if any(x is not None for x in ranks):
            raise BadFeatures(f"{domain}: {sum(x is not None for x in ranks)} of {len(ranks)} hypotheses have a 'rank'; "
                              "give it for all of them or for none")
        out = [0] * len(ranks)
        for position, i in enumerate(np.argsort(-(scores[:, 1] * scores[:, 2]), kind="stable").tolist()):
            out[i] = position
        return out
    out = [int(x) for x in ranks]
    if min(out, default=0) < 0:
        i = next(i for i, x in enumerate(out) if x < 0)
        raise BadFeatures(f"hypothesis {i} has a negative rank ({out[i]}); ranks are 0-based")
    return out


def features_from_records(records: Sequence[Mapping[str, Any]], spec: FeatureSpec, scores: np.ndarray | None = None,
                          logs: np.ndarray | None = None, evidence: np.ndarray | None = None) -> np.ndarray:
    """The same matrix as :func:`features_from_table` for a list of one domain's hypothesis dicts.

    The dicts may be in the n-best format of ``import`` and the service: an intent named as in the
    gold file reads as the domain-qualified one (``play`` of ``Music``: ``Music_play``), and a list
    without ``rank`` is ranked by ``ic * ner``, as ``import`` ranks it.
    ``scores`` (from :func:`record_scores`), ``logs`` (their :func:`log_scores`) and ``evidence`` (their
    :func:`evidence_matrix`), when given, are those of ``records`` already computed
    (``CrossDomainRanker.rank`` does it once for all domains).
    """
    n = len(records)
    lay = layout(spec)
    intent_col, ctx_cols, slot_col = lay.intent_col, lay.context_cols, lay.slot_col
    if scores is None:
        scores = record_scores(records)
    if logs is None:
        logs = log_scores(scores)
    last_rank = spec.n_ranks - 1
    ranks = record_ranks(records, scores, spec.domain)
    # Built as a flat list (Python item assignment is much cheaper than numpy's for a few rows); the evidence
    # columns (the last ones) are written as a block after it.
    full, dim = lay.dim, lay.evidence.start
    n_slots_at, rank_at = lay.n_slots, lay.rank.start
    flat = [0.0] * (n * dim)
    base = 0
    for i, r in enumerate(records):
        slots = r.get("slots") or ()
        flat[base + n_slots_at] = r.get("n_slots", len(slots))
        rank = ranks[i]
        flat[base + rank_at + (rank if rank < last_rank else last_rank)] = 1.0
        intent = r.get("intent")
        j = intent_col.get(intent)
        if j is None and isinstance(intent, str):
            j = intent_col.get(qualify_intent(spec.domain, intent))
        if j is not None:
            flat[base + j] = 1.0
        for c, vocab in ctx_cols:
            j = vocab.get(r.get(c))
            if j is not None:
                flat[base + j] = 1.0
        for s in slots:
            j = slot_col.get(s[0] if isinstance(s, (tuple, list)) else s["type"])
            if j is not None:
                flat[base + j] += 1.0
        base += dim
    if full == dim:
        X = np.array(flat, dtype=np.float32).reshape(n, dim)
    else:
        X = np.empty((n, full), dtype=np.float32)
        X[:, :dim] = np.array(flat, dtype=np.float32).reshape(n, dim)
        X[:, dim:] = evidence if evidence is not None else evidence_matrix(records, spec.evidence, scores, spec.domain)
    X[:, lay.scores] = scores
    X[:, lay.logs] = logs
    return X


def _record_field(records: Sequence[Mapping[str, Any]], field: str, domain: str,
                  positions: Sequence[int] | None = None) -> np.ndarray:
    at = (lambda i: positions[i]) if positions is not None else (lambda i: i)
    try:
        values = np.array([r[field] for r in records], dtype=np.float64)
    except KeyError:
        i = next(i for i, r in enumerate(records) if field not in r)
        raise BadFeatures(f"{domain}: hypothesis {at(i)} lacks the field {field!r}, which the domain's model needs "
                          f"(its evidence features: its NLU must send it)", field) from None
    except (TypeError, ValueError, OverflowError) as err:
        raise BadFeatures(f"{domain}: {field!r} must be a number in every hypothesis: {err}", field) from None
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise BadFeatures(f"{domain}: hypothesis {at(i)} has {field!r} = {values[i]!r}; it must be finite", field)
    return values
