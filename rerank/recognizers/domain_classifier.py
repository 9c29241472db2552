"""DC: a domain's one-vs-all maximum-entropy classifier, ``dc = P(domain = d | u)``."""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from rerank.recognizers.text_features import ColumnSubset, collapse_duplicates


class DomainClassifier:
    """Logistic regression of "is this utterance mine?" over hashed n-grams.

    ``negative_rate < 1`` keeps only that share of the other domains'
    utterances, as a team with a small negative set would; it inflates the
    positive scores, one of the reasons why DC scores of different domains are
    not on one scale.

    Speed, without changing the model: the fit sees only the feature columns
    its training rows use (:class:`ColumnSubset`), and, when ``groups`` says
    which rows have equal features (equal texts), repeated ``(row, label)``
    pairs are fitted once with their count as sample weight. liblinear's
    objective ``0.5 |w|^2 + C sum_i s_i loss_i`` is then the same function of
    ``w``; ``class_weight="balanced"`` counts the weighted classes (scikit-learn
    passes the sample weights to ``compute_class_weight``), i.e. the same counts.
    liblinear stops when ``|grad| <= tol * max(min(pos, neg), 1) / l * |grad_0|``,
    counting rows, not weights; ``tol`` is rescaled so that the collapsed problem
    stops at the same gradient norm as the full one.
    """

    #: scikit-learn's default ``tol`` for liblinear, the stopping rule of the uncollapsed fit
    TOL = 1e-4

    def __init__(self, C: float = 1.0, negative_rate: float = 1.0, class_weight: str | None = None, seed: int = 0):
        if not 0 < negative_rate <= 1:
            raise ValueError(f"negative_rate must be in (0, 1], not {negative_rate}")
        self.C = C
        self.negative_rate = negative_rate
        self.class_weight = class_weight
        self.seed = seed
        self.constant: float | None = None
        self.model: LogisticRegression | None = None
        self.columns: ColumnSubset | None = None

    def fit(self, X, is_mine: np.ndarray, groups: np.ndarray | None = None) -> "DomainClassifier":
        """``groups`` (optional): equal values for rows of ``X`` that are equal (e.g. the text's id)."""
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
        kept = np.flatnonzero(keep)
        weight, tol = None, self.TOL
        if groups is not None:
            groups = np.asarray(groups, dtype=np.int64)
            if len(groups) != len(is_mine):
                raise ValueError(f"groups has {len(groups)} entries for {len(is_mine)} rows")
            first, weight = collapse_duplicates(groups[kept] * 2 + y)
            if weight is not None:
                tol *= _tol_scale(y) / _tol_scale(y[first])
            kept, y = kept[first], y[first]
        X_fit = X[kept]
        self.columns = ColumnSubset(X_fit)
        self.model = LogisticRegression(C=self.C, class_weight=self.class_weight, solver="liblinear", max_iter=200,
                                        tol=tol)
        self.model.fit(self.columns.transform(X_fit), y, sample_weight=weight)
        return self

    def predict(self, X) -> np.ndarray:
        if self.constant is not None:
            return np.full(X.shape[0], self.constant)
        return self.model.predict_proba(self.columns.transform(X))[:, 1]


def _tol_scale(y: np.ndarray) -> float:
    """liblinear's factor ``max(min(pos, neg), 1) / l`` of ``tol`` for labels ``y``."""
    pos = int(np.count_nonzero(y))
    return max(min(pos, len(y) - pos), 1) / len(y)
