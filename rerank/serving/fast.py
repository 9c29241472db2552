"""The fast path of ``POST /rank`` (and of the JSON ``/rank/batch``): a body decoded and checked by compiled code, one
utterance ranked from columns, the answer encoded from the same objects.

The rules are those of :func:`rerank.hypotheses.nbest.parse_hypothesis` (the ``import`` rules), written as msgspec
types: a body that passes them is decoded straight into one object per hypothesis, in C, with no dict per
hypothesis and no Python check per field; it is ranked by :meth:`CrossDomainRanker.score_columns` (the numbers of
:meth:`CrossDomainRanker.rank`, the offline ranker) and encoded from those objects. The fast path only ever
accepts what the field-by-field path accepts: anything it does not take (a bad field, NaN, a whole number
written ``3.0``, a missing evidence field...) goes to that path, whose answer (the result, or the 4xx naming the
field) is the service's. So the error messages are the same as ever, and a valid request pays for none of them.
"""
from __future__ import annotations

import sys
from itertools import chain
from operator import attrgetter
from typing import Annotated, Any, Iterable, Iterator, Mapping, Sequence

import msgspec
import numpy as np
import orjson
from msgspec import Meta

from rerank.corpus.massive import UNKNOWN_CONTEXT, qualify_intent
from rerank.corpus.utterance import SAFE_NAME
from rerank.hypotheses.nbest import EVIDENCE, MAX_RANK, MAX_SLOTS, SCORES
from rerank.merge.ranker import BASELINE, HypothesisColumns
from rerank.model.text_evidence import BadText, request_tokens

_MAX = sys.float_info.max
#: the fields of a ranked hypothesis in an answer (besides the context fields), in their order there
ANSWER_FIELDS = ("domain", "intent", "slots", *SCORES, "rank", *EVIDENCE, "domain_rank", "score", "version")


_DOMAIN, _INTENT, _SLOTS, _RANK = attrgetter("domain"), attrgetter("intent"), attrgetter("slots"), attrgetter("rank")


class Miss(Exception):
    """The fast path does not take this request: the field-by-field path answers it."""


class Slot(msgspec.Struct, gc=False):
    type: str
    value: str


_Score = Annotated[float, Meta(ge=0.0, le=1.0)]
#: names checked once and remembered (a regular expression per string costs more than the rest of the decoding)
NAMES = 1 << 16


#: the value of an evidence field not given: this very object (the answer leaves out a field that is it, and no
#: JSON number decodes to NaN); a field given as null takes the field-by-field path
NOT_GIVEN = float("nan")


def _evidence_type(low: float, high: float, whole: bool) -> Any:
    if whole:
        return Annotated[int, Meta(ge=int(low), le=int(high))]
    # finite: the infinite bounds become the largest floats (a JSON number may decode to inf: refused)
    return Annotated[float, Meta(ge=max(low, -_MAX), le=min(high, _MAX))]


def hypothesis_type(context_fields: Sequence[str]) -> type:
    """The msgspec type of one hypothesis, its fields in the order of an answer's (evidence and context fields
    that are not given are left out of the answer: ``omit_defaults``)."""
    fields: list[tuple] = [
        ("domain", str),  # (the names are checked by Codec.columns, once per distinct name)
        ("intent", str),
        ("slots", Annotated[list[Slot | tuple[str, str]], Meta(max_length=MAX_SLOTS)]),
        *((s, _Score) for s in SCORES),
        ("rank", Annotated[int, Meta(ge=0, le=MAX_RANK)] | None, None),
        *((name, _evidence_type(*bounds), NOT_GIVEN) for name, bounds in EVIDENCE.items()),
        *((c, str | None, None) for c in context_fields),  # (a number: the field-by-field path makes it a string)
        # the answer's own fields (a client's values for them are read, and replaced)
        ("domain_rank", int | None, None), ("score", float | None, None), ("version", str | None, None),
    ]
    return msgspec.defstruct("Hypothesis", fields, gc=False, omit_defaults=True)


def usable(context_fields: Sequence[str]) -> bool:
    """Whether the context fields can be attributes of the hypothesis type (else every request takes the slow path)."""
    names = set(ANSWER_FIELDS)
    return all(c.isidentifier() and c not in names and not c.startswith("_") for c in context_fields) and \
        len(set(context_fields)) == len(context_fields)


