"""Evidence a domain owns, beside its dc, ic and ner: how its recognizers and its training data see a hypothesis.

Two kinds:

- **NLU-side** (:data:`rerank.hypotheses.fields.NLU_FIELDS`): the IC's margin and entropy and the slot tagger's token marginals.
  Only the NLU has them: a client sends them, or a model does without them.
- **text-derived** (:data:`TEXT_FIELDS`): computed from the utterance's text and the domain's own
  training data (:class:`DomainData`: vocabulary with counts, slot catalogue, unigram model, training
  utterances by intent). A published version carries that data (its *resources*), so the service and
  the merge compute these fields themselves from a request's ``text``.

One computation, three uses: prepare and import fill the tables' train rows with the DomainData of the
cross-fitting fold that did not hold them (a training row never sees itself), and dev and test rows
with the DomainData of the whole training split: the very resources a published version carries, so a
dev row holds what the service computes from the same text.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any, Iterable, Mapping, MutableMapping, Sequence

import numpy as np
import pyarrow as pa
from scipy import sparse

from rerank.corpus.utterance import SPLITS, Utterance
from rerank.hypotheses.fields import TEXT_FIELDS
from rerank.metrics.semer import normalize_value

#: rows of a query block in :meth:`DomainData.nearest` (a block's overlaps are one dense [rows, training utterances] array)
NEAREST_BLOCK = 1024
#: the format of :meth:`DomainData.to_json`
RESOURCES_FORMAT = 1


def resources_bytes(resources: Mapping[str, Any]) -> bytes:
    """The stored form of :meth:`DomainData.to_json` (compact, keys sorted): what a table set and a version hold and checksum."""
    return json.dumps(resources, sort_keys=True, separators=(",", ":")).encode()


class BadResources(ValueError):
    """A domain's evidence resources that cannot be read; the message says what is wrong."""


