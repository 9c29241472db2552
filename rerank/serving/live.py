"""The models that serve: one immutable snapshot of every domain's live version, swapped one domain at a time.

:class:`LiveModels` follows the registry's live pointers (a watcher thread polls
them, ``poll_seconds`` apart). When a domain's pointer moves, the new version is
loaded and checked first (its feature spec, then finite scores on a probe built
from the spec); only then does a new :class:`Snapshot` replace the old one, in a
single reference assignment. A request takes the snapshot once and is scored
entirely by it, so it never mixes versions. A version that fails to load or to
pass the checks is refused and logged, and the old one keeps serving.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from rerank.hypotheses.nbest import EVIDENCE
from rerank.merge.ranker import BASELINE, CrossDomainRanker, DomainScorer
from rerank.model.features import FeatureSpec, features_from_records
from rerank.merge.top_calibration import NAME as TOP_CALIBRATION
from rerank.merge.top_calibration import TopCalibration, read_top_calibration
from rerank.model.registry import Registry, RegistryError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """Every domain's scorer at one moment; ``generation`` counts the swaps."""

    ranker: CrossDomainRanker
    versions: Mapping[str, str]
    generation: int
    created: float = field(default_factory=time.time)
    #: the merge's top calibration (None: none fitted; the top's confidence is then its score)
    top_calibration: TopCalibration | None = None

    def confidence(self, top_score):
        """P(the top hypothesis is exactly right): its score (a float or an array of them) through the merge's
        top calibration."""
        if isinstance(top_score, np.ndarray):
            return self.top_calibration(top_score) if self.top_calibration is not None else top_score
        return float(self.top_calibration(top_score)) if self.top_calibration is not None else float(top_score)


def _file_stamp(path) -> tuple | None:
    """What tells that a file was replaced (an atomic rename changes the inode): None when it is absent."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_ino, st.st_size


class RefusedVersion(RuntimeError):
    pass


def _probe_evidence() -> list[dict]:
    """Evidence values of the probe, as the scores' (ordinary, lowest, highest, mixed), from each field's range in
    the n-best format: a model's evidence weights meet the ends of every range (an unbounded end: +-50)."""
    rows: list[dict] = [{}, {}, {}, {}]
    for j, (name, (low, high, whole)) in enumerate(EVIDENCE.items()):
        lo, hi = (low if math.isfinite(low) else -50.0), (high if math.isfinite(high) else 50.0)
        for row, v in zip(rows, ((lo + hi) / 2, lo, hi, lo if j % 2 else hi)):
            row[name] = int(round(v)) if whole else float(v)
    return rows


PROBE_EVIDENCE = _probe_evidence()


def probe_records(spec: FeatureSpec) -> list[dict]:
    """Hypotheses that touch every feature of ``spec``, at ordinary and extreme scores and evidence."""
    context = {c: values[0] if values else "unknown" for c, values in spec.context}
    records = []
    intents = list(spec.intents) or ["unknown_intent"]
    slots = [{"type": t, "value": "x"} for t in spec.slot_types]
    for i, intent in enumerate(intents):
        for (dc, ic, ner), evidence in zip(((0.5, 0.5, 0.5), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (1e-9, 1.0, 0.3)), PROBE_EVIDENCE):
            records.append({"domain": spec.domain, "intent": intent, "slots": slots if i % 2 else [], "dc": dc, "ic": ic,
                            "ner": ner, "rank": i % max(1, spec.n_ranks + 1), **context, **evidence})
    for c, values in spec.context:
        for v in values:
            records.append({"domain": spec.domain, "intent": intents[0], "slots": [], "dc": 0.5, "ic": 0.5, "ner": 0.5,
                            "rank": 0, **{**context, c: v}, **PROBE_EVIDENCE[0]})
    return records


def check_scorer(scorer: DomainScorer, expected: FeatureSpec | None) -> None:
    """Refuse a scorer whose spec is not the expected one or whose scores on the probe are not finite."""
    if scorer.is_baseline:
        return
    if scorer.spec.domain != scorer.domain:
        raise RefusedVersion(f"{scorer.domain} {scorer.version}: its spec is of domain {scorer.spec.domain!r}")
    if expected is not None:
        scorer.spec.check_tables(expected, what=f"version {scorer.version}")  # its evidence: fed by the probe below
    logits = scorer.logit(features_from_records(probe_records(scorer.spec), scorer.spec))
    if not np.isfinite(logits).all():
        raise RefusedVersion(f"{scorer.domain} {scorer.version}: {int((~np.isfinite(logits)).sum())} of "
                             f"{len(logits)} probe scores are not finite")


