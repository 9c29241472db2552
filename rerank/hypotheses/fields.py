"""Every field of a hypothesis, declared once.

One row per field: its name, Arrow type, range, where it comes from, the evidence family that reads
it and that family's transform, and what it means. Generated from it: the hypothesis tables' schema
(:mod:`rerank.hypotheses.schema`), the n-best record's checks for ``import`` and the service
(:mod:`rerank.hypotheses.nbest`, the service's compiled types), the evidence families of the
re-rankers' features (:data:`rerank.model.features.EVIDENCE`), the service's probe, the OpenAPI schema
of ``POST /rank`` (:func:`request_schema`) and docs/DATA.md. Adding an evidence family is a row here
and the family's computation (for a text-derived one, :class:`rerank.hypotheses.evidence.DomainData`
and :class:`rerank.model.text_evidence.TextIndex`).

``source``:

- ``client``: the n-best record gives it (``record``: whether it must);
- ``nlu``: evidence only the NLU can give (IC margin and entropy, the tagger's marginals);
- ``text``: evidence computed from the utterance's text and the domain's training data (a published
  version carries that data and computes it when the client does not send it);
- ``table``: written by prepare and import (keys and labels), never sent.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pyarrow as pa

SLOT_TYPE = pa.list_(pa.struct([("type", pa.string()), ("value", pa.string())]))
#: the deepest rank a list may give, and the most slots of a hypothesis: both are stored as int16
MAX_INT16 = 32767


@dataclass(frozen=True)
class Field:
    name: str
    arrow: pa.DataType
    description: str
    source: str = "table"  # client | nlu | text | table
    record: str = ""  # in the n-best record: "yes", "yes (import)", "no" ("": not a record field)
    low: float | None = None  # the range of a number (None: not a number, or unbounded below)
    high: float | None = None
    family: str | None = None  # the evidence family (features.evidence) that reads it
    feature: str | None = None  # that family's feature name (default: the field's)
    transform: str | None = None  # of the feature: None, "log1p" or "logit" (rerank.model.features.TRANSFORMS)

    @property
    def whole(self) -> bool:
        return pa.types.is_integer(self.arrow)

    @property
    def evidence(self) -> bool:
        return self.source in ("nlu", "text")

    def json_type(self) -> str:
        """The field's type as docs/DATA.md states it for the n-best record."""
        if self.arrow == SLOT_TYPE:
            return 'list of `{"type", "value"}`'
        if pa.types.is_string(self.arrow):
            return "string"
        kind = "integer" if self.whole else "number"
        low, high = self.low, self.high
        if low is not None and high is not None and math.isfinite(low) and math.isfinite(high):
            return f"{kind} in [{_num(low)}, {_num(high)}]"
        if low is not None and math.isfinite(low):
            return f"finite {kind} >= {_num(low)}"
        if high is not None and math.isfinite(high):
            return f"finite {kind} <= {_num(high)}"
        return f"finite {kind}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


_P = dict(low=0.0, high=1.0)

