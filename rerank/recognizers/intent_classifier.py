"""IC: a domain's multiclass maximum-entropy intent classifier over its own intents."""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from rerank.recognizers.text_features import ColumnSubset, collapse_duplicates


class IntentClassifier:
    """``ic = P(intent | u, d)``, trained on the domain's own utterances only.

    A multinomial logistic regression (lbfgs). Speed, without changing the
    model: the weights cover only the feature columns the training rows use
    (:class:`ColumnSubset`; the others would get exactly zero weight), and, when
    ``groups`` says which rows have equal features, repeated ``(row, intent)``
    pairs are fitted once with their count as sample weight. scikit-learn's
    lbfgs objective is ``sum_i s_i loss_i / sum_i s_i + |w|^2 / (2 C sum_i s_i)``,
    with ``sum_i s_i`` the number of original rows: the same function of ``w``.
    """

    def __init__(self, C: float = 1.0, seed: int = 0):
        self.C = C
        self.seed = seed
        self.intents: np.ndarray | None = None
        self.model: LogisticRegression | None = None
        self.columns: ColumnSubset | None = None

    def fit(self, X, intents: list[str], groups: np.ndarray | None = None) -> "IntentClassifier":
        """``groups`` (optional): equal values for rows of ``X`` that are equal (e.g. the text's id)."""
        if not len(intents):
            raise ValueError("an intent classifier needs at least one training utterance")
        self.intents = np.array(sorted(set(intents)))
        if len(self.intents) > 1:
            y = np.asarray(intents)
            rows, weight = np.arange(len(y)), None
            if groups is not None:
                groups = np.asarray(groups, dtype=np.int64)
                if len(groups) != len(y):
                    raise ValueError(f"groups has {len(groups)} entries for {len(y)} rows")
                code = np.searchsorted(self.intents, y)
                rows, weight = collapse_duplicates(groups * len(self.intents) + code)
            X_fit = X[rows]
            self.columns = ColumnSubset(X_fit)
            self.model = LogisticRegression(C=self.C, max_iter=500, random_state=self.seed)
            self.model.fit(self.columns.transform(X_fit), y[rows], sample_weight=weight)
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
