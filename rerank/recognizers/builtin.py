"""The built-in recognizers: maxent DC and IC over hashed n-grams, a CRF slot tagger with exact k-best.

In production each domain's recognizers are built by a different team. A
domain's settings come from one of the ``profiles`` (chosen by a stable hash of
its name unless ``domains.<name>.profile`` pins one), so that confidence scales
really differ between domains. Chosen by ``configs/recognizers/default.yaml``.
"""
from __future__ import annotations

import hashlib
from typing import Any, Mapping, Sequence

import numpy as np

from rerank.corpus.annotation import tags_to_slots
from rerank.corpus.utterance import Utterance
from rerank.recognizers import domain_classifier, intent_classifier
from rerank.recognizers.base import DomainClassifier, Interpreter, Labelling, MarginalLabelling, Recognizers, domain_seed
from rerank.recognizers.slot_tagger import SlotTagger
from rerank.recognizers.text_features import TextFeatures


class MaxentDomainClassifier(DomainClassifier):
    def __init__(self, model: domain_classifier.DomainClassifier, features: TextFeatures, ngram_max: int):
        self.model, self.features, self.ngram_max = model, features, ngram_max

    def scores(self, rows: np.ndarray) -> np.ndarray:
        return self.model.predict(self.features.rows(self.ngram_max, rows))


class MaxentCrfInterpreter(Interpreter):
    def __init__(self, ic: intent_classifier.IntentClassifier, ner: SlotTagger, features: TextFeatures, ngram_max: int,
                 utterances: Sequence[Utterance]):
        self.ic, self.ner, self.features, self.ngram_max, self.utterances = ic, ner, features, ngram_max, utterances

    def intents(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        idx, p = self.ic.top_k(self.features.matrix(self.ngram_max)[rows], k)
        return self.ic.intents[idx], p

    def labellings(self, rows: np.ndarray, k: int) -> list[list[Labelling]]:
        return [[(slots, p) for slots, p, _ in row] for row in self.labellings_with_marginals(rows, k)]

    def labellings_with_marginals(self, rows: np.ndarray, k: int) -> list[list[MarginalLabelling]]:
        tokens = [self.utterances[i].tokens for i in rows]
        nbests = self.ner.nbest_many([list(t) for t in tokens], k, marginals=True)
        return [[(tags_to_slots(toks, tags), p, m) for tags, p, m in nbest] for toks, nbest in zip(tokens, nbests)]


class MaxentCrfRecognizers(Recognizers):
    """DC: one-vs-all logistic regression; IC: multinomial logistic regression; NER: python-crfsuite CRF."""

    def __init__(self, profiles: Sequence[Mapping[str, Any]], domains: Mapping[str, Mapping[str, Any]] | None = None,
                 dc_max_negatives: int | None = None):
        self.profiles = {p["name"]: dict(p) for p in profiles}
        if not self.profiles:
            raise ValueError("recognizers.profiles is empty")
        self.pinned = {d: dict(v or {}) for d, v in (domains or {}).items()}
        # With hundreds of domains a DC would see every other domain's utterances as negatives:
        # like a team with a sample of other traffic, it keeps at most this many (None: all).
        self.dc_max_negatives = int(dc_max_negatives) if dc_max_negatives else None
        self.features: TextFeatures | None = None

    def profile(self, domain: str) -> dict:
        """The settings profile of ``domain``: pinned in ``domains`` or picked by a stable hash."""
        name = self.pinned.get(domain, {}).get("profile")
        if name is None:
            order = sorted(self.profiles)
            name = order[int(hashlib.sha256(domain.encode()).hexdigest(), 16) % len(order)]
        if name not in self.profiles:
            raise ValueError(f"recognizers.domains.{domain}.profile is {name!r}; known profiles: {sorted(self.profiles)}")
        return self.profiles[name]

    def describe(self, domain: str) -> str:
        return self.profile(domain)["name"]

    def settings(self) -> dict:
        out = {**super().settings(), "profiles": self.profiles, "domains": self.pinned}
        if self.dc_max_negatives:
            out["dc_max_negatives"] = self.dc_max_negatives
        return out

    def setup(self, utterances: Sequence[Utterance]) -> None:
        super().setup(utterances)
        self.features = TextFeatures([u.text for u in utterances])
        # Every order any domain uses, built once here rather than in each job.
        for d in self.domain_names:
            p = self.profile(d)
            self.features.matrix(p["dc"]["ngram_max"])
            self.features.matrix(p["ic"]["ngram_max"])

    def fit_domain_classifier(self, domain: str, rows: np.ndarray, seed: int) -> DomainClassifier:
        cfg = self.profile(domain)["dc"]
        rows, is_mine = self.dc_rows(domain, rows, seed, self.dc_max_negatives)
        model = domain_classifier.DomainClassifier(C=cfg["C"], negative_rate=cfg["negative_rate"],
                                                   class_weight=cfg.get("class_weight"), seed=domain_seed(seed, domain))
        model.fit(self.features.matrix(cfg["ngram_max"])[rows], is_mine)
        return MaxentDomainClassifier(model, self.features, cfg["ngram_max"])

    def fit_interpreter(self, domain: str, rows: np.ndarray, seed: int) -> Interpreter:
        profile = self.profile(domain)
        ic_cfg, ner_cfg = profile["ic"], profile["ner"]
        dom_seed = domain_seed(seed, domain)
        utts = self.utterances
        ic = intent_classifier.IntentClassifier(C=ic_cfg["C"], seed=dom_seed).fit(
            self.features.matrix(ic_cfg["ngram_max"])[rows], [utts[i].intent for i in rows])
        ner = SlotTagger(
            c1=ner_cfg.get("c1", 0.0), c2=ner_cfg["c2"], max_iterations=ner_cfg["max_iterations"],
            window=ner_cfg.get("window", 2), seed=dom_seed,
        ).fit([list(utts[i].tokens) for i in rows], [list(utts[i].tags) for i in rows])
        return MaxentCrfInterpreter(ic, ner, self.features, ic_cfg["ngram_max"], utts)
