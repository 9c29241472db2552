r"""The linear models of many domains scored together, over one table of all their hypotheses.

A linear model's logit is a sum of a few terms, each a lookup (the feature layout of
:class:`~rerank.model.features.FeatureSpec`, the weights folded as in
:class:`~rerank.model.scorer.LogitScorer`):

.. math::
    s = b_d + w_d^{dense} \cdot (dc, ic, ner, \log dc, \log ic, \log ner, n_{slots})
          + w_d[\text{rank}] + w_d[\text{intent}] + \sum_c w_d[c = v] + \sum_{\text{slots}} w_d[\text{type}]
          + w_d^{evidence} \cdot e

so every hypothesis of every domain is scored by gathers over whole columns, with no
per-domain feature matrix: with a thousand domains, building a thousand small matrices
costs more than the arithmetic. The result equals the per-domain path up to the order
of the floating-point additions (the features are rounded to float32 first, as there).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rerank.corpus.massive import qualify_intent
from rerank.model.features import SCORES, _check_ranks, check_finite, dense_features, log_scores
from rerank.model.scorer import LogitScorer
from rerank.model.spec import DENSE, EVIDENCE, BadFeatures, FeatureSpec, _evidence_plan, evidence_fields, layout


def _codes(column) -> pa.DictionaryArray:
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return column if pa.types.is_dictionary(column.type) else pc.dictionary_encode(column)


class LinearDomains:
    """Folded weights of many linear models, laid out for lookups by (domain, value)."""

    def __init__(self, models: Mapping[str, tuple[FeatureSpec, LogitScorer]]):
        self.domains = sorted(models)
        self.code = {d: i for i, d in enumerate(self.domains)}
        n = len(self.domains)
        max_ranks = max((spec.n_ranks for spec, _ in models.values()), default=1)
        self.dense = np.zeros((n, DENSE))
        self.rank = np.zeros((n, max_ranks))
        self.bias = np.zeros(n)
        # value -> [(domain code, weight)]: the domains that weigh it (domain-qualified intents and a
        # domain's own slot types have one; devices and shared slot types have many)
        self._intents: dict[str, list] = {}
        self._context: dict[str, dict[str, list]] = {}
        self._slots: dict[str, list] = {}
        for i, d in enumerate(self.domains):
            spec, scorer = models[d]
            if scorer.kind != "linear":
                raise ValueError(f"{d}: only linear models are scored together, not {scorer.kind}")
            w = scorer.w
            lay = layout(spec)
            self.dense[i] = w[lay.dense]
            r = spec.n_ranks
            self.rank[i, :r] = w[lay.rank]
            self.rank[i, r:] = w[lay.rank.stop - 1]  # deeper ranks share the last one-hot
            self.bias[i] = scorer.b
            for group, columns in ((self._intents, lay.intent_col), (self._slots, lay.slot_col),
                                   *((self._context.setdefault(c, {}), cols) for c, cols in lay.context_cols)):
                for value, col in columns.items():
                    group.setdefault(value, []).append((i, float(w[col])))
        self.context_fields = tuple(self._context)
        # evidence features: one column per feature any domain uses, 0 weight where a domain does not
        self.evidence = [f for f in EVIDENCE if any(f in spec.evidence for spec, _ in models.values())]
        self.evidence_names = names = [name for f in self.evidence for name, _, _ in EVIDENCE[f]]
        self.evidence_w = np.zeros((n, len(names)))
        self.evidence_used = np.zeros((n, len(names)), dtype=bool)  # the domain's model reads the feature (its value must be there)
        self.evidence_columns = {}  # domain code -> the columns of its evidence features among the union's
        for i, d in enumerate(self.domains):
            spec, scorer = models[d]
            self.evidence_columns[i] = np.array([names.index(name) for name in spec.evidence_names], dtype=np.int64)
            self.evidence_used[i, self.evidence_columns[i]] = True
            for name, w in zip(spec.evidence_names, scorer.w[layout(spec).evidence]):
                self.evidence_w[i, names.index(name)] = w
        self._reads_all = bool(self.evidence_used.all())
        # per domain code, value -> weight: the lookups of one utterance's hypotheses (column_logits)
        self._intent_w = self._by_domain(self._intents)
        self._slot_w = self._by_domain(self._slots)
        self._context_w = {c: self._by_domain(keyed) for c, keyed in self._context.items()}

    def _by_domain(self, weighed: dict[str, list]) -> list[dict[str, float]]:
        out: list[dict[str, float]] = [{} for _ in self.domains]
        for v, pairs in weighed.items():
            for i, w in pairs:
                out[i][v] = w
        return out

    def _weights(self, weighed: dict[str, list], codes: pa.DictionaryArray, domain_code: np.ndarray) -> np.ndarray:
        """The weight of every row's (domain, value), 0 where that domain has none.

        The values are dictionary codes (a value is looked up once per distinct value, not per row).
        Values weighed by one domain only are two gathers over the values; the few that several
        domains weigh go through a [domains, those values] table.
        """
        values = codes.dictionary.to_pylist()
        width = len(values) + 1  # the last: a missing value
        owner = np.full(width, -1, dtype=np.int64)
        single = np.zeros(width)
        shared: dict[int, list] = {}
        for j, v in enumerate(values):
            pairs = weighed.get(v, ())
            if len(pairs) == 1:
                owner[j], single[j] = pairs[0]
            elif pairs:
                shared[j] = pairs
        idx = np.asarray(codes.indices.fill_null(len(values)).to_numpy(zero_copy_only=False), dtype=np.int64)
        out = np.where(owner[idx] == domain_code, single[idx], 0.0)
        if shared:
            column = np.full(width, len(shared), dtype=np.int64)
            table = np.zeros((len(self.domains), len(shared) + 1))
            for c, (j, pairs) in enumerate(shared.items()):
                column[j] = c
                for i, w in pairs:
                    table[i, c] = w
            out += table[domain_code, column[idx]]
        return out

    def _dense_part(self, dense: np.ndarray, domain_code: np.ndarray) -> np.ndarray:
        """Every row's dense features times its domain's dense weights.

        Rows usually come in runs of one domain (a table per domain, concatenated): then one
        matrix-vector product per run, instead of gathering a weight row for every row.
        """
        n = len(domain_code)
        starts = np.flatnonzero(np.diff(domain_code)) + 1 if n else np.zeros(0, np.int64)
        if len(starts) + 1 > 4 * len(self.domains):
            return np.einsum("ij,ij->i", dense, self.dense[domain_code])
        out = np.empty(n)
        bounds = np.concatenate([[0], starts, [n]])
        for a, b in zip(bounds[:-1], bounds[1:]):
            np.dot(dense[a:b], self.dense[domain_code[a]], out=out[a:b])
        return out

    def logits(self, table: pa.Table, domain_code: np.ndarray) -> np.ndarray:
        """Logits of the rows of ``table`` (hypotheses of these domains; ``domain_code`` per row, from :attr:`code`)."""
        n = table.num_rows
        scores = np.stack([np.asarray(table[c].to_numpy(zero_copy_only=False), dtype=np.float64) for c in SCORES], axis=1)
        check_finite(scores, table)
        # rounded through float32, as the per-domain feature matrix rounds them, then summed in float64
        dense = dense_features(scores, log_scores(scores), table["n_slots"].to_numpy(zero_copy_only=False))
        out = self._dense_part(dense, domain_code)
        rank = table["rank"].to_numpy(zero_copy_only=False)
        _check_ranks(rank)
        out += self.rank[domain_code, np.minimum(rank, self.rank.shape[1] - 1)]
        out += self._weights(self._intents, _codes(table["intent"]), domain_code)
        for c, keyed in self._context.items():
            out += self._weights(keyed, _codes(table[c]), domain_code)
        slots = table["slots"]
        if self._slots and n:
            slots = slots.combine_chunks() if isinstance(slots, pa.ChunkedArray) else slots
            types = pc.struct_field(pc.list_flatten(slots), "type")
            if len(types):
                owner = pc.list_parent_indices(slots).to_numpy()
                w = self._weights(self._slots, _codes(types), domain_code[owner])
                out += np.bincount(owner, weights=w, minlength=n)
        if self.evidence:
            out += self._evidence_part(table, scores, domain_code)
        return out + self.bias[domain_code]

    def record_logits(self, records: Sequence[Mapping[str, Any]], code: Sequence[int], scores: np.ndarray, logs: np.ndarray,
                      ranks: Sequence[int], evidence: np.ndarray | None = None) -> np.ndarray:
        """Logits of hypothesis dicts of these domains (``code``: each one's domain code), as :meth:`logits` reads a table.

        ``scores``/``logs``: their ``[n, 3]`` dc, ic, ner and logs; ``ranks``: each one's rank in its domain's list
        (:func:`~rerank.model.features.record_ranks`); ``evidence``: ``[n, len(evidence names)]`` in the union's
        columns (:attr:`evidence_columns`), for the rows of domains that read evidence. One utterance's
        hypotheses of every domain are scored with a few whole-array operations and one pass of dictionary
        lookups, instead of one feature matrix per domain.
        """
        slots = [r.get("slots") or () for r in records]
        types = [[s_[0] if isinstance(s_, (tuple, list)) else s_["type"] for s_ in ss] for ss in slots]
        n_slots = [r.get("n_slots", len(ss)) for r, ss in zip(records, slots)]
        context = [[r.get(c) for r in records] for c in self._context_w]
        return self.column_logits(code, scores, logs, ranks, n_slots, [r.get("intent") for r in records], context, types,
                                  evidence)

    def column_logits(self, code: Sequence[int], scores: np.ndarray, logs: np.ndarray, ranks: Sequence[int],
                      n_slots: Sequence[int], intents: Sequence[str], context: Sequence[Sequence[str]],
                      slot_types: Sequence[Sequence[str]], evidence: np.ndarray | None = None) -> np.ndarray:
        """:meth:`record_logits` of hypotheses given as columns: ``context`` holds a column per context field of
        :attr:`context_fields` (in that order), ``slot_types`` each hypothesis' slot types in order. The same
        numbers as :meth:`record_logits` (it is its arithmetic)."""
        codes = np.asarray(code, dtype=np.int64)
        dense = dense_features(scores, logs, n_slots)
        out = np.einsum("ij,ij->i", dense, self.dense[codes])
        out += self.rank[codes, np.minimum(np.asarray(ranks, dtype=np.int64), self.rank.shape[1] - 1)]
        # each row's intent weight, plus every context value's, plus every slot type's, summed in this order as Python
        # floats (IEEE doubles: numpy's float64 sums); one pass of lookups per row costs half of a numpy call per term
        intent_w, slot_w, domains = self._intent_w, self._slot_w, self.domains
        ctx_w = [(keyed, values) for keyed, values in zip(self._context_w.values(), context)]
        any_slot = bool(self._slots)
        extra = []
        for j, i in enumerate(code):
            intent = intents[j]
            w = intent_w[i].get(intent)
            if w is None:
                if isinstance(intent, str):
                    w = intent_w[i].get(qualify_intent(domains[i], intent))
                w = w or 0.0
            for keyed, values in ctx_w:
                w += keyed[i].get(values[j], 0.0)
            types = slot_types[j]
            if types and any_slot:
                weights = slot_w[i]
                for t in types:
                    w += weights.get(t, 0.0)
            extra.append(w)
        out += np.array(extra, dtype=np.float64)
        if evidence is not None and self.evidence:
            terms = evidence.astype(np.float32).astype(np.float64) * self.evidence_w[codes]
            # (where every domain reads every feature of the union, the mask keeps every term: not built)
            out += (terms if self._reads_all else np.where(self.evidence_used[codes], terms, 0.0)).sum(axis=1)
        return out + self.bias[codes]

    def union_evidence(self, runs: Sequence[tuple[str, int, np.ndarray | None]]) -> np.ndarray | None:
        """The ``evidence`` of :meth:`record_logits` from runs of rows ``(domain, rows, its evidence features or None)``:
        each domain's features in its columns of the union (NaN elsewhere); None when no model reads evidence."""
        if not self.evidence:
            return None
        out = np.full((sum(k for _, k, _ in runs), len(self.evidence_names)), np.nan)
        at = 0
        for d, k, E in runs:
            if E is not None:
                out[at:at + k, self.evidence_columns[self.code[d]]] = E
            at += k
        return out

    def evidence_of(self, part: pa.Table, table: pa.Table) -> pa.Table:
        """``part`` with the evidence columns of ``table`` the models need (null where ``table`` has none: for a
        domain whose model does not use them)."""
        for field in evidence_fields(self.evidence):
            column = table[field].cast(pa.float64()) if field in table.column_names else pa.nulls(table.num_rows, pa.float64())
            part = part.append_column(field, column)
        return part

    def _evidence_part(self, table: pa.Table, scores: np.ndarray, domain_code: np.ndarray) -> np.ndarray:
        def read(field: str) -> np.ndarray:
            if field not in table.column_names:
                raise BadFeatures(f"hypothesis table lacks the column {field!r}, which evidence features need", field)
            return np.asarray(table[field].fill_null(np.nan).to_numpy(zero_copy_only=False), dtype=np.float64)

        fields, plan = _evidence_plan(tuple(self.evidence))
        raw = [read(f) for f in fields]
        values = np.stack([t(v) if t is not None else v for v, t in ((scores[:, 0] if src < 0 else raw[src], t) for src, t in plan)],
                          axis=1).astype(np.float32).astype(np.float64)
        used = self.evidence_used[domain_code]
        if not np.isfinite(values[used]).all():
            bad = used & ~np.isfinite(values)
            row = int(np.flatnonzero(bad.any(axis=1))[0])
            name = self.evidence_names[int(np.flatnonzero(bad[row])[0])]
            raise BadFeatures(f"hypothesis table: {int(bad.any(axis=1).sum())} rows of {self.domains[domain_code[row]]} lack an "
                              f"evidence value its model needs (null or not finite); the first lacks {name!r}", name)
        return np.where(used, values * self.evidence_w[domain_code], 0.0).sum(axis=1)
