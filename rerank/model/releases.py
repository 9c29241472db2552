"""The live state of a corpus: one file, replaced atomically by each release; the chain of releases that made it.

A *release* is the unit of change to live traffic: a set of (domain, version) moves
and the merge's top calibration fitted for the world they make, applied together.
Everything a reader needs to serve a corpus is in one file,
``<registry>/<corpus>/_releases/live.json``::

    {"release": 7, "versions": {"Music": "v3", "Video": "v2"}, "top_calibration": {...}, ...}

It is written to a temporary file and renamed over the old one, so a reader (the
service, the merge, a gate) sees the state of exactly one release, never half of one.
A domain absent from ``versions`` is served by the unweighted baseline.

Each release also leaves a record, ``r<N>.json`` (its moves, verdict, reports and
who made it), written *before* the state that names ``N``: the records of a corpus'
history are ``r1 .. rN`` for the ``N`` of the state, so a release killed after its
record and before its state leaves an orphan record that no reader counts (the next
release writes over it). The rename of the state is the commit point.

Registries written before releases existed kept one ``live`` pointer file per domain;
they are read as release 0 until the first release, which takes them over.
"""
from __future__ import annotations

import json
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from rerank.io import file_lock, host_name, read_json, write_json

FOLDER = "_releases"
STATE = "live.json"
RECORD = re.compile(r"r(\d+)\.json")
VERSION = re.compile(r"v(\d+)")


class ReleaseError(RuntimeError):
    """A release that cannot be applied (a missing version, a live state that moved meanwhile, a bad file)."""


@dataclass(frozen=True)
class LiveState:
    """What serves a corpus: the release number, every domain's live version and the top calibration."""

    release: int = 0
    versions: Mapping[str, str] = field(default_factory=dict)
    top_calibration: Mapping[str, Any] | None = None
    time: str = ""
    token: str = ""

    def version(self, domain: str) -> str | None:
        return self.versions.get(domain)

    def to_dict(self) -> dict:
        return {"release": self.release, "versions": dict(sorted(self.versions.items())),
                "top_calibration": None if self.top_calibration is None else dict(self.top_calibration),
                "time": self.time, "token": self.token}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str) -> "LiveState":
        try:
            release, versions = int(d["release"]), dict(d["versions"])
        except (KeyError, TypeError, ValueError) as err:
            raise ReleaseError(f"{where}: not a live state ({err!r})") from None
        if bad := sorted(f"{k}={v!r}" for k, v in versions.items() if not isinstance(v, str) or not VERSION.fullmatch(v)):
            raise ReleaseError(f"{where}: versions {bad} are not version names (v<N>)")
        cal = d.get("top_calibration")
        if cal is not None and not isinstance(cal, Mapping):
            raise ReleaseError(f"{where}: top_calibration must be an object or null")
        return cls(release, versions, cal, str(d.get("time", "")), str(d.get("token", "")))


