"""The text-derived evidence of one utterance's hypotheses, computed by the versions that carry their resources.

A request gives the utterance's ``text`` once; every domain whose published version carries its evidence
resources (:class:`rerank.hypotheses.evidence.DomainData`) computes, for its own hypotheses, the fields of
:data:`~rerank.hypotheses.evidence.TEXT_FIELDS` that the client did not send (a field the client sends takes
precedence). The numbers are those of the dev and test tables, which prepare and import compute with the
same resources from the same text (:meth:`DomainData.utterance_evidence`, :meth:`DomainData.hypothesis_evidence`).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from rerank.corpus.massive import MAX_TOKENS, qualify_intent
from rerank.corpus.utterance import text_tokens
from rerank.hypotheses.evidence import TEXT_FIELDS, DomainData


class BadText(ValueError):
    """A request's ``text`` that cannot be read (not a string, too many tokens); ``field`` names it."""

    def __init__(self, message: str, field: str = "text"):
        super().__init__(message)
        self.field = field


def request_tokens(text: Any, where: str = "") -> tuple[str, ...]:
    """The tokens of a request's ``text``, checked: a string of at most :data:`MAX_TOKENS` tokens."""
    if not isinstance(text, str):
        raise BadText(f"field '{where}text' must be a string (the utterance), not {type(text).__name__}", f"{where}text")
    tokens = text_tokens(text)
    if len(tokens) > MAX_TOKENS:
        raise BadText(f"field '{where}text' has {len(tokens)} tokens; an utterance has at most {MAX_TOKENS}", f"{where}text")
    return tokens


def slot_pairs(slots: Any) -> Sequence[tuple[str, str]]:
    """``(type, value)`` pairs of a hypothesis' slots (pairs already, or ``{"type", "value"}`` dicts)."""
    if not slots or all(s.__class__ is tuple for s in slots):
        return slots or ()
    return [(s.get("type"), s.get("value")) if isinstance(s, Mapping) else (s[0], s[1]) for s in slots]


