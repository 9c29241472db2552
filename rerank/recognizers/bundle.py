"""Train every domain's DC, IC and NER, each domain with its own settings.

In production each domain's recognizers are built by a different team. A
domain's settings come from one of the ``recognizers.profiles`` (chosen by a
stable hash of its name unless ``recognizers.domains.<name>.profile`` pins
one), so that confidence scales really differ between domains.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from rerank.corpus.utterance import Utterance
from rerank.recognizers.domain_classifier import DomainClassifier
from rerank.recognizers.intent_classifier import IntentClassifier
from rerank.recognizers.slot_tagger import SlotTagger
from rerank.recognizers.text_features import TextFeatures


@dataclass
class DomainRecognizers:
    domain: str
    profile: str
    dc: DomainClassifier
    dc_ngram: int
    ic: IntentClassifier
    ic_ngram: int
    ner: SlotTagger


def domain_profile(domain: str, cfg: Mapping[str, Any]) -> dict:
    """The settings profile of ``domain``: pinned in ``cfg.domains`` or picked by a stable hash."""
    profiles = {p["name"]: p for p in cfg["profiles"]}
    pinned = (cfg.get("domains") or {}).get(domain, {}) or {}
    name = pinned.get("profile")
    if name is None:
        order = sorted(profiles)
        name = order[int(hashlib.sha256(domain.encode()).hexdigest(), 16) % len(order)]
    if name not in profiles:
        raise ValueError(f"recognizers.domains.{domain}.profile is {name!r}; known profiles: {sorted(profiles)}")
    return profiles[name]


def train_domain(
    domain: str,
    utts: list[Utterance],
    rows: np.ndarray,
    features: TextFeatures,
    cfg: Mapping[str, Any],
    seed: int,
) -> DomainRecognizers:
    """Fit ``domain``'s recognizers on ``utts[rows]`` (``features`` covers all of ``utts``)."""
    profile = domain_profile(domain, cfg)
    dc_cfg, ic_cfg, ner_cfg = profile["dc"], profile["ic"], profile["ner"]
    is_mine = np.fromiter((utts[i].domain == domain for i in rows), dtype=bool, count=len(rows))
    if not is_mine.any():
        raise ValueError(f"domain {domain!r} has no training utterance in this fold")
    dom_seed = seed + int(hashlib.sha256(domain.encode()).hexdigest()[:6], 16)
    X_dc = features.matrix(dc_cfg["ngram_max"])
    dc = DomainClassifier(
        C=dc_cfg["C"], negative_rate=dc_cfg["negative_rate"], class_weight=dc_cfg.get("class_weight"), seed=dom_seed
    ).fit(X_dc[rows], is_mine)
    mine = rows[is_mine]
    ic = IntentClassifier(C=ic_cfg["C"], seed=dom_seed).fit(
        features.matrix(ic_cfg["ngram_max"])[mine], [utts[i].intent for i in mine]
    )
    ner = SlotTagger(
        c1=ner_cfg.get("c1", 0.0), c2=ner_cfg["c2"], max_iterations=ner_cfg["max_iterations"],
        window=ner_cfg.get("window", 2), seed=dom_seed,
    ).fit([list(utts[i].tokens) for i in mine], [list(utts[i].tags) for i in mine])
    return DomainRecognizers(domain, profile["name"], dc, dc_cfg["ngram_max"], ic, ic_cfg["ngram_max"], ner)
