"""The unit every reader produces: one annotated request."""
from __future__ import annotations

from dataclasses import dataclass, field

from rerank.corpus.annotation import Slot

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Utterance:
    id: str
    tokens: tuple[str, ...]
    tags: tuple[str, ...]
    domain: str
    intent: str  # domain-qualified, e.g. "music_play"
    slots: tuple[Slot, ...]
    split: str
    context: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return " ".join(self.tokens)