class DomainData:
    """A domain's training vocabulary (with counts), slot catalogue (its ``(type, value)`` pairs) and training
    utterances by intent: what its text-derived evidence is computed from."""

    #: add-k smoothing of the unigram model
    SMOOTHING = 0.5

    def __init__(self, utterances: Iterable[Utterance] = ()):
        counts: Counter = Counter()
        catalogue: set[tuple[str, str]] = set()
        groups: dict[str, list[tuple[str, ...]]] = {}
        for u in utterances:
            counts.update(u.tokens)
            catalogue.update((t, normalize_value(v)) for t, v in u.slots)
            groups.setdefault(u.intent, []).append(tuple(u.tokens))
        self._build(counts, catalogue, groups)

    def _build(self, counts: Counter, catalogue: set, groups: Mapping[str, Sequence[Sequence[str]]]) -> None:
        self.counts = counts
        self.catalogue = catalogue
        self._groups = groups
        # training utterances grouped by intent (the columns of nearest_by_intent)
        self.intents = sorted(groups)
        self.intent_index = {name: k for k, name in enumerate(self.intents)}
        token_sets = [set(t) for name in self.intents for t in groups[name]]
        self._intent_starts = np.cumsum([0] + [len(groups[name]) for name in self.intents[:-1]]).astype(np.int64)
        self.vocabulary = self.counts.keys()
        # an unseen token is one more type of the vocabulary
        self._denominator = sum(self.counts.values()) + self.SMOOTHING * (len(self.counts) + 1)
        self._column = {t: j for j, t in enumerate(self.counts)}
        self._training = self._sets(token_sets).T.tocsr()  # [V, training utterances]
        self._training_sizes = np.array([len(t) for t in token_sets], dtype=np.float64)

    # ------------------------------------------------------------------ resources: data, never code
    def to_json(self) -> dict:
        """The resources a published version carries (JSON: a token's count, the catalogue, the training utterances)."""
        return {"format": RESOURCES_FORMAT, "smoothing": self.SMOOTHING,
                "vocabulary": dict(sorted(self.counts.items())),
                "catalogue": sorted([t, v] for t, v in self.catalogue),
                "utterances": {name: [" ".join(t) for t in self._groups[name]] for name in self.intents}}

    @classmethod
    def from_json(cls, obj: Any, where: str = "evidence resources") -> "DomainData":
        """:meth:`to_json`'s data, checked; :class:`BadResources` names the field at fault."""
        if not isinstance(obj, Mapping) or obj.get("format") != RESOURCES_FORMAT:
            raise BadResources(f"{where}: not evidence resources of format {RESOURCES_FORMAT}")
        if obj.get("smoothing") != cls.SMOOTHING:
            raise BadResources(f"{where}: field 'smoothing' is {obj.get('smoothing')!r}; this rerank computes with {cls.SMOOTHING}")
        vocab, catalogue, utts = obj.get("vocabulary"), obj.get("catalogue"), obj.get("utterances")
        if not isinstance(vocab, Mapping) or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0
                                                       for c in vocab.values()):
            raise BadResources(f"{where}: field 'vocabulary' must map tokens to counts >= 1")
        if not isinstance(catalogue, list) or not all(isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
                                                      for p in catalogue):
            raise BadResources(f"{where}: field 'catalogue' must be a list of [type, value] pairs")
        if not isinstance(utts, Mapping) or not all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in utts.values()):
            raise BadResources(f"{where}: field 'utterances' must map intents to lists of texts")
        groups = {name: [tuple(s.split()) for s in texts] for name, texts in utts.items() if texts}
        unknown = {t for texts in groups.values() for s in texts for t in s} - vocab.keys()
        if unknown:
            raise BadResources(f"{where}: field 'utterances' holds tokens that 'vocabulary' lacks, e.g. {sorted(unknown)[:3]}")
        out = cls.__new__(cls)
        out._build(Counter(vocab), {(t, v) for t, v in catalogue}, groups)
        return out

    # ------------------------------------------------------------------ the evidence
    def _sets(self, token_sets: Sequence[set]) -> sparse.csr_matrix:
        """Binary [len(token_sets), V] of the known tokens of each set."""
        cols = [[self._column[t] for t in ts if t in self._column] for ts in token_sets]
        indptr = np.cumsum([0, *map(len, cols)])
        data = np.ones(int(indptr[-1]))
        indices = np.fromiter((j for c in cols for j in c), dtype=np.int64, count=int(indptr[-1]))
        return sparse.csr_matrix((data, indices, indptr), shape=(len(token_sets), len(self._column)))

    def nearest(self, token_lists: Sequence[Sequence[str]]) -> np.ndarray:
        r"""The highest Jaccard similarity of each utterance's token set to one of the training utterances'.

        .. math:: \max_{t \in \text{train}_d} \frac{|u \cap t|}{|u \cup t|}

        1 for an utterance the domain was trained on word for word (cross-fitting keeps a
        training row's own utterance out); 0 when the domain has no training utterance.
        """
        return self.nearest_by_intent(token_lists).max(axis=1, initial=0.0)

    def nearest_by_intent(self, token_lists: Sequence[Sequence[str]]) -> np.ndarray:
        """:meth:`nearest` among the training utterances of each intent: ``[n, len(self.intents)]``."""
        sets = [set(t) for t in token_lists]
        out = np.zeros((len(sets), len(self.intents)))
        if not len(self._training_sizes) or not sets:
            return out
        sizes = np.array([len(s) for s in sets], dtype=np.float64)
        for lo in range(0, len(sets), NEAREST_BLOCK):
            hi = lo + NEAREST_BLOCK
            overlap = (self._sets(sets[lo:hi]) @ self._training).toarray()
            union = sizes[lo:hi, None] + self._training_sizes[None, :] - overlap
            out[lo:hi] = np.maximum.reduceat(overlap / np.maximum(union, 1.0), self._intent_starts, axis=1)
        return out

    def nearest_one(self, tokens: Sequence[str]) -> np.ndarray:
        """``nearest_by_intent([tokens])[0]`` by the inverted index (the same numbers, bit for bit): one utterance,
        at the cost of its tokens' training utterances rather than of a sparse product."""
        out = np.zeros(len(self.intents))
        s = set(tokens)
        ids = [self._column[t] for t in s if t in self._column]
        if not ids or not len(self._training_sizes):
            return out  # no overlap with any training utterance: every similarity is 0
        indptr, indices = self._training.indptr, self._training.indices
        hits = np.concatenate([indices[indptr[j]:indptr[j + 1]] for j in ids])
        overlap = np.bincount(hits, minlength=len(self._training_sizes)).astype(np.float64)
        union = len(s) + self._training_sizes - overlap
        return np.maximum.reduceat(overlap / np.maximum(union, 1.0), self._intent_starts)

    def unigram_logp(self, tokens: Sequence[str]) -> float:
        r"""Mean over ``tokens`` of :math:`\log \frac{c(t) + k}{N + k (V + 1)}`: how typical the words are of the domain.

        ``c(t)``: the token's count in the domain's training utterances, ``N`` their tokens, ``V`` their
        distinct tokens, ``k`` :attr:`SMOOTHING` (0 for no tokens).
        """
        if not tokens:
            return 0.0
        k, counts = self.SMOOTHING, self.counts
        return sum(math.log((counts.get(t, 0) + k) / self._denominator) for t in tokens) / len(tokens)

    def oov_share(self, tokens: Sequence[str]) -> float:
        """Share of ``tokens`` outside the vocabulary (0 for no tokens)."""
        return sum(t not in self.vocabulary for t in tokens) / len(tokens) if tokens else 0.0

    def catalogue_miss(self, slots: Iterable[tuple[str, str]]) -> int:
        """How many of ``slots`` the domain's training data never had (type and value, the value normalised)."""
        catalogue = self.catalogue
        # (a value as the catalogue holds it, normalised already, is found without normalising it)
        return sum((t, v) not in catalogue and (t, normalize_value(v)) not in catalogue for t, v in slots)

    def utterance_evidence(self, tokens: Sequence[str], by_intent: np.ndarray | None = None) -> dict[str, float]:
        """The text-derived fields that are the same for all of an utterance's hypotheses of this domain.

        ``by_intent``: its :meth:`nearest_one` (or row of :meth:`nearest_by_intent`), when already computed.
        """
        by_intent = self.nearest_one(tokens) if by_intent is None else by_intent
        return {"oov_share": self.oov_share(tokens), "n_tokens": len(tokens), "unigram_logp": self.unigram_logp(tokens),
                "neighbour_jaccard": float(by_intent.max(initial=0.0))}

    def hypothesis_evidence(self, intent: str, slots: Iterable[tuple[str, str]], by_intent: np.ndarray) -> dict[str, float]:
        """The text-derived fields of one hypothesis (``intent`` domain-qualified) beside :meth:`utterance_evidence`."""
        k = self.intent_index.get(intent)
        return {"catalogue_miss": self.catalogue_miss(slots),
                "neighbour_intent_jaccard": float(by_intent[k]) if k is not None else 0.0}