class TextIndex:
    """The text-derived evidence of many domains' hypotheses of one utterance, in a few array operations.

    Built once per set of models (a ranker): every domain's training utterances get a place in one array,
    so that one utterance's overlaps with the training utterances of all its hypotheses' domains are one
    ``bincount`` of the inverted index's hits (the domains' postings of its tokens), its similarities one
    division, and the maxima per intent one ``reduceat``; its tokens' counts in every domain are one table.
    The numbers are those of :class:`DomainData`'s methods, which prepare and import fill the tables with (the
    same operations on the same numbers; the unigram mean sums the same terms in the same order).
    """

    def __init__(self, resources: Mapping[str, DomainData]):
        self.resources = dict(resources)
        self._code = {d: j for j, d in enumerate(self.resources)}
        data = list(self.resources.values())
        self._sizes = [r._training_sizes for r in data]
        self._n = np.array([len(s) for s in self._sizes], dtype=np.int64)
        self._starts = [r._intent_starts[:len(r.intents)] for r in data]
        self._n_intents = np.array([len(r.intents) for r in data], dtype=np.int64)
        self._denominator = np.array([r._denominator for r in data], dtype=np.float64)
        # every token's count in every domain: token -> row of a CSR table [tokens, domains]
        token_row: dict[str, int] = {}
        rows, codes, counts = [], [], []
        for j, r in enumerate(data):
            for t, c in r.counts.items():
                rows.append(token_row.setdefault(t, len(token_row)))
                codes.append(j)
                counts.append(c)
        order = np.argsort(np.asarray(rows, dtype=np.int64), kind="stable")
        self._token_row = token_row
        self._ptr = np.searchsorted(np.asarray(rows, dtype=np.int64)[order], np.arange(len(token_row) + 1))
        self._codes = np.asarray(codes, dtype=np.int64)[order]
        self._counts = np.asarray(counts, dtype=np.float64)[order]
        self._all: tuple | None = None  # the layout of every domain at once (the common case: most domains emit)

    def __contains__(self, domain: str) -> bool:
        return domain in self._code

    def _layout(self, domains: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Offsets of ``domains``' training utterances in one array, their sizes, their intents' starts there, and
        the offsets of their intents among all of theirs."""
        if len(domains) == len(self._code) and list(domains) == list(self._code):
            if self._all is None:
                self._all = self._concat(domains)
            return self._all
        return self._concat(domains)

    def _concat(self, domains: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        codes = [self._code[d] for d in domains]
        offsets = np.concatenate([[0], np.cumsum(self._n[codes])]).astype(np.int64)
        sizes = np.concatenate([self._sizes[j] for j in codes]) if codes else np.zeros(0)
        starts = np.concatenate([self._starts[j] + offsets[k] for k, j in enumerate(codes)]) if codes else np.zeros(0, np.int64)
        groups = np.concatenate([[0], np.cumsum(self._n_intents[codes])]).astype(np.int64)
        return offsets, sizes, starts, groups

    def _by_intent(self, tokens: Sequence[str], domains: Sequence[str], layout) -> np.ndarray:
        """:meth:`DomainData.nearest_one` of every domain of ``domains``, one after the other."""
        offsets, sizes, starts, _ = layout
        s = set(tokens)
        parts = []
        for k, d in enumerate(domains):
            data = self.resources[d]
            col = data._column
            indptr, indices = data._training.indptr, data._training.indices
            base = offsets[k]
            for t in s:
                j = col.get(t)
                if j is not None:
                    parts.append(indices[indptr[j]:indptr[j + 1]] + base)
        if not parts:
            return np.zeros(len(starts))
        overlap = np.bincount(np.concatenate(parts), minlength=len(sizes)).astype(np.float64)
        return np.maximum.reduceat(overlap / np.maximum(len(s) + sizes - overlap, 1.0), starts)

    def _per_domain(self, tokens: Sequence[str], codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """OOV share and unigram mean of ``tokens`` in the domains ``codes`` (:meth:`DomainData.oov_share`,
        :meth:`DomainData.unigram_logp`)."""
        if not tokens:
            return np.zeros(len(codes)), np.zeros(len(codes))
        C = np.zeros((len(tokens), len(self._code)))
        for k, t in enumerate(tokens):
            r = self._token_row.get(t)
            if r is not None:
                lo, hi = self._ptr[r], self._ptr[r + 1]
                C[k, self._codes[lo:hi]] = self._counts[lo:hi]
        C = C[:, codes]
        n = len(tokens)
        return (C == 0).sum(axis=0) / n, np.log((C + DomainData.SMOOTHING) / self._denominator[codes]).sum(axis=0) / n

    def values(self, tokens: Sequence[str], domain: Sequence[str], intent: Sequence[str],
               slots: Callable[[int], Sequence[tuple[str, str]]]) -> np.ndarray:
        """``[n, len(TEXT_FIELDS)]``: the text-derived fields of an utterance's ``n`` hypotheses (``domain``,
        domain-qualified ``intent`` and ``slots(i)`` of each), NaN for a domain this index does not hold."""
        n = len(domain)
        out = np.full((n, len(TEXT_FIELDS)), np.nan)
        rows: dict[str, list[int]] = {}
        for i, d in enumerate(domain):
            if d in self._code:
                rows.setdefault(d, []).append(i)
        if not rows:
            return out
        domains = list(rows)
        layout = self._layout(domains)
        by_group = np.append(self._by_intent(tokens, domains, layout), 0.0)  # (the last: an intent a domain never had)
        codes = np.array([self._code[d] for d in domains], dtype=np.int64)
        ends = layout[3]
        nearest = np.array([by_group[ends[k]:ends[k + 1]].max(initial=0.0) for k in range(len(domains))])
        oov, unigram = self._per_domain(tokens, codes)
        idx, at, group, miss = [], [], [], []
        for k, d in enumerate(domains):
            data = self.resources[d]
            known, base, memo = data.intent_index, ends[k], {}
            for i in rows[d]:
                idx.append(i)
                at.append(k)
                g = known.get(intent[i])
                if g is None and isinstance(intent[i], str):  # (named as in the gold file: "play" of Music)
                    g = known.get(qualify_intent(d, intent[i]))
                group.append(base + g if g is not None else -1)
                key = tuple(slots(i))
                hit = memo.get(key)
                if hit is None:
                    hit = memo[key] = data.catalogue_miss(key)
                miss.append(hit)
        at = np.asarray(at, dtype=np.int64)
        block = np.empty((len(idx), len(TEXT_FIELDS)))
        block[:, _FIELD["oov_share"]] = oov[at]
        block[:, _FIELD["catalogue_miss"]] = miss
        block[:, _FIELD["n_tokens"]] = len(tokens)
        block[:, _FIELD["unigram_logp"]] = unigram[at]
        block[:, _FIELD["neighbour_jaccard"]] = nearest[at]
        block[:, _FIELD["neighbour_intent_jaccard"]] = by_group[group]
        out[idx] = block
        return out


_FIELD = {f: j for j, f in enumerate(TEXT_FIELDS)}
