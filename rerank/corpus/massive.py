"""Reader for the MASSIVE JSONL format (``scenario, intent, utt, annot_utt, partition``).

Every malformed line is reported with the file, the line number and what is
wrong. With ``on_error="skip"`` such lines are skipped and counted instead;
nothing is dropped silently.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from rerank.corpus.annotation import AnnotationError, parse_annotation
from rerank.corpus.utterance import SPLITS, Utterance

REQUIRED_FIELDS = ("id", "scenario", "intent", "annot_utt", "partition")
# MASSIVE itself names its splits train/dev/test; other exports say "validation".
PARTITION_ALIASES = {"train": "train", "dev": "dev", "validation": "dev", "valid": "dev", "test": "test"}
UNKNOWN_CONTEXT = "unknown"
DOMAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class CorpusError(ValueError):
    """A malformed corpus line: the message names the file, the line and the problem."""


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


def corpus_files(path: str | Path) -> list[Path]:
    """A file, or every ``*.jsonl`` file of a folder in name order."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise CorpusError(f"{path}: folder holds no *.jsonl file")
        return files
    if not path.exists():
        raise CorpusError(f"{path}: no such file or folder")
    return [path]


def read_massive(
    path: str | Path,
    on_error: str = "raise",
    context_fields: Iterable[str] = ("device",),
    report: ReadReport | None = None,
) -> list[Utterance]:
    """Read every utterance of ``path`` (a JSONL file or a folder of them).

    Context fields absent from a record get the value ``"unknown"``: a corpus
    without them simply has constant context features.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    report = report if report is not None else ReadReport()
    context_fields = tuple(context_fields)
    out: list[Utterance] = []
    seen: dict[str, str] = {}
    for file in corpus_files(path):
        for where, record in _records(file, on_error, report):
            try:
                utt = record_to_utterance(record, context_fields, report)
                if utt.id in seen:
                    raise CorpusError(f"duplicate id {utt.id!r}, first seen at {seen[utt.id]}")
            except (CorpusError, AnnotationError) as err:
                _fail(f"{where}: {err}", on_error, report)
                continue
            seen[utt.id] = where
            out.append(utt)
    return out


def _records(file: Path, on_error: str, report: ReadReport) -> Iterator[tuple[str, dict]]:
    with open(file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            report.lines += 1
            where = f"{file}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                _fail(f"{where}: bad JSON ({err.msg} at column {err.colno})", on_error, report)
                continue
            if not isinstance(record, dict):
                _fail(f"{where}: a line must hold a JSON object, not {type(record).__name__}", on_error, report)
                continue
            yield where, record


def _fail(message: str, on_error: str, report: ReadReport) -> None:
    if on_error == "raise":
        raise CorpusError(message + "  (set data.on_error=skip to skip and count such lines)")
    report.skipped.append(message)


def record_to_utterance(record: dict, context_fields: tuple[str, ...] = ("device",), report: ReadReport | None = None) -> Utterance:
    """One MASSIVE record to an :class:`Utterance`; raises ``CorpusError`` naming the bad field."""
    for name in REQUIRED_FIELDS:
        value = record.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise CorpusError(f"missing or empty field {name!r}")
        if name != "id" and not isinstance(value, str):
            raise CorpusError(f"field {name!r} must be a string, not {type(value).__name__}")
    partition = PARTITION_ALIASES.get(record["partition"])
    if partition is None:
        raise CorpusError(f"field 'partition' is {record['partition']!r}; expected one of {sorted(PARTITION_ALIASES)}")
    domain = record["scenario"].strip()
    if not DOMAIN_NAME.fullmatch(domain):
        # Domains name folders of the data and the registry.
        raise CorpusError(f"field 'scenario' is {domain!r}; a domain name is letters, digits, '_', '-' or '.', not starting with '_', '-' or '.'")
    intent = record["intent"].strip()
    # REFERENCE.md: intents are domain-qualified, so the intent alone tells the domain.
    if not intent.lower().startswith(domain.lower() + "_"):
        intent = f"{domain}_{intent}"
    try:
        parsed = parse_annotation(record["annot_utt"])
    except AnnotationError as err:
        raise CorpusError(f"field 'annot_utt': {err}") from None
    context = {}
    for name in context_fields:
        value = record.get(name)
        if value is None:
            if report is not None:
                report.missing_context[name] += 1
            value = UNKNOWN_CONTEXT
        context[name] = str(value)
    return Utterance(
        id=str(record["id"]),
        tokens=tuple(t.lower() for t in parsed.tokens),
        tags=parsed.tags,
        domain=domain,
        intent=intent,
        slots=tuple((t, v.lower()) for t, v in parsed.slots),
        split=partition,
        context=context,
    )


assert set(PARTITION_ALIASES.values()) == set(SPLITS)
