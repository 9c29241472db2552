"""Metrics: SemER / IE (REFERENCE.md s.2), corpus figures, calibration figures (s.4), bootstrap.

Run the doctests with ``pytest --doctest-modules rerank/metrics`` (they also run
from tests/test_semer.py, tests/test_calibration.py, tests/test_corpus_metrics.py).
"""
from rerank.metrics import calibration, corpus, semer
from rerank.metrics.calibration import *  # noqa: F403
from rerank.metrics.corpus import *  # noqa: F403
from rerank.metrics.semer import *  # noqa: F403

# one list of names per module, gathered here (each module's __all__ says what it offers)
__all__ = [*semer.__all__, *calibration.__all__, *corpus.__all__]
