"""Hashed n-gram features of utterance texts, shared by the DC and IC of every domain.

Hashing needs no fitted vocabulary, so each domain may pick its own n-gram
order while the matrices are computed once per order for the whole corpus.
The hashed columns that no utterance uses are then dropped: a pure
re-indexing (a model trained on some rows gives the others' unseen n-grams
zero weight either way) that makes the solvers' weight vectors small.
"""
from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import HashingVectorizer

N_FEATURES = 2**20


class TextFeatures:
    def __init__(self, texts: list[str]):
        self.texts = texts
        self._cache: dict[int, sparse.csr_matrix] = {}

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
