"""The plug-in point for recognizers: what ``prepare`` needs of a domain's DC, IC and NER.

A team plugs its own recognizers in with a class of its own, named by ``_target_`` in
``configs/recognizers/<name>.yaml`` (see :mod:`rerank.recognizers.builtin` for the
built-in one and ``tests/test_recognizer_plugin.py`` for a toy one). ``prepare``
calls it in this order, for every cross-fitting fold and then for all of train:

1. :meth:`Recognizers.setup` once, with every utterance of the corpus (texts and
   context of dev and test included, so shared features can be built once; a
   recognizer must not read the labels of rows it is not asked to fit on);
2. :meth:`Recognizers.fit_domain_classifier` per domain on the fold's training
   rows of *every* domain (the other domains' utterances are the negatives),
   then :meth:`DomainClassifier.scores` on the rows to emit for;
3. :meth:`Recognizers.fit_interpreter` per domain on the fold's training rows
   *of that domain*, then :meth:`Interpreter.intents` and
   :meth:`Interpreter.labellings` on the rows where the domain emits.

Rows are indices into the utterance list given to ``setup``. Each (domain, fold)
fit is an independent job that may run in another process (the family object is
pickled once per worker), so fits must be deterministic for their inputs and
must not depend on one another.
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np

from rerank.corpus.annotation import Slot
from rerank.corpus.utterance import Utterance

#: one labelling of an utterance by a domain's slot tagger: its slots, in utterance order, and P(labelling | u, d)
Labelling = tuple[tuple[Slot, ...], float]
#: a labelling with how sure the tagger is of its tags: ``(slots, p, (min, mean) over tokens of P(tag_t | u, d))``,
#: the marginals None when the tagger does not give them
MarginalLabelling = tuple[tuple[Slot, ...], float, "tuple[float, float] | None"]


class DomainClassifier(ABC):
    """A domain's one-vs-all domain classifier, fitted."""

    @abstractmethod
    def scores(self, rows: np.ndarray) -> np.ndarray:
        """``dc = P(domain = d | u)`` of the utterances ``rows``, as the domain's own model sees it, in [0, 1]."""


class Interpreter(ABC):
    """A domain's intent classifier and slot tagger, fitted on the domain's own utterances."""

    @abstractmethod
    def intents(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best intents of every row, best first: names ``[n, k']`` (str) and ``P(intent | u, d)`` ``[n, k']``.

        ``k' = min(k, number of intents)``; intents are domain-qualified (``music_play``).
        """

    @abstractmethod
    def labellings(self, rows: np.ndarray, k: int) -> list[list[Labelling]]:
        """The ``k`` best slot labellings of every row, best first, with ``P(labelling | u, d)``.

        Labellings that read as the same slots may appear more than once (the caller adds them up).
        """

    def labellings_with_marginals(self, rows: np.ndarray, k: int) -> list[list[MarginalLabelling]]:
        """:meth:`labellings` with the ``(min, mean)`` token marginals of every labelling's tags.

        A tagger that has them overrides this (the built-in CRF and the neural one do); by
        default the marginals are None, and the tables' ``ner_min`` and ``ner_mean`` stay empty.
        """
        return [[(slots, p, None) for slots, p in row] for row in self.labellings(rows, k)]


def domain_seed(seed: int, domain: str) -> int:
    """A seed of the domain's own, stable across runs and machines."""
    return seed + int(hashlib.sha256(domain.encode()).hexdigest()[:6], 16)


class Recognizers(ABC):
    """A family of per-domain recognizers: builds each domain's DC, IC and NER independently."""

    utterances: Sequence[Utterance]
    #: the domain of every utterance as a code into ``domain_names`` (set by :meth:`setup`)
    domain_codes: np.ndarray
    domain_names: list[str]

    def setup(self, utterances: Sequence[Utterance]) -> None:
        """Called once before any fit, with every utterance of the corpus; rows index this list."""
        self.utterances = utterances
        self.domain_names = sorted({u.domain for u in utterances})
        index = {d: i for i, d in enumerate(self.domain_names)}
        self.domain_codes = np.fromiter((index[u.domain] for u in utterances), dtype=np.int32, count=len(utterances))

    def is_domain(self, rows: np.ndarray, domain: str) -> np.ndarray:
        """Which of the utterances ``rows`` are of ``domain`` (a vector test, not a loop over utterances)."""
        return self.domain_codes[rows] == self.domain_names.index(domain)

    def dc_rows(self, domain: str, rows: np.ndarray, seed: int, max_negatives: int | None) -> tuple[np.ndarray, np.ndarray]:
        """The rows a DC of ``domain`` trains on and which are its own: every positive, and at most
        ``max_negatives`` other-domain rows (a seeded sample; None: all of them)."""
        rows = np.asarray(rows, dtype=np.int64)
        is_mine = self.is_domain(rows, domain)
        if not is_mine.any():
            raise ValueError(f"domain {domain!r} has no training utterance in this fold")
        negatives = np.flatnonzero(~is_mine)
        if max_negatives and len(negatives) > max_negatives:
            rng = np.random.default_rng(domain_seed(seed, domain) + len(rows))
            keep = np.sort(np.concatenate([np.flatnonzero(is_mine), rng.choice(negatives, max_negatives, replace=False)]))
            rows, is_mine = rows[keep], is_mine[keep]
        return rows, is_mine

    @abstractmethod
    def fit_domain_classifier(self, domain: str, rows: np.ndarray, seed: int) -> DomainClassifier:
        """Fit ``domain``'s DC on the training utterances ``rows`` of every domain (``u.domain == domain``: positive)."""

    @abstractmethod
    def fit_interpreter(self, domain: str, rows: np.ndarray, seed: int) -> Interpreter:
        """Fit ``domain``'s IC and NER on its own training utterances ``rows``."""

    def describe(self, domain: str) -> str:
        """A short label of the settings ``domain`` uses, shown in prepare's summary."""
        return type(self).__name__

    def settings(self) -> dict:
        """What the tables depend on (hashed into the manifest so that a change rebuilds); JSON-able."""
        return {"class": f"{type(self).__module__}.{type(self).__qualname__}"}
