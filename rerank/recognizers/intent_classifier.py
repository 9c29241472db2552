"""IC: a domain's multiclass maximum-entropy intent classifier over its own intents."""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression


class IntentClassifier:
    """``ic = P(intent | u, d)``, trained on the domain's own utterances only."""

    def __init__(self, C: float = 1.0, seed: int = 0):
        self.C = C
        self.seed = seed
        self.intents: np.ndarray | None = None
        self.model: LogisticRegression | None = None

    def fit(self, X, intents: list[str]) -> "IntentClassifier":
        if not len(intents):
            raise ValueError("an intent classifier needs at least one training utterance")
        self.intents = np.array(sorted(set(intents)))
        if len(self.intents) > 1:
            self.model = LogisticRegression(C=self.C, max_iter=500, random_state=self.seed)
            self.model.fit(X, intents)
            self.intents = self.model.classes_
        return self

    def predict(self, X) -> np.ndarray:
        """Probabilities [n, n_intents] in the order of ``self.intents``."""
        if self.model is None:
            return np.ones((X.shape[0], 1))
        return self.model.predict_proba(X)

    def top_k(self, X, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices into ``self.intents`` and probabilities of the k best, best first."""
        proba = self.predict(X)
        k = min(k, proba.shape[1])
        idx = np.argsort(-proba, axis=1, kind="stable")[:, :k]
        return idx, np.take_along_axis(proba, idx, axis=1)
