"""The model registry: immutable, numbered versions of every domain's re-ranker.

Layout: ``<root>/<corpus>/<domain>/v<N>/`` holds ``weights.safetensors``,
``spec.json`` (the feature spec), ``config.json`` (the resolved training
config), ``metrics.json`` (dev figures) and ``meta.json`` (loss, model kind,
hash of the data it saw, time). ``<root>/<corpus>/<domain>/latest`` names the
newest version.

A version is written in a staging folder and renamed into place, so a crash
never leaves a half-written version visible; the version number is claimed
and ``latest`` moved under a file lock, so concurrent publishers (a sweep)
never collide. Weights are safetensors: loading a model reads data, never code.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from rerank.io import read_json, write_json, write_text
from rerank.reranker.features import FeatureSpec
from rerank.reranker.model import DomainReranker

VERSION_DIR = re.compile(r"v(\d+)")


class RegistryError(RuntimeError):
    """A missing, unreadable or mismatched registry entry; the message names the file."""


@dataclass
class PublishedModel:
    corpus: str
    domain: str
    version: str
    path: Path
    model: DomainReranker
    meta: dict

    @property
    def spec(self) -> FeatureSpec:
        return self.model.spec

    @property
    def loss(self) -> str:
        return self.meta.get("loss", "?")


class Registry:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

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

    @contextmanager
    def _lock(self, corpus: str, domain: str):
        base = self.domain_dir(corpus, domain)
        base.mkdir(parents=True, exist_ok=True)
        with open(base / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def publish(
        self,
        corpus: str,
        domain: str,
        model: DomainReranker,
        *,
        loss: str,
        config: Mapping[str, Any],
        metrics: Mapping[str, Any],
        data_hash: str,
    ) -> str:
        """Publish ``model`` as the next version of ``domain``; returns ``"v<N>"``."""
        base = self.domain_dir(corpus, domain)
        base.mkdir(parents=True, exist_ok=True)
        staging = base / f".staging-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            save_file(state, str(staging / "weights.safetensors"))
            write_json(staging / "spec.json", model.spec.to_dict())
            write_json(staging / "config.json", json.loads(json.dumps(config, default=str)))
            write_json(staging / "metrics.json", dict(metrics))
            meta = {"corpus": corpus, "domain": domain, "loss": loss, "kind": model.kind, "hidden": model.hidden,
                    "data_hash": data_hash, "published_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            with self._lock(corpus, domain):
                existing = self.versions(corpus, domain)
                n = int(existing[-1][1:]) + 1 if existing else 1
                meta["version"] = f"v{n}"
                write_json(staging / "meta.json", meta)
                os.rename(staging, base / f"v{n}")
                write_text(base / "latest", f"v{n}\n")
            return f"v{n}"
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def resolve(self, corpus: str, domain: str, version: str = "latest", loss: str | None = None) -> str | None:
        """The version a reference names (``latest``, ``v3``), optionally the newest of one loss; None if none."""
        versions = self.versions(corpus, domain)
        if not versions:
            return None
        if version != "latest":
            if version not in versions:
                raise RegistryError(f"{self.domain_dir(corpus, domain)}: no version {version!r}; published: {versions}")
            return version
        if loss is None:
            pointer = self.domain_dir(corpus, domain) / "latest"
            name = pointer.read_text().strip() if pointer.exists() else versions[-1]
            return name if name in versions else versions[-1]
        for v in reversed(versions):
            meta_path = self.domain_dir(corpus, domain) / v / "meta.json"
            if meta_path.exists() and read_json(meta_path).get("loss") == loss:
                return v
        return None

    def load(self, corpus: str, domain: str, version: str = "latest", loss: str | None = None,
             expect_spec: FeatureSpec | None = None) -> PublishedModel:
        name = self.resolve(corpus, domain, version, loss)
        if name is None:
            what = f" with loss {loss!r}" if loss else ""
            raise RegistryError(f"{self.domain_dir(corpus, domain)}: no published version{what}")
        path = self.domain_dir(corpus, domain) / name
        model, meta = load_version(path)
        if expect_spec is not None:
            model.spec.check_same(expect_spec, what=f"published model {path}")
        return PublishedModel(corpus, domain, name, path, model, meta)


def load_version(path: Path) -> tuple[DomainReranker, dict]:
    """Read a version folder: JSON and safetensors only (data, never code)."""
    try:
        meta = read_json(path / "meta.json")
        spec = FeatureSpec.from_dict(read_json(path / "spec.json"))
    except (OSError, json.JSONDecodeError, KeyError) as err:
        raise RegistryError(f"{path}: unreadable meta.json or spec.json ({err})") from None
    weights = path / "weights.safetensors"
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise RegistryError(f"{weights}: corrupted or truncated weights ({err})") from None
    model = DomainReranker(spec, kind=meta.get("kind", "linear"), hidden=int(meta.get("hidden", 32)))
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise RegistryError(f"{weights}: weights do not fit the feature spec in {path / 'spec.json'} ({str(err).splitlines()[0]})") from None
    model.eval()
    return model, meta
