"""The unit every reader produces: one annotated request."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from rerank.corpus.annotation import Slot

SPLITS = ("train", "dev", "test")

#: names of domains and of table sets: they name folders, so no separators and no leading dot
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def check_name(name: Any, what: str = "data.name") -> str:
    """``name`` if it is safe as a folder name, else ``ValueError`` saying why.

    >>> check_name("Music"), check_name("hwu64")
    ('Music', 'hwu64')
    """
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
        raise ValueError(f"{what} is {name!r}: a name is 1-128 letters, digits, '_', '-' or '.', "
                         "starting with a letter or digit (it names a folder: no '/', no leading '.')")
    return name


def text_tokens(text: str) -> tuple[str, ...]:
    """The tokens of an utterance's text as the corpus readers make them: split at white space, lower-cased.

    >>> text_tokens("Play  Mary Poppins")
    ('play', 'mary', 'poppins')
    """
    return tuple(t.lower() for t in text.split())


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
