"""rerank: distributed, per-domain re-rankers for multi-domain NLU."""
__version__ = "0.1.0"
