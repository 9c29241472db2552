"""The feature specification of a domain's re-ranker and the feature builders.

The spec is saved with every published model and checked when it is loaded:
a model only scores rows whose features mean what they meant in training.
Two builders give the same matrix: one over an Arrow table (training, batch
merge), one over a list of hypothesis dicts (``CrossDomainRanker.rank``).
"""
from __future__ import annotations

import functools
import operator
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rerank.corpus.massive import qualify_intent
from rerank.hypotheses.fields import FAMILIES, TEXT_FIELDS
from rerank.model.scorer import logit

SPEC_VERSION = 2  # 2: evidence families (a version 1 spec reads as none)
READ_SPEC_VERSIONS = (1, 2)
EPS = 1e-6
SCORES = ("dc", "ic", "ner")


#: the transforms of evidence features, by the name the table of fields gives them
TRANSFORMS = {None: None, "log1p": np.log1p, "logit": logit}
#: evidence a domain owns (``features.evidence``), by family: (feature name, the field it is computed from, how),
#: from the one table of fields (:data:`rerank.hypotheses.fields.FIELDS`)
EVIDENCE: dict[str, tuple[tuple[str, str, Any], ...]] = {
    family: tuple((name, field, TRANSFORMS[t]) for name, field, t in features) for family, features in FAMILIES.items()}


def evidence_fields(families: Sequence[str]) -> list[str]:
    """The hypothesis fields (table columns) the evidence ``families`` are computed from, besides ``dc``."""
    unknown = [f for f in families if f not in EVIDENCE]
    if unknown:
        raise FeatureSpecMismatch(f"unknown evidence families {unknown}; known: {list(EVIDENCE)}")
    return [field for f in families for _, field, _ in EVIDENCE[f] if field != "dc"]


def request_fields(spec: "FeatureSpec", has_resources: bool) -> list[str]:
    """The fields a request must give for a model of ``spec``: ``text`` stands for the text-derived evidence that a
    version carrying its resources computes itself (:data:`rerank.hypotheses.evidence.TEXT_FIELDS`)."""
    fields = ["domain", "intent", "slots", *SCORES]
    fields += ["text" if has_resources and f in TEXT_FIELDS else f for f in evidence_fields(spec.evidence)]
    return list(dict.fromkeys(fields))


@functools.lru_cache(maxsize=256)
def _evidence_plan(families: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[tuple[int, Any], ...]]:
    """The fields the evidence ``families`` read (besides ``dc``), and per feature (its field's position in them
    or -1 for ``dc``, its transform)."""
    fields = tuple(dict.fromkeys(evidence_fields(families)))
    plan = tuple((-1 if field == "dc" else fields.index(field), transform)
                 for f in families for _, field, transform in EVIDENCE[f])
    return fields, plan


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


class FeatureSpecMismatch(ValueError):
    """A model's feature spec does not match the data or another spec."""


