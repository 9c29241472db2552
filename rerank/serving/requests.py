"""A request to the service, read and checked: its settings, the JSON and Arrow bodies, the client's selection.

Every refusal is a :class:`BadRequest` whose message names the field; the rules are those of ``import``
(:func:`rerank.hypotheses.nbest.parse_hypothesis`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, Sequence

import msgspec
import orjson
import pyarrow as pa
from starlette.requests import ClientDisconnect

from rerank.hypotheses.nbest import EVIDENCE, BadHypothesis, parse_hypothesis
from rerank.hypotheses.nbest_table import REQUIRED as TABLE_COLUMNS, check_nbest_schema
from rerank.model.spec import FeatureSpec
from rerank.model.text_evidence import BadText, request_tokens
from rerank.serving import arrow_stream, fast


@dataclass
class ServiceSettings:
    registry_dir: str
    corpus: str
    context_fields: tuple[str, ...] = ("device",)
    specs: Mapping[str, FeatureSpec] | None = None
    poll_seconds: float = 0.2
    max_hypotheses: int = 2000
    max_utterances: int = 1000
    max_body_bytes: int = 16 << 20
    #: an Arrow body may be compressed: what its batches may decode to, at most
    max_decoded_bytes: int = 64 << 20
    #: requests parsed and scored at once off the event loop
    work_threads: int = 2
    #: bodies up to this size are scored on the event loop: their work takes less than a thread hop would add
    inline_body_bytes: int = 64 << 10


class BadRequest(ValueError):
    def __init__(self, message: str, field: str | None = None, status: int = 422):
        super().__init__(message)
        self.field, self.status = field, status


class BodyTooLarge(BadRequest):
    """A body over the limit, refused before it is all read: the answer closes the connection, so that
    the server does not go on reading (and discarding) the rest, which a chunked body may never end."""

    def __init__(self, message: str):
        super().__init__(message, None, 413)


def body_headers(headers: Sequence[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """``Content-Type`` and ``Content-Length`` of an ASGI request's headers (the first of each, as Starlette's
    ``Headers.get`` reads them; ASGI gives the names in lower case)."""
    content_type = length = None
    for name, value in headers:
        if name == b"content-type" and content_type is None:
            content_type = value.decode("latin-1")
        elif name == b"content-length" and length is None:
            length = value.decode("latin-1")
    return content_type, length


async def read_body(declared: str | None, receive: Callable[[], Awaitable[dict]], limit: int) -> bytes:
    """The body, refused as soon as it is known to exceed ``limit``: from its Content-Length, else while it streams.
    (Read from the ASGI messages themselves: Starlette's ``Request.stream`` is an async generator, a tenth of the
    cost of a small request's HTTP side.)"""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body holds {int(declared)} bytes (Content-Length), more than the limit of {limit}")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body holds more than the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


#: the JSON nesting the service reads (orjson's own limit); deeper is refused with a 400
MAX_JSON_DEPTH = 1024


def _utterance(body: Any, settings: ServiceSettings, where: str = "") -> tuple[list[dict], Any, str | None]:
    """The checked hypotheses of one utterance's body, its ``utt_id`` (echoed back) and its ``text`` (if given)."""
    if not isinstance(body, dict):
        raise BadRequest(f"{where or 'the body'} must be a JSON object with a 'hypotheses' list", where or None)
    hyps = body.get("hypotheses")
    if not isinstance(hyps, list):
        raise BadRequest(f"missing field '{where}hypotheses' (a list of hypotheses)", f"{where}hypotheses")
    if len(hyps) > settings.max_hypotheses:
        raise BadRequest(f"'{where}hypotheses' holds {len(hyps)} hypotheses, more than the limit of {settings.max_hypotheses}",
                         f"{where}hypotheses", status=413)
    context = body.get("context")
    if context is not None and not isinstance(context, dict):
        raise BadRequest(f"field '{where}context' must be an object, e.g. {{\"device\": \"echo\"}}", f"{where}context")
    out = []
    for i, h in enumerate(hyps):
        try:
            out.append(parse_hypothesis(h, settings.context_fields, context))
        except BadHypothesis as err:
            name = f"{where}hypotheses[{i}]" + (f".{err.field}" if err.field else "")
            raise BadRequest(f"{name}: {err}", name) from None
    text = body.get("text")
    if text is not None:
        try:
            request_tokens(text, where)
        except BadText as err:
            raise BadRequest(str(err), err.field) from None
    return out, _echoable(body.get("utt_id"), f"{where}utt_id"), text


def _choice(body: Any) -> tuple[Any, Any]:
    """The ``top_k`` and ``fields`` a body asks for (None: not asked)."""
    return (body.get("top_k"), body.get("fields")) if isinstance(body, dict) else (None, None)


def _echoable(value: Any, name: str) -> Any:
    """``utt_id`` is echoed back as it came: refuse what the answer could not hold (an integer beyond
    64 bits, a structure nested too deep for the encoder) here, as a 4xx naming it, not as a 500 later."""
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError as err:
        raise BadRequest(f"field '{name}' cannot be echoed back ({err}); send a string or a 64-bit integer", name) from None
    return value


def _parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        # NaN and Infinity are not JSON, but clients send them: read them, so that the error names the field.
        try:
            return json.loads(raw)
        except RecursionError:
            raise BadRequest(f"the body nests deeper than {MAX_JSON_DEPTH} levels", "body", 400) from None
        except (ValueError, UnicodeDecodeError):
            raise BadRequest(f"the body is not JSON: {err}", "body", 400) from None


_OBJECT = msgspec.json.Decoder(dict[str, msgspec.Raw])
_LIST = msgspec.json.Decoder(list[msgspec.Raw])


def _parse_batch_json(raw: bytes) -> Any:
    """:func:`_parse_json` of a ``/rank/batch`` body, its utterances parsed one at a time: one parse of a 16 MiB body
    holds the GIL for ~90 ms, and the event loop (``/health``) waits that long. The outer structure is only checked
    and cut (msgspec, no object made); what that does not read (NaN, a lone surrogate, a number beyond 64 bits, deep
    nesting, not JSON at all) is parsed whole by :func:`_parse_json`, as ever, so its result or error is unchanged."""
    try:
        body = {}
        for key, value in _OBJECT.decode(raw).items():
            if key == "utterances":
                try:
                    body[key] = [orjson.loads(memoryview(u)) for u in _LIST.decode(value)]
                    continue
                except msgspec.ValidationError:  # not a list: read as it is (the batch's check names it)
                    pass
            body[key] = orjson.loads(memoryview(value))
        return body
    except (msgspec.DecodeError, orjson.JSONDecodeError, RecursionError, OverflowError):
        return _parse_json(raw)


def _arrow_columns(context_fields: Sequence[str]) -> set[str]:
    """The columns of an Arrow request the ranking reads (the others are not decoded)."""
    return {*TABLE_COLUMNS, "rank", *context_fields, *EVIDENCE, "text"}


def _arrow_table(raw: bytes, settings: ServiceSettings) -> pa.Table:
    """The request's Arrow table, decoded only once its rows, decoded size and column types are known to be fine."""
    try:
        size = arrow_stream.measure(raw)
    except arrow_stream.BadStream as err:
        raise BadRequest(f"the body is not an Arrow IPC stream: {err}", "body", 400) from None
    max_rows = settings.max_utterances * settings.max_hypotheses
    if size.rows > max_rows:
        raise BadRequest(f"the table holds {size.rows} hypotheses, more than the limit of {max_rows}", "body", 413)
    if size.decoded_bytes > settings.max_decoded_bytes:
        raise BadRequest(f"the stream decodes to {size.decoded_bytes} bytes, more than the limit of "
                         f"{settings.max_decoded_bytes} (max_decoded_bytes)", "body", 413)
    try:
        check_nbest_schema(size.schema, settings.context_fields)
    except BadHypothesis as err:
        raise BadRequest(str(err), err.field) from None
    wanted = _arrow_columns(settings.context_fields)
    try:
        return arrow_stream.decode(raw, [i for i, f in enumerate(size.schema) if f.name in wanted])
    except arrow_stream.BadStream as err:
        raise BadRequest(f"the body is not a valid Arrow IPC stream: {err}", "body", 400) from None


def _selection(top_k: Any, fields: Any, query: Mapping[str, str] | None, context_fields: Sequence[str]
               ) -> tuple[int | None, list[str] | None]:
    """The client's ``top_k`` and ``fields``: from the body, else from the query string; checked."""
    if query:
        q_top, q_fields = fast.query_selection(query)
        top_k = q_top if top_k is None else top_k
        fields = q_fields if fields is None else fields
    try:
        return fast.selection(top_k, fields, context_fields)
    except fast.BadSelection as err:
        raise BadRequest(str(err), err.field) from None


def _trim(answer: dict, top_k: int | None, fields: Sequence[str] | None) -> dict:
    """An answer cut to the client's ``top_k`` best hypotheses and its ``fields``."""
    if top_k is not None:
        answer["hypotheses"] = answer["hypotheses"][:top_k]
    if fields is not None:
        answer["hypotheses"] = [{f: h[f] for f in fields if f in h} for h in answer["hypotheses"]]
    return answer


