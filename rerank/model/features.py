"""The feature builders: a domain's feature matrix (the layout of :mod:`rerank.model.spec`) from its hypotheses.

Two builders give the same matrix: one over an Arrow table (training, the batch merge, the gate), one
over a list of hypothesis dicts (``CrossDomainRanker.rank``, a request of a few dozen hypotheses, where
Python's item assignment is cheaper than Arrow's conversion). Both write the columns by the spec's named
slices (:func:`rerank.model.spec.layout`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rerank.hypotheses.fields import SCORES
from rerank.model.spec import DENSE, DENSE_LAYOUT, EPS, BadFeatures, FeatureSpec, _evidence_plan, evidence_fields, layout


def dense_features(scores: np.ndarray, logs: np.ndarray, n_slots) -> np.ndarray:
    """``[n, DENSE]`` (float64 holding float32-rounded values, as the feature matrix rounds them): dc, ic, ner, their
    logs and n_slots, by the layout's slices (the scorer of many domains sums them in float64)."""
    lay = DENSE_LAYOUT
    dense = np.empty((len(scores), DENSE))
    dense[:, lay.scores] = scores.astype(np.float32)
    dense[:, lay.logs] = logs.astype(np.float32)
    dense[:, lay.n_slots] = np.asarray(n_slots, dtype=np.float32)
    return dense


def log_scores(x: np.ndarray) -> np.ndarray:
    """``log(clip(x, EPS, 1))``: the ``log_dc, log_ic, log_ner`` features."""
    # np.clip without its per-call overhead (same values)
    return np.log(np.minimum(np.maximum(x, EPS), 1.0))


_logs = log_scores


#: rows of the feature matrix built at once: a block stays in the CPU cache while it is written and scored
BLOCK_ROWS = 8192


@dataclass
class _TableColumns:
    """What the features read from a hypothesis table, as numpy arrays (the pyarrow work, done once)."""

    n: int
    scores: np.ndarray  # [n, 3] float64
    n_slots: np.ndarray  # [n]
    hot: np.ndarray  # [n, k] int64: column of the rank's, the intent's and every context value's one-hot
    slot_owner: np.ndarray  # row of every slot of a known type, ascending
    slot_idx: np.ndarray  # its type's index in spec.slot_types
    evidence: list  # per evidence feature: (its field's values [n] float64, transform or None), applied block by block


@functools.lru_cache(maxsize=16384)
def _value_set(vocab: tuple[str, ...]) -> pa.Array:
    # built once per vocabulary: a batch of many domains looks each one up in every request
    return pa.array(list(vocab), pa.string())


def _index_in(column, vocab: Sequence[str]) -> np.ndarray:
    idx = pc.index_in(column, value_set=_value_set(tuple(vocab)))
    return idx.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _check_ranks(ranks: np.ndarray) -> None:
    if len(ranks) and ranks.min() < 0:
        raise BadFeatures(f"{int((ranks < 0).sum())} hypotheses have a negative rank "
                          f"(first: {int(ranks[ranks < 0][0])}); ranks are 0-based")


def _table_columns(table: pa.Table, spec: FeatureSpec) -> _TableColumns:
    n = table.num_rows
    fields = evidence_fields(spec.evidence)
    missing = [c for c in (*SCORES, "rank", "n_slots", "intent", "slots", *(c for c, _ in spec.context), *fields)
               if c not in table.column_names]
    if missing:
        raise BadFeatures(f"hypothesis table lacks the columns {missing}", missing[0])
    scores = np.stack([table[s].to_numpy(zero_copy_only=False).astype(np.float64) for s in SCORES], axis=1)
    check_finite(scores, table)
    ranks = table["rank"].to_numpy(zero_copy_only=False).astype(np.int64)
    _check_ranks(ranks)
    lay = layout(spec)
    groups = [(table["intent"], spec.intents, lay.intent),
              *((table[c], values, part) for (c, values), (_, part) in zip(spec.context, lay.context))]
    hot = np.empty((n, 1 + sum(1 for _, vocab, _ in groups if len(vocab))), dtype=np.int64)
    hot[:, 0] = lay.rank.start + np.minimum(ranks, spec.n_ranks - 1)  # deeper ranks share the last
    j = 1
    for column, vocab, part in groups:
        if len(vocab):
            idx = _index_in(column, vocab)
            # Values unseen in training (a new intent, a new device) get no one-hot: the base score
            # stands. Their entry points at the row's rank one-hot, which is 1 anyway.
            hot[:, j] = np.where(idx >= 0, part.start + idx, hot[:, 0])
            j += 1
    owner = idx = np.zeros(0, np.int64)
    if spec.slot_types and n:
        slots = table["slots"].combine_chunks() if isinstance(table["slots"], pa.ChunkedArray) else table["slots"]
        types = pc.list_flatten(slots).field("type")
        owner = pc.list_parent_indices(slots).to_numpy().astype(np.int64)
        idx = _index_in(types, spec.slot_types)
        known = idx >= 0
        owner, idx = owner[known], idx[known]
    fields, plan = _evidence_plan(spec.evidence)
    values = [_field(table, f) for f in fields]
    evidence = [(scores[:, 0] if src < 0 else values[src], transform) for src, transform in plan]
    return _TableColumns(n, scores, table["n_slots"].to_numpy(zero_copy_only=False), hot, owner, idx, evidence)


