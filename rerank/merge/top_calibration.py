r"""The merge's calibration of the top hypothesis: P(the top of a merged list is right).

Every domain's score is calibrated for its own hypotheses, but the top of a merged list
is the largest of many such scores, and a maximum is biased upwards (the winner's
curse): on HWU64 the top-hypothesis ECE of calibrated R2 models is several times their
per-hypothesis ECE. The merge owns the correction, a Platt scaling of the top score
fitted on dev over the merged lists of the live models:

.. math::
    \text{confidence} = \sigma\big(a \cdot \operatorname{logit}(p_{top}) + b\big)

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

    def __call__(self, top_score) -> np.ndarray:
        """The calibrated confidence of top scores (probabilities in [0, 1])."""
        return sigmoid(self.scale * logit(top_score) + self.shift)

    def stale(self, versions: Mapping[str, str]) -> list[str]:
        """The domains whose version differs from the one it was fitted for."""
        return sorted(d for d in set(versions) | set(self.fitted_for) if self.fitted_for.get(d) != versions.get(d))

    def to_dict(self) -> dict[str, Any]:
        # (asdict deep-copies every field: slow for a calibration fitted for a thousand domains)
        return {f: getattr(self, f) for f in self.__dataclass_fields__} | {"fitted_for": dict(self.fitted_for)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "top calibration") -> "TopCalibration":
        known = set(cls.__dataclass_fields__)
        if unknown := sorted(set(d) - known):
            raise ValueError(f"{where}: unknown fields {unknown}")
        out = cls(**d)
        if not (np.isfinite(out.scale) and np.isfinite(out.shift)) or out.scale <= 0:
            raise ValueError(f"{where}: scale {out.scale!r} and shift {out.shift!r} must be finite with scale > 0")
        return out


def fit_top_calibration(top_score: np.ndarray, correct: np.ndarray, fitted_for: Mapping[str, str],
                        split: str = "dev") -> TopCalibration:
    """Platt scaling of the merged lists' top scores against whether the top is right (``1 - IE``)."""
    top_score, correct = np.asarray(top_score, np.float64), np.asarray(correct, np.float64)
    a, b = platt(logit(top_score), correct)
    cal = TopCalibration(a, b, dict(fitted_for), split, int(len(top_score)), fitted_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    if len(top_score):
        cal = TopCalibration(**{**cal.to_dict(), "ece_before": ece(np.clip(top_score, 0, 1), correct),
                                "ece_after": ece(cal(top_score), correct)})
    return cal


def read_top_calibration(registry, corpus: str) -> TopCalibration | None:
    """The corpus' top calibration in ``registry`` (part of the live state), or None when none was fitted."""
    d = registry.live_state(corpus).top_calibration
    return None if d is None else TopCalibration.from_dict(d, f"{registry.releases(corpus).state_path} top_calibration")
