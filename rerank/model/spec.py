"""The feature specification of a domain's re-ranker: what each column of its feature matrix means.

The spec is saved with every published model and checked when it is loaded: a model only scores rows
whose features mean what they meant in training. :class:`Layout` names the spec's slices of columns
(``scores``, ``logs``, ``n_slots``, ``rank``, ``intent``, every context field, ``slot``, ``evidence``):
the feature builders (:mod:`rerank.model.features`) and the many-domain scorer (:mod:`rerank.model.many`)
read the columns by these names, never by an offset of their own.
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np

from rerank.hypotheses.fields import FAMILIES, SCORES, TEXT_FIELDS
from rerank.metrics.logistic import logit

SPEC_VERSION = 2  # 2: evidence families (a version 1 spec reads as none)
READ_SPEC_VERSIONS = (1, 2)
EPS = 1e-6


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
        return layout(self).evidence.start

    @property
    def dim(self) -> int:
        return layout(self).dim

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
                    diffs.append(f"{key}: only in {what}: {only_a[:5]}, only in data: {only_b[:5]}" if only_a or only_b
                                 else f"{key}: different order")
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


@dataclass(frozen=True)
class Layout:
    """Where each part of a spec's features lies in its matrix (the order of :attr:`FeatureSpec.names`)."""

    dim: int
    scores: slice  # dc, ic, ner
    logs: slice  # their logs
    n_slots: int
    rank: slice  # the rank one-hot
    intent: slice
    context: tuple[tuple[str, slice], ...]  # per context field, the one-hot of its values
    slot: slice  # the count of each slot type
    evidence: slice
    #: the column of every intent, of every context field's value, of every slot type
    intent_col: Mapping[str, int]
    context_cols: tuple[tuple[str, Mapping[str, int]], ...]
    slot_col: Mapping[str, int]

    @property
    def dense(self) -> slice:
        """The dense part: dc, ic, ner, their logs and n_slots."""
        return slice(self.scores.start, self.n_slots + 1)


#: columns of the dense part (dc, ic, ner, their logs, n_slots), the same in every spec
DENSE = 2 * len(SCORES) + 1


@functools.lru_cache(maxsize=4096)
def layout(spec: "FeatureSpec") -> Layout:
    """The :class:`Layout` of ``spec`` (cached: built once per spec)."""
    k = len(SCORES)
    rank = slice(DENSE, DENSE + spec.n_ranks)
    intent = slice(rank.stop, rank.stop + len(spec.intents))
    col, context = intent.stop, []
    for c, values in spec.context:
        context.append((c, slice(col, col + len(values))))
        col += len(values)
    slot = slice(col, col + len(spec.slot_types))
    evidence = slice(slot.stop, slot.stop + len(_evidence_plan(spec.evidence)[1]))
    return Layout(
        dim=evidence.stop, scores=slice(0, k), logs=slice(k, 2 * k), n_slots=2 * k, rank=rank, intent=intent,
        context=tuple(context), slot=slot, evidence=evidence,
        intent_col={v: intent.start + i for i, v in enumerate(spec.intents)},
        context_cols=tuple((c, {v: s.start + i for i, v in enumerate(values)}) for (c, values), (_, s) in zip(spec.context, context)),
        slot_col={t: slot.start + i for i, t in enumerate(spec.slot_types)})


#: the dense part's slices (``scores``, ``logs``, ``n_slots``), the same in every spec
DENSE_LAYOUT = layout(FeatureSpec(domain="", intents=(), context=(), slot_types=()))
