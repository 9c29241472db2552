"""The hypothesis tables: the public, read-only contract between any NLU stack and rerank.

A *table set* is ``<paths.data_dir>/<name>/`` (schema: docs/DATA.md). Only
``prepare`` (the built-in recognizers) and ``import`` (anyone's n-best) write one;
training, merge, serving and the benchmark read it and never rebuild or change it.

A set is complete or absent:

- :class:`TableSetWriter` builds it in a staging folder beside it
  (``.staging-<name>-<host>-<pid>-<id>``), writes ``manifest.json`` last with every
  file's row count and SHA-256, then moves the folder into place (the old set,
  if any, is renamed away first and removed after);
- :class:`TableSet` reads the manifest and checks every file it reads against
  it (size, checksum, rows), so a set that was changed, half-copied or mixed
  is an error that names the file, never a silent input.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rerank.corpus.utterance import SPLITS, check_name
from rerank.hypotheses.evidence import resources_bytes
from rerank.hypotheses.schema import SCHEMA_VERSION
from rerank.io import file_lock, fsync_dir, fsync_file, host_name, make_temp_dir, pid_alive, read_json, sha256_bytes, write_json, write_text

MANIFEST = "manifest.json"
UTTERANCES = "_utterances"
STAGING = ".staging-"
OLD = ".old-"
LABEL_COLUMNS = ("sem_errors", "sem_total", "semer", "ie")
#: a domain's evidence resources (rerank.hypotheses.evidence.DomainData.to_json of its whole training split)
RESOURCES = "evidence.json"


class TablesMissing(FileNotFoundError):
    """No table set under that name: the message says which command builds one."""


class TablesCorrupt(RuntimeError):
    """A table set whose files do not match its manifest, or hold impossible values; names the file."""


def data_root(cfg: Mapping[str, Any]) -> Path:
    """``paths.data_dir`` of a composed config."""
    return Path(cfg["paths"]["data_dir"])


def set_dir(cfg: Mapping[str, Any]) -> Path:
    """The folder of the table set a composed config names: ``paths.data_dir/<data.name>``."""
    return data_root(cfg) / check_name(cfg["data"]["name"])


def build_hint(cfg: Mapping[str, Any]) -> str:
    """The command that builds the tables of ``cfg.data``."""
    data = cfg["data"]
    if data.get("format") == "tables":
        return (f"python scripts/import.py name={data['name']} nbest=<n-best file> gold=<gold JSONL> "
                "(or scripts/prepare.py for a corpus)")
    extra = f" data.path={data['path']}" if data.get("path") else ""
    return f"python scripts/prepare.py data={_config_name(cfg)}{extra}"


def _config_name(cfg: Mapping[str, Any]) -> str:
    fmt, name = cfg["data"].get("format"), cfg["data"]["name"]
    return "synthetic" if fmt == "synthetic" else (name if name in ("hwu64",) else f"massive data.name={name}")


def open_tables(cfg: Mapping[str, Any]) -> "TableSet":
    """The table set of a composed config (train, merge, serve); :class:`TablesMissing` says how to build it."""
    return TableSet.open(set_dir(cfg), hint=build_hint(cfg))


class TableSet:
    """A finished table set, read with checks against its manifest."""

    def __init__(self, path: Path, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest

    @classmethod
    def open(cls, path: str | os.PathLike, hint: str | None = None) -> "TableSet":
        path = Path(path)
        mpath = path / MANIFEST
        try:
            manifest = read_json(mpath)
        except FileNotFoundError:  # (no check before the read: a prepare or import may swap the set away in between)
            how = f"; build it with: {hint}" if hint else ""
            raise TablesMissing(f"no hypothesis tables at {path} ({MANIFEST} is missing){how}") from None
        except (OSError, json.JSONDecodeError) as err:
            raise TablesCorrupt(f"{mpath}: unreadable manifest ({err})") from None
        if manifest.get("schema_version") != SCHEMA_VERSION:
            raise TablesCorrupt(f"{mpath}: schema version {manifest.get('schema_version')!r}, this rerank reads "
                                f"{SCHEMA_VERSION}; rebuild the tables")
        if not isinstance(manifest.get("files"), dict):
            raise TablesCorrupt(f"{mpath}: no file list with checksums; rebuild the tables")
        return cls(path, manifest)

    @property
    def name(self) -> str:
        return self.manifest["corpus"]

    @property
    def domains(self) -> list[str]:
        return list(self.manifest["domains"])

    def _read(self, rel: str, columns: list[str] | None = None, cache: bool = True) -> pa.Table:
        entry = self.manifest["files"].get(rel)
        path = self.path / rel
        if entry is None:
            raise TablesCorrupt(f"{path}: not listed in {self.path / MANIFEST}")
        try:
            st = path.stat()
        except FileNotFoundError:
            raise TablesCorrupt(f"{path}: listed in the manifest but missing; the set is incomplete, rebuild it") from None
        # A process that reads the same file again (a sweep worker's gates) takes it from memory, as long as
        # the file is the one that was checked (same inode, size, time) and the manifest still names it.
        key = (str(path), entry["sha256"], st.st_ino, st.st_size, st.st_mtime_ns, tuple(columns) if columns is not None else None)
        if cache and (hit := _READ_CACHE.get(key)) is not None:
            _READ_CACHE.move_to_end(key)
            return hit
        data = self._checked_bytes(rel, entry)
        table = pq.read_table(pa.BufferReader(data), columns=columns)
        if table.num_rows != entry["rows"]:
            raise TablesCorrupt(f"{path}: {table.num_rows} rows, the manifest says {entry['rows']}")
        if cache:
            _remember(key, table)
        return table

    def verify(self) -> None:
        """Check every file of the set against the manifest (prepare's cache does, before reusing a set)."""
        for rel in self.manifest["files"]:
            if rel.endswith("/" + RESOURCES):
                self.resources(rel.rsplit("/", 1)[0])
            else:
                self._read(rel, columns=[], cache=False)

    def read(self, domain: str, split: str) -> pa.Table:
        """One domain's hypotheses of one split, checked (checksum, rows, label columns)."""
        if domain not in self.manifest["domains"]:
            raise KeyError(f"domain {domain!r} is not in the tables at {self.path}; domains: {self.domains}")
        _check_split(split)
        table = self._read(f"{domain}/{split}.parquet")
        check_labels(table, self.path / domain / f"{split}.parquet")
        return table

    def read_utterances(self, split: str) -> pa.Table:
        _check_split(split)
        return self._read(f"{UTTERANCES}/{split}.parquet")

    def resources(self, domain: str) -> dict | None:
        """``domain``'s evidence resources (the data its text-derived evidence is computed from), checked against the
        manifest; None for a set built before they were written."""
        rel = f"{domain}/{RESOURCES}"
        entry = self.manifest["files"].get(rel)
        if entry is None:
            return None
        return json.loads(self._checked_bytes(rel, entry))

    def _checked_bytes(self, rel: str, entry: Mapping[str, Any]) -> bytes:
        """A listed file's bytes, refused unless they match the manifest's size and checksum."""
        path = self.path / rel
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise TablesCorrupt(f"{path}: listed in the manifest but missing; the set is incomplete, rebuild it") from None
        if len(data) != entry["bytes"] or sha256_bytes(data) != entry["sha256"]:
            raise TablesCorrupt(f"{path}: does not match the checksum in {self.path / MANIFEST} "
                                "(changed, truncated or from another build); rebuild the tables")
        return data

    def summary(self) -> dict | None:
        p = self.path / "summary.json"
        return read_json(p) if p.exists() else None


#: tables read by this process, most recent last; bounded by their rows
_READ_CACHE: OrderedDict = OrderedDict()
READ_CACHE_ROWS = 4_000_000


def _remember(key: tuple, table: pa.Table) -> None:
    _READ_CACHE[key] = table
    rows = sum(t.num_rows for t in _READ_CACHE.values())
    while rows > READ_CACHE_ROWS and len(_READ_CACHE) > 1:
        rows -= _READ_CACHE.popitem(last=False)[1].num_rows


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")


def check_labels(table: pa.Table, where: Path | str) -> None:
    """The label columns must be complete and finite: a training run must not start on NaN targets."""
    for c in LABEL_COLUMNS:
        if c not in table.column_names:
            raise TablesCorrupt(f"{where}: no label column {c!r}")
        col = table[c]
        if col.null_count:
            raise TablesCorrupt(f"{where}: label column {c!r} has {col.null_count} empty values")
        a = col.to_numpy()
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            bad = int((~np.isfinite(a)).sum())
            raise TablesCorrupt(f"{where}: label column {c!r} has {bad} NaN or infinite values "
                                f"(first at row {int(np.flatnonzero(~np.isfinite(a))[0])})")


# ----------------------------------------------------------------------------- writing


@contextmanager
def build_lock(root: Path, name: str) -> Iterator[None]:
    """One builder of a set at a time (jobs of a sweep, two shells): the others wait, then find it built."""
    with file_lock(Path(root) / f".{name}.lock"):
        yield


def clean_leftovers(root: Path, name: str) -> list[str]:
    """Remove staging and old folders of ``name`` left by killed builders (call under :func:`build_lock`)."""
    removed = []
    if not root.exists():
        return removed
    host = host_name()
    for p in root.iterdir():
        prefix = next((x for x in (STAGING, OLD) if p.name.startswith(f"{x}{name}-")), None)
        if prefix is None:
            continue
        rest = p.name[len(prefix) + len(name) + 1:].rsplit("-", 2)
        if len(rest) == 3 and rest[0] == host and rest[1].isdigit():
            gone = not pid_alive(int(rest[1]))
        else:  # another host's, or unreadable: only when surely abandoned
            gone = time.time() - p.stat().st_mtime > 6 * 3600
        if gone:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed


class TableSetWriter:
    """Builds a table set in a staging folder; :meth:`commit` moves it into place (call under :func:`build_lock`)."""

    def __init__(self, root: str | os.PathLike, name: str):
        self.root = Path(root)
        self.name = check_name(name)
        self.final = self.root / self.name
        self.staging = make_temp_dir(self.root, f"{STAGING}{self.name}-{host_name()}-{os.getpid()}-")
        self.files: dict[str, dict] = {}

    def write_table(self, rel: str, table: pa.Table) -> None:
        path = self.staging / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        data = sink.getvalue().to_pybytes()
        path.write_bytes(data)
        fsync_file(path)  # on disk before the set that names it can be renamed into place
        self.files[rel] = {"rows": table.num_rows, "bytes": len(data), "sha256": sha256_bytes(data)}

    def write_json(self, rel: str, obj: Any) -> None:
        write_json(self.staging / rel, obj)

    def write_resources(self, domain: str, resources: Mapping[str, Any]) -> None:
        """``domain``'s evidence resources, listed in the manifest with their checksum (:meth:`TableSet.resources`)."""
        rel = f"{domain}/{RESOURCES}"
        data = resources_bytes(resources)
        path = self.staging / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        fsync_file(path)
        self.files[rel] = {"rows": len(resources.get("vocabulary", ())), "bytes": len(data), "sha256": sha256_bytes(data)}

    def write_text(self, rel: str, text: str) -> None:
        write_text(self.staging / rel, text)

    def commit(self, manifest: Mapping[str, Any]) -> dict:
        """Write the manifest last, then swap the staging folder in; returns the manifest."""
        expected = {f"{d}/{s}.parquet" for d in manifest["domains"] for s in SPLITS}
        expected |= {f"{UTTERANCES}/{s}.parquet" for s in SPLITS}
        if missing := sorted(expected - set(self.files)):
            raise RuntimeError(f"table set {self.name} is incomplete: {missing[:5]} were not written")
        full = {**manifest, "schema_version": SCHEMA_VERSION, "corpus": self.name, "files": self.files,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_json(self.staging / MANIFEST, full)
        for folder in {(self.staging / rel).parent for rel in self.files} | {self.staging}:
            fsync_dir(folder)
        old = None
        if self.final.exists():
            old = self.root / f"{OLD}{self.name}-{host_name()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.rename(self.final, old)
        os.rename(self.staging, self.final)
        fsync_dir(self.root)  # the rename itself survives a power loss
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return full

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> "TableSetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.staging.exists():
            self.abort()
