"""The ranking service: FastAPI on uvicorn, scoring with the live snapshot of every domain's re-ranker.

Endpoints:

- ``POST /rank``: one utterance's hypotheses from every domain (``{"hypotheses": [...],
  "context": {...}, "utt_id": ...}``; each hypothesis in the n-best format of
  ``import``, docs/DATA.md). Returns them ranked, each with its calibrated ``score``,
  plus ``confidence`` (P(the top hypothesis is exactly right), through the merge's top
  calibration), ``versions`` (the version of each domain used) and ``fallback`` (domains
  the service has no model for, scored by the baseline).
- ``POST /rank/batch``: ``{"utterances": [<a /rank body>, ...]}``, all scored by one snapshot;
  or, for throughput, an Arrow IPC stream (``Content-Type: application/vnd.apache.arrow.stream``)
  of one table of many utterances' hypotheses (:mod:`rerank.hypotheses.nbest_table`), answered
  by an Arrow stream of ``row, utt, domain, rank, domain_rank, score, confidence, version`` per
  input row (``confidence`` on each utterance's top row, null on the others).
- ``GET /health``, ``GET /versions``, ``GET /metrics`` (Prometheus text format).

Bodies are parsed with orjson and checked by :func:`rerank.hypotheses.nbest.parse_hypothesis`
(the rules of ``import``), not by a model class per hypothesis: the check is the same
and a request of 85 hypotheses costs a fraction of the time. A bad request gets a 4xx
whose message names the field: every exception an endpoint raises is answered by one mapping,
:func:`error_response`, registered as FastAPI's exception handlers and called by the direct path
of the two POSTs (:class:`DirectRoutes`, which skips FastAPI's per-request machinery for speed).

The app's lifespan (FastAPI's ``lifespan=``, run by uvicorn in every worker) starts the watcher
of the registry's live state at startup and stops it at shutdown.

Hostile requests cost bounded memory and never stall the other requests: the body limit
holds while the body streams in (``Content-Length`` up front, then every chunk counted); an
Arrow stream's rows and decoded size are checked before any batch is decoded, and its
columns' types before any is read (:mod:`rerank.serving.arrow_stream`); a body larger than
``inline_body_bytes`` is parsed and scored on a worker thread (at most ``work_threads`` at
once), so that ``/health`` and the live watcher keep their event loop
(:mod:`rerank.serving.offload`).
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Literal, Mapping, Sequence

import anyio
import numpy as np
import orjson
import pyarrow as pa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rerank.hypotheses.fields import request_schema
from rerank.hypotheses.nbest import EVIDENCE, BadHypothesis, parse_hypothesis
from rerank.hypotheses.nbest_table import REQUIRED as TABLE_COLUMNS
from rerank.hypotheses.nbest_table import check_nbest_schema, check_nbest_table
from rerank.merge.ranker import BASELINE
from rerank.model.spec import BadFeatures, FeatureSpec
from rerank.model.registry import Registry
from rerank.model.text_evidence import BadText, request_tokens
from rerank.serving import arrow_stream, fast
from rerank.serving import metrics as m
from rerank.serving.live import LiveModels
from rerank.serving.offload import run_off_loop

log = logging.getLogger(__name__)
ARROW = "application/vnd.apache.arrow.stream"


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


def _ranked(snapshot, hyps: list[dict], utt_id: Any, where: str = "", text: str | None = None) -> dict:
    try:
        ranked = snapshot.ranker.rank(hyps, unknown="baseline", text=text)
    except BadFeatures as err:
        name = f"{where}text" if err.field == "text" else f"{where}hypotheses" + (f".{err.field}" if err.field else "")
        raise BadRequest(f"{name}: {err}", name) from None
    domains = {h["domain"] for h in hyps}
    known = snapshot.ranker.scorers
    fallback = sorted(d for d in domains if d not in known)
    for h in ranked:
        h["slots"] = [{"type": t, "value": v} for t, v in h["slots"]]
    return {"utt_id": utt_id, "hypotheses": ranked, "confidence": snapshot.confidence(ranked[0]["score"]) if ranked else None,
            "versions": {d: snapshot.versions.get(d, BASELINE) for d in sorted(domains)},
            "fallback": fallback, "generation": snapshot.generation}


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


def _top_confidence(snapshot, score: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """The confidence column of a batch answer: on each utterance's top row, NaN on the others."""
    top = rank == 0
    out = np.full(len(score), np.nan)
    if top.any():
        out[top] = snapshot.confidence(score[top])
    return out


