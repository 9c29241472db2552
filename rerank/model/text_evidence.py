"""The text-derived evidence of one utterance's hypotheses, computed by the versions that carry their resources.

A request gives the utterance's ``text`` once; every domain whose published version carries its evidence
resources (:class:`rerank.hypotheses.evidence.DomainData`) computes, for its own hypotheses, the fields of
:data:`~rerank.hypotheses.evidence.TEXT_FIELDS` that the client did not send (a field the client sends takes
precedence). The numbers are those of the dev and test tables, which prepare and import compute with the
same resources from the same text (:meth:`DomainData.utterance_evidence`, :meth:`DomainData.hypothesis_evidence`).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from rerank.corpus.massive import MAX_TOKENS, qualify_intent
from rerank.corpus.utterance import text_tokens
from rerank.hypotheses.evidence import TEXT_FIELDS, DomainData
from rerank.metrics.semer import normalize_value


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


class TextIndex:
    """The text-derived evidence of many domains' hypotheses of one utterance, in a few array operations.

    Built once per set of models (a ranker): every domain's training utterances get a place in one array
    and every token one list of the places of the training utterances that hold it (an inverted index over
    all domains). One utterance's overlaps with every training utterance are then one ``bincount`` of its
    tokens' postings, its similarities one division, their maxima per intent one ``reduceat``, and its
    tokens' counts in every domain one small table. When an utterance's hypotheses come from a few of many
    domains, only those domains' postings are read (:meth:`_few`). The numbers are those of
    :class:`DomainData`'s methods, which prepare and import fill the tables with (the same operations on the
    same integers; the unigram mean sums the same terms in the same order).
    """

    #: below this share of the index's domains, an utterance's similarities are computed for its domains only
    FEW = 0.25
    #: the most entries (tokens x domains) of the dense table of counts (8 bytes each); beyond, a sparse one
    DENSE_MAX = 4_000_000

    def __init__(self, resources: Mapping[str, DomainData]):
        self.resources = dict(resources)
        self._code = {d: j for j, d in enumerate(self.resources)}
        data = list(self.resources.values())
        n_utts = np.array([len(r._training_sizes) for r in data], dtype=np.int64)
        self._offset = np.concatenate([[0], np.cumsum(n_utts)]).astype(np.int64)  # domain -> its first utterance
        self._sizes = np.concatenate([r._training_sizes for r in data]) if data else np.zeros(0)
        n_intents = np.array([len(r.intents) for r in data], dtype=np.int64)
        self._group = np.concatenate([[0], np.cumsum(n_intents)]).astype(np.int64)  # domain -> its first intent
        self._starts = (np.concatenate([r._intent_starts[:len(r.intents)] + self._offset[j] for j, r in enumerate(data)])
                        if data else np.zeros(0, np.int64))
        self._nonempty = np.flatnonzero(n_intents)  # (a domain without training utterances: every similarity 0)
        self._nonempty_starts = self._group[:-1][self._nonempty]
        # per domain, for an utterance among a few of many domains (_few): its inverted index and intents
        self._local = [(r._column, r._training.indptr.tolist(), r._training.indices, len(r._training_sizes))
                       for r in data]
        self._local_sizes = [r._training_sizes for r in data]
        self._local_starts = [r._intent_starts[:len(r.intents)] for r in data]
        self._places = [np.arange(self._group[j], self._group[j + 1]) for j in range(len(data))]
        # domain -> intent -> its place among every domain's intents
        self._groups = {d: {name: int(self._group[j]) + k for k, name in enumerate(r.intents)}
                        for j, (d, r) in enumerate(self.resources.items())}
        self._denominator = np.array([r._denominator for r in data], dtype=np.float64)
        # token -> row; per row, every domain's count (for the unigram and OOV) and every utterance holding it
        token_row: dict[str, int] = {}
        rows, codes, counts, post_rows, post_cols = [], [], [], [], []
        for j, r in enumerate(data):
            local = np.array([token_row.setdefault(t, len(token_row)) for t in r.counts], dtype=np.int64)
            rows.append(local)
            codes.append(np.full(len(local), j, dtype=np.int64))
            counts.append(np.fromiter(r.counts.values(), dtype=np.float64, count=len(local)))
            post_rows.append(np.repeat(local, np.diff(r._training.indptr)))
            post_cols.append(r._training.indices.astype(np.int64) + self._offset[j])
        self._token_row = token_row
        cat = (lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int64))
        self._ptr, self._codes, self._counts = _csr(cat(rows), len(token_row), cat(codes), cat(counts))
        self._post_ptr, self._post = _csr(cat(post_rows), len(token_row), cat(post_cols))
        self._catalogue = {(d, t, v) for d, r in self.resources.items() for t, v in r.catalogue}  # (normalised values)
        # every token's count in every domain as one dense table when it is small (one gather per utterance)
        self._dense = None
        if (len(token_row) + 1) * len(data) <= self.DENSE_MAX:
            self._dense = np.zeros((len(token_row) + 1, len(data)))
            self._dense[np.repeat(np.arange(len(token_row)), np.diff(self._ptr)), self._codes] = self._counts

    def __contains__(self, domain: str) -> bool:
        return domain in self._code

    def _by_intent(self, tokens: Sequence[str], codes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Every intent's highest similarity to ``tokens`` (:meth:`DomainData.nearest_one`, domain after domain), and
        every domain's highest (:meth:`DomainData.nearest`); 0 for the domains not in ``codes`` when only those are
        computed."""
        s = set(tokens)
        if len(codes) < self.FEW * len(self._code):
            return self._few(s, codes)
        nearest = np.zeros(len(self._code))
        rows = [r for t in s if (r := self._token_row.get(t)) is not None]
        if not rows or not len(self._starts):
            return np.zeros(len(self._starts)), nearest
        ptr, post = self._post_ptr, self._post
        overlap = np.bincount(np.concatenate([post[ptr[r]:ptr[r + 1]] for r in rows]), minlength=len(self._sizes)).astype(np.float64)
        by_group = np.maximum.reduceat(overlap / np.maximum(len(s) + self._sizes - overlap, 1.0), self._starts)
        nearest[self._nonempty] = np.maximum.reduceat(by_group, self._nonempty_starts)
        return by_group, nearest

    def _few(self, s: set, codes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_by_intent` reading the postings of the domains ``codes`` only."""
        by_group, nearest = np.zeros(int(self._group[-1])), np.zeros(len(self._code))
        parts, shifts, kept, at = [], [], [], 0
        for j in codes:
            col, indptr, indices, n = self._local[j]
            if not n:
                continue
            for t in s:
                k = col.get(t)
                if k is not None:
                    parts.append(indices[indptr[k]:indptr[k + 1]])
                    shifts.append(at)
            kept.append(j)
            at += n
        if not parts:
            return by_group, nearest
        hits = np.concatenate(parts) + np.repeat(np.array(shifts, dtype=np.int64), [len(p) for p in parts])
        overlap = np.bincount(hits, minlength=at).astype(np.float64)
        size = np.concatenate([self._local_sizes[j] for j in kept])
        offsets = np.concatenate([[0], np.cumsum([self._local[j][3] for j in kept])[:-1]]).astype(np.int64)
        starts = np.concatenate([self._local_starts[j] + o for j, o in zip(kept, offsets.tolist())])
        local = np.maximum.reduceat(overlap / np.maximum(len(s) + size - overlap, 1.0), starts)
        by_group[np.concatenate([self._places[j] for j in kept])] = local
        n_groups = [len(self._local_starts[j]) for j in kept]
        nearest[kept] = np.maximum.reduceat(local, np.concatenate([[0], np.cumsum(n_groups)[:-1]]).astype(np.int64))
        return by_group, nearest

    def _per_domain(self, tokens: Sequence[str], codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """OOV share and unigram mean of ``tokens`` in the domains ``codes`` (:meth:`DomainData.oov_share`,
        :meth:`DomainData.unigram_logp`)."""
        if not tokens:
            return np.zeros(len(codes)), np.zeros(len(codes))
        rows = self._token_row
        if self._dense is not None:  # [tokens + 1, domains]: the last row, a token no domain has
            C = self._dense[[rows.get(t, -1) for t in tokens]][:, codes]
        else:
            C = np.zeros((len(tokens), len(self._code)))
            for k, t in enumerate(tokens):
                r = rows.get(t)
                if r is not None:
                    lo, hi = self._ptr[r], self._ptr[r + 1]
                    C[k, self._codes[lo:hi]] = self._counts[lo:hi]
            C = C[:, codes]
        n = len(tokens)
        # (a running sum: the terms added one after the other, as DomainData.unigram_logp adds them)
        logs = np.log((C + DomainData.SMOOTHING) / self._denominator[codes])
        return (C == 0).sum(axis=0) / n, np.add.accumulate(logs, axis=0)[-1] / n

    def values(self, tokens: Sequence[str], domain: Sequence[str], intent: Sequence[str], slots: Sequence[Any]) -> np.ndarray:
        """``[n, len(TEXT_FIELDS)]``: the text-derived fields of an utterance's ``n`` hypotheses (``domain``,
        domain-qualified ``intent`` and ``slots``: pairs or ``{"type", "value"}`` dicts, of each), NaN for a
        domain this index does not hold."""
        n = len(domain)
        out = np.full((n, len(TEXT_FIELDS)), np.nan)
        code_of, groups = self._code, self._groups
        idx = [i for i, d in enumerate(domain) if d in code_of]
        if not idx:
            return out
        code = [code_of[domain[i]] for i in idx]
        group = [groups[domain[i]].get(intent[i], -1) for i in idx]
        for k, g in enumerate(group):
            if g < 0 and isinstance(intent[idx[k]], str):  # (named as in the gold file: "play" of Music)
                d = domain[idx[k]]
                group[k] = groups[d].get(qualify_intent(d, intent[idx[k]]), -1)
        # DomainData.catalogue_miss of each hypothesis' slots, a set lookup per slot (its value as given, else normalised)
        catalogue, miss = self._catalogue, [0] * len(idx)
        for k, i in enumerate(idx):
            sl = slots[i]
            if sl:
                d, c = domain[i], 0
                for x in sl:
                    kind = x.__class__
                    t, v = (x["type"], x["value"]) if kind is dict else (x[0], x[1]) if kind is tuple or kind is list else (x.type, x.value)
                    if (d, t, v) not in catalogue and (d, t, normalize_value(v)) not in catalogue:
                        c += 1
                miss[k] = c
        distinct = sorted(set(code))
        codes = np.array(distinct, dtype=np.int64)
        by_group, nearest = self._by_intent(tokens, distinct)
        # per domain: oov share, tokens, unigram mean, nearest neighbour; gathered once for every hypothesis
        per_domain = np.zeros((4, len(self._code)))
        per_domain[1] = len(tokens)
        per_domain[0, codes], per_domain[2, codes] = self._per_domain(tokens, codes)
        per_domain[3] = nearest
        block = np.empty((len(idx), len(TEXT_FIELDS)))
        block[:, _COMMON] = per_domain[:, code].T
        block[:, _FIELD["catalogue_miss"]] = miss
        block[:, _FIELD["neighbour_intent_jaccard"]] = np.append(by_group, 0.0)[group]  # (-1: an intent it never had)
        if len(idx) == n:
            return block
        out[idx] = block
        return out


def _csr(rows: np.ndarray, n_rows: int, *columns: np.ndarray) -> tuple[np.ndarray, ...]:
    """Row pointers of ``rows`` (``n_rows`` of them), and ``columns`` in row order (a stable sort: in order within a row)."""
    order = np.argsort(rows, kind="stable")
    return (np.searchsorted(rows[order], np.arange(n_rows + 1)), *(c[order] for c in columns))


_FIELD = {f: j for j, f in enumerate(TEXT_FIELDS)}
#: the columns of the fields that are the same for all of a domain's hypotheses, in the order of TextIndex.values
_COMMON = [_FIELD[f] for f in ("oov_share", "n_tokens", "unigram_logp", "neighbour_jaccard")]
