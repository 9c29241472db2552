"""Metrics: SemER / IE (REFERENCE.md s.2), corpus figures, calibration figures (s.4), bootstrap.

Run the doctests with ``pytest --doctest-modules rerank/metrics`` (they also run
from tests/test_semer.py, tests/test_calibration.py, tests/test_corpus_metrics.py).
"""
from rerank.metrics.calibration import N_BINS, brier, ece, mce, nll, reliability_bins
from rerank.metrics.corpus import (
    bootstrap_ci,
    corpus_semer,
    irer,
    slot_counts,
    slot_f1,
    slot_f1_from_counts,
)
from rerank.metrics.semer import interpretation_error, normalize_value, semantic_errors

__all__ = [
    "normalize_value",
    "semantic_errors",
    "interpretation_error",
    "N_BINS",
    "reliability_bins",
    "ece",
    "mce",
    "brier",
    "nll",
    "corpus_semer",
    "irer",
    "slot_counts",
    "slot_f1_from_counts",
    "slot_f1",
    "bootstrap_ci",
]
