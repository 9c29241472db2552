"""IC: a domain's multiclass maximum-entropy intent classifier over its own intents."""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from rerank.recognizers.text_features import ColumnSubset


class IntentClassifier:
    """``ic = P(intent | u, d)``, trained on the domain's own utterances only.

    A multinomial logistic regression (lbfgs). Its weights cover only the
    feature columns the domain's training rows use (:class:`ColumnSubset`):
    ``n_intents x`` a few thousand n-grams instead of ``n_intents x`` every
    n-gram of the corpus. The other columns would get exactly zero weight, so
    this changes neither the fit nor the predictions, only their cost.
    """

    def __init__(self, C: float = 1.0, seed: int = 0):
        self.C = C
        self.seed = seed
        self.intents: np.ndarray | None = None
        self.model: LogisticRegression | None = None
        self.columns: ColumnSubset | None = None

    def fit(self, X, intents: list[str]) -> "IntentClassifier":
        if not len(intents):
            raise ValueError("an intent classifier needs at least one training utterance")
        self.intents = np.array(sorted(set(intents)))
        if len(self.intents) > 1:
            self.columns = ColumnSubset(X)
            self.model = LogisticRegression(C=self.C, max_iter=500, random_state=self.seed)
            self.model.fit(self.columns.transform(X), intents)
            self.intents = self.model.classes_
        return self

    def predict(self, X) -> np.ndarray:
        """Probabilities [n, n_intents] in the order of ``self.intents``."""
        if self.model is None:
            return np.ones((X.shape[0], 1))
        return self.model.predict_proba(self.columns.transform(X))

    def top_k(self, X, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices into ``self.intents`` and probabilities of the k best, best first."""
        proba = self.predict(X)
        k = min(k, proba.shape[1])
        idx = np.argsort(-proba, axis=1, kind="stable")[:, :k]
        return idx, np.take_along_axis(proba, idx, axis=1)
