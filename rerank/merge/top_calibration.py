r"""The merge's calibration of the top hypothesis: P(the top of a merged list is right).

Every domain's score is calibrated for its own hypotheses, but the top of a merged list
is the largest of many such scores, and a maximum is biased upwards (the winner's
curse): on HWU64 the top-hypothesis ECE of calibrated R2 models is several times their
per-hypothesis ECE. The merge owns the correction, a monotone map of the top score fitted
on dev over the merged lists of the live models, by one of two methods:

.. math::
    \text{platt:}\quad \text{confidence} = \sigma\big(a \cdot \operatorname{logit}(p_{top}) + b\big)
    \qquad
    \text{isotonic:}\quad \text{confidence} = g(p_{top}),\ g \text{ non-decreasing, piecewise linear}

where :math:`g` interpolates the isotonic regression of "the top is right" on the top score
(pool-adjacent-violators, :func:`scipy.optimize.isotonic_regression`) between its knots.
``method="auto"`` (the gate's default) takes the method whose *cross-fitted* ECE on the
split is lower (each fold's confidence from a fit on the other folds): in-sample, an isotonic
fit is near 0 ECE by construction and would always win. The cross-fitted ECE is also what
the fit reports as ``ece_after`` and what the gate compares, before and after a move.

It is monotone, so the ranking never changes; only the confidence that the service
reports with the top hypothesis (and that the top-hypothesis ECE measures) does. The
promotion gate refits it for the live set it accepts, before the live pointer moves,
and stores it in the live state with the versions it was fitted for (one release:
:mod:`rerank.model.releases`); the merge and the service read it from there.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from rerank.metrics.calibration import ece, platt
from rerank.metrics.logistic import logit, sigmoid

METHODS = ("platt", "isotonic")
#: the gate's choice (``gate.top_calibration``): one method, or ``auto`` (the lower cross-fitted ECE)
CHOICES = (*METHODS, "auto")
FOLDS = 5
#: an isotonic confidence stays this far from 0 and 1: a block of a few dev tops that were all right (or all
#: wrong) is no proof that every such top is
ISOTONIC_EDGE = 1e-3


@dataclass(frozen=True)
class TopCalibration:
    scale: float = 1.0
    shift: float = 0.0
    #: the live version of every domain it was fitted for (``baseline`` for none)
    fitted_for: Mapping[str, str] = field(default_factory=dict)
    split: str = "dev"
    utterances: int = 0
    ece_before: float | None = None
    ece_after: float | None = None
    fitted_at: str = ""
    method: str = "platt"
    #: the isotonic map's knots (top score, confidence), ascending; empty for platt
    knots_x: tuple[float, ...] = ()
    knots_y: tuple[float, ...] = ()
    #: each method's cross-fitted ECE on the split, when ``auto`` chose between them
    chosen_by: Mapping[str, float] = field(default_factory=dict)

    def __call__(self, top_score) -> np.ndarray:
        """The calibrated confidence of top scores (probabilities in [0, 1])."""
        if self.method == "isotonic":
            return np.interp(top_score, self.knots_x, self.knots_y)
        return sigmoid(self.scale * logit(top_score) + self.shift)

    def stale(self, versions: Mapping[str, str]) -> list[str]:
        """The domains whose version differs from the one it was fitted for."""
        return sorted(d for d in set(versions) | set(self.fitted_for) if self.fitted_for.get(d) != versions.get(d))

    def to_dict(self) -> dict[str, Any]:
        # (asdict deep-copies every field: slow for a calibration fitted for a thousand domains)
        return {f: getattr(self, f) for f in self.__dataclass_fields__} | {
            "fitted_for": dict(self.fitted_for), "knots_x": list(self.knots_x), "knots_y": list(self.knots_y),
            "chosen_by": dict(self.chosen_by)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "top calibration") -> "TopCalibration":
        known = set(cls.__dataclass_fields__)
        if unknown := sorted(set(d) - known):
            raise ValueError(f"{where}: unknown fields {unknown}")
        d = dict(d)
        for k in ("knots_x", "knots_y"):
            d[k] = tuple(float(v) for v in d.get(k) or ())
        out = cls(**d)
        if out.method not in METHODS:
            raise ValueError(f"{where}: method must be one of {METHODS}, not {out.method!r}")
        if not (np.isfinite(out.scale) and np.isfinite(out.shift)) or out.scale <= 0:
            raise ValueError(f"{where}: scale {out.scale!r} and shift {out.shift!r} must be finite with scale > 0")
        if out.method == "isotonic":
            x, y = np.asarray(out.knots_x), np.asarray(out.knots_y)
            if not (len(x) == len(y) >= 1 and np.isfinite(x).all() and np.isfinite(y).all()):
                raise ValueError(f"{where}: an isotonic map needs as many finite knots_x as knots_y (at least one)")
            if (np.diff(x) < 0).any() or (np.diff(y) < 0).any() or y.min() < 0 or y.max() > 1:
                raise ValueError(f"{where}: knots_x and knots_y must be non-decreasing, knots_y within [0, 1]")
        return out


def _fit(method: str, top_score: np.ndarray, correct: np.ndarray) -> TopCalibration:
    """The map alone (no record of what it was fitted for)."""
    if method == "platt":
        a, b = platt(logit(top_score), correct)
        return TopCalibration(a, b)
    if not len(top_score):
        return TopCalibration()
    from scipy.optimize import isotonic_regression  # (not at import: the service reads maps, it never fits one)

    order = np.argsort(top_score, kind="stable")
    x, y = top_score[order], np.clip(isotonic_regression(correct[order], increasing=True).x, ISOTONIC_EDGE, 1 - ISOTONIC_EDGE)
    # a block's first and last point carry the whole map: np.interp between them gives every value in between
    keep = np.r_[True, y[1:] != y[:-1]] | np.r_[y[:-1] != y[1:], True]
    return TopCalibration(method="isotonic", knots_x=tuple(x[keep].tolist()), knots_y=tuple(y[keep].tolist()))


def cross_fitted(method: str, top_score: np.ndarray, correct: np.ndarray, folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """Every top's confidence from ``method`` fitted on the other folds (utterances in ``folds`` seeded folds)."""
    top_score, correct = np.asarray(top_score, np.float64), np.asarray(correct, np.float64)
    fold = np.random.default_rng(seed).permutation(len(top_score)) % max(1, folds)
    out = np.empty(len(top_score))
    for k in range(max(1, folds)):
        held = fold == k
        out[held] = _fit(method, top_score[~held], correct[~held])(top_score[held]) if (~held).any() else top_score[held]
    return out