class Codec:
    """Decodes ``/rank`` and JSON ``/rank/batch`` bodies of the service's context fields; ranks and encodes them."""

    def __init__(self, context_fields: Sequence[str], max_hypotheses: int, max_utterances: int):
        self.context_fields = tuple(context_fields)
        self.max_hypotheses, self.max_utterances = max_hypotheses, max_utterances
        Hyp = self.Hypothesis = hypothesis_type(self.context_fields)
        Selection = Annotated[int, Meta(ge=1)] | None
        utterance = [("hypotheses", list[Hyp]), ("context", dict[str, Any] | None, None),
                     ("utt_id", msgspec.Raw, msgspec.Raw(b"null")), ("text", str | None, None)]
        choice = [("top_k", Selection, None), ("fields", list[str] | None, None)]
        self.Utterance = msgspec.defstruct("Utterance", utterance, gc=False)
        self.Request = msgspec.defstruct("Request", [*utterance, *choice], gc=False)
        self.Batch = msgspec.defstruct("Batch", [("utterances", list[self.Utterance]), *choice], gc=False)
        self._one = msgspec.json.Decoder(self.Request)
        # a batch is read in two steps: its outer structure (every utterance checked as JSON and skipped, no object
        # made: a 16 MiB body in ~15 ms), then one utterance per call, so that no single call holds the GIL for the
        # whole body (~60 ms) while the event loop waits to answer /health
        outer = msgspec.defstruct("BatchOuter", [("utterances", list[msgspec.Raw]), *choice], gc=False)
        self._outer = msgspec.json.Decoder(outer)
        self._utterance = msgspec.json.Decoder(self.Utterance)
        self._encoder = msgspec.json.Encoder()
        self._intents: dict[tuple[str, str], str] = {}  # (domain, intent) -> the qualified intent, both checked
        self._types: set[str] = set()  # slot types checked
        self._evidence = tuple(EVIDENCE)
        self._get_scores = attrgetter(*SCORES)
        self._get_evidence = attrgetter(*self._evidence)
        self._get_context = [attrgetter(c) for c in self.context_fields]

    # ------------------------------------------------------------------ decoding
    def decode_one(self, raw: bytes):
        try:
            req = self._one.decode(raw)
        except (msgspec.DecodeError, RecursionError, OverflowError):
            raise Miss() from None
        if len(req.hypotheses) > self.max_hypotheses:
            raise Miss()
        return req

    def decode_batch(self, raw: bytes):
        """A ``Batch`` (what decoding the whole body as one would give), decoded one utterance at a time."""
        decode = self._utterance.decode
        try:
            outer = self._outer.decode(raw)
            if len(outer.utterances) > self.max_utterances:
                raise Miss()
            utterances = []
            for part in outer.utterances:
                u = decode(part)
                if len(u.hypotheses) > self.max_hypotheses:
                    raise Miss()
                utterances.append(u)
        except (msgspec.DecodeError, RecursionError, OverflowError):
            raise Miss() from None
        return self.Batch(utterances, outer.top_k, outer.fields)

    def _qualified(self, domain: str, intent: str) -> str:
        """The domain-qualified intent; :class:`Miss` for a domain or an intent that ``parse_hypothesis`` refuses."""
        if not SAFE_NAME.fullmatch(domain) or not intent.strip():
            raise Miss()
        hit = qualify_intent(domain, intent)
        if len(self._intents) < NAMES and len(domain) + len(intent) <= 256:  # bounded: clients send any names
            self._intents[(domain, intent)] = hit
        return hit

    def _slot_type(self, name: str) -> str:
        if not name or any(c.isspace() for c in name):
            raise Miss()
        if len(self._types) < NAMES and len(name) <= 128:
            self._types.add(name)
        return name

    def columns(self, utt) -> HypothesisColumns:
        """The columns of one decoded utterance; its hypotheses' context fields, intents and slots are resolved in place."""
        hyps = utt.hypotheses
        n = len(hyps)
        context = utt.context
        ctx: dict[str, list[str]] = {}
        for c, get in zip(self.context_fields, self._get_context):
            values = list(map(get, hyps))
            if None in values:
                default = UNKNOWN_CONTEXT
                if context is not None:
                    value = context.get(c)
                    if value is not None:
                        if isinstance(value, bool) or not isinstance(value, (str, int)):
                            raise Miss()
                        default = str(value)
                for j, h in enumerate(hyps):
                    if values[j] is None:
                        values[j] = default
                        setattr(h, c, default)
            ctx[c] = values
        domain = list(map(_DOMAIN, hyps))
        given = list(map(_INTENT, hyps))
        pairs = list(zip(domain, given))
        intent = list(map(self._intents.get, pairs))
        if None in intent:
            for j, q in enumerate(intent):
                if q is None:
                    intent[j] = self._qualified(*pairs[j])
        if intent != given:
            for h, q in zip(hyps, intent):
                h.intent = q
        types = self._types
        slot_types: list = list(map(_SLOTS, hyps))
        for j, slots in enumerate(slot_types):
            if slots:
                names = []
                for k, s in enumerate(slots):
                    if s.__class__ is not Slot:
                        s = slots[k] = Slot(*s)  # (answered as {"type", "value"}, as every slot)
                    t, v = s.type, s.value
                    if t not in types:
                        self._slot_type(t)
                    if not v or v.isspace():
                        raise Miss()
                    names.append(t)
                slot_types[j] = names
        k = len(self._evidence)
        scores = np.fromiter(chain.from_iterable(map(self._get_scores, hyps)), np.float64, 3 * n).reshape(n, 3)
        evidence = np.fromiter(chain.from_iterable(map(self._get_evidence, hyps)), np.float64, k * n).reshape(n, k)

        def records(rows: list[int]) -> list[dict]:
            out = []
            for i in rows:
                r = msgspec.structs.asdict(hyps[i])
                r["slots"] = [(s.type, s.value) for s in r["slots"]]
                out.append({k: v for k, v in r.items() if v is not None and v is not NOT_GIVEN})
            return out

        tokens = None
        if utt.text is not None:
            try:
                tokens = request_tokens(utt.text)
            except BadText:
                raise Miss() from None

        return HypothesisColumns(domain, intent, slot_types, scores, list(map(_RANK, hyps)), ctx,
                                 evidence, self._evidence, records, tokens, list(map(_SLOTS, hyps)) if tokens is not None else None)

    # ------------------------------------------------------------------ ranking and the answer
    def ranked(self, snapshot, utt, top_k: int | None, fields: Sequence[str] | None) -> dict:
        """The answer to one utterance (as ``_ranked`` of the app answers it), its hypotheses as objects or dicts."""
        from rerank.model.spec import BadFeatures

        cols = self.columns(utt)
        try:
            utt_id = orjson.loads(memoryview(utt.utt_id))  # (refuses what orjson could not echo: the slow path says so)
        except orjson.JSONDecodeError:
            raise Miss() from None
        ranker = snapshot.ranker
        try:
            scores, domain_rank, version = ranker.score_columns(cols, unknown="baseline")
        except BadFeatures:
            raise Miss() from None
        hyps = utt.hypotheses
        order = np.argsort(-scores, kind="stable")
        if top_k is not None:
            order = order[:top_k]
        values = scores.tolist()
        out = []
        for r, i in enumerate(order.tolist()):
            h = hyps[i]
            h.rank, h.domain_rank, h.score, h.version = r, domain_rank[i], values[i], version[h.domain]
            out.append(h)
        if fields is not None:
            out = [{f: v for f in fields if (v := getattr(h, f)) is not None and v is not NOT_GIVEN} for h in out]
        known = ranker.scorers
        return {"utt_id": utt_id, "hypotheses": out,
                "confidence": snapshot.confidence(float(scores.max())) if len(scores) else None,
                "versions": {d: version[d] if d in known else BASELINE for d in sorted(version)},
                "fallback": sorted(d for d in version if d not in known), "generation": snapshot.generation}

    def ranked_each(self, snapshot, utterances: list, top_k: int | None, fields: Sequence[str] | None) -> Iterator[dict]:
        """:meth:`ranked` of each utterance in turn, each let go of (its place in ``utterances`` emptied) once handed
        out: the objects of a whole batch freed at once hold the GIL for ~20 ms, one utterance's for a few microseconds."""
        for i, u in enumerate(utterances):
            utterances[i] = None
            yield self.ranked(snapshot, u, top_k, fields)
            del u

    def encode(self, obj: Any) -> bytes:
        return self._encoder.encode(obj)

    def encode_batch(self, results: Iterable[dict], generation: int) -> bytes:
        """The bytes of ``encode({"results": [...], "generation": generation})``, one result per call (each call holds
        the GIL for one utterance's answer, not for the whole batch's)."""
        out = bytearray(b'{"results":[')
        into = self._encoder.encode_into
        for j, r in enumerate(results):
            if j:
                out += b","
            into(r, out, -1)
        out += b'],"generation":'
        into(generation, out, -1)
        out += b"}"
        return bytes(out)


