r"""A published re-ranker as data: its weight tensors, their check, and their scoring in numpy.

This module defines the format that training writes and merge and serving read,
so neither of those needs torch or any training code. A model of kind
``linear`` holds the tensors

- ``mean``, ``std`` ``[F]``: the standardisation fitted on the training rows,
- ``calibration`` ``[2]``: ``(scale, shift)`` applied to the output (Platt scaling; ``(1, 0)`` without),
- ``linear.weight`` ``[1, F]``, ``linear.bias`` ``[1]``;

a model of kind ``mlp`` adds a tanh hidden layer on the same standardised input,
``mlp.0.weight`` ``[H, F]``, ``mlp.0.bias`` ``[H]``, ``mlp.2.weight`` ``[1, H]``, ``mlp.2.bias`` ``[1]``;
a model of kind ``intent_linear`` adds evidence weights per intent (the interaction of the hypothesis'
intent with its evidence, which one weight per feature cannot express): ``intent.weight`` ``[I, E]``,
``intent.cols`` ``[I]`` (the columns of the intent one-hot) and ``evidence.cols`` ``[E]`` (of the evidence):

.. math::
    z = (x - \mu) / \sigma, \qquad
    s = \big(w^\top z + b \;[+\; v^\top \tanh(W_1 z + b_1) + b_2]
        \;[+\; x_{\text{intent}}^\top U z_{\text{evidence}}]\big) \cdot \text{scale} + \text{shift}

and the calibrated score is :math:`p = \mathrm{sigmoid}(s)` (:func:`sigmoid`). A model of kind ``trees`` (gradient-boosted
trees, :mod:`rerank.model.trees`) keeps ``mean``, ``std`` and ``calibration`` (so that every kind is published and loaded
by one path) but reads the raw features: its ``mean`` must be 0 and its ``std`` 1; its ``trees.*`` tensors replace the
linear path, :math:`s = (\sum_t \text{value}_t(x)) \cdot \text{scale} + \text{shift}`.

Example:
    >>> import numpy as np
    >>> w = {"mean": np.zeros(2, np.float32), "std": np.ones(2, np.float32),
    ...      "calibration": np.array([1.0, 0.0], np.float32),
    ...      "linear.weight": np.array([[2.0, -1.0]], np.float32), "linear.bias": np.array([0.5], np.float32)}
    >>> LogitScorer("linear", w, dim=2)(np.array([[1.0, 1.0]], np.float32)).tolist()
    [1.5]
    >>> round(float(sigmoid(np.array([0.0]))[0]), 3)
    0.5
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from rerank.metrics.logistic import sigmoid  # noqa: F401 (its link; in the example below)
from rerank.model.trees import TREE_TENSORS, BadTrees, TreeEnsemble, check_trees

KINDS = ("linear", "mlp", "intent_linear", "trees")
#: what every kind holds: the standardisation and the output's calibration
COMMON_TENSORS = ("mean", "std", "calibration")
LINEAR_TENSORS = (*COMMON_TENSORS, "linear.weight", "linear.bias")
MLP_TENSORS = ("mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias")
INTENT_TENSORS = ("intent.weight", "intent.cols", "evidence.cols")
_EXTRA = {"linear": (), "mlp": MLP_TENSORS, "intent_linear": INTENT_TENSORS}

class BadWeights(ValueError):
    """Weights that do not form a model of their kind and dimension, or are not finite."""


def tensor_names(kind: str) -> tuple[str, ...]:
    if kind not in KINDS:
        raise BadWeights(f"model kind must be one of {KINDS}, not {kind!r}")
    if kind == "trees":
        return COMMON_TENSORS + TREE_TENSORS
    return LINEAR_TENSORS + _EXTRA[kind]


def check_weights(kind: str, weights: Mapping[str, np.ndarray], dim: int, where: str = "weights") -> None:
    """Raise :class:`BadWeights` naming the tensor unless ``weights`` is a finite model of ``kind`` over ``dim`` features."""
    names = tensor_names(kind)
    if missing := [n for n in names if n not in weights]:
        raise BadWeights(f"{where}: a {kind} model needs the tensors {missing}")
    if extra := sorted(set(weights) - set(names)):
        raise BadWeights(f"{where}: unexpected tensors {extra} for a {kind} model")
    hidden = np.shape(weights["mlp.0.weight"])[0] if kind == "mlp" else 0
    n_i, n_e = (np.size(weights["intent.cols"]), np.size(weights["evidence.cols"])) if kind == "intent_linear" else (0, 0)
    shapes = {"mean": (dim,), "std": (dim,), "calibration": (2,), "linear.weight": (1, dim), "linear.bias": (1,),
              "mlp.0.weight": (hidden, dim), "mlp.0.bias": (hidden,), "mlp.2.weight": (1, hidden), "mlp.2.bias": (1,),
              "intent.weight": (n_i, n_e), "intent.cols": (n_i,), "evidence.cols": (n_e,)}
    for n in names:
        if n in TREE_TENSORS:
            continue
        a = np.asarray(weights[n])
        if a.shape != shapes[n]:
            raise BadWeights(f"{where}: tensor {n!r} has shape {a.shape}, expected {shapes[n]} ({dim} features)")
        if not np.isfinite(a).all():
            raise BadWeights(f"{where}: tensor {n!r} holds {int((~np.isfinite(a)).sum())} NaN or infinite values")
    if not (np.asarray(weights["std"]) > 0).all():
        raise BadWeights(f"{where}: tensor 'std' must be positive")
    for n in ("intent.cols", "evidence.cols") if kind == "intent_linear" else ():
        cols = np.asarray(weights[n])
        if cols.dtype.kind not in "iu" or (cols.size and (cols.min() < 0 or cols.max() >= dim)) or len(set(cols.tolist())) < cols.size:
            raise BadWeights(f"{where}: tensor {n!r} must hold distinct integer columns in [0, {dim})")
    if kind == "trees":
        # the thresholds are on the raw features: a standardisation here would be ignored, so none is taken
        for n, value in (("mean", 0.0), ("std", 1.0)):
            if not (np.asarray(weights[n]) == value).all():
                raise BadWeights(f"{where}: tensor {n!r} of a trees model must be all {value:g} (trees read the raw features)")
        try:
            check_trees(weights, dim, where)
        except BadTrees as err:
            raise BadWeights(str(err)) from None


class LogitScorer:
    """``X [n, F] -> logits [n]`` (float64) of a published model, in numpy.

    The standardisation and the calibration are folded into the linear path once,
    so a call is one matrix-vector product (plus the hidden layer of an MLP); trees
    are walked all at once (:class:`rerank.model.trees.TreeEnsemble`).
    """

    def __init__(self, kind: str, weights: Mapping[str, np.ndarray], dim: int, where: str = "weights"):
        check_weights(kind, weights, dim, where)
        self.kind = kind
        self.dim = dim
        self.weights = {k: np.asarray(v) for k, v in weights.items()}
        f64 = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items() if not k.endswith(".cols")}
        mean, std = f64["mean"], f64["std"]
        scale, shift = (float(v) for v in f64["calibration"])
        self._call: Callable[[np.ndarray], np.ndarray]
        if kind == "trees":
            trees = self.trees = TreeEnsemble(weights, dim, where)
            self._call = lambda X: trees(X) * scale + shift
            return
        w = f64["linear.weight"][0] / std
        b = float(f64["linear.bias"][0]) - float(mean @ w)
        self.w, self.b = w * scale, b * scale + shift
        if kind == "intent_linear":
            w, b = self.w, self.b
            ic, ec = np.asarray(weights["intent.cols"]), np.asarray(weights["evidence.cols"])
            U, e_mean, e_std = f64["intent.weight"] * scale, mean[ec], std[ec]

            def call(X):
                return X @ w + b + ((X[:, ic] @ U) * ((X[:, ec] - e_mean) / e_std)).sum(axis=1)

            self._call = call
        elif kind == "linear":
            # float64 products: a float32 dot product sums in an order that depends on the matrix's
            # shape, so one utterance (rank) and a block of a table (score_table) would differ by ~1e-7
            w, b = self.w, self.b
            self._call = lambda X: X @ w + b
        else:
            W1, b1 = f64["mlp.0.weight"], f64["mlp.0.bias"]
            W2, b2 = f64["mlp.2.weight"][0] * scale, float(f64["mlp.2.bias"][0]) * scale
            w, b = self.w, self.b

            def call(X):
                Z = (X - mean) / std
                return X @ w + b + np.tanh(Z @ W1.T + b1) @ W2 + b2

            self._call = call

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return self._call(X)

    def feature_weights(self, names) -> dict[str, float] | None:
        """Weight of every feature on the standardised scale (the linear path): comparable across features; None for trees."""
        if self.kind == "trees":
            return None
        return dict(zip(names, map(float, self.weights["linear.weight"][0])))
