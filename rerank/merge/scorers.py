"""How one domain's hypotheses get their calibrated probability: its published model, or the unweighted baseline."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from rerank.hypotheses.evidence import TEXT_FIELDS, DomainData
from rerank.hypotheses.figures import baseline_score
from rerank.metrics.logistic import sigmoid
from rerank.model.features import check_finite, feature_blocks
from rerank.model.published import PublishedModel
from rerank.model.records import features_from_records
from rerank.model.spec import BadFeatures, FeatureSpec, evidence_fields

BASELINE = "baseline"
_sigmoid = sigmoid


class UnknownDomainError(ValueError):
    pass


@dataclass
class DomainScorer:
    """How one domain's hypotheses get their calibrated probability."""

    domain: str
    version: str  # "v3", or "baseline" for the unweighted fallback
    spec: FeatureSpec | None = None
    logit: Callable[[np.ndarray], np.ndarray] | None = None
    loss: str | None = None
    published: PublishedModel | None = None  # the registry entry, for its feature weights and figures

    @classmethod
    def from_published(cls, pub: PublishedModel) -> "DomainScorer":
        return cls(pub.domain, pub.version, pub.spec, pub.scorer, pub.loss, pub)

    def feature_weights(self) -> dict[str, float] | None:
        return self.published.feature_weights() if self.published is not None else None

    @property
    def is_baseline(self) -> bool:
        return self.logit is None

    @functools.cached_property
    def text_resources(self) -> DomainData | None:
        """The domain's evidence resources when its model reads text-derived evidence (it computes it from the text)."""
        resources = getattr(self.published, "resources", None)
        if resources is None or not set(evidence_fields(self.spec.evidence)) & set(TEXT_FIELDS):
            return None
        return resources

    def score_table(self, table: pa.Table) -> np.ndarray:
        if self.is_baseline:
            scores = np.stack([table[c].to_numpy() for c in ("dc", "ic", "ner")], axis=1)
            check_finite(scores, table, where=f"hypotheses of {self.domain}")
            return baseline_score(*scores.T)
        # Block by block: each block is scored while it is in the CPU cache (several times faster
        # than one product with the whole matrix, and the same numbers as that product with one
        # BLAS thread; with several, a multi-threaded product itself can round a row differently).
        logits = np.empty(table.num_rows)
        for lo, X in feature_blocks(table, self.spec):
            logits[lo:lo + len(X)] = self.logit(X)
        return _sigmoid(logits)

    def score_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        if self.is_baseline:
            try:
                scores = np.array([[r["dc"], r["ic"], r["ner"]] for r in records], dtype=np.float64).reshape(-1, 3)
            except KeyError as err:
                raise BadFeatures(f"a hypothesis of {self.domain} lacks the field {err.args[0]!r}") from None
            check_finite(scores, None, where=f"hypotheses of {self.domain}")
            return baseline_score(*scores.T)
        return _sigmoid(self.logit(features_from_records(records, self.spec)))
