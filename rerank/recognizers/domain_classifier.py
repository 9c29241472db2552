"""DC: a domain's one-vs-all maximum-entropy classifier, ``dc = P(domain = d | u)``."""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression


class DomainClassifier:
    """Logistic regression of "is this utterance mine?" over hashed n-grams.

    ``negative_rate < 1`` keeps only that share of the other domains'
    utterances, as a team with a small negative set would; it inflates the
    positive scores, one of the reasons why DC scores of different domains are
    not on one scale.
    """

    def __init__(self, C: float = 1.0, negative_rate: float = 1.0, class_weight: str | None = None, seed: int = 0):
        if not 0 < negative_rate <= 1:
            raise ValueError(f"negative_rate must be in (0, 1], not {negative_rate}")
        self.C = C
        self.negative_rate = negative_rate
        self.class_weight = class_weight
        self.seed = seed
        self.constant: float | None = None
        self.model: LogisticRegression | None = None

    def fit(self, X, is_mine: np.ndarray) -> "DomainClassifier":
        is_mine = np.asarray(is_mine, dtype=bool)
        keep = is_mine.copy()
        neg = np.flatnonzero(~is_mine)
        if self.negative_rate < 1 and len(neg):
            rng = np.random.default_rng(self.seed)
            keep[rng.choice(neg, size=max(1, int(round(len(neg) * self.negative_rate))), replace=False)] = True
        else:
            keep[neg] = True
        y = is_mine[keep]
        if y.all() or not y.any():
            # One class only (a corpus with a single domain): a constant model.
            self.constant = float(y.mean())
            return self
        self.model = LogisticRegression(C=self.C, class_weight=self.class_weight, solver="liblinear", max_iter=200)
        self.model.fit(X[keep], y)
        return self

    def predict(self, X) -> np.ndarray:
        if self.constant is not None:
            return np.full(X.shape[0], self.constant)
        return self.model.predict_proba(X)[:, 1]