def _json(obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status, media_type="application/json",
                    headers=headers)


def error_response(err: Exception, endpoint: str) -> Response:
    """The service's answer to an exception raised while answering ``endpoint``: the one mapping, used by FastAPI's
    exception handlers and by the direct path of ``POST /rank`` and ``/rank/batch`` (:class:`DirectRoutes`).

    - :class:`BadRequest`: its status (400, 413, 422) and ``{"error", "field"}``, counted as ``bad_request``;
      a :class:`BodyTooLarge` also closes the connection (the rest of the body is not read).
    - ``ClientDisconnect`` (the client left while its body streamed): 499, an empty answer nobody reads.
    - anything else is a bug: 500 ``{"error": "internal error: <its type>"}``, counted as ``internal`` and logged
      (the service goes on; the message tells the client nothing of the inside). On FastAPI's path Starlette
      raises it again once answered (its 500 handler always does), so the server logs it a second time.
    """
    if isinstance(err, BadRequest):
        m.ERRORS.labels(endpoint, "bad_request").inc()
        headers = {"connection": "close"} if isinstance(err, BodyTooLarge) else None
        return _json({"error": str(err), "field": err.field}, err.status, headers)
    if isinstance(err, ClientDisconnect):
        return Response(status_code=499)
    m.ERRORS.labels(endpoint, "internal").inc()
    log.error("%s: %s", endpoint, err, exc_info=err)
    return _json({"error": f"internal error: {type(err).__name__}"}, 500)


async def _on_error(request: Request, err: Exception) -> Response:
    """FastAPI's exception handler of every error :func:`error_response` maps (the endpoint: the route's name)."""
    route = request.scope.get("route")
    return error_response(err, getattr(route, "name", None) or request.url.path)


# ------------------------------------------------------------------ the answers' schemas (OpenAPI, /docs)

#: (the answers below are documentation: the endpoints write their own bytes, never validated against these)
#: what they declare is every field an answer holds; each field's docstring is its description
_ANSWER = {"extra": "forbid", "use_attribute_docstrings": True}


@dataclass
class ErrorBody:
    """A request refused (4xx) or failed (500)."""

    __pydantic_config__ = _ANSWER
    error: str
    """What is wrong, naming the field."""
    field: str | None = None
    """The field at fault, e.g. ``hypotheses[3].dc`` or ``body`` (absent from a 500)."""


@dataclass
class Health:
    """Whether this worker serves the registry's live state (the status code is 503 when ``stale``)."""

    __pydantic_config__ = _ANSWER
    status: Literal["ok", "degraded", "stale"]
    """``degraded``: it serves, but not the live state (a release it could not load: see ``domain``, ``version``,
    ``reason``); ``stale``: the live watcher has not polled for a while."""
    corpus: str
    generation: int
    """The snapshots this worker has swapped in so far."""
    release: int
    """The release of the live state it serves (0: the registry's state before any release)."""
    domains: int
    """Domains with a version (a model or the baseline)."""
    seconds_since_poll: float
    worker: str
    """Tells the worker processes apart."""
    domain: str | None = None
    """Degraded: the domain whose version could not be loaded."""
    version: str | None = None
    """Degraded: that version."""
    reason: str | None = None
    """Degraded: why."""
    refused: bool | None = None
    """Degraded: refused for good (its content), not tried again."""