def selection(top_k: Any, fields: Any, context_fields: Sequence[str], where: str = "") -> tuple[int | None, list[str] | None]:
    """A client's ``top_k`` and ``fields``, checked (``BadSelection`` names the field)."""
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise BadSelection(f"field '{where}top_k' must be a whole number >= 1, not {top_k!r:.40}", f"{where}top_k")
    if fields is not None:
        if not isinstance(fields, list):
            raise BadSelection(f"field '{where}fields' must be a list of field names", f"{where}fields")
        known = (*ANSWER_FIELDS, *context_fields)
        for j, f in enumerate(fields):
            if f not in known:
                raise BadSelection(f"field '{where}fields[{j}]' is {f!r:.60}, not a field of a ranked hypothesis; "
                                   f"known: {', '.join(known)}", f"{where}fields[{j}]")
    return top_k, fields


class BadSelection(ValueError):
    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


def query_selection(query: Mapping[str, str]) -> tuple[Any, Any]:
    """``top_k`` and ``fields`` of a query string (``?top_k=5&fields=domain,intent,score``), unchecked."""
    top_k = query.get("top_k")
    if top_k is not None:
        top_k = int(top_k) if top_k.strip().isdigit() else top_k
    fields = query.get("fields")
    if fields is not None:
        fields = [f.strip() for f in fields.split(",") if f.strip()]
    return top_k, fields
