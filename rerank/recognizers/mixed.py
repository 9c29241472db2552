"""A mixed assistant (``recognizers=mixed``): each domain gets the recognizers of one of several families.

Teams choose differently: some ship maxent + CRF, some neural models. A domain's
family is pinned in ``domains`` (``{Music: neural}``), else drawn by a stable hash
of its name from ``shares`` (``{neural: 0.5}``: about half of the other domains,
the same ones on every run and machine), else ``default``. Every sub-family is
set up with the whole corpus, so ``domain_codes`` and ``domain_names`` are the
same in all of them.
"""
from __future__ import annotations

import hashlib
from typing import Mapping, Sequence

import numpy as np

from rerank.corpus.utterance import Utterance
from rerank.recognizers.base import DomainClassifier, Interpreter, Recognizers

__all__ = ["MixedRecognizers"]


def _unit_hash(domain: str) -> float:
    """A number in [0, 1) of the domain's name alone (stable across runs, machines and corpora)."""
    return int(hashlib.sha256(f"mixed:{domain}".encode()).hexdigest()[:12], 16) / 16**12


class MixedRecognizers(Recognizers):
    """Delegates each domain to the family :meth:`family_of` names."""

    def __init__(self, families: Mapping[str, Recognizers], default: str, domains: Mapping[str, str] | None = None,
                 shares: Mapping[str, float] | None = None):
        self.families = dict(families)
        if not self.families:
            raise ValueError("recognizers.family.families is empty")
        for name, fam in self.families.items():
            if not isinstance(fam, Recognizers):
                raise TypeError(f"recognizers.family.families.{name} must build a rerank.recognizers.base.Recognizers, "
                                f"not {type(fam).__name__}")
        self.default = default
        self.pinned = dict(domains or {})
        self.shares = {k: float(v) for k, v in (shares or {}).items()}
        for where, name in [("default", default), *((f"domains.{d}", f) for d, f in self.pinned.items()),
                            *((f"shares.{f}", f) for f in self.shares)]:
            if name not in self.families:
                raise ValueError(f"recognizers.family.{where} is {name!r}; families: {sorted(self.families)}")
        if any(v < 0 for v in self.shares.values()) or sum(self.shares.values()) > 1 + 1e-9:
            raise ValueError(f"recognizers.family.shares must be >= 0 and sum to at most 1: {self.shares}")

    def family_of(self, domain: str) -> str:
        """The name of ``domain``'s family: pinned, else by the hash of its name and ``shares``, else ``default``."""
        if domain in self.pinned:
            return self.pinned[domain]
        u, edge = _unit_hash(domain), 0.0
        for name in sorted(self.shares):
            edge += self.shares[name]
            if u < edge:
                return name
        return self.default

    def _of(self, domain: str) -> Recognizers:
        return self.families[self.family_of(domain)]

    def describe(self, domain: str) -> str:
        return f"{self.family_of(domain)}:{self._of(domain).describe(domain)}"

    def settings(self) -> dict:
        return {**super().settings(), "families": {k: f.settings() for k, f in sorted(self.families.items())},
                "default": self.default, "domains": self.pinned, "shares": self.shares}

    def setup(self, utterances: Sequence[Utterance]) -> None:
        super().setup(utterances)
        for name, fam in self.families.items():
            fam.setup(utterances)
            if fam.domain_names != self.domain_names or not np.array_equal(fam.domain_codes, self.domain_codes):
                raise RuntimeError(f"the family {name!r} numbers the domains differently from the mixed family")

    def fit_domain_classifier(self, domain: str, rows: np.ndarray, seed: int) -> DomainClassifier:
        return self._of(domain).fit_domain_classifier(domain, rows, seed)

    def fit_interpreter(self, domain: str, rows: np.ndarray, seed: int) -> Interpreter:
        return self._of(domain).fit_interpreter(domain, rows, seed)
