"""One published version of a domain's re-ranker, read as data: its spec, weights, evidence resources and metadata.

A version folder (``<registry>/<corpus>/<domain>/v<N>/``, :mod:`rerank.model.registry`) holds JSON and
safetensors only: loading it reads data, never code, and needs no torch. Every file is checked: the
weights are finite and fit the spec, and the evidence resources match the checksum ``meta.json`` lists.
"""
from __future__ import annotations

import json
import os
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from rerank.hypotheses.evidence import BadResources, DomainData
from rerank.io import read_json, sha256_bytes
from rerank.model.scorer import BadWeights, LogitScorer
from rerank.model.spec import FeatureSpec, FeatureSpecMismatch, request_fields

#: a version's evidence resources (rerank.hypotheses.evidence.DomainData), checked against meta.json's checksum
RESOURCES = "evidence.json"


class RegistryError(RuntimeError):
    """A missing, unreadable or mismatched registry entry; the message names the file."""


class Publishable(Protocol):
    """What :meth:`Registry.publish` needs of a model (training's ``DomainReranker`` is one)."""

    spec: FeatureSpec
    kind: str

    def weights(self) -> dict[str, np.ndarray]: ...


@dataclass
class PublishedModel:
    corpus: str
    domain: str
    version: str
    path: Path
    spec: FeatureSpec
    kind: str
    tensors: dict[str, np.ndarray]
    meta: dict
    metrics: dict = field(default_factory=dict)
    #: the domain's evidence resources, when the version carries them (it computes its text-derived evidence)
    resources: DomainData | None = None

    @property
    def request_fields(self) -> list[str]:
        """The fields a request must give for this version (``text`` stands for the evidence it computes from it)."""
        return request_fields(self.spec, self.resources is not None)

    @property
    def loss(self) -> str:
        return self.meta.get("loss", "?")

    def weights(self) -> dict[str, np.ndarray]:
        """The tensors (a :class:`Publishable` too: a version can be published again elsewhere)."""
        return dict(self.tensors)

    @property
    def scorer(self) -> LogitScorer:
        if not hasattr(self, "_scorer"):
            self._scorer = LogitScorer(self.kind, self.tensors, self.spec.dim, where=str(self.path))
        return self._scorer

    def feature_weights(self) -> dict[str, float]:
        return self.scorer.feature_weights(self.spec.names)


#: versions loaded by this process (a version never changes once published; a changed file is a new key)
_LOADED: OrderedDict = OrderedDict()
LOADED_MAX = 8192


def load_version(path: Path, corpus: str = "", domain: str = "", version: str = "") -> PublishedModel:
    """Read a version folder (JSON and safetensors: data, never code), checked; kept for this process."""
    try:
        stamp = tuple((s.st_ino, s.st_size, s.st_mtime_ns) for s in (os.stat(path / f) for f in ("meta.json", "spec.json",
                                                                                                   "weights.safetensors")))
        if (path / RESOURCES).exists():  # (a version carries its resources or not; either way they never change)
            s = os.stat(path / RESOURCES)
            stamp += ((s.st_ino, s.st_size, s.st_mtime_ns),)
    except OSError:
        stamp = None
    key = (str(path), corpus, domain, version, stamp)
    if stamp is not None and (hit := _LOADED.get(key)) is not None:
        _LOADED.move_to_end(key)
        return hit
    published = _load_version(path, corpus, domain, version)
    if stamp is not None:
        _LOADED[key] = published
        if len(_LOADED) > LOADED_MAX:
            _LOADED.popitem(last=False)
    return published


def _load_version(path: Path, corpus: str = "", domain: str = "", version: str = "") -> PublishedModel:
    """Read a version folder: JSON and safetensors only (data, never code); weights must be finite."""
    try:
        meta = read_json(path / "meta.json")
        spec = FeatureSpec.from_dict(read_json(path / "spec.json"))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, FeatureSpecMismatch) as err:
        raise RegistryError(f"{path}: unreadable meta.json or spec.json ({err!r})") from None
    if not isinstance(meta, dict):
        raise RegistryError(f"{path / 'meta.json'}: a JSON object is expected, not {type(meta).__name__}")
    metrics_path = path / "metrics.json"
    try:
        metrics = read_json(metrics_path) if metrics_path.exists() else {}
    except (OSError, json.JSONDecodeError) as err:
        raise RegistryError(f"{metrics_path}: unreadable ({err})") from None
    weights_path = path / "weights.safetensors"
    try:
        weights = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise RegistryError(f"{weights_path}: corrupted or truncated weights ({err})") from None
    kind = meta.get("kind", "linear")
    published = PublishedModel(corpus or meta.get("corpus", ""), domain or spec.domain, version or meta.get("version", path.name),
                               path, spec, kind, weights, meta, metrics, _load_resources(path, meta))
    try:
        published.scorer  # noqa: B018 (checks the tensors: names, shapes against the spec, finite)
    except BadWeights as err:
        raise RegistryError(f"{weights_path}: {err}; the spec is {path / 'spec.json'}") from None
    return published


def _load_resources(path: Path, meta: Mapping[str, Any]) -> DomainData | None:
    """A version's evidence resources, checked against the checksum meta.json lists (None when it carries none)."""
    files = meta.get("files") or {}
    if RESOURCES not in files:
        return None
    where = path / RESOURCES
    try:
        data = where.read_bytes()
    except OSError as err:
        raise RegistryError(f"{where}: listed in meta.json but unreadable ({err})") from None
    digest = sha256_bytes(data)
    if digest != files[RESOURCES]:
        raise RegistryError(f"{where}: does not match its checksum in meta.json (changed or truncated)")
    # versions trained on the same tables carry the same resources: one copy of them in memory (while any holds it)
    if (hit := _RESOURCES.get(digest)) is not None:
        return hit
    try:
        resources = DomainData.from_json(json.loads(data), str(where))
    except (json.JSONDecodeError, UnicodeDecodeError, BadResources) as err:
        raise RegistryError(f"{where}: unreadable evidence resources ({err})") from None
    _RESOURCES[digest] = resources
    return resources


#: the evidence resources loaded by this process, by checksum (held by the versions that carry them)
_RESOURCES: "weakref.WeakValueDictionary[str, DomainData]" = weakref.WeakValueDictionary()
