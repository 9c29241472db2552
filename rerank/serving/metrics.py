"""The service's Prometheus metrics: requests, latency, hypotheses, swaps, refused versions, errors.

With several worker processes (``serve.workers > 1``) every worker counts in files under
``PROMETHEUS_MULTIPROC_DIR`` (``scripts/serve.py`` sets it), and ``/metrics`` of any
worker adds them all up (prometheus-client's multiprocess mode).
"""
from __future__ import annotations

import os
import re

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REQUESTS = Counter("rerank_requests_total", "Requests by endpoint and HTTP status", ["endpoint", "status"])
LATENCY = Histogram("rerank_request_seconds", "Time to answer a request, by endpoint", ["endpoint"],
                    buckets=(0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
HYPOTHESES = Counter("rerank_hypotheses_total", "Hypotheses ranked, by endpoint", ["endpoint"])
SWAPS = Counter("rerank_swaps_total", "Live versions swapped in, by domain", ["domain"])
REFUSED = Counter("rerank_refused_versions_total", "Versions refused at load (the old one kept serving), by domain", ["domain"])
ERRORS = Counter("rerank_errors_total", "Errors by endpoint and kind (bad_request, internal, watcher)", ["endpoint", "kind"])
LIVE = Gauge("rerank_live_version", "The live version number of each domain (0: the baseline)", ["domain"],
             multiprocess_mode="liveall")

_NUMBER = re.compile(r"v(\d+)")


class Endpoint:
    """One endpoint's counters: requests by status, latency, hypotheses ranked (each labelled child made once:
    ``labels()`` takes a lock and hashes the labels, on every request otherwise)."""

    def __init__(self, name: str):
        self.name = name
        self.latency = LATENCY.labels(name)
        self.hypotheses = HYPOTHESES.labels(name)
        self._requests: dict[int, object] = {}

    def observe(self, status: int, seconds: float) -> None:
        """A request answered with ``status`` after ``seconds``."""
        counter = self._requests.get(status)
        if counter is None:
            counter = self._requests[status] = REQUESTS.labels(self.name, str(status))
        counter.inc()
        self.latency.observe(seconds)


def live_event(kind: str, domain: str, detail: str) -> None:
    if kind == "swap":
        SWAPS.labels(domain).inc()
    elif kind == "refused":
        REFUSED.labels(domain).inc()
    else:
        ERRORS.labels("watcher", "internal").inc()


def set_versions(versions) -> None:
    for d, v in versions.items():
        m = _NUMBER.fullmatch(v)
        LIVE.labels(d).set(int(m.group(1)) if m else 0)


def exposition() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
