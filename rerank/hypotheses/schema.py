"""The Parquet schema of the hypothesis tables and of the gold utterance tables.

``outputs/data/<corpus>/<domain>/<split>.parquet`` holds one row per hypothesis
that ``<domain>`` emitted; ``outputs/data/<corpus>/_utterances/<split>.parquet``
one row per utterance of the split (also those no domain emitted for, which
count as full errors in corpus figures). ``utt_index`` numbers the utterances of
a split from 0 and is the join key between the two.
"""
from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 2

SLOT_TYPE = pa.list_(pa.struct([("type", pa.string()), ("value", pa.string())]))

# name, type, meaning: the documentation of docs/DATA.md is generated from this.
HYPOTHESIS_COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("utt_id", pa.string(), "utterance id from the corpus"),
    ("utt_index", pa.int32(), "index of the utterance in its split (join key with _utterances)"),
    ("domain", pa.string(), "the domain that emitted the hypothesis"),
    ("rank", pa.int16(), "0-based rank inside the domain's own list, by ic*ner"),
    ("intent", pa.string(), "hypothesised intent (domain-qualified)"),
    ("slots", SLOT_TYPE, "hypothesised slots, in utterance order"),
    ("n_slots", pa.int16(), "number of hypothesised slots"),
    ("dc", pa.float64(), "P(domain | u) from the domain's own DC"),
    ("ic", pa.float64(), "P(intent | u, domain) from the domain's IC"),
    ("ner", pa.float64(), "P(slot labelling | u, domain) from the domain's CRF"),
    # Evidence the domain owns (null where a domain's recognizers do not give it; manifest "evidence")
    ("ic_margin", pa.float64(), "P of the domain's best intent minus its second best (the same for all its hypotheses)"),
    ("ic_entropy", pa.float64(), "entropy (nats) of the domain's intent distribution"),
    ("ner_min", pa.float64(), "lowest P(tag_t | u, domain) over the tokens of this labelling (CRF marginals)"),
    ("ner_mean", pa.float64(), "mean P(tag_t | u, domain) over the tokens of this labelling"),
    ("oov_share", pa.float64(), "share of the utterance's tokens outside the domain's training vocabulary (cross-fitted)"),
    ("catalogue_miss", pa.int16(), "hypothesised slot values (type, value) never seen in the domain's training data (cross-fitted)"),
    ("n_tokens", pa.int16(), "number of tokens of the utterance"),
    ("unigram_logp", pa.float64(), "mean log P(token) under the domain's unigram model of its training utterances (add-1/2, cross-fitted)"),
    ("neighbour_jaccard", pa.float64(), "highest Jaccard similarity of the utterance's token set to one of the domain's training utterances (cross-fitted)"),
    ("neighbour_intent_jaccard", pa.float64(), "the same among the domain's training utterances of the hypothesis' intent (0: an intent it never had)"),
    ("sem_errors", pa.int32(), "E_int + S + D + I against the gold (REFERENCE.md s.2)"),
    ("sem_total", pa.int32(), "1 + number of gold slots"),
    ("semer", pa.float64(), "sem_errors / sem_total (not clipped)"),
    ("ie", pa.int8(), "interpretation error: 0 iff domain, intent and slots equal the gold"),
    ("gold_domain", pa.string(), "gold domain of the utterance"),
    ("gold_intent", pa.string(), "gold intent of the utterance"),
    ("fold", pa.int8(), "cross-fitting fold whose recognizers produced it (-1: trained on all of train)"),
]
# Context columns (e.g. ``device``, string) follow ``n_slots``; which ones is in the manifest.

#: the columns of evidence a domain owns; a table may leave them null, the manifest's ``evidence`` says which
#: ones each domain's table fills
EVIDENCE_COLUMNS = ("ic_margin", "ic_entropy", "ner_min", "ner_mean", "oov_share", "catalogue_miss", "n_tokens",
                    "unigram_logp", "neighbour_jaccard", "neighbour_intent_jaccard")

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
