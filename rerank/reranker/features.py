"""The feature specification of a domain's re-ranker and the feature builders.

The spec is saved with every published model and checked when it is loaded:
a model only scores rows whose features mean what they meant in training.
Two builders give the same matrix: one over an Arrow table (training, batch
merge), one over a list of hypothesis dicts (``CrossDomainRanker.rank``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SPEC_VERSION = 1
EPS = 1e-6
SCORES = ("dc", "ic", "ner")


class FeatureSpecMismatch(ValueError):
    """A model's feature spec does not match the data or another spec."""


class BadFeatures(ValueError):
    """Features that cannot be scored (NaN, infinite, missing columns)."""


@dataclass(frozen=True)
class FeatureSpec:
    """What each column of a domain's feature matrix means.

    Columns, in order: ``dc, ic, ner``, their logs, ``n_slots``, a one-hot of
    the rank inside the domain (``rank_0 .. rank_{n_ranks-1}``; deeper ranks
    share the last), a one-hot of the intent (a learned bias per intent), a
    one-hot of every context field's value (e.g. the device), and the count
    of each slot type in the hypothesis.
    """

    domain: str
    intents: tuple[str, ...]
    context: tuple[tuple[str, tuple[str, ...]], ...]
    slot_types: tuple[str, ...]
    n_ranks: int = 5
    version: int = SPEC_VERSION

    @property
    def names(self) -> list[str]:
        names = [*SCORES, *(f"log_{s}" for s in SCORES), "n_slots"]
        names += [f"rank_{r}" for r in range(self.n_ranks)]
        names += [f"intent={i}" for i in self.intents]
        names += [f"{c}={v}" for c, values in self.context for v in values]
        names += [f"slot={t}" for t in self.slot_types]
        return names

    @property
    def dim(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["context"] = {c: list(v) for c, v in self.context}
        d["intents"], d["slot_types"] = list(self.intents), list(self.slot_types)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FeatureSpec":
        if d.get("version") != SPEC_VERSION:
            raise FeatureSpecMismatch(f"feature spec version {d.get('version')} is not the supported {SPEC_VERSION}")
        return cls(domain=d["domain"], intents=tuple(d["intents"]),
                   context=tuple((c, tuple(v)) for c, v in d["context"].items()),
                   slot_types=tuple(d["slot_types"]), n_ranks=int(d["n_ranks"]))

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


def spec_from_manifest(manifest: Mapping[str, Any], domain: str) -> FeatureSpec:
    return FeatureSpec(
        domain=domain,
        intents=tuple(manifest["intents"][domain]),
        context=tuple((c, tuple(manifest["context_values"][c])) for c in manifest["context_fields"]),
        slot_types=tuple(manifest["slot_types"][domain]),
        n_ranks=int(manifest.get("n_best", 5)),
    )


def _logs(x: np.ndarray) -> np.ndarray:
    return np.log(np.clip(x, EPS, 1.0))


def features_from_table(table: pa.Table, spec: FeatureSpec) -> np.ndarray:
    """Feature matrix [rows, spec.dim] (float32) of a hypothesis table; refuses NaN/inf."""
    n = table.num_rows
    missing = [c for c in (*SCORES, "rank", "n_slots", "intent", "slots", *(c for c, _ in spec.context)) if c not in table.column_names]
    if missing:
        raise BadFeatures(f"hypothesis table lacks the columns {missing}")
    X = np.zeros((n, spec.dim), dtype=np.float32)
    scores = np.stack([table[s].to_numpy(zero_copy_only=False).astype(np.float64) for s in SCORES], axis=1)
    check_finite(scores, table)
    X[:, 0:3] = scores
    X[:, 3:6] = _logs(scores)
    X[:, 6] = table["n_slots"].to_numpy(zero_copy_only=False)
    col = 7
    ranks = np.minimum(table["rank"].to_numpy(zero_copy_only=False).astype(np.int64), spec.n_ranks - 1)
    X[np.arange(n), col + ranks] = 1.0
    col += spec.n_ranks
    col = _one_hot(X, col, table["intent"], spec.intents)
    for c, values in spec.context:
        col = _one_hot(X, col, table[c], values)
    if spec.slot_types and n:
        slots = table["slots"].combine_chunks() if isinstance(table["slots"], pa.ChunkedArray) else table["slots"]
        types = pc.list_flatten(slots).field("type")
        owner = pc.list_parent_indices(slots).to_numpy()
        idx = pc.index_in(types, value_set=pa.array(spec.slot_types, pa.string())).fill_null(-1).to_numpy(zero_copy_only=False)
        known = idx >= 0
        np.add.at(X, (owner[known], col + idx[known].astype(np.int64)), 1.0)
    return X


def _one_hot(X: np.ndarray, col: int, column, vocab: Sequence[str]) -> int:
    if len(vocab):
        idx = pc.index_in(column, value_set=pa.array(list(vocab), pa.string()))
        idx = idx.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        rows = np.flatnonzero(idx >= 0)
        # Values unseen in training (a new intent, a new device) get no one-hot: the base score stands.
        X[rows, col + idx[rows]] = 1.0
    return col + len(vocab)


def check_finite(scores: np.ndarray, table: pa.Table | None = None, where: str = "hypothesis table") -> None:
    bad = ~np.isfinite(scores).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        example = {k: v for k, v in (table.slice(i, 1).to_pylist()[0].items() if table is not None else [])
                   if k in ("utt_id", "domain", "intent", *SCORES)}
        raise BadFeatures(f"{where}: {int(bad.sum())} rows have NaN or infinite dc/ic/ner; first at row {i}: {example or scores[i].tolist()}")


def features_from_records(records: Sequence[Mapping[str, Any]], spec: FeatureSpec) -> np.ndarray:
    """The same matrix as :func:`features_from_table` for a list of hypothesis dicts."""
    n = len(records)
    X = np.zeros((n, spec.dim), dtype=np.float32)
    try:
        scores = np.array([[r[s] for s in SCORES] for r in records], dtype=np.float64).reshape(n, 3)
    except KeyError as err:
        raise BadFeatures(f"a hypothesis lacks the field {err.args[0]!r}") from None
    except (TypeError, ValueError) as err:
        raise BadFeatures(f"dc/ic/ner must be numbers: {err}") from None
    check_finite(scores, None, where="hypotheses")
    X[:, 0:3] = scores
    X[:, 3:6] = _logs(scores)
    intent_col = 7 + spec.n_ranks
    intent_idx = {v: i for i, v in enumerate(spec.intents)}
    col = intent_col + len(spec.intents)
    ctx_cols = []
    for c, values in spec.context:
        ctx_cols.append((c, col, {v: i for i, v in enumerate(values)}))
        col += len(values)
    slot_idx = {t: i for i, t in enumerate(spec.slot_types)}
    for i, r in enumerate(records):
        slots = r.get("slots") or ()
        X[i, 6] = r.get("n_slots", len(slots))
        X[i, 7 + min(int(r.get("rank", 0)), spec.n_ranks - 1)] = 1.0
        j = intent_idx.get(r.get("intent"))
        if j is not None:
            X[i, intent_col + j] = 1.0
        for c, start, vocab in ctx_cols:
            j = vocab.get(r.get(c))
            if j is not None:
                X[i, start + j] = 1.0
        for s in slots:
            j = slot_idx.get(s["type"] if isinstance(s, Mapping) else s[0])
            if j is not None:
                X[i, col + j] += 1.0
    return X