class BadFeatures(ValueError):
    """Features that cannot be scored (NaN, infinite, missing columns); ``field`` names the field when one is at fault."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class FeatureSpec:
    """What each column of a domain's feature matrix means.

    Columns, in order: ``dc, ic, ner``, their logs, ``n_slots``, a one-hot of
    the rank inside the domain (``rank_0 .. rank_{n_ranks-1}``; deeper ranks
    share the last), a one-hot of the intent (a learned bias per intent), a
    one-hot of every context field's value (e.g. the device), and the count
    of each slot type in the hypothesis; then the features of every ``evidence``
    family (:data:`EVIDENCE`), in the order given.
    """

    domain: str
    intents: tuple[str, ...]
    context: tuple[tuple[str, tuple[str, ...]], ...]
    slot_types: tuple[str, ...]
    n_ranks: int = 5
    evidence: tuple[str, ...] = ()
    version: int = SPEC_VERSION

    def __post_init__(self):
        object.__setattr__(self, "evidence", tuple(self.evidence))
        evidence_fields(self.evidence)  # refuses an unknown family
        if len(set(self.evidence)) != len(self.evidence):
            raise FeatureSpecMismatch(f"evidence families repeat: {list(self.evidence)}")

    @property
    def names(self) -> list[str]:
        names = [*SCORES, *(f"log_{s}" for s in SCORES), "n_slots"]
        names += [f"rank_{r}" for r in range(self.n_ranks)]
        names += [f"intent={i}" for i in self.intents]
        names += [f"{c}={v}" for c, values in self.context for v in values]
        names += [f"slot={t}" for t in self.slot_types]
        names += self.evidence_names
        return names

    @property
    def evidence_names(self) -> list[str]:
        return [name for f in self.evidence for name, _, _ in EVIDENCE[f]]

    @property
    def evidence_col(self) -> int:
        """The column of the first evidence feature."""
        return self.dim - len(_evidence_plan(self.evidence)[1])

    @property
    def dim(self) -> int:
        return _record_layout(self)[0]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["context"] = {c: list(v) for c, v in self.context}
        d["intents"], d["slot_types"], d["evidence"] = list(self.intents), list(self.slot_types), list(self.evidence)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FeatureSpec":
        if not isinstance(d, Mapping):
            raise FeatureSpecMismatch(f"a feature spec is a JSON object, not {type(d).__name__}")
        if d.get("version") not in READ_SPEC_VERSIONS:
            raise FeatureSpecMismatch(f"feature spec version {d.get('version')} is not one this rerank reads {READ_SPEC_VERSIONS}")
        return cls(domain=d["domain"], intents=tuple(d["intents"]),
                   context=tuple((c, tuple(v)) for c, v in d["context"].items()),
                   slot_types=tuple(d["slot_types"]), n_ranks=int(d["n_ranks"]),
                   evidence=tuple(d.get("evidence", ())))  # models published before evidence have none

    def check_tables(self, tables_spec: "FeatureSpec", what: str = "model") -> None:
        """:meth:`check_same` against the spec of the tables (:func:`spec_from_manifest` without evidence), but for
        the evidence families, which each model chooses (the feature builders check that the data fills them)."""
        self.check_same(replace(tables_spec, evidence=self.evidence), what)

    def check_same(self, other: "FeatureSpec", what: str = "model") -> None:
        """Raise with a message saying what differs."""
        if self == other:
            return
        diffs = []
        a, b = self.to_dict(), other.to_dict()
        for key in a:
            if a[key] != b[key]:
                if isinstance(a[key], list):
                    only_a = [x for x in a[key] if x not in b[key]]
                    only_b = [x for x in b[key] if x not in a[key]]
                    diffs.append(f"{key}: only in {what}: {only_a[:5]}, only in data: {only_b[:5]}" if only_a or only_b else f"{key}: different order")
                else:
                    diffs.append(f"{key}: {what} has {a[key]!r}, data has {b[key]!r}")
        raise FeatureSpecMismatch(f"feature spec of the {what} for domain {self.domain!r} does not match: " + "; ".join(diffs))


def spec_from_manifest(manifest: Mapping[str, Any], domain: str, evidence: Sequence[str] = (),
                       on_missing: str = "raise") -> FeatureSpec:
    """The feature spec of ``domain``'s tables, with the ``evidence`` families its tables fill.

    A family whose fields the domain's tables leave empty (manifest ``evidence``: an n-best
    without them, a tagger without marginals) raises :class:`FeatureSpecMismatch`, or with
    ``on_missing="skip"`` is left out (the caller says so; the spec records what is in).
    """
    filled = set((manifest.get("evidence") or {}).get(domain, ()))
    kept = []
    for family in evidence:
        lacking = [f for f in evidence_fields([family]) if f not in filled]
        if not lacking:
            kept.append(family)
        elif on_missing != "skip":
            raise FeatureSpecMismatch(f"{domain}: evidence family {family!r} needs the columns {lacking}, which "
                                      f"{domain}'s hypothesis tables do not fill (they fill {sorted(filled)})")
    return FeatureSpec(
        domain=domain,
        intents=tuple(manifest["intents"][domain]),
        context=tuple((c, tuple(manifest["context_values"][c])) for c in manifest["context_fields"]),
        slot_types=tuple(manifest["slot_types"][domain]),
        n_ranks=int(manifest.get("n_best", 5)),
        evidence=tuple(kept),
    )


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
    slot_col: int
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
        raise BadFeatures(f"{int((ranks < 0).sum())} hypotheses have a negative rank (first: {int(ranks[ranks < 0][0])}); ranks are 0-based")


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
    groups = [(table["intent"], spec.intents), *((table[c], values) for c, values in spec.context)]
    hot = np.empty((n, 1 + sum(1 for _, vocab in groups if len(vocab))), dtype=np.int64)
    hot[:, 0] = 7 + np.minimum(ranks, spec.n_ranks - 1)  # deeper ranks share the last
    col, j = 7 + spec.n_ranks, 1
    for column, vocab in groups:
        if len(vocab):
            idx = _index_in(column, vocab)
            # Values unseen in training (a new intent, a new device) get no one-hot: the base score
            # stands. Their entry points at the row's rank one-hot, which is 1 anyway.
            hot[:, j] = np.where(idx >= 0, col + idx, hot[:, 0])
            j += 1
        col += len(vocab)
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
    return _TableColumns(n, scores, table["n_slots"].to_numpy(zero_copy_only=False), hot, col, owner, idx, evidence)


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
    X[:, 0:3] = scores
    X[:, 3:6] = log_scores(scores)
    X[:, 6] = cols.n_slots[lo:hi]
    flat = X.reshape(-1)  # a view: X is contiguous
    flat[(np.arange(0, m * dim, dim)[:, None] + cols.hot[lo:hi]).ravel()] = 1.0
    if len(cols.slot_owner):
        a, b = np.searchsorted(cols.slot_owner, (lo, hi))
        if b > a:
            n_types = len(spec.slot_types)
            counts = np.bincount((cols.slot_owner[a:b] - lo) * n_types + cols.slot_idx[a:b], minlength=m * n_types)
            X[:, cols.slot_col:cols.slot_col + n_types] = counts.reshape(m, n_types)
    col = dim - len(cols.evidence)
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


@functools.lru_cache(maxsize=4096)
def _record_layout(spec: FeatureSpec) -> tuple:
    """Column of every intent, context value and slot type of ``spec`` (cached: built once per spec)."""
    col = 7 + spec.n_ranks
    dim = len(spec.names)
    intents = {v: col + i for i, v in enumerate(spec.intents)}
    col += len(spec.intents)
    context = []
    for c, values in spec.context:
        context.append((c, {v: col + i for i, v in enumerate(values)}))
        col += len(values)
    slot_types = {t: col + i for i, t in enumerate(spec.slot_types)}
    return dim, intents, tuple(context), slot_types


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
    dim, intent_col, ctx_cols, slot_col = _record_layout(spec)
    if scores is None:
        scores = record_scores(records)
    if logs is None:
        logs = log_scores(scores)
    last_rank = spec.n_ranks - 1
    ranks = record_ranks(records, scores, spec.domain)
    # Built as a flat list (Python item assignment is much cheaper than numpy's for a few rows); the evidence
    # columns (the last ones) are written as a block after it.
    full, dim = dim, spec.evidence_col
    flat = [0.0] * (n * dim)
    base = 0
    for i, r in enumerate(records):
        slots = r.get("slots") or ()
        flat[base + 6] = r.get("n_slots", len(slots))
        rank = ranks[i]
        flat[base + 7 + (rank if rank < last_rank else last_rank)] = 1.0
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
    X[:, 0:3] = scores
    X[:, 3:6] = logs
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
