"""Evidence a domain owns, beside its dc, ic and ner: how its recognizers and its training data see a hypothesis.

Computed where the hypotheses are emitted, from the same (cross-fitted) training rows as the
domain's recognizers, so that a training row never sees itself: its vocabulary and slot
catalogue are those of the fold that did not contain it.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Iterable, Sequence

import numpy as np
from scipy import sparse

from rerank.corpus.utterance import Utterance

#: rows of a query block in :meth:`DomainData.nearest` (a block's overlaps are one dense [rows, training utterances] array)
NEAREST_BLOCK = 1024


class DomainData:
    """A domain's training vocabulary (with counts), and slot catalogue (its ``(type, value)`` pairs)."""

    #: add-k smoothing of the unigram model
    SMOOTHING = 0.5

    def __init__(self, utterances: Iterable[Utterance]):
        self.counts: Counter = Counter()
        self.catalogue: set[tuple[str, str]] = set()
        token_sets, intents = [], []
        for u in utterances:
            self.counts.update(u.tokens)
            self.catalogue.update(u.slots)
            token_sets.append(set(u.tokens))
            intents.append(u.intent)
        # training utterances grouped by intent (the columns of nearest_by_intent)
        self.intents = sorted(set(intents))
        self.intent_index = {name: k for k, name in enumerate(self.intents)}
        order = sorted(range(len(intents)), key=lambda j: self.intent_index[intents[j]])
        token_sets = [token_sets[j] for j in order]
        codes = np.array([self.intent_index[intents[j]] for j in order], dtype=np.int64)
        self._intent_starts = np.searchsorted(codes, np.arange(len(self.intents)))
        self.vocabulary = self.counts.keys()
        # an unseen token is one more type of the vocabulary
        self._denominator = sum(self.counts.values()) + self.SMOOTHING * (len(self.counts) + 1)
        self._column = {t: j for j, t in enumerate(self.counts)}
        self._training = self._sets(token_sets).T.tocsr()  # [V, training utterances]
        self._training_sizes = np.array([len(t) for t in token_sets], dtype=np.float64)

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
        """How many of ``slots`` the domain's training data never had (type and value)."""
        return sum(tuple(s) not in self.catalogue for s in slots)


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