@dataclass
class TopCalibrationAnswer:
    """The merge's calibration of the top hypothesis (``rerank.merge.top_calibration.TopCalibration``)."""

    __pydantic_config__ = _ANSWER
    scale: float
    shift: float
    fitted_for: dict[str, str]
    """The version of every domain it was fitted for."""
    split: str
    utterances: int
    ece_before: float | None
    ece_after: float | None
    fitted_at: str
    stale: list[str]
    """The domains whose live version is not the one it was fitted for."""


@dataclass
class VersionsAnswer:
    """The versions this worker serves."""

    __pydantic_config__ = _ANSWER
    corpus: str
    generation: int
    release: int
    versions: dict[str, str]
    """The version of every domain (``baseline``: no model)."""
    top_calibration: TopCalibrationAnswer | None


class RequestMetrics:
    """Counts the requests of ``POST /rank`` and ``/rank/batch`` that FastAPI routes (status, latency), as
    :class:`DirectRoutes` counts those it answers itself: middleware, so it sees the status of the answer that an
    exception handler gives (an error left to the 500 handler passes through it as an exception: a 500)."""

    def __init__(self, app: ASGIApp, meters: Mapping[str, m.Endpoint]):
        self.app, self.meters = app, meters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        meter = self.meters.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if meter is None:
            await self.app(scope, receive, send)
            return
        t0, status = time.perf_counter(), 500

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            meter.observe(status, time.perf_counter() - t0)


