"""Hashed n-gram features of utterance texts, shared by the DC and IC of every domain.

Hashing needs no fitted vocabulary, so each domain may pick its own n-gram
order while the matrices are computed once per order for the whole corpus.
The hashed columns that no utterance uses are then dropped: a pure
re-indexing (a model trained on some rows gives the others' unseen n-grams
zero weight either way) that makes the solvers' weight vectors small.

:class:`ColumnSubset` goes one step further for each model: it keeps only
the columns its *training rows* use. With an L2 penalty and a solver that
starts at zero (lbfgs, liblinear's trust-region Newton), a column without any
non-zero entry gets exactly zero weight, so dropping it changes neither the
optimum nor the predictions (up to floating-point summation order); it shrinks
e.g. a domain's intent classifier from ``n_intents x (all n-grams of the
corpus)`` weights to ``n_intents x (its own n-grams)``: 10-40x fewer on HWU64.
"""
from __future__ import annotations

import hashlib

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import HashingVectorizer

N_FEATURES = 2**20


class TextFeatures:
    def __init__(self, texts: list[str]):
        self.texts = texts
        self._cache: dict[int, sparse.csr_matrix] = {}
        self._rows: dict[tuple, sparse.csr_matrix] = {}

    def rows(self, ngram_max: int, rows: np.ndarray) -> sparse.csr_matrix:
        """``matrix(ngram_max)[rows]``, the last few selections kept: every domain's DC scores the same fold."""
        key = (ngram_max, len(rows), hashlib.blake2b(np.ascontiguousarray(rows).tobytes(), digest_size=16).digest())
        hit = self._rows.get(key)
        if hit is None:
            hit = self.matrix(ngram_max)[rows]
            if len(self._rows) >= 6:
                self._rows.pop(next(iter(self._rows)))
            self._rows[key] = hit
        return hit

    def __getstate__(self):
        return {"texts": self.texts, "_cache": self._cache, "_rows": {}}

    def matrix(self, ngram_max: int) -> sparse.csr_matrix:
        if ngram_max not in self._cache:
            vec = HashingVectorizer(
                n_features=N_FEATURES,
                ngram_range=(1, ngram_max),
                alternate_sign=False,
                binary=True,
                norm="l2",
                token_pattern=r"[^ ]+",
                lowercase=False,
            )
            X = vec.transform(self.texts).tocsr()
            used, cols = np.unique(X.indices, return_inverse=True)
            self._cache[ngram_max] = sparse.csr_matrix((X.data, cols.astype(np.int32), X.indptr), shape=(X.shape[0], len(used)))
        return self._cache[ngram_max]


class ColumnSubset:
    """The columns that a model's training matrix uses, and the re-indexing onto them."""

    def __init__(self, X: sparse.csr_matrix):
        X = sparse.csr_matrix(X)
        self.n_in = X.shape[1]
        self.columns = np.unique(X.indices).astype(np.int32)
        self._remap: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.columns)

    @property
    def remap(self) -> np.ndarray:
        if self._remap is None:
            self._remap = np.full(self.n_in, -1, dtype=np.int32)
            self._remap[self.columns] = np.arange(len(self.columns), dtype=np.int32)
        return self._remap

    def __getstate__(self):
        return {"n_in": self.n_in, "columns": self.columns, "_remap": None}

    def transform(self, X) -> sparse.csr_matrix:
        """``X[:, columns]``, the order of the columns kept (entries of other columns dropped)."""
        X = sparse.csr_matrix(X)
        if X.shape[1] != self.n_in:
            raise ValueError(f"expected {self.n_in} feature columns, got {X.shape[1]}")
        new = self.remap[X.indices]
        keep = new >= 0
        if keep.all():
            return sparse.csr_matrix((X.data, new, X.indptr.copy()), shape=(X.shape[0], len(self.columns)))
        kept = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
        indptr = kept[X.indptr]
        return sparse.csr_matrix((X.data[keep], new[keep], indptr), shape=(X.shape[0], len(self.columns)))
