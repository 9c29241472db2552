"""The models that serve: one immutable snapshot of a whole release, swapped in one reference assignment.

:class:`LiveModels` follows the registry's live state (one file that each release
replaces atomically; a watcher on the server's event loop polls it, ``poll_seconds``
apart). When a release appears, every version it moves is loaded and checked first
(its feature spec, then finite scores on a probe built from the spec); only when all
of them pass does a new :class:`Snapshot` of the whole release replace the old one. A
request takes the snapshot once and is scored entirely by it, so no request is ever
scored by half a release.

Faults: a version that cannot be *read* (a permission, a file a shared disk does not
show yet) is retried with backoff, and the release is refused only after
``max_read_attempts`` reads; a version whose *content* fails (corrupt weights, a spec
of another layout, scores that are not finite) refuses the release at once. Either way
the old snapshot keeps serving, and :meth:`LiveModels.health` says ``degraded``, naming
the domain, while what serves differs from the live state for more than two polls.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from rerank.hypotheses.nbest import EVIDENCE
from rerank.merge.ranker import BASELINE, CrossDomainRanker, DomainScorer
from rerank.merge.top_calibration import TopCalibration, describe
from rerank.model.records import features_from_records
from rerank.model.registry import Registry, RegistryError
from rerank.model.spec import FeatureSpec

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
    #: the release of the live state it serves (0: the registry's state before any release)
    release: int = 0

    def confidence(self, top_score):
        """P(the top hypothesis is exactly right): its score (a float or an array of them) through the merge's
        top calibration."""
        if isinstance(top_score, np.ndarray):
            return self.top_calibration(top_score) if self.top_calibration is not None else top_score
        return float(self.top_calibration(top_score)) if self.top_calibration is not None else float(top_score)


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
    """The serving snapshot of ``corpus`` in ``registry``, kept in step with its live state."""

    def __init__(self, registry: Registry, corpus: str, specs: Mapping[str, FeatureSpec] | None = None,
                 poll_seconds: float = 0.2, on_event: Callable[[str, str, str], None] | None = None,
                 max_read_attempts: int = 8):
        self.registry, self.corpus = registry, corpus
        self.specs = dict(specs or {})
        self.poll_seconds = float(poll_seconds)
        self.max_read_attempts = int(max_read_attempts)
        self.on_event = on_event or (lambda kind, domain, detail: None)
        self._stamp: tuple | None = None
        self._behind: dict | None = None  # the release not served yet: its token, the domain, why, attempts, next try
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.snapshot = Snapshot(CrossDomainRanker({d: DomainScorer(d, BASELINE) for d in self.specs}, corpus),
                                 {d: BASELINE for d in self.specs}, 0)
        self.release = -1  # the release the snapshot serves (-1: none yet)
        self.last_poll = 0.0
        self.refresh()

    # ------------------------------------------------------------------ following the live state

    def _domains(self, state) -> list[str]:
        base = self.registry.root / self.corpus
        # domain names start with a letter or digit: "_releases" and hidden folders are not domains
        found = {p.name for p in base.iterdir() if p.is_dir() and p.name[:1].isalnum()} if base.exists() else set()
        return sorted(found | set(self.specs) | set(state.versions))

    def refresh(self) -> list[str]:
        """Look at the live state once; swap in a new release when all of it loads. Returns the domains swapped."""
        with self._lock:
            try:
                return self._refresh()
            finally:
                self.last_poll = time.time()

    def _refresh(self) -> list[str]:
        releases = self.registry.releases(self.corpus)
        behind = self._behind
        try:
            stamp = releases.watch_stamp()
        except OSError as err:  # the live state cannot even be looked at (a permission, a symlink loop): as unreadable
            if behind is not None and behind["token"] is None and time.monotonic() < behind["next"]:
                behind["polls"] += 1
                return []
            self._fall_behind(None, "?", "_releases", f"{type(err).__name__}: {err}", transient=True, token=None)
            return []
        if stamp == self._stamp and (behind is None or behind["refused"] or time.monotonic() < behind["next"]):
            if behind is not None:
                behind["polls"] += 1
            return []
        try:
            state = self.registry.live_state(self.corpus)
        except RegistryError as err:  # a half-visible or unreadable state file: read it again next poll
            self._fall_behind(stamp, "?", "_releases", str(err), transient=True, token=None)
            return []
        token = (state.release, state.token)
        if behind is not None and behind["token"] != token:
            behind = self._behind = None
        snap = self.snapshot
        scorers = dict(snap.ranker.scorers)
        swapped = []
        for d in self._domains(state):
            want = state.version(d) or BASELINE
            if want == snap.versions.get(d, BASELINE if d in self.specs else None):
                continue
            try:
                scorers[d] = self._load(d, want)
            except OSError as err:  # could not read it: a fault of the moment, tried again
                self._fall_behind(stamp, want, d, f"{type(err).__name__}: {err}", transient=True, token=token)
                return []
            except (RegistryError, RefusedVersion, ValueError) as err:  # its content: the release is refused
                self._fall_behind(stamp, want, d, str(err), transient=False, token=token)
                return []
            swapped.append(d)
        try:
            calibration = TopCalibration.from_dict(state.top_calibration, "the live state's top calibration") \
                if state.top_calibration else None
        except (ValueError, TypeError) as err:
            self._fall_behind(stamp, "top calibration", "_merge", str(err), transient=False, token=token)
            return []
        self._stamp, self._behind = stamp, None
        if swapped or calibration != snap.top_calibration or state.release != self.release:
            versions = {d: s.version for d, s in scorers.items()}
            ranker = CrossDomainRanker(scorers, self.corpus)
            ranker.prepare()  # its lookups built here, off the request path
            self.snapshot = Snapshot(ranker, versions, snap.generation + 1, top_calibration=calibration,
                                     release=state.release)
            if calibration != snap.top_calibration:
                self.on_event("calibration", "_merge", describe(calibration) if calibration else "none")
            for d in swapped:
                log.info("%s: now serving %s (was %s; release %d)", d, versions[d], snap.versions.get(d, BASELINE), state.release)
                self.on_event("swap", d, versions[d])
        self.release = state.release
        return swapped

    def _fall_behind(self, stamp, version: str, domain: str, why: str, transient: bool, token) -> None:
        """The release is not served yet: retry a transient fault with backoff; refuse for content or too many reads."""
        b = self._behind if self._behind is not None and self._behind["token"] == token else None
        attempts = (b["attempts"] if b else 0) + 1
        refused = not transient or attempts >= self.max_read_attempts
        delay = min(5.0, self.poll_seconds * 2 ** attempts)
        self._behind = {"token": token, "domain": domain, "version": version, "why": why, "attempts": attempts,
                        "refused": refused, "next": time.monotonic() + delay, "polls": b["polls"] if b else 0}
        self._stamp = stamp
        if refused:
            log.error("%s: release refused (%s %s), the old one keeps serving: %s", self.corpus, domain, version, why)
            self.on_event("refused", domain, f"{version}: {why}")
        else:
            log.warning("%s: %s %s unreadable (attempt %d, again in %.1f s): %s", self.corpus, domain, version, attempts,
                        delay, why)
            self.on_event("retry", domain, f"{version}: {why}")

    def health(self) -> dict:
        """``ok``, or ``degraded`` (naming the domain) when what serves has differed from the live state for more
        than two polls, or ``stale`` when the watcher has not polled for a while."""
        out = {"status": "ok", "release": self.release, "generation": self.snapshot.generation}
        b = self._behind
        if b is not None and (b["polls"] > 2 or b["attempts"] > 2 or b["refused"]):
            out.update(status="degraded", domain=b["domain"], version=b["version"], reason=b["why"][:300],
                       refused=b["refused"])
        if time.time() - self.last_poll > max(5.0, 10 * self.poll_seconds):
            out["status"] = "stale"
        return out

    def _load(self, domain: str, version: str) -> DomainScorer:
        if version == BASELINE:
            return DomainScorer(domain, BASELINE)
        folder = self.registry.domain_dir(self.corpus, domain) / version
        for name in ("meta.json", "spec.json", "weights.safetensors", *(["evidence.json"] if (folder / "evidence.json").exists() else [])):
            with open(folder / name, "rb"):  # an OSError here is a read fault, not the version's content
                pass
        pub = self.registry.load(self.corpus, domain, version)
        scorer = DomainScorer.from_published(pub)
        check_scorer(scorer, self.specs.get(domain))
        return scorer

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
