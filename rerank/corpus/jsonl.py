"""Reading JSON-lines input with errors that say where: file, line and what is wrong.

Used for corpora (MASSIVE JSONL) and for imported n-best files. Every bad line
is an error naming the file and the line, or, with ``on_error="skip"``, is skipped
and counted in a :class:`ReadReport`; nothing is dropped silently. Lines longer
than ``max_line_bytes`` are refused without being held in memory, and bytes that
are not UTF-8 are reported with their line and column.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

ON_ERROR = ("raise", "skip")
#: a line of a corpus or an n-best file is a few hundred bytes; 1 MiB means something is wrong
MAX_LINE_BYTES = 1 << 20
_READ = 1 << 16


class CorpusError(ValueError):
    """A malformed input line: the message names the file, the line and the problem."""


@dataclass
class ReadReport:
    """What a read saw: lines read, lines skipped and why (``on_error=skip``)."""

    lines: int = 0
    skipped: list[str] = field(default_factory=list)
    missing_context: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        text = f"{self.lines} lines read, {len(self.skipped)} skipped"
        if self.skipped:
            text += ":\n  " + "\n  ".join(self.skipped[:10])
            if len(self.skipped) > 10:
                text += f"\n  ... and {len(self.skipped) - 10} more"
        return text


def check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")
    return on_error


def fail(message: str, on_error: str, report: ReadReport, hint: str = "data.on_error=skip") -> None:
    """Raise :class:`CorpusError` (``on_error="raise"``) or record the skipped line."""
    if on_error == "raise":
        raise CorpusError(f"{message}  (set {hint} to skip and count such lines)")
    report.skipped.append(message)


def iter_lines(file: Path, on_error: str, report: ReadReport, max_line_bytes: int = MAX_LINE_BYTES,
               hint: str = "data.on_error=skip") -> Iterator[tuple[str, str]]:
    """``(where, text)`` of every non-blank line of ``file``, ``where`` being ``file:line``."""
    with open(file, "rb") as f:
        lineno = 0
        while True:
            raw = f.readline(max_line_bytes + 1)
            if not raw:
                return
            lineno += 1
            where = f"{file}:{lineno}"
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                while (rest := f.readline(_READ)) and not rest.endswith(b"\n"):
                    pass  # skip the rest of the line without holding it
                report.lines += 1
                fail(f"{where}: line longer than {max_line_bytes} bytes (max_line_bytes)", on_error, report, hint)
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                report.lines += 1
                fail(f"{where}: byte 0x{raw[err.start]:02x} at column {err.start + 1} is not UTF-8", on_error, report, hint)
                continue
            if not text.strip():
                continue
            report.lines += 1
            yield where, text


def iter_jsonl(file: Path, on_error: str, report: ReadReport, max_line_bytes: int = MAX_LINE_BYTES,
               hint: str = "data.on_error=skip") -> Iterator[tuple[str, dict]]:
    """``(where, record)`` of every line of ``file`` that holds a JSON object."""
    loads = json.loads
    for where, text in iter_lines(file, on_error, report, max_line_bytes, hint):
        try:
            record = loads(text)
        except json.JSONDecodeError as err:
            fail(f"{where}: bad JSON ({err.msg} at column {err.colno})", on_error, report, hint)
            continue
        if not isinstance(record, dict):
            fail(f"{where}: a line must hold a JSON object, not {type(record).__name__}", on_error, report, hint)
            continue
        yield where, record
