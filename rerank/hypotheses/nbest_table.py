"""Many utterances' n-best as one Arrow table: the columnar form of the n-best format, checked without a Python loop.

Columns: ``utt`` (any key of the utterance: integer or string), ``domain``, ``intent``,
``slots`` (``list<struct<type: string, value: string>>``), ``dc``, ``ic``, ``ner``, and
optionally ``rank``, context fields (e.g. ``device``), evidence columns (``ic_margin``, ...) and ``text`` (the
utterance, on any of its rows: the evidence the models compute from it). The rules are those of
:mod:`rerank.hypotheses.nbest` (scores in [0, 1], safe domain names, intents read as
domain-qualified, ranks from ``ic * ner`` when absent), applied to whole columns: the
service's ``/rank/batch`` takes this form to rank millions of hypotheses a second.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rerank.corpus.massive import UNKNOWN_CONTEXT, qualify_intent
from rerank.corpus.utterance import SAFE_NAME
from rerank.hypotheses.nbest import EVIDENCE, MAX_RANK, MAX_SLOTS, SCORES, BadHypothesis
from rerank.hypotheses.schema import SLOT_TYPE
from rerank.ranking import rank_within_utterances

REQUIRED = ("utt", "domain", "intent", "slots", *SCORES)


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_floating(t) or pa.types.is_integer(t)


def _values(t: pa.DataType) -> pa.DataType:
    """The type of the values: a dictionary column's value type, else the column's."""
    return t.value_type if pa.types.is_dictionary(t) else t


#: what each column may hold: (test of its (decoded) type, what the error says it must hold)
_TEXT = (_is_text, "strings")
_KINDS = {
    "utt": (lambda t: _is_text(t) or pa.types.is_integer(t), "strings or integers (the utterance's key)"),
    "domain": _TEXT, "intent": _TEXT,
    # (a column of empty lists only reads as list<null>)
    "slots": (lambda t: (pa.types.is_list(t) or pa.types.is_large_list(t))
              and (pa.types.is_struct(t.value_type) or pa.types.is_null(t.value_type)), "lists of {type, value} structs"),
    **{c: (_is_number, "numbers") for c in SCORES},
    "rank": (lambda t: pa.types.is_integer(t) or pa.types.is_null(t), "whole numbers"),
    **{c: (lambda t: _is_number(t) or pa.types.is_null(t), "numbers") for c in EVIDENCE},
    # the utterance's text (on any of its rows; the versions that carry their resources compute evidence from it)
    "text": (lambda t: _is_text(t) or pa.types.is_null(t), "strings"),
}


def check_nbest_schema(schema: pa.Schema, context_fields: Sequence[str]) -> None:
    """Every column the ranking reads is present and of a type it can read: checked before any row is decoded.

    :class:`BadHypothesis` names the column (a rank given as strings, an ``utt`` of structs, a
    ``domain`` dictionary of integers would otherwise fail deep inside the ranking).
    """
    for name in REQUIRED:
        if name not in schema.names:
            raise BadHypothesis(f"missing column {name!r}", name)
    for name, (ok, what) in {**_KINDS, **{c: _TEXT for c in context_fields}}.items():
        if name not in schema.names:
            continue
        if len(schema.get_all_field_indices(name)) > 1:
            raise BadHypothesis(f"column {name!r} appears more than once", name)
        t = schema.field(name).type
        if not ok(_values(t)) or (pa.types.is_dictionary(t) and name in ("slots", *SCORES, "rank", *EVIDENCE)):
            raise BadHypothesis(f"column {name!r} must hold {what}, not {t}", name)


def _strings(table: pa.Table, name: str) -> pa.Array:
    col = table[name]
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return col.dictionary_decode().cast(pa.string()) if pa.types.is_dictionary(col.type) else col.cast(pa.string())


def check_nbest_table(table: pa.Table, context_fields: Sequence[str]) -> pa.Table:
    """The checked, normalised table (``utt_index``: 0-based utterance code, in order of first appearance).

    :class:`BadHypothesis` names the column (``field``) and the first bad row.
    """
    check_nbest_schema(table.schema, context_fields)
    for name in REQUIRED:
        if table[name].null_count:
            raise BadHypothesis(f"column {name!r}: row {_first(np.asarray(table[name].is_null()))} is empty", name)
    n = table.num_rows
    scores = {}
    for name in SCORES:
        a = table[name].to_numpy().astype(np.float64)
        bad = ~((a >= 0.0) & (a <= 1.0))  # NaN fails both
        if bad.any():
            i = _first(bad)
            raise BadHypothesis(f"column {name!r}: row {i} is {a[i]!r}; scores are probabilities in [0, 1]", name)
        scores[name] = a
    domain = _strings(table, "domain")
    names = pc.unique(domain).to_pylist()
    if bad := [d for d in names if not SAFE_NAME.fullmatch(d)]:
        row = _first(np.asarray(pc.equal(domain, bad[0])))
        raise BadHypothesis(f"column 'domain': row {row} is {bad[0]!r}, not a safe domain name (letters, digits, '_', '-', "
                            "'.'; starting with a letter or digit)", "domain")
    intent = _strings(table, "intent")
    if (empty := np.asarray(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(intent)), 0))).any():
        raise BadHypothesis(f"column 'intent': row {_first(empty)} is empty", "intent")
    # domain-qualified intents: one qualify_intent per distinct (domain, intent) pair
    codes = pc.dictionary_encode(pc.binary_join_element_wise(domain, intent, "\x1f"))
    qualified = [qualify_intent(*p.split("\x1f", 1)) for p in codes.dictionary.to_pylist()]
    intent = pa.array(qualified, pa.string()).take(codes.indices)
    slots = table["slots"].combine_chunks() if isinstance(table["slots"], pa.ChunkedArray) else table["slots"]
    try:
        slots = slots.cast(SLOT_TYPE)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise BadHypothesis(f"column 'slots' must be a list of {{type, value}} structs, not {slots.type} ({err})", "slots") from None
    n_slots = pc.list_value_length(slots)
    if len(slots) and pc.max(n_slots).as_py() > MAX_SLOTS:  # (stored as int16)
        i = _first(np.asarray(pc.greater(n_slots, MAX_SLOTS)))
        raise BadHypothesis(f"column 'slots': row {i} holds {n_slots[i].as_py()} slots, more than {MAX_SLOTS}", "slots")
    flat = pc.list_flatten(slots)
    if len(flat):
        owner = np.asarray(pc.list_parent_indices(slots))
        for part in ("type", "value"):
            v = pc.struct_field(flat, part)
            bad = np.asarray(pc.or_(pc.is_null(v), pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(v)), 0)).fill_null(True))
            if part == "type":
                bad |= np.asarray(pc.match_substring_regex(v, r"\s").fill_null(True))
            if bad.any():
                raise BadHypothesis(f"column 'slots': row {owner[_first(bad)]} has a slot {part} that is empty"
                                    + (" or holds spaces" if part == "type" else ""), f"slots.{part}")
    utt = table["utt"].combine_chunks() if isinstance(table["utt"], pa.ChunkedArray) else table["utt"]
    if pa.types.is_dictionary(utt.type):  # (a dictionary may repeat a value: codes of their own would split an utterance)
        utt = utt.dictionary_decode()
    utt_index = np.asarray(pc.dictionary_encode(utt).indices).astype(np.int64)
    if "rank" in table.column_names and table["rank"].null_count < n:
        if table["rank"].null_count:
            raise BadHypothesis(f"column 'rank': row {_first(np.asarray(table['rank'].is_null()))} is empty while others are "
                                "given; give it for all rows or none", "rank")
        rank = _rank_column(table["rank"])
    else:
        # the domain's own order in each utterance, by ic * ner, as import ranks it
        key = utt_index * (len(names) + 1) + np.asarray(pc.dictionary_encode(domain).indices)
        rank = rank_within_utterances(key, scores["ic"] * scores["ner"])
    cols = {"utt_index": pa.array(utt_index), "utt": utt, "domain": domain, "intent": intent, "slots": slots,
            "n_slots": n_slots.cast(pa.int16()), "rank": pa.array(rank.astype(np.int16)),
            **{k: pa.array(v) for k, v in scores.items()}}
    for c in context_fields:
        if c in table.column_names:
            cols[c] = _strings(table, c).fill_null(UNKNOWN_CONTEXT)
        else:
            cols[c] = pa.array(np.full(n, UNKNOWN_CONTEXT, dtype=object), pa.string())
    for c, (low, high, whole) in EVIDENCE.items():
        if c in table.column_names:
            cols[c] = _evidence_column(table, c, low, high, whole)
    if "text" in table.column_names:
        cols["text"] = table["text"].combine_chunks().cast(pa.string())
    return pa.table(cols)


def _rank_column(col: pa.ChunkedArray) -> np.ndarray:
    """The given ranks as int64, each in [0, MAX_RANK] (a rank is stored as int16: a larger one would wrap)."""
    lo, hi = pc.min_max(col)["min"].as_py(), pc.min_max(col)["max"].as_py()
    if lo < 0 or hi > MAX_RANK:
        i = _first(np.asarray(pc.or_(pc.less(col, 0), pc.greater(col, MAX_RANK))))
        raise BadHypothesis(f"column 'rank': row {i} is {col[i].as_py()}; ranks are 0-based and at most {MAX_RANK}", "rank")
    return col.to_numpy().astype(np.int64)


def _evidence_column(table: pa.Table, name: str, low: float, high: float, whole: bool) -> pa.Array:
    """An evidence column as float64 (empty rows stay null: a model that needs it refuses them)."""
    col = table[name]
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    a = np.asarray(col.cast(pa.float64()).fill_null(low if math.isfinite(low) else 0.0).to_numpy(zero_copy_only=False))
    bad = ~(np.isfinite(a) & (a >= low) & (a <= high)) | ((a != np.floor(a)) if whole else False)
    if bad.any():
        i = _first(bad)
        raise BadHypothesis(f"column {name!r}: row {i} is {a[i]!r}, not {'a whole number' if whole else 'a number'} "
                            f"in [{low}, {high}]", name)
    return col.cast(pa.float64())