def text_folds(train: Sequence[Utterance], folds: int, seed: int) -> np.ndarray:
    """The cross-fitting fold of every training utterance (prepare's rule: a seeded permutation, modulo ``folds``)."""
    if folds < 2:
        raise ValueError(f"evidence_folds must be at least 2 for cross-fitting, not {folds}")
    return np.random.default_rng(seed).permutation(len(train)) % folds


def fill_text_evidence(tables: MutableMapping[tuple[str, str], pa.Table], domain: str,
                       by_split: Mapping[str, Sequence[Utterance]], fold_of: np.ndarray) -> tuple[dict, list[str]]:
    """Compute the :data:`TEXT_FIELDS` that ``domain``'s tables (``tables[(domain, split)]``) leave empty in every row.

    As prepare computes them: a train row with the :class:`DomainData` of the domain's training utterances
    outside its utterance's fold (``fold_of``, :func:`text_folds`), dev and test rows with that of the whole
    training split. Returns that DomainData's resources (what a published version carries) and the fields computed.
    """
    train = by_split["train"]
    own = [i for i, u in enumerate(train) if u.domain == domain]
    full = DomainData(train[i] for i in own)
    empty = [f for f in TEXT_FIELDS if all(tables[(domain, s)][f].null_count == tables[(domain, s)].num_rows for s in SPLITS)]
    # (a domain without a training utterance has no data to compute from: its fields stay empty, as prepare refuses it)
    if not empty or not own or not any(tables[(domain, s)].num_rows for s in SPLITS):
        return full.to_json(), []
    per_fold = {k: DomainData(train[i] for i in own if fold_of[i] != k) for k in np.unique(fold_of).tolist()}
    for s in SPLITS:
        t = tables[(domain, s)]
        n = t.num_rows
        if not n:
            continue
        utt_index = t["utt_index"].to_numpy().astype(np.int64)
        intents = t["intent"].to_pylist()
        slots = [[(x["type"], x["value"]) for x in row] for row in t["slots"].to_pylist()]
        if s == "train":
            groups = [(per_fold[k], np.flatnonzero(fold_of[utt_index] == k)) for k in per_fold]
        else:
            groups = [(full, np.arange(n))]
        values = np.empty((n, len(TEXT_FIELDS)))
        for data, rows in groups:
            if not len(rows):
                continue
            uniq, inverse = np.unique(utt_index[rows], return_inverse=True)
            tokens = [by_split[s][u].tokens for u in uniq.tolist()]
            by_intent = data.nearest_by_intent(tokens)
            common = [data.utterance_evidence(tokens[j], by_intent[j]) for j in range(len(uniq))]
            for r, j in zip(rows.tolist(), inverse.tolist()):
                row = {**common[j], **data.hypothesis_evidence(intents[r], slots[r], by_intent[j])}
                values[r] = [row[f] for f in TEXT_FIELDS]
        for f in empty:
            i = t.schema.get_field_index(f)
            column = values[:, TEXT_FIELDS.index(f)]
            t = t.set_column(i, t.schema.field(i), pa.array(column if pa.types.is_floating(t.schema.field(i).type)
                                                            else column.astype(np.int64), t.schema.field(i).type))
        tables[(domain, s)] = t
    return full.to_json(), empty


def intent_evidence(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""IC margin and entropy of every row of intent probabilities ``[n, m]`` (best first).

    .. math::
        \text{margin} = p_{(1)} - p_{(2)}, \qquad H = -\sum_j p_j \log p_j

    with :math:`p_{(2)} = 0` for a domain of one intent.

    Example:
        >>> m, h = intent_evidence(np.array([[0.5, 0.5], [1.0, 0.0]]))
        >>> m.tolist(), h.round(4).tolist()
        ([0.0, 1.0], [0.6931, 0.0])
    """
    probs = np.asarray(probs, dtype=np.float64)
    second = probs[:, 1] if probs.shape[1] > 1 else np.zeros(len(probs))
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probs > 0, probs * np.log(np.where(probs > 0, probs, 1.0)), 0.0)
    return probs[:, 0] - second, -terms.sum(axis=1) + 0.0