class LiveModels:
    """The serving snapshot of ``corpus`` in ``registry``, kept in step with its live pointers."""

    def __init__(self, registry: Registry, corpus: str, specs: Mapping[str, FeatureSpec] | None = None,
                 poll_seconds: float = 0.2, on_event: Callable[[str, str, str], None] | None = None):
        self.registry, self.corpus = registry, corpus
        self.specs = dict(specs or {})
        self.poll_seconds = float(poll_seconds)
        self.on_event = on_event or (lambda kind, domain, detail: None)
        self._stamps: dict[str, tuple | None] = {}
        self._refused: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.snapshot = Snapshot(CrossDomainRanker({d: DomainScorer(d, BASELINE) for d in self.specs}, corpus),
                                 {d: BASELINE for d in self.specs}, 0)
        self.last_poll = 0.0
        self.refresh()

    # ------------------------------------------------------------------ following the pointers

    def _domains(self) -> list[str]:
        base = self.registry.root / self.corpus
        # domain names start with a letter or digit: "_merge" and hidden folders are not domains
        found = {p.name for p in base.iterdir() if p.is_dir() and p.name[:1].isalnum()} if base.exists() else set()
        return sorted(found | set(self.specs))

    def _stamp(self, domain: str) -> tuple | None:
        return _file_stamp(self.registry.domain_dir(self.corpus, domain) / "live")

    def refresh(self) -> list[str]:
        """Look at every live pointer once; swap in what moved. Returns the domains swapped."""
        with self._lock:
            snap = self.snapshot
            scorers = dict(snap.ranker.scorers)
            swapped = []
            for d in self._domains():
                stamp = self._stamp(d)
                if d in self._stamps and stamp == self._stamps[d]:
                    continue
                self._stamps[d] = stamp
                try:
                    want = self.registry.live(self.corpus, d) or BASELINE
                except RegistryError as err:
                    self._refuse(d, "?", str(err))
                    continue
                if want == snap.versions.get(d) or self._refused.get(d) == want:
                    continue
                try:
                    scorer = self._load(d, want)
                except (RegistryError, RefusedVersion, ValueError) as err:
                    self._refuse(d, want, str(err))
                    continue
                scorers[d] = scorer
                swapped.append(d)
                self._refused.pop(d, None)
            calibration, recalibrated = self._top_calibration(snap.top_calibration)
            if swapped or recalibrated:
                versions = {d: s.version for d, s in scorers.items()}
                ranker = CrossDomainRanker(scorers, self.corpus)
                ranker.prepare()  # its lookups built here, off the request path
                self.snapshot = Snapshot(ranker, versions, snap.generation + 1, top_calibration=calibration)
                if recalibrated:
                    self.on_event("calibration", "_merge", f"{calibration.scale:.4f},{calibration.shift:.4f}" if calibration else "none")
                for d in swapped:
                    log.info("%s: now serving %s (was %s)", d, versions[d], snap.versions.get(d, BASELINE))
                    self.on_event("swap", d, versions[d])
            self.last_poll = time.time()
            return swapped

    def _top_calibration(self, current: TopCalibration | None) -> tuple[TopCalibration | None, bool]:
        """The merge's top calibration, read again when its file changed (the gate writes it before a pointer moves)."""
        path = self.registry.merge_path(self.corpus, TOP_CALIBRATION)
        stamp = _file_stamp(path)
        if "_merge" in self._stamps and stamp == self._stamps["_merge"]:
            return current, False
        self._stamps["_merge"] = stamp
        try:
            new = read_top_calibration(self.registry, self.corpus)
        except (RegistryError, ValueError, TypeError) as err:
            log.error("top calibration refused, the old one stays: %s", err)
            self.on_event("refused", "_merge", str(err))
            return current, False
        return new, new != current

    def _load(self, domain: str, version: str) -> DomainScorer:
        if version == BASELINE:
            return DomainScorer(domain, BASELINE)
        pub = self.registry.load(self.corpus, domain, version)
        scorer = DomainScorer.from_published(pub)
        check_scorer(scorer, self.specs.get(domain))
        return scorer

    def _refuse(self, domain: str, version: str, why: str) -> None:
        self._refused[domain] = version
        log.error("%s: refused version %s, the old one keeps serving: %s", domain, version, why)
        self.on_event("refused", domain, f"{version}: {why}")

    # ------------------------------------------------------------------ the watcher

    async def watch(self) -> None:
        """Poll on the server's event loop, between requests (the way to follow the registry in a server).

        A thread would do the same work, but under load every file operation of a
        thread waits for the event loop to hand over the GIL: a 20-syscall poll that
        takes a millisecond on the loop took up to a second from a thread.
        """
        import asyncio

        while not self._stop.is_set():
            await asyncio.sleep(self.poll_seconds)
            try:
                self.refresh()
            except Exception as err:  # the watcher must outlive a bad poll (a disk hiccup, a half-made folder)
                log.exception("live watcher: %s", err)
                self.on_event("error", "-", str(err))

    def start(self) -> "LiveModels":
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="rerank-live-watcher", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        """The watcher as a thread, for hosts without an event loop of their own."""
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception as err:  # the watcher must outlive a bad poll (a disk hiccup, a half-made folder)
                log.exception("live watcher: %s", err)
                self.on_event("error", "-", str(err))