def fit_top_calibration(top_score: np.ndarray, correct: np.ndarray, fitted_for: Mapping[str, str],
                        split: str = "dev", method: str = "auto") -> TopCalibration:
    """The map of the merged lists' top scores to P(the top is right) (``1 - IE``), by ``method`` (one of
    :data:`CHOICES`); ``ece_after`` is its cross-fitted ECE."""
    if method not in CHOICES:
        raise ValueError(f"top calibration method must be one of {CHOICES}, not {method!r}")
    top_score, correct = np.asarray(top_score, np.float64), np.asarray(correct, np.float64)
    held = {m: cross_fitted(m, top_score, correct) for m in (METHODS if method == "auto" else (method,))} if len(top_score) else {}
    scores = {m: ece(c, correct) for m, c in held.items()}
    chosen = min(scores, key=lambda m: (scores[m], METHODS.index(m))) if method == "auto" and scores else \
        ("platt" if method == "auto" else method)
    cal = _fit(chosen, top_score, correct)
    return TopCalibration.from_dict({**cal.to_dict(), "fitted_for": dict(fitted_for), "split": split, "utterances": int(len(top_score)),
                             "fitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                             "chosen_by": scores if method == "auto" else {},
                             "ece_before": ece(np.clip(top_score, 0, 1), correct) if len(top_score) else None,
                             "ece_after": scores[chosen] if scores else None})


def describe(cal: TopCalibration | Mapping[str, Any]) -> str:
    """The map in words, for reports and logs."""
    d = cal.to_dict() if isinstance(cal, TopCalibration) else cal
    if d.get("method", "platt") == "isotonic":
        return f"isotonic in the top score ({len(d['knots_x'])} knots)"
    return f"sigmoid({d['scale']:.3f} * logit(top score) {d['shift']:+.3f})"


def read_top_calibration(registry, corpus: str) -> TopCalibration | None:
    """The corpus' top calibration in ``registry`` (part of the live state), or None when none was fitted."""
    d = registry.live_state(corpus).top_calibration
    return None if d is None else TopCalibration.from_dict(d, f"{registry.releases(corpus).state_path} top_calibration")
