"""One hypothesis as any NLU stack sends it: the n-best record of ``import`` and of the service.

A record holds ``domain``, ``intent`` (named as in the gold file: ``alarm_set``, or
``play`` for domain ``Music``, which reads as ``Music_play``), ``slots`` (a list of
``{"type": ..., "value": ...}`` in utterance order), ``dc``, ``ic`` and ``ner``
(numbers in [0, 1]), optionally ``rank`` (0-based in the domain's own list; from
``ic * ner`` when absent) and context fields such as ``device`` (``unknown`` when
absent), and any of the evidence fields a domain's NLU gives (``ic_margin``, ``ner_min``, ...:
:data:`EVIDENCE`; a model trained with ``features.evidence`` needs them). ``import`` also needs ``utt_id``.
:func:`parse_hypothesis` checks a record and says which field is wrong; the same rules hold for a file and a request.
"""
from __future__ import annotations

import math
import reprlib
from typing import Any, Iterable, Mapping, MutableSequence, Sequence

from rerank.corpus.massive import UNKNOWN_CONTEXT, qualify_intent
from rerank.corpus.utterance import SAFE_NAME
from rerank.hypotheses.fields import FIELDS, MAX_INT16, SCORES

REQUIRED = tuple(f.name for f in FIELDS if f.record == "yes")

# name, JSON type, required?, meaning, from the one table of fields: docs/DATA.md is generated from this.
FIELDS_DOC: list[tuple[str, str, str, str]] = [
    (f.name, f.json_type(), f.record + (" (evidence)" if f.evidence else ""), f.description) for f in FIELDS if f.record]
FIELDS_DOC.insert(next(i for i, r in enumerate(FIELDS_DOC) if r[0] == "ner") + 1,
                  ("<context field>", "string", "no", "e.g. `device`; when absent, the gold's value, else `unknown`"))
#: evidence fields: (lowest, highest, whole number?); a field a domain's records give must be in every one of them
EVIDENCE: dict[str, tuple[float, float, bool]] = {
    f.name: (-math.inf if f.low is None else f.low, math.inf if f.high is None else f.high, f.whole)
    for f in FIELDS if f.evidence}  # (infinite bounds: any finite number; the whole numbers are stored as int16)
EXAMPLE = {"utt_id": "u-17", "domain": "Music", "intent": "play_music", "slots": [{"type": "song_name", "value": "mary poppins"}],
           "dc": 0.81, "ic": 0.93, "ner": 0.77, "rank": 0, "device": "fire_tv"}
#: the deepest rank a list may give, and the most slots of a hypothesis: both are stored as int16 (and deeper
#: ranks share the last one-hot anyway)
MAX_RANK = MAX_SLOTS = MAX_INT16
#: names (domains, intents, slot types, context values) shared by many hypotheses are kept once, up to this many
#: distinct names of at most this many characters: not ``sys.intern``, whose table keeps every string a client
#: sends for the life of the process (interned strings are immortal from Python 3.12)
SHARED_NAMES, SHARED_NAME_CHARS = 1 << 16, 128
_shared: dict[str, str] = {}


def _intern(s: str) -> str:
    """``s``, or an equal string met before: one copy of a name that a million hypotheses repeat (bounded)."""
    hit = _shared.get(s)
    if hit is not None:
        return hit
    if len(s) <= SHARED_NAME_CHARS and len(_shared) < SHARED_NAMES:
        _shared[s] = s
    return s


_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother, _repr.maxlist, _repr.maxdict = 3, 40, 40, 4, 4


def _short(value: Any) -> str:
    """A value for an error message, cut short: a hostile request must not make the message huge (or deep)."""
    try:
        return _repr.repr(value)
    except ValueError:  # an integer beyond Python's digit limit for str()
        return f"a {type(value).__name__} too large to show"