def _field(table: pa.Table, field: str) -> np.ndarray:
    column = table[field]
    if column.null_count:
        raise BadFeatures(f"hypothesis table: {column.null_count} rows have no {field!r}, which the model's evidence features need",
                          field)
    values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
    check_finite(values[:, None], table, what=field)
    return values


def _assemble(cols: _TableColumns, spec: FeatureSpec, X: np.ndarray, lo: int) -> None:
    """Fill ``X`` (C-contiguous zeros, float32) with the feature rows ``lo:lo + len(X)``."""
    m, dim = X.shape
    hi = lo + m
    scores = cols.scores[lo:hi]
    lay = layout(spec)
    X[:, lay.scores] = scores
    X[:, lay.logs] = log_scores(scores)
    X[:, lay.n_slots] = cols.n_slots[lo:hi]
    flat = X.reshape(-1)  # a view: X is contiguous
    flat[(np.arange(0, m * dim, dim)[:, None] + cols.hot[lo:hi]).ravel()] = 1.0
    if len(cols.slot_owner):
        a, b = np.searchsorted(cols.slot_owner, (lo, hi))
        if b > a:
            n_types = len(spec.slot_types)
            counts = np.bincount((cols.slot_owner[a:b] - lo) * n_types + cols.slot_idx[a:b], minlength=m * n_types)
            X[:, lay.slot] = counts.reshape(m, n_types)
    col = lay.evidence.start
    for j, (v, transform) in enumerate(cols.evidence):
        X[:, col + j] = transform(v[lo:hi]) if transform is not None else v[lo:hi]


def features_from_table(table: pa.Table, spec: FeatureSpec) -> np.ndarray:
    """Feature matrix [rows, spec.dim] (float32) of a hypothesis table; refuses NaN/inf.

    Filled ``BLOCK_ROWS`` rows at a time (a block stays in the CPU cache while its
    columns are written); :func:`feature_blocks` gives the blocks without the whole matrix.
    """
    cols = _table_columns(table, spec)
    X = np.zeros((cols.n, spec.dim), dtype=np.float32)
    for lo in range(0, cols.n, BLOCK_ROWS):
        _assemble(cols, spec, X[lo:lo + BLOCK_ROWS], lo)
    return X


def feature_blocks(table: pa.Table, spec: FeatureSpec, rows: int = BLOCK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
    """``(lo, X[lo:lo + rows])`` of :func:`features_from_table`, block by block (each block a new array).

    Scoring every block while it is in the cache, rather than the whole matrix at
    once, is several times faster on large tables and never holds the whole matrix.
    """
    cols = _table_columns(table, spec)
    for lo in range(0, cols.n, rows):
        X = np.zeros((min(rows, cols.n - lo), spec.dim), dtype=np.float32)
        _assemble(cols, spec, X, lo)
        yield lo, X


def check_finite(scores: np.ndarray, table: pa.Table | None = None, where: str = "hypothesis table",
                 what: str = "dc/ic/ner") -> None:
    if np.isfinite(scores).all():
        return
    bad = ~np.isfinite(scores).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        example = {k: v for k, v in (table.slice(i, 1).to_pylist()[0].items() if table is not None else [])
                   if k in ("utt_id", "domain", "intent", *SCORES)}
        raise BadFeatures(f"{where}: {int(bad.sum())} rows have NaN or infinite {what}; first at row {i}: {example or scores[i].tolist()}")
