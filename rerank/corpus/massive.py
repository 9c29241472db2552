"""Reader for the MASSIVE JSONL format (``scenario, intent, utt, annot_utt, partition``).

Every malformed line is reported with the file, the line number and what is
wrong. With ``on_error="skip"`` such lines are skipped and counted instead;
nothing is dropped silently.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from rerank.corpus.annotation import AnnotationError, parse_annotation
from rerank.corpus.jsonl import MAX_LINE_BYTES, CorpusError, ReadReport, check_on_error, fail, iter_jsonl
from rerank.corpus.utterance import SAFE_NAME, SPLITS, Utterance
from rerank.metrics.semer import normalize_value

REQUIRED_FIELDS = ("id", "scenario", "intent", "annot_utt", "partition")
# MASSIVE itself names its splits train/dev/test; other exports say "validation".
PARTITION_ALIASES = {"train": "train", "dev": "dev", "validation": "dev", "valid": "dev", "test": "test"}
UNKNOWN_CONTEXT = "unknown"
#: tokens per utterance, at most: a request is a few dozen words; a 50 MB line would fill the memory
MAX_TOKENS = 512


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
    max_tokens: int = MAX_TOKENS,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> list[Utterance]:
    """Read every utterance of ``path`` (a JSONL file or a folder of them).

    Context fields absent from a record get the value ``"unknown"``: a corpus
    without them simply has constant context features.
    """
    check_on_error(on_error)
    report = report if report is not None else ReadReport()
    context_fields = tuple(context_fields)
    out: list[Utterance] = []
    seen: dict[str, str] = {}
    for file in corpus_files(path):
        for where, record in iter_jsonl(file, on_error, report, max_line_bytes):
            try:
                utt = record_to_utterance(record, context_fields, report, max_tokens)
                if utt.id in seen:
                    raise CorpusError(f"duplicate id {utt.id!r}, first seen at {seen[utt.id]}")
            except (CorpusError, AnnotationError) as err:
                fail(f"{where}: {err}", on_error, report)
                continue
            seen[utt.id] = where
            out.append(utt)
    return out


def qualify_intent(domain: str, intent: str) -> str:
    """The domain-qualified intent (REFERENCE.md: the intent alone tells the domain).

    ``alarm_set`` of ``alarm`` stays; ``play`` of ``Music`` becomes ``Music_play``.
    Gold files and n-best files go through the same rule, so their intents compare.

    >>> qualify_intent("alarm", "alarm_set"), qualify_intent("Music", "play")
    ('alarm_set', 'Music_play')
    """
    intent = intent.strip()
    return intent if intent.lower().startswith(domain.lower() + "_") else f"{domain}_{intent}"


def record_to_utterance(record: dict, context_fields: tuple[str, ...] = ("device",), report: ReadReport | None = None,
                        max_tokens: int = MAX_TOKENS) -> Utterance:
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
    if not SAFE_NAME.fullmatch(domain):
        # Domains name folders of the data and the registry.
        raise CorpusError(f"field 'scenario' is {domain!r}; a domain name is 1-128 letters, digits, '_', '-' or '.', "
                          "starting with a letter or digit")
    intent = qualify_intent(domain, record["intent"])
    try:
        parsed = parse_annotation(record["annot_utt"])
    except AnnotationError as err:
        raise CorpusError(f"field 'annot_utt': {err}") from None
    if len(parsed.tokens) > max_tokens:
        raise CorpusError(f"field 'annot_utt': {len(parsed.tokens)} tokens, more than max_tokens={max_tokens}")
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
        slots=tuple((t, normalize_value(v)) for t, v in parsed.slots),  # (the one slot normalisation)
        split=partition,
        context=context,
    )


assert set(PARTITION_ALIASES.values()) == set(SPLITS)