def create_app(settings: ServiceSettings, live: LiveModels | None = None) -> FastAPI:
    registry = Registry(settings.registry_dir)
    live = live or LiveModels(registry, settings.corpus, settings.specs, settings.poll_seconds, on_event=m.live_event)
    m.set_versions(live.snapshot.versions)
    watcher: list[asyncio.Task] = []
    limiter: list = []  # made at the first request: a CapacityLimiter belongs to the running event loop
    worker = uuid.uuid4().hex[:12]  # tells the workers apart in /health (not the PID: that is no client's business)
    # the compiled decoder of the fast path (rerank.serving.fast); None: every request takes the field-by-field path
    codec = fast.Codec(settings.context_fields, settings.max_hypotheses, settings.max_utterances) \
        if fast.usable(settings.context_fields) else None

    def ensure_watching() -> None:
        # at startup (the lifespan), or at the first request where a host runs no ASGI lifespan
        if not watcher:
            watcher.append(asyncio.get_running_loop().create_task(live.watch()))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        """The server's lifespan (uvicorn runs it in every worker): the live watcher polls the registry on the
        server's event loop from startup until the server stops."""
        ensure_watching()
        # what the process holds by now (the app, the models, the libraries) is never garbage: the collector's
        # full passes need not walk it again (they otherwise stall a request now and then)
        gc.freeze()
        log.info("%s: following the live state of %s (every %.2f s)", worker, settings.corpus, settings.poll_seconds)
        try:
            yield
        finally:
            live.stop()
            loop = asyncio.get_running_loop()
            mine = [t for t in watcher if t.get_loop() is loop]
            for task in mine:  # it waits in its sleep between polls: cancelled there, it ends at once
                task.cancel()
            if mine:
                await asyncio.wait(mine)
            watcher.clear()
            log.info("%s: stopped following the live state", worker)

    app = FastAPI(title="rerank", description="Cross-domain ranking with each domain's live re-ranker.", lifespan=lifespan,
                  # every error an endpoint raises is answered by error_response (on the direct path too)
                  exception_handlers={BadRequest: _on_error, ClientDisconnect: _on_error, Exception: _on_error})
    app.state.live, app.state.settings = live, settings

    async def _raw(request: Request) -> bytes:
        """The body, refused as soon as it is known to exceed the limit: from its Content-Length, else while it streams."""
        limit = settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(f"the body holds {int(declared)} bytes (Content-Length), more than the limit of {limit}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"the body holds more than the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _work(fn: Callable[[bytes], Response], raw: bytes) -> Response:
        """``fn(raw)`` on the event loop for a small body, else on a worker thread (bounded), so the loop stays free."""
        if len(raw) <= settings.inline_body_bytes:
            return fn(raw)
        if not limiter:
            limiter.append(anyio.CapacityLimiter(max(1, settings.work_threads)))
        return await run_off_loop(fn, raw, limiter[0])

    def _post(meter: m.Endpoint, fn, arrow_fn=None, fast_fn=None):
        """A POST endpoint: ``answer`` (the route FastAPI calls: errors raised, answered by its exception handlers)
        and ``direct`` (what :class:`DirectRoutes` calls: ``answer``, its errors answered by the same
        :func:`error_response`, and the request counted)."""
        hypotheses = meter.hypotheses

        def by_json(raw: bytes, query: Mapping[str, str] | None = None) -> Response:
            if fast_fn is not None:
                try:
                    out, n = fast_fn(raw, query)
                    hypotheses.inc(n)
                    return out
                except fast.Miss:  # not for the fast path: the field-by-field path answers (or names the bad field)
                    pass
            out, n = fn(_parse_json(raw), query)
            hypotheses.inc(n)
            return _json(out)

        def by_arrow(raw: bytes, query: Mapping[str, str] | None = None) -> Response:
            out, n = arrow_fn(_arrow_table(raw, settings))
            hypotheses.inc(n)
            return out

        async def answer(request: Request) -> Response:
            ensure_watching()
            arrow = arrow_fn is not None and ARROW in request.headers.get("content-type", "")
            query = request.query_params if request.scope.get("query_string") else None
            return await _work(functools.partial(by_arrow if arrow else by_json, query=query), await _raw(request))

        async def direct(request: Request) -> Response:
            t0, response = time.perf_counter(), None
            try:
                response = await answer(request)
            except Exception as err:  # (a bug must not take the service down: error_response answers a 500)
                response = error_response(err, meter.name)
            finally:  # (a cancelled request has no response: counted as one that failed)
                meter.observe(500 if response is None else response.status_code, time.perf_counter() - t0)
            return response

        return answer, direct

    def rank_one(body, query=None):
        top_k, fields = _selection(*_choice(body), query, settings.context_fields)
        hyps, utt_id, text = _utterance(body, settings)
        return _trim(_ranked(live.snapshot, hyps, utt_id, text=text), top_k, fields), len(hyps)

    def rank_batch(body, query=None):
        if not isinstance(body, dict) or not isinstance(body.get("utterances"), list):
            raise BadRequest("missing field 'utterances' (a list of {\"hypotheses\": [...]} objects)", "utterances")
        top_k, fields = _selection(*_choice(body), query, settings.context_fields)
        utts = body["utterances"]
        if len(utts) > settings.max_utterances:
            raise BadRequest(f"'utterances' holds {len(utts)} utterances, more than the limit of {settings.max_utterances}",
                             "utterances", 413)
        parsed = [_utterance(u, settings, f"utterances[{i}].") for i, u in enumerate(utts)]
        snapshot = live.snapshot  # one snapshot for the whole batch
        return ({"results": [_trim(_ranked(snapshot, h, u, f"utterances[{i}].", t), top_k, fields)
                             for i, (h, u, t) in enumerate(parsed)],
                 "generation": snapshot.generation}, sum(len(h) for h, _, _ in parsed))

    def fast_one(raw: bytes, query):
        req = codec.decode_one(raw)
        top_k, fields = _selection(req.top_k, req.fields, query, settings.context_fields)
        answer = codec.ranked(live.snapshot, req, top_k, fields)
        return Response(codec.encode(answer), media_type="application/json"), len(req.hypotheses)

    def fast_batch(raw: bytes, query):
        req = codec.decode_batch(raw)
        top_k, fields = _selection(req.top_k, req.fields, query, settings.context_fields)
        snapshot = live.snapshot  # one snapshot for the whole batch
        results = [codec.ranked(snapshot, u, top_k, fields) for u in req.utterances]
        return (Response(codec.encode({"results": results, "generation": snapshot.generation}), media_type="application/json"),
                sum(len(u.hypotheses) for u in req.utterances))

    def rank_arrow(table: pa.Table):
        try:
            checked = check_nbest_table(table, settings.context_fields)
        except BadHypothesis as err:
            raise BadRequest(str(err), err.field) from None
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as err:  # what the checks did not foresee
            raise BadRequest(f"the table cannot be read: {err}", "body") from None
        snapshot = live.snapshot
        try:
            score, rank, versions = snapshot.ranker.rank_table(checked, unknown="baseline")
        except BadFeatures as err:  # e.g. a column of evidence a domain's model needs
            raise BadRequest(str(err), err.field or "body") from None
        names = sorted(versions)
        out = pa.table({"row": pa.array(np.arange(table.num_rows)), "utt": checked["utt"], "domain": checked["domain"],
                        "rank": pa.array(rank), "domain_rank": checked["rank"], "score": pa.array(score),
                        "confidence": pa.array(_top_confidence(snapshot, score, rank), mask=rank != 0),
                        "version": pa.DictionaryArray.from_arrays(
                            pa.array(np.searchsorted(names, checked["domain"].to_numpy(zero_copy_only=False)).astype(np.int32)),
                            pa.array([versions[d] for d in names]))})
        meta = {b"versions": orjson.dumps(versions), b"generation": str(snapshot.generation).encode(),
                b"fallback": orjson.dumps(sorted(d for d in names if d not in snapshot.ranker.scorers))}
        out = out.replace_schema_metadata(meta)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, out.schema) as writer:
            writer.write_table(out)
        return Response(sink.getvalue().to_pybytes(), media_type=ARROW), table.num_rows

    meters = {"/rank": m.Endpoint("rank"), "/rank/batch": m.Endpoint("rank_batch")}
    posts = {"/rank": _post(meters["/rank"], rank_one, fast_fn=fast_one if codec else None),
             "/rank/batch": _post(meters["/rank/batch"], rank_batch, rank_arrow, fast_batch if codec else None)}
    # DirectRoutes calls the direct ones without FastAPI's per-request machinery; FastAPI routes the answers
    app.state.post_handlers = {path: direct for path, (_, direct) in posts.items()}
    app.add_middleware(RequestMetrics, meters=meters)
    errors = {s: {"model": ErrorBody, "description": d} for s, d in (
        (400, "The body is not JSON (or not an Arrow stream)"), (413, "Over a limit: body, hypotheses, utterances"),
        (422, "A field is wrong: the answer names it"), (500, "Internal error"))}
    # the bodies' schemas, from the one table of fields (the handlers decode and check the bytes themselves)
    one = request_schema(settings.context_fields)
    batch = {"type": "object", "required": ["utterances"], "properties": {
        "utterances": {"type": "array", "items": {k: v for k, v in one.items()}},
        "top_k": one["properties"]["top_k"], "fields": one["properties"]["fields"]}}
    batch["properties"]["utterances"]["items"]["properties"] = {
        k: v for k, v in one["properties"].items() if k not in ("top_k", "fields")}
    app.add_api_route("/rank", posts["/rank"][0], methods=["POST"], name="rank", summary="Rank one utterance's hypotheses",
                      responses=errors,
                      openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": one}}}})
    app.add_api_route("/rank/batch", posts["/rank/batch"][0], methods=["POST"], name="rank_batch",
                      summary="Rank many utterances (JSON, or an Arrow IPC stream for throughput)", responses=errors,
                      openapi_extra={"requestBody": {"required": True, "content": {
                          "application/json": {"schema": batch},
                          ARROW: {"schema": {"type": "string", "format": "binary"}}}}})

    @app.get("/health", response_model=Health, summary="Whether this worker serves the live state",
             responses={503: {"model": Health, "description": "stale: the live watcher has not polled for a while"}})
    async def health() -> JSONResponse:
        ensure_watching()
        snap = live.snapshot
        age = time.time() - live.last_poll
        ok = age < max(5.0, 20 * settings.poll_seconds)
        # degraded: it serves, but not the live state (a release it could not load); the body names the domain
        state = live.health()
        status = state["status"] if ok else "stale"
        return JSONResponse({**state, "status": status, "corpus": settings.corpus, "generation": snap.generation,
                             "release": snap.release, "domains": len(snap.versions), "seconds_since_poll": round(age, 3),
                             "worker": worker}, status_code=200 if ok else 503)

    @app.get("/versions", response_model=VersionsAnswer, summary="The versions served")
    def versions() -> JSONResponse:
        snap = live.snapshot
        cal = snap.top_calibration
        return JSONResponse({"corpus": settings.corpus, "generation": snap.generation, "release": snap.release,
                             "versions": dict(snap.versions),
                             "top_calibration": None if cal is None else {**cal.to_dict(), "stale": cal.stale(snap.versions)}})

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics (text format)")
    def metrics() -> Response:
        m.set_versions(live.snapshot.versions)
        body, content_type = m.exposition()
        return Response(body, media_type=content_type)

    return app


def settings_from_config(cfg: Mapping[str, Any]) -> ServiceSettings:
    """The service's settings from a composed ``configs/serve.yaml``: specs and context from the tables if present."""
    from rerank.hypotheses.tables import TablesMissing, open_tables
    from rerank.model.spec import spec_from_manifest

    serve = cfg["serve"]
    specs, context = None, serve.get("context_fields")
    try:
        manifest = open_tables(cfg).manifest
        specs = {d: spec_from_manifest(manifest, d) for d in manifest["domains"]}
        context = context or manifest["context_fields"]
    except TablesMissing:
        log.warning("no hypothesis tables for %s: versions are checked on their own spec only", cfg["data"]["name"])
    return ServiceSettings(registry_dir=cfg["paths"]["registry_dir"], corpus=cfg["data"]["name"],
                           context_fields=tuple(context or ("device",)), specs=specs,
                           poll_seconds=float(serve["poll_seconds"]), max_hypotheses=int(serve["max_hypotheses"]),
                           max_utterances=int(serve["max_utterances"]), max_body_bytes=int(serve["max_body_bytes"]),
                           **{k: int(serve[k]) for k in ("max_decoded_bytes", "work_threads", "inline_body_bytes") if k in serve})


class DirectRoutes:
    """The app, its ``POST /rank`` and ``POST /rank/batch`` called straight from the ASGI scope.

    Those two handlers take the raw request and answer every outcome themselves (4xx, 500, a client gone: through
    :func:`error_response`, as FastAPI's exception handlers do) and count it, so FastAPI's middleware stack, router
    and dependency solving add nothing to them but time (about a fifth of a small request's server CPU). Every
    other request, and the lifespan, go to the FastAPI app (its routes document ``/rank`` at ``/docs``, and serve
    it where the app runs without this wrapper, e.g. under Ray Serve).
    """

    def __init__(self, app: FastAPI):
        self.app, self.state = app, app.state
        self._handlers = dict(app.state.post_handlers)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self._handlers.get(scope["path"])
            if handler is not None:
                response = await handler(Request(scope, receive))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def app_from_env() -> DirectRoutes:
    """The app of the settings in ``RERANK_SERVE_CONFIG`` (JSON): what each uvicorn worker process builds."""
    cfg = orjson.loads(os.environ["RERANK_SERVE_CONFIG"])
    return DirectRoutes(create_app(settings_from_config(cfg)))


def rank_records(ranked: Sequence[Mapping[str, Any]]) -> list[tuple]:
    """(domain, intent, score, version) of a response's hypotheses: what a check against offline ranking compares."""
    return [(h["domain"], h["intent"], h["score"], h["version"]) for h in ranked]