# The hypothesis tables' columns, in their order (context columns such as ``device`` follow ``n_slots``).
FIELDS: tuple[Field, ...] = (
    Field("utt_id", pa.string(), "the utterance's id (the gold file's `id`)", "client", "yes (import)"),
    Field("utt_index", pa.int32(), "index of the utterance in its split (join key with _utterances)"),
    Field("domain", pa.string(), "the domain that proposes the hypothesis (letters, digits, `_ . -`; it names folders)",
          "client", "yes"),
    Field("rank", pa.int16(), "0-based rank in the domain's own list; when absent, by `ic * ner`", "client", "no",
          0, MAX_INT16),
    Field("intent", pa.string(), "its intent, domain-qualified in the tables (in a record, named as in the gold file: "
          "`alarm_set`; `play` of domain `Music` reads `Music_play`)", "client", "yes"),
    Field("slots", SLOT_TYPE, "its slots in utterance order (`[]` for none)", "client", "yes"),
    Field("n_slots", pa.int16(), "number of hypothesised slots"),
    Field("dc", pa.float64(), "P(domain | u) from the domain's own domain classifier", "client", "yes", **_P,
          family="dc_logit", feature="dc_logit", transform="logit"),
    Field("ic", pa.float64(), "P(intent | u, domain) from the domain's intent classifier", "client", "yes", **_P),
    Field("ner", pa.float64(), "P(slot labelling | u, domain) from the domain's slot tagger", "client", "yes", **_P),
    Field("ic_margin", pa.float64(), "P of the domain's best intent minus its second best", "nlu", "no", **_P, family="ic"),
    Field("ic_entropy", pa.float64(), "entropy (nats) of the domain's intent distribution", "nlu", "no", 0.0, math.inf,
          family="ic"),
    Field("ner_min", pa.float64(), "lowest P(tag_t | u, domain) over the tokens of the labelling (CRF marginals)", "nlu", "no",
          **_P, family="ner"),
    Field("ner_mean", pa.float64(), "mean P(tag_t | u, domain) over the tokens of the labelling", "nlu", "no", **_P,
          family="ner"),
    Field("oov_share", pa.float64(), "share of the utterance's tokens outside the domain's training vocabulary", "text", "no",
          **_P, family="oov"),
    Field("catalogue_miss", pa.int16(), "hypothesised slots (type, normalised value) never seen in the domain's training data",
          "text", "no", 0, MAX_INT16, family="catalogue"),
    Field("n_tokens", pa.int16(), "tokens of the utterance", "text", "no", 1, MAX_INT16, family="length",
          feature="log_tokens", transform="log1p"),
    Field("unigram_logp", pa.float64(), "mean log P(token) under the domain's unigram model of its training utterances "
          "(add-1/2)", "text", "no", -math.inf, 0.0, family="unigram"),
    Field("neighbour_jaccard", pa.float64(), "highest Jaccard similarity of the utterance's token set to one of the domain's "
          "training utterances", "text", "no", **_P, family="neighbour"),
    Field("neighbour_intent_jaccard", pa.float64(), "the same among the domain's training utterances of the hypothesis' intent "
          "(0: an intent it never had)", "text", "no", **_P, family="neighbour_intent"),
    Field("sem_errors", pa.int32(), "E_int + S + D + I against the gold (docs/REFERENCE.md s.2)"),
    Field("sem_total", pa.int32(), "1 + number of gold slots"),
    Field("semer", pa.float64(), "sem_errors / sem_total (not clipped)"),
    Field("ie", pa.int8(), "interpretation error: 0 iff domain, intent and slots equal the gold"),
    Field("gold_domain", pa.string(), "gold domain of the utterance"),
    Field("gold_intent", pa.string(), "gold intent of the utterance"),
    Field("fold", pa.int8(), "cross-fitting fold whose recognizers produced it (-1: trained on all of train, or imported)"),
)
BY_NAME = {f.name: f for f in FIELDS}
SCORES = ("dc", "ic", "ner")
#: the evidence a domain owns, as table columns and record fields (a table may leave them null: the manifest's
#: ``evidence`` says which ones each domain fills)
EVIDENCE_FIELDS = tuple(f.name for f in FIELDS if f.evidence)
#: the evidence computed from the utterance's text and the domain's resources
TEXT_FIELDS = tuple(f.name for f in FIELDS if f.source == "text")
#: the evidence only the NLU gives
NLU_FIELDS = tuple(f.name for f in FIELDS if f.source == "nlu")
#: evidence family -> its (feature name, field, transform name), in the order of the table
FAMILIES: dict[str, tuple[tuple[str, str, str | None], ...]] = {}
for _f in FIELDS:
    if _f.family:
        FAMILIES.setdefault(_f.family, ())
        FAMILIES[_f.family] += ((_f.feature or _f.name, _f.name, _f.transform),)


def request_schema(context_fields=("device",)) -> dict:
    """The JSON schema of a ``POST /rank`` body (OpenAPI), from the table."""
    props: dict = {}
    for f in FIELDS:
        if not f.record or f.name == "utt_id":
            continue
        if f.arrow == SLOT_TYPE:
            p = {"type": "array", "items": {"type": "object", "required": ["type", "value"],
                                            "properties": {"type": {"type": "string"}, "value": {"type": "string"}}}}
        elif pa.types.is_string(f.arrow):
            p = {"type": "string"}
        else:
            p = {"type": "integer" if f.whole else "number"}
            if f.low is not None and math.isfinite(f.low):
                p["minimum"] = f.low
            if f.high is not None and math.isfinite(f.high):
                p["maximum"] = f.high
        props[f.name] = {**p, "description": f.description}
    for c in context_fields:
        props[c] = {"type": "string", "description": "a context field (when absent: the request's context, else `unknown`)"}
    hypothesis = {"type": "object", "properties": props, "required": [f.name for f in FIELDS if f.record == "yes"]}
    return {"type": "object", "required": ["hypotheses"], "properties": {
        "hypotheses": {"type": "array", "items": hypothesis},
        "text": {"type": "string", "description": "the utterance: the versions that carry their resources compute the "
                 "text-derived evidence from it (a field a hypothesis gives takes precedence)"},
        "utt_id": {"description": "echoed back"},
        "context": {"type": "object", "description": "the request's context fields, e.g. {\"device\": \"echo\"}"},
        "top_k": {"type": "integer", "minimum": 1}, "fields": {"type": "array", "items": {"type": "string"}}}}