def _stamp(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_ino, st.st_size


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class Releases:
    """The releases of one corpus folder (``<registry>/<corpus>``)."""

    def __init__(self, corpus_dir: Path):
        self.corpus_dir = Path(corpus_dir)
        self.folder = self.corpus_dir / FOLDER
        self.state_path = self.folder / STATE
        self._cache: tuple[tuple | None, LiveState] | None = None

    # ------------------------------------------------------------------ reading

    def stamp(self) -> tuple | None:
        """Changes whenever the live state is replaced (a rename changes the inode)."""
        return _stamp(self.state_path)

    def watch_stamp(self) -> tuple:
        """Changes whenever what serves may have changed: the state file, or before any release the legacy pointers."""
        stamp = self.stamp()
        if stamp is not None or not self.corpus_dir.is_dir():
            return ("state", stamp)
        legacy = [(d.name, _stamp(d / "live")) for d in sorted(self.corpus_dir.iterdir()) if d.name[:1].isalnum()]
        return ("legacy", tuple(legacy), _stamp(self.corpus_dir / "_merge" / "top_calibration.json"))

    def state(self) -> LiveState:
        """The live state (cached until its file is replaced); before the first release, the legacy pointers."""
        stamp = self.stamp()
        if self._cache is not None and self._cache[0] == stamp and stamp is not None:
            return self._cache[1]
        if stamp is None:
            return self._legacy()
        try:
            state = LiveState.from_dict(read_json(self.state_path), str(self.state_path))
        except FileNotFoundError:
            return self._legacy()
        except (OSError, json.JSONDecodeError) as err:
            raise ReleaseError(f"{self.state_path}: unreadable ({err})") from None
        self._cache = (stamp, state)
        return state

    def _legacy(self) -> LiveState:
        versions = {}
        if self.corpus_dir.is_dir():
            for d in self.corpus_dir.iterdir():
                pointer = d / "live"
                if d.name[:1].isalnum() and pointer.is_file():
                    name = pointer.read_text().strip()
                    if not VERSION.fullmatch(name) or not (d / name).is_dir():
                        raise ReleaseError(f"{pointer}: names {name!r}, which is not a published version")
                    versions[d.name] = name
        legacy_cal = self.corpus_dir / "_merge" / "top_calibration.json"
        try:
            cal = read_json(legacy_cal)
        except FileNotFoundError:
            cal = None
        except (OSError, json.JSONDecodeError) as err:
            raise ReleaseError(f"{legacy_cal}: unreadable ({err})") from None
        return LiveState(0, versions, cal)

    def record(self, number: int) -> dict:
        path = self.folder / f"r{number}.json"
        try:
            return read_json(path)
        except (OSError, json.JSONDecodeError) as err:
            raise ReleaseError(f"{path}: unreadable release record ({err})") from None

    def records(self) -> list[dict]:
        """The records of the releases that made the live state, oldest first."""
        state = self.state()
        cached = getattr(self, "_records", None)
        if cached is None or cached[0] != (state.release, state.token):
            # records are never changed once the state names them: read each once
            old = cached[1] if cached is not None and len(cached[1]) <= state.release else []
            old = old if all(r.get("release") == i + 1 for i, r in enumerate(old)) else []
            self._records = cached = ((state.release, state.token),
                                      old + [self.record(n) for n in range(len(old) + 1, state.release + 1)])
        return list(cached[1])

    # ------------------------------------------------------------------ writing

    def lock(self):
        """Held for the few milliseconds of a write (the planner holds the corpus' promotion lock around it)."""
        return file_lock(self.folder / ".lock")

    def write(self, moves: Mapping[str, str | None], record: Mapping[str, Any], *,
              top_calibration: Mapping[str, Any] | None | bool = False, expect_release: int | None = None,
              check_version=None) -> dict:
        """Apply ``moves`` ({domain: version, or None for the baseline}) as one release; returns its record.

        ``top_calibration``: the calibration fitted for the new world (None: none; False: keep the
        current one). ``expect_release``: the release the moves were planned against; another release
        in between raises instead of applying moves decided on a world that is gone.
        ``check_version(domain, version)`` raises when a version does not exist.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.lock():
            current = self.state()
            if expect_release is not None and current.release != expect_release:
                raise ReleaseError(f"{self.corpus_dir.name}: release {current.release} was made meanwhile (planned against "
                                   f"{expect_release}); plan again")
            for d, v in sorted(moves.items()):
                if v is not None and check_version is not None:
                    check_version(d, v)
            versions = dict(current.versions)
            changes = []
            for d, v in sorted(moves.items()):
                before = versions.get(d)
                if v is None:
                    versions.pop(d, None)
                else:
                    versions[d] = v
                changes.append({"domain": d, "from": before, "to": v})
            number, token, when = current.release + 1, uuid.uuid4().hex, now()
            cal = current.top_calibration if top_calibration is False else top_calibration
            # the record carries the state it makes (a rollback to it needs nothing else)
            full = {"release": number, "time": when, "ts": time.time(), "token": token, "host": host_name(), "pid": os.getpid(),
                    **dict(record), "moves": changes, "top_calibration_before": current.top_calibration,
                    "state": {"versions": dict(sorted(versions.items())), "top_calibration": cal}}
            write_json(self.folder / f"r{number}.json", full)
            state = LiveState(number, versions, cal, when, token)
            write_json(self.state_path, state.to_dict())  # the commit point
            self._cache = None
            if current.release == 0:  # the legacy pointers are taken over: remove them so nothing reads them again
                for d in current.versions:
                    (self.corpus_dir / d / "live").unlink(missing_ok=True)
        return full
