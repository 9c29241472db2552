"""The model registry: immutable numbered versions of every domain's re-ranker, stages and history.

Layout, per corpus and domain (``<root>/<corpus>/<domain>/``):

- ``v<N>/``: one published version, never changed once written: ``weights.safetensors``,
  ``spec.json`` (the feature spec), ``config.json`` (the resolved training config),
  ``metrics.json`` (dev figures) and ``meta.json`` (loss, model kind, hash of the data
  it saw, time). Publishing creates a **candidate**.
- ``_releases/live.json``: what serves traffic, every domain's live version and the merge's
  top calibration in one file, replaced atomically by each *release* (a set of moves
  applied together; :mod:`rerank.model.releases`). A reader sees the state of exactly one
  release, never a mix. A domain without a live version is served by the unweighted baseline.
- ``_releases/r<N>.json``: the record of each release (its moves, verdict and reports);
  ``history.jsonl`` (per domain): decisions that moved nothing, such as a refused gate.

Stages: ``live`` (named by the pointer), ``candidate`` (never live) and ``retired``
(live once, replaced since). ``scripts/registry.py list`` shows them.

A version is written in a staging folder (``.staging-<host>-<pid>-<token>``) and renamed
into place, so a crash never leaves a half-written version visible; the next publish
removes staging folders whose publisher is gone: the publisher holds a lock on its own
folder's token file for as long as it writes, so ownership is told by the lock, not by
a host name and PID that two containers can share. The version number is claimed and
pointers are moved under a file lock, so concurrent publishers (a sweep, two nodes on
a shared disk) never collide. Weights are safetensors read as numpy arrays: loading a
model reads data, never code, and needs no torch. Weights that are not finite are
refused, at publish and at load.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from safetensors.numpy import save_file

from rerank.hypotheses.evidence import BadResources, DomainData, resources_bytes
from rerank.io import append_line, atomic_path, file_lock, fsync_dir, host_name, read_json, sha256_bytes, write_json
from rerank.model.published import RESOURCES, Publishable, PublishedModel, RegistryError, load_version
from rerank.model.releases import LiveState, ReleaseError, Releases
from rerank.model.scorer import BadWeights, LogitScorer
from rerank.model.spec import FeatureSpec, request_fields

VERSION_DIR = re.compile(r"v(\d+)")
STAGING_PREFIX = ".staging-"
#: a staging folder of another host is removed once it is this old (its publisher cannot be asked)
FOREIGN_STAGING_SECONDS = 6 * 3600


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class Registry:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._releases: dict[str, Releases] = {}

    # ------------------------------------------------------------------ listing

    def domain_dir(self, corpus: str, domain: str) -> Path:
        return self.root / corpus / domain

    def domains(self, corpus: str) -> list[str]:
        base = self.root / corpus
        return sorted(p.name for p in base.iterdir() if p.is_dir() and self.versions(corpus, p.name)) if base.exists() else []

    def versions(self, corpus: str, domain: str) -> list[str]:
        base = self.domain_dir(corpus, domain)
        if not base.exists():
            return []
        nums = [int(m.group(1)) for p in base.iterdir() if (m := VERSION_DIR.fullmatch(p.name)) and p.is_dir()]
        return [f"v{n}" for n in sorted(nums)]

    def meta(self, corpus: str, domain: str, version: str) -> dict:
        path = self.domain_dir(corpus, domain) / version / "meta.json"
        try:
            return read_json(path)
        except (OSError, json.JSONDecodeError) as err:
            raise RegistryError(f"{path}: unreadable ({err})") from None

    def releases(self, corpus: str) -> Releases:
        """The releases of ``corpus`` (one object per corpus and registry: it caches the live state)."""
        if corpus not in self._releases:
            self._releases[corpus] = Releases(self.root / corpus)
        return self._releases[corpus]

    def live_state(self, corpus: str) -> LiveState:
        """Every domain's live version and the top calibration, as of one release."""
        try:
            return self.releases(corpus).state()
        except ReleaseError as err:
            raise RegistryError(str(err)) from None

    def live(self, corpus: str, domain: str) -> str | None:
        """The live version of ``domain``, or None (it is then served by the baseline)."""
        name = self.live_state(corpus).version(domain)
        if name is not None and not (self.domain_dir(corpus, domain) / name).is_dir():
            raise RegistryError(f"{self.releases(corpus).state_path}: names {domain} {name!r}, which is not a published version")
        return name

    def history(self, corpus: str, domain: str) -> list[dict]:
        """Every decision about ``domain``, oldest first: its moves (from the releases) and what moved nothing."""
        path = self.domain_dir(corpus, domain) / "history.jsonl"
        out = []
        if path.exists():
            with open(path, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            out.append(json.loads(line))
                        except json.JSONDecodeError as err:
                            raise RegistryError(f"{path}:{lineno}: unreadable history line ({err.msg})") from None
        try:
            records = self.releases(corpus).records()
        except ReleaseError as err:
            raise RegistryError(str(err)) from None
        for r in records:
            common = {k: v for k, v in r.items() if k not in ("moves", "state", "top_calibration_before", "harmed", "refused")}
            for m in r["moves"]:
                if m["domain"] == domain:
                    out.append({**common, "domain": domain, "from": m["from"], "to": m["to"], "moved": True,
                                "release_size": len(r["moves"])})
            if domain in (r.get("harmed") or {}):  # what a release cost this domain, for its owner to see
                h = r["harmed"][domain]
                live = r["state"]["versions"].get(domain)
                out.append({**common, "domain": domain, "action": "harmed by release", "from": live, "to": live,
                            "moved": False, "verdict": f"SemER {h['delta']:+.4f} [{h['ci'][0]:+.4f}, {h['ci'][1]:+.4f}]; "
                                                       f"co-adapted: {h.get('coadapt') or 'no'}"})
        # "ts" (seconds, with fractions) orders decisions of one second; older entries have only "time"
        return sorted(out, key=lambda h: (h.get("time", ""), h.get("ts", 0.0)))

    def stage(self, corpus: str, domain: str, version: str, history: list[dict] | None = None) -> str:
        if version == self.live(corpus, domain):
            return "live"
        history = self.history(corpus, domain) if history is None else history
        return "retired" if any(h.get("to") == version and h.get("moved") for h in history) else "candidate"

    # ------------------------------------------------------------------ writing

    def _lock(self, corpus: str, domain: str):
        return file_lock(self.domain_dir(corpus, domain) / ".lock")

    def promotion_lock(self, corpus: str):
        """Held while a release is planned and written: the live state it was decided on stays put."""
        return file_lock(self.root / corpus / ".promote.lock")

    def clean_staging(self, corpus: str, domain: str, locked: bool = False) -> list[str]:
        """Remove staging folders whose publisher is gone (killed); returns their names.

        A publisher holds an exclusive lock on ``<staging>/.owner`` while it writes; a folder whose lock
        can be taken has no publisher (on a shared disk without working locks, only old folders go).
        ``locked``: the caller holds the domain's lock, under which a publisher makes its folder and locks
        its ``.owner``, and later removes ``.owner`` and renames the folder into place; an unowned folder that
        is empty or finished (``meta.json``) is then one whose publisher was killed in one of those windows.
        """
        base = self.domain_dir(corpus, domain)
        if not base.exists():
            return []
        removed = []
        for p in base.iterdir():
            if p.name.startswith(STAGING_PREFIX) and (_abandoned(p) or (locked and _killed_renaming(p))):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
        return removed

    def publish(self, corpus: str, domain: str, model: Publishable, *, loss: str, config: Mapping[str, Any],
                metrics: Mapping[str, Any], data_hash: str, resources: Mapping[str, Any] | None = None) -> str:
        """Publish ``model`` as the next version (a candidate) of ``domain``; returns ``"v<N>"``.

        ``resources``: the domain's evidence resources (:meth:`DomainData.to_json`), carried when the model reads
        text-derived evidence, so that it computes that evidence itself from a request's text.
        """
        if model.spec.domain != domain:
            raise RegistryError(f"a model of domain {model.spec.domain!r} cannot be published as {domain!r}")
        weights = {k: np.ascontiguousarray(v) for k, v in model.weights().items()}
        try:
            LogitScorer(model.kind, weights, model.spec.dim, where=f"model of {domain}")
            if resources is not None:
                DomainData.from_json(resources, f"evidence resources of {domain}")
        except (BadWeights, BadResources) as err:
            raise RegistryError(f"refusing to publish {corpus}/{domain}: {err}") from None
        base = self.domain_dir(corpus, domain)
        base.mkdir(parents=True, exist_ok=True)
        with self._lock(corpus, domain):  # (a cleaner never sees a staging folder before its owner lock is held)
            self.clean_staging(corpus, domain, locked=True)
            staging = base / f"{STAGING_PREFIX}{host_name()}-{os.getpid()}-{uuid.uuid4().hex}"
            staging.mkdir()
            owner = open(staging / ".owner", "w")
            fcntl.flock(owner, fcntl.LOCK_EX)  # released by the kernel when this process dies, however it dies
        try:
            with atomic_path(staging / "weights.safetensors") as tmp:  # (safetensors itself writes 0600)
                save_file(weights, str(tmp))
            write_json(staging / "spec.json", model.spec.to_dict())
            write_json(staging / "config.json", json.loads(json.dumps(config, default=str)))
            write_json(staging / "metrics.json", dict(metrics))
            files = {}
            if resources is not None:
                data = resources_bytes(resources)
                with atomic_path(staging / RESOURCES) as tmp:
                    tmp.write_bytes(data)
                files[RESOURCES] = sha256_bytes(data)
            hidden = int(weights["mlp.0.weight"].shape[0]) if model.kind == "mlp" else 0
            meta = {"corpus": corpus, "domain": domain, "loss": loss, "kind": model.kind, "hidden": hidden,
                    "data_hash": data_hash, "published_at": _now(), "host": host_name(), "pid": os.getpid(),
                    "files": files, "request_fields": request_fields(model.spec, resources is not None)}
            with self._lock(corpus, domain):
                existing = self.versions(corpus, domain)
                n = int(existing[-1][1:]) + 1 if existing else 1
                meta["version"] = f"v{n}"
                write_json(staging / "meta.json", meta)
                os.unlink(staging / ".owner")
                fsync_dir(staging)
                os.rename(staging, base / f"v{n}")
                fsync_dir(base)
            return f"v{n}"
        finally:
            owner.close()
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def release(self, corpus: str, moves: Mapping[str, str | None], record: Mapping[str, Any], *,
                top_calibration: Mapping[str, Any] | None | bool = False, expect_release: int | None = None) -> dict:
        """Apply ``moves`` ({domain: version, None: the baseline}) as one release, atomically; returns its record.

        See :meth:`Releases.write`. Every version must be published; nothing changes otherwise.
        """
        def check(domain: str, version: str) -> None:
            if not (self.domain_dir(corpus, domain) / version / "meta.json").is_file():
                raise RegistryError(f"{self.domain_dir(corpus, domain)}: no version {version!r} to make live; "
                                    f"published: {self.versions(corpus, domain)}")
        try:
            return self.releases(corpus).write(moves, record, top_calibration=top_calibration, expect_release=expect_release,
                                               check_version=check)
        except ReleaseError as err:
            raise RegistryError(str(err)) from None

    def set_live(self, corpus: str, domain: str, version: str | None, *, action: str, verdict: str,
                 forced: bool = False, report: str | None = None, expect_from: str | None | bool = False,
                 details: Mapping[str, Any] | None = None, top_calibration: Mapping[str, Any] | None | bool = False) -> dict:
        """A release of one move: ``domain`` to ``version`` (None: back to the baseline); returns its history entry.

        ``expect_from``: when given (a version or None), the move happens only if the live
        version is still that one (another promotion in between raises).
        """
        state = self.live_state(corpus)  # (one atomic read; the release below refuses a state that moved since)
        current = state.version(domain)
        if expect_from is not False and current != expect_from:
            raise RegistryError(f"{corpus}/{domain}: live moved from {expect_from} to {current} meanwhile; gate again")
        rec = self.release(corpus, {domain: version}, {"action": action, "verdict": verdict, "forced": bool(forced),
                                                       "report": report, **dict(details or {})},
                           top_calibration=top_calibration, expect_release=state.release)
        return {k: v for k, v in rec.items() if k != "moves"} | {"domain": domain, "from": current, "to": version, "moved": True}

    def record(self, corpus: str, domain: str, entry: Mapping[str, Any]) -> dict:
        """Append a decision that does not move ``live`` (a refused gate) to the history."""
        with self._lock(corpus, domain):
            full = {"time": _now(), "ts": time.time(), "domain": domain, "from": self.live(corpus, domain), "moved": False,
                    "host": host_name(),
                    "pid": os.getpid(), **entry}
            self._append_history(corpus, domain, full)
        return full

    def _append_history(self, corpus: str, domain: str, entry: Mapping[str, Any]) -> None:
        append_line(self.domain_dir(corpus, domain) / "history.jsonl", json.dumps(entry, sort_keys=True, default=str))

    # ------------------------------------------------------------------ reading

    def resolve(self, corpus: str, domain: str, version: str = "live", loss: str | None = None) -> str | None:
        """The version a reference names (``live``, ``latest``, ``v3``); ``loss``: the newest of that loss.

        None when there is none (no live version, nothing published, nothing of that loss).
        """
        versions = self.versions(corpus, domain)
        if loss is not None:
            for v in reversed(versions):
                if self.meta(corpus, domain, v).get("loss") == loss:
                    return v
            return None
        if version == "live":
            return self.live(corpus, domain)
        if version == "latest":
            return versions[-1] if versions else None
        if version not in versions:
            raise RegistryError(f"{self.domain_dir(corpus, domain)}: no version {version!r}; published: {versions}")
        return version

    def load(self, corpus: str, domain: str, version: str = "live", loss: str | None = None,
             expect_spec: FeatureSpec | None = None) -> PublishedModel:
        """A published version; ``expect_spec`` (the tables' spec) must match its own but for the evidence
        families, which each version chooses (the feature builders check that the data fills them)."""
        name = self.resolve(corpus, domain, version, loss)
        if name is None:
            what = f"version with loss {loss!r}" if loss else ("live version" if version == "live" else f"version {version!r}")
            raise RegistryError(f"{self.domain_dir(corpus, domain)}: no {what}; published: {self.versions(corpus, domain)}")
        path = self.domain_dir(corpus, domain) / name
        published = load_version(path, corpus, domain, name)
        if expect_spec is not None:
            published.spec.check_tables(expect_spec, what=f"published model {path}")
        return published

    def listing(self, corpus: str) -> list[dict]:
        """One row per version of every domain: domain, version, stage, loss, kind, dev figures, time."""
        rows = []
        for d in self.domains(corpus):
            history = self.history(corpus, d)
            for v in self.versions(corpus, d):
                meta = self.meta(corpus, d, v)
                metrics_path = self.domain_dir(corpus, d) / v / "metrics.json"
                metrics = read_json(metrics_path) if metrics_path.exists() else {}
                rows.append({"domain": d, "version": v, "stage": self.stage(corpus, d, v, history), "loss": meta.get("loss"),
                             "kind": meta.get("kind"), "published_at": meta.get("published_at"),
                             "dev_semer": metrics.get("semer"), "dev_ece_top": metrics.get("ece_top")})
        return rows


def _abandoned(staging: Path) -> bool:
    """No process holds the staging folder's owner lock (or, without one, it is old)."""
    try:
        with open(staging / ".owner") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True
    except FileNotFoundError:  # being renamed into place, or from before owner locks
        return _age(staging) > FOREIGN_STAGING_SECONDS
    except OSError:
        return _age(staging) > FOREIGN_STAGING_SECONDS


def _killed_renaming(staging: Path) -> bool:
    """Unowned and either finished (``meta.json`` is written last) or empty: seen under the domain's lock, its
    publisher was killed in one of the two windows it spends under that lock (between making the folder and
    locking its owner file, or between removing that file and the rename)."""
    if (staging / ".owner").exists():
        return False
    try:
        return (staging / "meta.json").is_file() or not any(staging.iterdir())
    except OSError:
        return False


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0
