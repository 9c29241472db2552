"""The bracket annotation of MASSIVE and SLURP: ``wake me up at [time : five am]``.

``parse_annotation`` turns it into white-space tokens, BIO tags and the slot
list; ``tags_to_slots`` goes back from a tag sequence (a slot tagger's output)
to slots.
"""
from __future__ import annotations

from dataclasses import dataclass

Slot = tuple[str, str]


class AnnotationError(ValueError):
    """A malformed bracket annotation; the message says what and at which character."""


@dataclass(frozen=True)
class ParsedAnnotation:
    tokens: tuple[str, ...]
    tags: tuple[str, ...]
    slots: tuple[Slot, ...]

    @property
    def text(self) -> str:
        return " ".join(self.tokens)


def parse_annotation(annot: str) -> ParsedAnnotation:
    """Parse ``annot`` into tokens, BIO tags and ``(type, value)`` slots.

    >>> p = parse_annotation("play [song_name : mary poppins] now")
    >>> p.tokens, p.tags, p.slots
    (('play', 'mary', 'poppins', 'now'), ('O', 'B-song_name', 'I-song_name', 'O'), (('song_name', 'mary poppins'),))
    """
    tokens: list[str] = []
    tags: list[str] = []
    slots: list[Slot] = []
    pos = 0
    n = len(annot)
    while pos < n:
        open_at = annot.find("[", pos)
        close_at = annot.find("]", pos)
        if close_at != -1 and (open_at == -1 or close_at < open_at):
            raise AnnotationError(f"']' at character {close_at} closes no '['")
        if open_at == -1:
            _outside(annot[pos:], tokens, tags)
            break
        _outside(annot[pos:open_at], tokens, tags)
        close_at = annot.find("]", open_at + 1)
        nested = annot.find("[", open_at + 1)
        if close_at == -1:
            raise AnnotationError(f"'[' at character {open_at} is never closed")
        if nested != -1 and nested < close_at:
            raise AnnotationError(f"'[' at character {nested} is nested inside the slot opened at {open_at}")
        slot_type, value = _inside(annot[open_at + 1 : close_at], open_at)
        words = value.split()
        tokens.extend(words)
        tags.append(f"B-{slot_type}")
        tags.extend(f"I-{slot_type}" for _ in words[1:])
        slots.append((slot_type, " ".join(words)))
        pos = close_at + 1
    if not tokens:
        raise AnnotationError("empty utterance")
    return ParsedAnnotation(tuple(tokens), tuple(tags), tuple(slots))


def _outside(text: str, tokens: list[str], tags: list[str]) -> None:
    words = text.split()
    tokens.extend(words)
    tags.extend("O" for _ in words)


def _inside(body: str, open_at: int) -> Slot:
    if ":" not in body:
        raise AnnotationError(f"slot at character {open_at} has no ' : ' between type and value: [{body}]")
    slot_type, value = body.split(":", 1)
    slot_type, value = slot_type.strip(), value.strip()
    if not slot_type or any(c.isspace() for c in slot_type):
        raise AnnotationError(f"slot at character {open_at} has a bad type {slot_type!r}: [{body}]")
    if not value:
        raise AnnotationError(f"slot at character {open_at} has an empty value: [{body}]")
    return slot_type, value


def tags_to_slots(tokens: list[str] | tuple[str, ...], tags: list[str] | tuple[str, ...]) -> tuple[Slot, ...]:
    """Read slots off a BIO tag sequence; a stray ``I-x`` starts a new slot (CoNLL style).

    >>> tags_to_slots(["play", "mary", "poppins"], ["O", "B-song_name", "I-song_name"])
    (('song_name', 'mary poppins'),)
    """
    slots: list[Slot] = []
    cur_type: str | None = None
    cur: list[str] = []
    for token, tag in zip(tokens, tags):
        if tag == "O":
            if cur_type is not None:
                slots.append((cur_type, " ".join(cur)))
                cur_type, cur = None, []
            continue
        prefix, slot_type = tag[:2], tag[2:]
        if prefix == "I-" and slot_type == cur_type:
            cur.append(token)
            continue
        if cur_type is not None:
            slots.append((cur_type, " ".join(cur)))
        cur_type, cur = slot_type, [token]
    if cur_type is not None:
        slots.append((cur_type, " ".join(cur)))
    return tuple(slots)
