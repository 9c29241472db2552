"""The Parquet schema of the hypothesis tables and of the gold utterance tables.

``outputs/data/<corpus>/<domain>/<split>.parquet`` holds one row per hypothesis
that ``<domain>`` emitted; ``outputs/data/<corpus>/_utterances/<split>.parquet``
one row per utterance of the split (also those no domain emitted for, which
count as full errors in corpus figures). ``utt_index`` numbers the utterances of
a split from 0 and is the join key between the two.
"""
from __future__ import annotations

import pyarrow as pa

from rerank.hypotheses.fields import EVIDENCE_FIELDS, FIELDS, SLOT_TYPE

SCHEMA_VERSION = 2

# name, type, meaning, from the one table of fields (rerank.hypotheses.fields); docs/DATA.md is generated from it.
HYPOTHESIS_COLUMNS: list[tuple[str, pa.DataType, str]] = [(f.name, f.arrow, f.description) for f in FIELDS]
# Context columns (e.g. ``device``, string) follow ``n_slots``; which ones is in the manifest.

#: the columns of evidence a domain owns; a table may leave them null, the manifest's ``evidence`` says which
#: ones each domain's table fills
EVIDENCE_COLUMNS = EVIDENCE_FIELDS

UTTERANCE_COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("utt_id", pa.string(), "utterance id from the corpus"),
    ("utt_index", pa.int32(), "index of the utterance in its split"),
    ("text", pa.string(), "the utterance, lower-cased tokens joined by spaces"),
    ("gold_domain", pa.string(), "gold domain"),
    ("gold_intent", pa.string(), "gold intent"),
    ("gold_slots", SLOT_TYPE, "gold slots"),
    ("sem_total", pa.int32(), "1 + number of gold slots"),
]


def hypothesis_schema(context_fields: tuple[str, ...] | list[str]) -> pa.Schema:
    fields = []
    for name, typ, _ in HYPOTHESIS_COLUMNS:
        fields.append(pa.field(name, typ))
        if name == "n_slots":
            fields.extend(pa.field(c, pa.string()) for c in context_fields)
    return pa.schema(fields, metadata={b"rerank_schema_version": str(SCHEMA_VERSION).encode()})


def utterance_schema(context_fields: tuple[str, ...] | list[str]) -> pa.Schema:
    fields = [pa.field(n, t) for n, t, _ in UTTERANCE_COLUMNS]
    fields.extend(pa.field(c, pa.string()) for c in context_fields)
    return pa.schema(fields, metadata={b"rerank_schema_version": str(SCHEMA_VERSION).encode()})


def utterance_table(utts, context_fields) -> pa.Table:
    """The ``_utterances`` table of a split's gold utterances (in split order: ``utt_index``)."""
    cols: dict[str, list] = {
        "utt_id": [u.id for u in utts],
        "utt_index": list(range(len(utts))),
        "text": [u.text for u in utts],
        "gold_domain": [u.domain for u in utts],
        "gold_intent": [u.intent for u in utts],
        "gold_slots": [[{"type": t, "value": v} for t, v in u.slots] for u in utts],
        "sem_total": [1 + len(u.slots) for u in utts],
    }
    for c in context_fields:
        cols[c] = [u.context.get(c, "unknown") for u in utts]
    return pa.table(cols, schema=utterance_schema(context_fields))


def filled_evidence(tables) -> list[str]:
    """The :data:`EVIDENCE_COLUMNS` that every row of ``tables`` (one domain's splits) fills: its manifest ``evidence``."""
    tables = list(tables)
    return [c for c in EVIDENCE_COLUMNS
            if all(c in t.column_names and t[c].null_count == 0 for t in tables)]