class BadHypothesis(ValueError):
    """A hypothesis record that cannot be used; ``field`` names the offending field."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def _score(record: Mapping[str, Any], name: str) -> float:
    value = record[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadHypothesis(f"field {name!r} must be a number in [0, 1], not {_short(value)}", name)
    try:
        value = float(value)
    except OverflowError:  # an integer too large for a float (json reads any number of digits)
        raise BadHypothesis(f"field {name!r} is a number far outside [0, 1]", name) from None
    if not 0.0 <= value <= 1.0:  # NaN fails both comparisons
        what = "NaN" if math.isnan(value) else ("infinite" if math.isinf(value) else "outside [0, 1]")
        raise BadHypothesis(f"field {name!r} is {value!r}: {what}; scores are probabilities in [0, 1]", name)
    return value


def _evidence(name: str, value: Any, low: float, high: float, whole: bool) -> float | int:
    try:
        number = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(float(value))
    except OverflowError:
        number = False
    if not number or (whole and not float(value).is_integer()) or not low <= value <= high:  # NaN fails
        kind = "a whole number" if whole else "a finite number"
        raise BadHypothesis(f"field {name!r} must be {kind} in [{low}, {high}], not {_short(value)}", name)
    return int(value) if whole else float(value)


def _slots(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, (list, tuple)):
        raise BadHypothesis(f"field 'slots' must be a list of {{\"type\": ..., \"value\": ...}}, not {type(value).__name__}", "slots")
    if len(value) > MAX_SLOTS:
        raise BadHypothesis(f"field 'slots' holds {len(value)} slots, more than {MAX_SLOTS}", "slots")
    out = []
    for j, s in enumerate(value):
        if isinstance(s, Mapping):
            t, v = s.get("type"), s.get("value")
        elif isinstance(s, (list, tuple)) and len(s) == 2:
            t, v = s
        else:
            raise BadHypothesis(f"field 'slots[{j}]' must be {{\"type\": ..., \"value\": ...}}, not {_short(s)}", f"slots[{j}]")
        if not isinstance(t, str) or not t.strip() or any(c.isspace() for c in t):
            raise BadHypothesis(f"field 'slots[{j}].type' must be a non-empty string without spaces, not {_short(t)}", f"slots[{j}].type")
        if not isinstance(v, str) or not v.strip():
            raise BadHypothesis(f"field 'slots[{j}].value' must be a non-empty string, not {_short(v)}", f"slots[{j}].value")
        out.append((_intern(t), v))
    return tuple(out)


def parse_hypothesis(record: Any, context_fields: Sequence[str], context: Mapping[str, Any] | None = None,
                     need_utt_id: bool = False) -> dict:
    """A checked, normalised hypothesis dict; :class:`BadHypothesis` names the field otherwise.

    ``context`` gives values for context fields the record lacks (a request's
    context); a field absent from both is ``"unknown"``.
    """
    if not isinstance(record, Mapping):
        raise BadHypothesis(f"a hypothesis must be a JSON object, not {type(record).__name__}")
    for name in (("utt_id",) if need_utt_id else ()) + REQUIRED:
        if name not in record or record[name] is None:
            raise BadHypothesis(f"missing field {name!r}", name)
    domain = record["domain"]
    if not isinstance(domain, str) or not SAFE_NAME.fullmatch(domain):
        raise BadHypothesis(f"field 'domain' is {_short(domain)}: a domain name is 1-128 letters, digits, '_', '-' or '.', "
                            "starting with a letter or digit (it names folders)", "domain")
    intent = record["intent"]
    if not isinstance(intent, str) or not intent.strip():
        raise BadHypothesis(f"field 'intent' must be a non-empty string, not {_short(intent)}", "intent")
    out = {"domain": _intern(domain), "intent": _intern(qualify_intent(domain, intent)), "slots": _slots(record["slots"])}
    for name in SCORES:
        out[name] = _score(record, name)
    rank = record.get("rank")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank <= MAX_RANK):
        raise BadHypothesis(f"field 'rank' must be a whole number in [0, {MAX_RANK}] (0-based rank in the domain's list), "
                            f"not {_short(rank)}", "rank")
    out["rank"] = rank
    for name, (low, high, whole) in EVIDENCE.items():
        value = record.get(name)
        if value is not None:
            out[name] = _evidence(name, value, low, high, whole)
    for c in context_fields:
        value = record.get(c)
        if value is None and context is not None:
            value = context.get(c)
        if value is not None and not isinstance(value, (str, int)):
            raise BadHypothesis(f"context field {c!r} must be a string, not {_short(value)}", c)
        out[c] = _intern(str(value)) if value is not None else UNKNOWN_CONTEXT
    if need_utt_id:
        utt_id = record["utt_id"]
        if not isinstance(utt_id, (str, int)) or isinstance(utt_id, bool):
            raise BadHypothesis(f"field 'utt_id' must be a string, not {_short(utt_id)}", "utt_id")
        out["utt_id"] = str(utt_id)
    return out


def fill_ranks(hypotheses: MutableSequence[dict], where: str = "") -> None:
    """Give every hypothesis without ``rank`` its 0-based rank in its domain's list, by ``ic * ner``.

    Within one domain, either every hypothesis has a rank or none has (a list
    cannot be half ranked); ties keep the input order. Ranks must not repeat.
    """
    by_domain: dict[str, list[int]] = {}
    for i, h in enumerate(hypotheses):
        by_domain.setdefault(h["domain"], []).append(i)
    for d, idx in by_domain.items():
        given = [hypotheses[i]["rank"] for i in idx if hypotheses[i]["rank"] is not None]
        if not given:
            order = sorted(idx, key=lambda i: -hypotheses[i]["ic"] * hypotheses[i]["ner"])
            for r, i in enumerate(order):
                hypotheses[i]["rank"] = r
        elif len(given) != len(idx):
            raise BadHypothesis(f"{where}domain {d!r}: {len(given)} of its {len(idx)} hypotheses have a 'rank'; "
                                "give it for all of them or for none", "rank")
        elif len(set(given)) != len(given):
            raise BadHypothesis(f"{where}domain {d!r}: the rank {_first_repeat(given)} appears twice in its list", "rank")


def _first_repeat(values: Iterable[int]) -> int:
    seen = set()
    for v in values:
        if v in seen:
            return v
        seen.add(v)
    raise AssertionError("no repeat")
