r"""Semantic error (SemER) and interpretation error (IE) of one hypothesis.

Definitions follow REFERENCE.md s.2 exactly.

For a hypothesis :math:`h` against the gold interpretation :math:`g`:

.. math::
    E_{int} = [h.intent \ne g.intent]

Slots are aligned type by type (order is irrelevant, slots are multisets of
``(type, normalised value)``). For every slot type :math:`t`, let :math:`G_t`
and :math:`H_t` be the gold and hypothesis multisets of values of type
:math:`t`. Equal values pair first (correct), the rest pair one to one
(substitutions), leftovers are deletions / insertions:

.. math::
    C_t = |G_t \cap H_t|, \quad
    S_t = \min(|G_t| - C_t, |H_t| - C_t), \quad
    D_t = |G_t| - C_t - S_t, \quad
    I_t = |H_t| - C_t - S_t

.. math::
    \text{errors}(h) = E_{int} + \sum_t (S_t + D_t + I_t)
                     = E_{int} + \sum_t \max(|G_t|, |H_t|) - |G \cap H|

.. math::
    \text{total}(g) = 1 + |g.slots|, \qquad
    \text{SemER}(h) = \text{errors}(h) / \text{total}(g)

SemER is *not* clipped: it exceeds 1 when there are many insertions.

:math:`IE(h) = 0` exactly when domain, intent and the normalised slot multiset
all equal the gold, else 1. With domain-qualified intents,
``IE == 0  <=>  errors == 0`` (see docs/DESIGN.md).

Speed: ``semantic_errors`` is called millions of times, so it counts with plain
dicts (one pass over gold, one over the hypothesis; no pairwise comparison).
About 1-2 µs per call for typical 1-4 slot interpretations on CPython 3.11.
"""
from __future__ import annotations

from typing import Iterable, Tuple

__all__ = ["normalize_value", "slot_multiset", "semantic_errors", "interpretation_error"]

Slot = Tuple[str, str]


def normalize_value(value: str) -> str:
    """Normalise a slot value for comparison: lower-case and collapse white space.

    Runs of any white space (spaces, tabs, new lines, unicode spaces) become one
    space; leading and trailing white space is removed.

    Example:
        >>> normalize_value("  Michael \\t JACKSON ")
        'michael jackson'
        >>> normalize_value("")
        ''
    """
    return " ".join(value.lower().split())


def semantic_errors(
    gold_intent: str,
    gold_slots: Iterable[Slot],
    hyp_intent: str,
    hyp_slots: Iterable[Slot],
) -> tuple[int, int]:
    r"""Semantic errors of a hypothesis against the gold, as ``(errors, total)``.

    .. math::
        \text{errors} = E_{int} + S + D + I, \qquad \text{total} = 1 + |\text{gold slots}|

    so that ``SemER = errors / total`` (not clipped; can exceed 1).
    Intents are domain-qualified, so a hypothesis of the wrong domain always has
    an intent error. Slot types are compared exactly, values after
    :func:`normalize_value`. Slots are multisets: duplicates count.

    Args:
        gold_intent: the gold (domain-qualified) intent, e.g. ``"music_play"``.
        gold_slots: iterable of ``(type, value)`` pairs (any 2-sequences).
        hyp_intent: the hypothesis' intent.
        hyp_slots: iterable of ``(type, value)`` pairs.

    Returns:
        ``(errors, total)``, two ints.

    Example:
        >>> gold = [("song", "thriller"), ("artist", "michael jackson")]
        >>> semantic_errors("play_music", gold, "play_music", [("song", "Thriller")])
        (1, 3)
        >>> semantic_errors("play_music", [("song", "thriller")],
        ...                 "video_play", [("title", "thriller")])
        (3, 2)
    """
    errors = 0 if hyp_intent == gold_intent else 1

    # gold: multiset of (type, normalised value) and per-type counts
    pairs = slot_multiset(gold_slots)
    gtypes: dict = {}
    for (t, _), c in pairs.items():
        gtypes[t] = gtypes.get(t, 0) + c
    n_gold = sum(gtypes.values())

    # hypothesis: consume equal gold pairs (correct), count per type
    correct = 0
    htypes: dict = {}
    norm = normalize_value
    for t, v in hyp_slots:
        key = (t, norm(v))
        c = pairs.get(key, 0)
        if c:
            pairs[key] = c - 1
            correct += 1
        htypes[t] = htypes.get(t, 0) + 1

    # per type: S + D + I = max(|G_t|, |H_t|) - C_t
    slot_errors = 0
    for t, n in gtypes.items():
        m = htypes.pop(t, 0)
        slot_errors += n if n > m else m
    for m in htypes.values():  # types only in the hypothesis: all insertions
        slot_errors += m

    return errors + slot_errors - correct, n_gold + 1


def slot_multiset(slots: Iterable[Slot]) -> dict:
    """``{(type, normalised value): count}``: slots as the multiset REFERENCE.md compares.

    Example:
        >>> slot_multiset([("song", "Hey  Jude"), ("song", "hey jude")])
        {('song', 'hey jude'): 2}
    """
    out: dict = {}
    norm = normalize_value
    for t, v in slots:
        key = (t, norm(v))
        out[key] = out.get(key, 0) + 1
    return out


def interpretation_error(
    gold_domain: str,
    gold_intent: str,
    gold_slots: Iterable[Slot],
    hyp_domain: str,
    hyp_intent: str,
    hyp_slots: Iterable[Slot],
) -> int:
    r"""Interpretation error: 0 iff the hypothesis is exactly right, else 1.

    .. math::
        IE(h) = 1 - [h.domain = g.domain] \cdot [h.intent = g.intent]
                \cdot [\{(t, \mathrm{norm}(v))\}_h = \{(t, \mathrm{norm}(v))\}_g]

    where the slot sets are multisets (order irrelevant, duplicates count) and
    values are normalised with :func:`normalize_value`.

    Example:
        >>> gold = [("song", "thriller"), ("artist", "michael jackson")]
        >>> interpretation_error("music", "music_play", gold,
        ...                      "music", "music_play", [("artist", "Michael Jackson"), ("song", "thriller")])
        0
        >>> interpretation_error("music", "music_play", gold, "video", "music_play", gold)
        1
    """
    if hyp_domain != gold_domain or hyp_intent != gold_intent:
        return 1
    return 0 if slot_multiset(gold_slots) == slot_multiset(hyp_slots) else 1
