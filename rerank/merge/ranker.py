"""``CrossDomainRanker``: every domain's published re-ranker, one ranking across domains.

Each hypothesis is scored by its own domain's model; the calibrated scores
``p = sigmoid(s)`` are comparable across domains, so an utterance's
hypotheses are sorted by ``p``. A domain without a published model is
scored by the unweighted baseline ``dc*ic*ner`` (``missing="baseline"``) and
flagged, or refused (``missing="error"``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rerank.hypotheses.evidence import TEXT_FIELDS
from rerank.hypotheses.figures import baseline_score
from rerank.merge.columns import RANK_TOGETHER, HypothesisColumns, score_columns
from rerank.merge.scorers import BASELINE, DomainScorer, UnknownDomainError, _sigmoid
from rerank.model.features import log_scores
from rerank.model.many import LinearDomains
from rerank.model.records import evidence_matrix, features_from_records, record_ranks, record_scores
from rerank.model.registry import Registry
from rerank.model.scorer import LogitScorer
from rerank.model.spec import BadFeatures, FeatureSpec, evidence_fields
from rerank.model.text_evidence import BadText, TextIndex, request_tokens
from rerank.ranking import order_within_utterances, rank_within_utterances

log = logging.getLogger(__name__)
#: the text index of the last ranker built, by its domains' resources (a new release reuses it when they are the same)
_LAST_INDEX: dict[tuple, TextIndex] = {}
#: from this many linear domains on, score_tables scores them together (rerank.model.many)
MANY_DOMAINS = 32
TEXT_ROWS = 4096  # rows of a table read at once to compute their utterances' text-derived evidence
MISSING_POLICIES = ("baseline", "error")


@dataclass
class Ranked:
    """Flat arrays of a ranked set of hypotheses (rows in the input order)."""

    utt_index: np.ndarray
    score: np.ndarray
    rank: np.ndarray
    domain: np.ndarray  # domain code (index into Ranked.domains)
    domains: list[str]
    version: list[str]  # per domain code
    source_row: np.ndarray  # row inside its domain's table


class CrossDomainRanker:
    def __init__(self, scorers: Mapping[str, DomainScorer], corpus: str = ""):
        self.scorers = dict(scorers)
        self.corpus = corpus

    @property
    def domains(self) -> list[str]:
        return sorted(self.scorers)

    @property
    def fallbacks(self) -> list[str]:
        """Domains scored by the unweighted baseline because they have no published model."""
        return [d for d in self.domains if self.scorers[d].is_baseline]

    @classmethod
    def from_registry(
        cls,
        registry: Registry | str,
        corpus: str,
        domains: Sequence[str] | None = None,
        versions: Mapping[str, str] | None = None,
        loss: str | None = None,
        missing: str = "baseline",
        specs: Mapping[str, FeatureSpec] | None = None,
    ) -> "CrossDomainRanker":
        """The live (or pinned, ``versions={"Music": "v3"}``) model of every domain.

        A domain without a live version is scored by the baseline (``missing="baseline"``).
        ``loss`` instead takes the newest version trained with that loss, live or not.
        ``specs``, when given, are the feature specs of the data to be scored:
        a model with another spec is refused with what differs.
        """
        if missing not in MISSING_POLICIES:
            raise ValueError(f"merge.missing must be one of {MISSING_POLICIES}, not {missing!r}")
        registry = registry if isinstance(registry, Registry) else Registry(registry)
        versions = dict(versions or {})
        domains = list(domains) if domains is not None else registry.domains(corpus)
        if unknown := sorted(set(versions) - set(domains)):
            raise UnknownDomainError(f"versions pinned for unknown domains {unknown}; domains: {domains}")
        scorers = {}
        state = registry.live_state(corpus)  # read once: every domain's live version of one release, never a mix
        for d in domains:
            ref, d_loss = versions.get(d, "live"), (None if d in versions else loss)
            if ref == "live" and d_loss is None:
                ref = state.version(d)
                if ref is None and missing == "baseline":
                    scorers[d] = DomainScorer(d, BASELINE)
                    continue
                ref = ref or "live"
            # Only a domain with *no* published version falls back to the baseline; a published
            # version that cannot be read (truncated weights, bad spec) is an error, never skipped.
            if missing == "baseline" and registry.resolve(corpus, d, ref, d_loss) is None:
                what = f" with loss {d_loss!r}" if d_loss else " live"
                log.debug("%s: no%s version in %s; scoring it with the unweighted baseline",
                         d, what, registry.domain_dir(corpus, d))
                scorers[d] = DomainScorer(d, BASELINE)
                continue
            pub = registry.load(corpus, d, ref, loss=d_loss, expect_spec=(specs or {}).get(d))
            scorers[d] = DomainScorer.from_published(pub)
        return cls(scorers, corpus)

    @classmethod
    def baseline(cls, domains: Sequence[str], corpus: str = "") -> "CrossDomainRanker":
        return cls({d: DomainScorer(d, BASELINE) for d in domains}, corpus)

    def _scorer(self, domain: str) -> DomainScorer:
        try:
            return self.scorers[domain]
        except KeyError:
            raise UnknownDomainError(f"hypothesis of unknown domain {domain!r}; this ranker knows {self.domains}") from None

    def rank(self, hypotheses: Sequence[Mapping[str, Any]], unknown: str = "error", text: str | None = None) -> list[dict]:
        """Rank one utterance's hypotheses (dicts in the hypothesis schema) across domains.

        Returns new dicts sorted best first, each with ``score`` (calibrated
        probability), ``rank`` (0-based, across domains; the domain's own rank
        is kept as ``domain_rank``) and ``version`` (the model that scored it).
        A domain this ranker does not know is an error, or, with
        ``unknown="baseline"``, scored by the baseline (its version reads ``baseline``).
        ``text``: the utterance, from which the versions that carry their resources compute the text-derived
        evidence their hypotheses do not give (:mod:`rerank.model.text_evidence`).
        """
        by_domain: dict[str, list[int]] = {}
        for i, h in enumerate(hypotheses):
            try:
                by_domain.setdefault(h["domain"], []).append(i)
            except KeyError:
                raise BadFeatures(f"hypothesis {i} has no 'domain' field") from None
        if unknown == "baseline":
            scorers = {d: self.scorers.get(d) or DomainScorer(d, BASELINE) for d in by_domain}
        else:
            scorers = {d: self._scorer(d) for d in by_domain}
        T = self._text_values(hypotheses, by_domain, scorers, text)
        # dc/ic/ner, their check and their logs once for all domains, then each domain's model
        raw = record_scores(hypotheses)
        logs = log_scores(raw)
        scores = np.empty(len(hypotheses))
        model_rows = []
        # the evidence of every domain that reads the same families, in one pass over the dicts
        groups: dict[tuple, list[str]] = {}
        for d in by_domain:
            if not scorers[d].is_baseline and scorers[d].spec.evidence:
                groups.setdefault(scorers[d].spec.evidence, []).append(d)
        evidence = {}
        for families, ds in groups.items():
            rows = [i for d in ds for i in by_domain[d]]
            try:
                E = evidence_matrix([hypotheses[i] for i in rows], families, raw[rows], text=None if T is None else T[rows])
            except BadFeatures:  # said again with the domain's name
                for d in ds:
                    idx = by_domain[d]
                    evidence_matrix([hypotheses[i] for i in idx], families, raw[idx], d, idx, None if T is None else T[idx])
                raise
            bounds = np.cumsum([0] + [len(by_domain[d]) for d in ds])
            evidence.update({d: E[bounds[j]:bounds[j + 1]] for j, d in enumerate(ds)})
        # the linear models of several domains: scored together by lookups (rerank.model.many), no matrix per domain
        linear = [d for d in by_domain if self._is_linear(d)]
        if len(linear) < RANK_TOGETHER:
            linear = []
        if linear:
            many = self._linear_domains()
            rows = [i for d in linear for i in by_domain[d]]
            code, ranks = [], []
            for d in linear:
                idx = by_domain[d]
                code += [many.code[d]] * len(idx)
                ranks += record_ranks([hypotheses[i] for i in idx], raw[idx], d)
            ev = many.union_evidence([(d, len(by_domain[d]), evidence.get(d)) for d in linear])
            scores[rows] = many.record_logits([hypotheses[i] for i in rows], code, raw[rows], logs[rows], ranks, ev)
            model_rows += rows
        for d, idx in by_domain.items():
            scorer = scorers[d]
            if d in linear:
                continue
            if scorer.is_baseline:
                scores[idx] = baseline_score(*raw[idx].T)
            else:
                scores[idx] = scorer.logit(features_from_records([hypotheses[i] for i in idx], scorer.spec, raw[idx], logs[idx],
                                                                 evidence.get(d)))
                model_rows += idx
        scores[model_rows] = _sigmoid(scores[model_rows])
        version = {d: s.version for d, s in scorers.items()}
        order = np.argsort(-scores, kind="stable").tolist()
        values = scores.tolist()
        domain_rank = [h.get("rank") for h in hypotheses]
        for d, idx in by_domain.items():
            if domain_rank[idx[0]] is None:  # (features_from_records refused a list ranked in part)
                for position, i in enumerate(sorted(idx, key=lambda i: -raw[i, 1] * raw[i, 2])):
                    domain_rank[i] = position
        out = []
        for r, i in enumerate(order):
            h = hypotheses[i]  # (the answer holds what the client sent, not the evidence computed for it)
            out.append({**h, "domain_rank": domain_rank[i], "score": values[i], "rank": r, "version": version[h["domain"]]})
        return out

    def _text_values(self, hypotheses: Sequence[Mapping[str, Any]], by_domain: Mapping[str, list[int]],
                     scorers: Mapping[str, DomainScorer], text: str | None) -> np.ndarray | None:
        """The text-derived fields that the domains' versions compute from ``text`` (:class:`TextIndex`), ``[n, 6]``
        with NaN for the other domains; None when no version computes any. Without a text, a model that needs
        it is refused, naming the field."""
        needs = {d: r for d in by_domain if (r := scorers[d].text_resources) is not None}
        if not needs:
            return None
        if text is None:
            for d in needs:
                fields = [f for f in evidence_fields(scorers[d].spec.evidence) if f in TEXT_FIELDS]
                if any(f not in hypotheses[i] for i in by_domain[d] for f in fields):
                    raise BadFeatures(f"{d}: its model computes {fields} from the utterance: send the utterance's "
                                      "'text' (or those fields in every one of its hypotheses)", "text")
            return None
        try:
            tokens = request_tokens(text)
        except BadText as err:
            raise BadFeatures(str(err), err.field) from None
        domain = [h["domain"] if h["domain"] in needs else "" for h in hypotheses]
        return self._text_index().values(tokens, domain, [h.get("intent") for h in hypotheses], [h.get("slots") for h in hypotheses])

    def _text_index(self) -> TextIndex:
        """The index of every domain of this ranker that computes its text-derived evidence (built once; the domains
        a call scores by the baseline carry no resources, so every domain that computes evidence is in it)."""
        index = getattr(self, "_index", None)
        if index is None:
            resources = {d: r for d, s in sorted(self.scorers.items()) if (r := s.text_resources) is not None}
            # a release that moves no domain's resources (versions trained on the same tables share them) keeps the index
            key = tuple((d, id(r)) for d, r in resources.items())
            index = _LAST_INDEX.get(key)
            if index is None:
                index = TextIndex(resources)
                _LAST_INDEX.clear()  # (the index holds its resources: their ids stay theirs while it is kept)
                _LAST_INDEX[key] = index
            self._index = index
        return index

    def score_columns(self, cols: HypothesisColumns, unknown: str = "error") -> tuple[np.ndarray, list[int], dict[str, str]]:
        """:func:`rerank.merge.columns.score_columns`: :meth:`rank` of hypotheses given as columns."""
        return score_columns(self, cols, unknown)

    def _linear_names(self) -> frozenset:
        names = getattr(self, "_linear_set", None)
        if names is None:
            names = self._linear_set = frozenset(d for d in self.scorers if self._is_linear(d))
        return names

    def rank_table(self, table: pa.Table, unknown: str = "error") -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
        """Score and rank a checked n-best table of many utterances (:func:`rerank.hypotheses.nbest_table.check_nbest_table`).

        Returns ``(score, rank, versions)``: per row its calibrated score and 0-based rank in its
        utterance, and the version used for every domain of the table. ``unknown="baseline"``
        scores a domain without a model by the baseline.
        """
        table = self._table_text(table)
        domain = table["domain"].combine_chunks()
        codes = pc.dictionary_encode(domain)
        names = codes.dictionary.to_pylist()
        idx = np.asarray(codes.indices)
        order = np.argsort(idx, kind="stable")
        bounds = np.searchsorted(idx[order], np.arange(len(names) + 1))
        by_domain = table.take(pa.array(order))  # one gather; each domain is then a zero-copy slice
        parts = {d: by_domain.slice(int(bounds[j]), int(bounds[j + 1] - bounds[j])) for j, d in enumerate(names)}
        known = [d for d in names if d in self.scorers]
        if unknown != "baseline" and len(known) < len(names):
            self._scorer(next(d for d in names if d not in self.scorers))  # raises, naming it
        scored = self._score_many(parts, known)
        for d in names:
            if d not in scored:
                scored[d] = DomainScorer(d, BASELINE).score_table(parts[d])
        score = np.empty(table.num_rows)
        for j, d in enumerate(names):
            score[order[bounds[j]:bounds[j + 1]]] = scored[d]
        versions = {d: self.scorers[d].version if d in self.scorers else BASELINE for d in names}
        return score, rank_within_utterances(table["utt_index"].to_numpy(), score), versions

    def _table_text(self, table: pa.Table) -> pa.Table:
        """A checked n-best table with the text-derived evidence that the domains' versions compute from its ``text``
        column (an utterance's text on any of its rows) where the table gives none."""
        needs = {d: r for d in pc.unique(table["domain"]).to_pylist() if (r := self.scorers.get(d)) is not None
                 and r.text_resources is not None}
        if not needs:
            return table
        if "text" not in table.column_names:
            lacking = [f for f in TEXT_FIELDS if f not in table.column_names]
            if lacking:
                d = next(iter(needs))
                raise BadFeatures(f"{d}: its model computes {lacking} from the utterance: give the table a 'text' column "
                                  "(the utterance, on any of its rows) or those columns", "text")
            return table
        index = self._text_index()
        utt = table["utt_index"].to_numpy()
        order = np.argsort(utt, kind="stable")
        bounds = np.flatnonzero(np.r_[True, utt[order][1:] != utt[order][:-1], True]).tolist()
        by_utt = table.select(["text", "domain", "intent", "slots"]).take(pa.array(order))
        T = np.full((table.num_rows, len(TEXT_FIELDS)), np.nan)
        # ~TEXT_ROWS rows (whole utterances) made objects at a time: all rows at once hold the GIL for tens of ms (/health)
        edges = [0, *(np.flatnonzero(np.diff(np.asarray(bounds[:-1]) // TEXT_ROWS)) + 1).tolist(), len(bounds) - 1]
        for u, v in zip(edges[:-1], edges[1:]):
            at, part = bounds[u], bounds[u:v + 1]
            text, domain, intent, slots = (c.to_pylist() for c in by_utt.slice(at, part[-1] - at).columns)
            for a, b in zip(part[:-1], part[1:]):
                rows = slice(a - at, b - at)
                said = next((t for t in text[rows] if t is not None), None)
                if said is None:
                    continue
                try:
                    tokens = request_tokens(said)
                except BadText as err:
                    raise BadFeatures(f"utterance {table['utt'][int(order[a])].as_py()!r}: {err}", "text") from None
                T[order[a:b]] = index.values(tokens, [x if x in needs else "" for x in domain[rows]], intent[rows], slots[rows])
        for j, f in enumerate(TEXT_FIELDS):
            computed = pa.array(T[:, j], mask=np.isnan(T[:, j]))
            if f in table.column_names:
                computed = pc.coalesce(table[f].combine_chunks().cast(pa.float64()), computed)  # (the client's first)
                table = table.set_column(table.schema.get_field_index(f), f, computed)
            else:
                table = table.append_column(f, computed)
        return table

    def prepare(self) -> "CrossDomainRanker":
        """Build what scoring many linear domains together, and the text-derived evidence, need now, not in the first
        request that needs them."""
        if self._linear_names():
            self._linear_domains()
        self._text_index()
        return self

    def _is_linear(self, domain: str) -> bool:
        s = self.scorers.get(domain)
        return s is not None and not s.is_baseline and isinstance(s.logit, LogitScorer) and s.logit.kind == "linear"

    def _linear_domains(self) -> LinearDomains:
        if getattr(self, "_many", None) is None:
            self._many = LinearDomains({d: (s.spec, s.logit) for d, s in self.scorers.items() if self._is_linear(d)})
        return self._many

    def _score_many(self, tables: Mapping[str, pa.Table], domains: list[str]) -> dict[str, np.ndarray]:
        """Every domain's scores; the linear models of many domains together (:mod:`rerank.model.many`)."""
        linear = [d for d in domains if self._is_linear(d)]
        if len(linear) < MANY_DOMAINS:
            return {d: self.scorers[d].score_table(tables[d]) for d in domains}
        many = self._linear_domains()
        columns = ["domain", "dc", "ic", "ner", "n_slots", "rank", "intent", "slots", *many.context_fields]
        big = pa.concat_tables([many.evidence_of(tables[d].select(columns), tables[d]) for d in linear])
        sizes = [tables[d].num_rows for d in linear]
        codes = np.repeat(np.array([many.code[d] for d in linear], dtype=np.int64), sizes)
        p = _sigmoid(many.logits(big, codes))
        out = dict(zip(linear, np.split(p, np.cumsum(sizes)[:-1])))
        for d in domains:
            if d not in out:
                out[d] = self.scorers[d].score_table(tables[d])
        return out

    def score_tables(self, tables: Mapping[str, pa.Table]) -> Ranked:
        """Score and rank whole hypothesis tables (one per domain) of one split."""
        domains = sorted(tables)
        for d in domains:
            self._scorer(d)
        utt = [tables[d]["utt_index"].to_numpy() for d in domains]
        scored = self._score_many(tables, domains)
        score = [scored[d] for d in domains]
        code = [np.full(tables[d].num_rows, j, dtype=np.int32) for j, d in enumerate(domains)]
        src = [np.arange(tables[d].num_rows) for d in domains]
        u, s = np.concatenate(utt) if utt else np.zeros(0, np.int64), np.concatenate(score) if score else np.zeros(0)
        return Ranked(u, s, rank_within_utterances(u, s), np.concatenate(code) if code else np.zeros(0, np.int32),
                      domains, [self.scorers[d].version for d in domains], np.concatenate(src) if src else np.zeros(0, np.int64))


def ranked_table(ranked: Ranked, tables: Mapping[str, pa.Table]) -> pa.Table:
    """The ranked output: utterance id, rank, domain, intent, slots, score, model version."""
    order = order_within_utterances(ranked.utt_index, ranked.score)
    parts = []
    for j, d in enumerate(ranked.domains):
        t = tables[d]
        parts.append(t.select(["utt_id", "intent", "slots"]))
    allrows = pa.concat_tables(parts) if parts else None
    offsets = np.cumsum([0] + [tables[d].num_rows for d in ranked.domains])
    flat = offsets[ranked.domain] + ranked.source_row
    taken = allrows.take(pa.array(flat[order])) if allrows is not None else None
    version = np.array(ranked.version, dtype=object)[ranked.domain[order]]
    return pa.table({
        "utt_index": pa.array(ranked.utt_index[order], pa.int32()),
        "utt_id": taken["utt_id"],
        "rank": pa.array(ranked.rank[order], pa.int32()),
        "domain": pa.array(np.array(ranked.domains, dtype=object)[ranked.domain[order]].tolist(), pa.string()),
        "intent": taken["intent"],
        "slots": taken["slots"],
        "score": pa.array(ranked.score[order], pa.float64()),
        "version": pa.array(version.tolist(), pa.string()),
    })
