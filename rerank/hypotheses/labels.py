"""The labels of a hypothesis against its utterance's gold (REFERENCE.md s.2): errors, total and IE."""
from __future__ import annotations

from typing import Iterable

from rerank.corpus.annotation import Slot
from rerank.metrics.semer import interpretation_error, semantic_errors


def label(gold_domain: str, gold_intent: str, gold_slots: Iterable[Slot],
          domain: str, intent: str, slots: Iterable[Slot]) -> tuple[int, int, int]:
    """``(errors, total, ie)`` of the hypothesis ``(domain, intent, slots)``.

    A hypothesis of the wrong domain always has the wrong intent, even if an
    n-best file names its intent like the gold's; ``ie`` is 0 exactly when
    domain, intent and the slot multiset all equal the gold.

    >>> label("music", "music_play", [("song", "x")], "music", "music_play", [("song", "X")])
    (0, 2, 0)
    >>> label("music", "music_play", [], "video", "music_play", [])
    (1, 1, 1)
    """
    gold_slots, slots = tuple(gold_slots), tuple(slots)
    errors, total = semantic_errors(gold_intent, gold_slots, intent, slots)
    if domain != gold_domain and intent == gold_intent:
        errors += 1
    return errors, total, interpretation_error(gold_domain, gold_intent, gold_slots, domain, intent, slots)
