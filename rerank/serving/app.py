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
import logging
import os
import time
import uuid
from typing import Any, AsyncIterator, Callable, Mapping, Sequence

import anyio
import numpy as np
import orjson
import pyarrow as pa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect

from rerank.hypotheses.fields import request_schema
from rerank.hypotheses.nbest import BadHypothesis
from rerank.hypotheses.nbest_table import check_nbest_table
from rerank.model.registry import Registry
from rerank.model.spec import BadFeatures
from rerank.serving import fast, metrics as m
from rerank.serving.answers import (
    ARROW,
    ErrorBody,
    Health,
    RequestMetrics,
    VersionsAnswer,
    _json,
    _json_batch,
    _on_error,
    _ranked,
    _top_confidence,
    error_response,
)
from rerank.serving.live import LiveModels
from rerank.serving.offload import run_off_loop
from rerank.serving.requests import (
    BadRequest,
    ServiceSettings,
    _arrow_table,
    _choice,
    _parse_batch_json,
    _parse_json,
    _selection,
    _trim,
    _utterance,
    body_headers,
    read_body,
)

log = logging.getLogger(__name__)


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

    async def _work(fn: Callable[[bytes], Response], raw: bytes) -> Response:
        """``fn(raw)`` on the event loop for a small body, else on a worker thread (bounded), so the loop stays free."""
        if len(raw) <= settings.inline_body_bytes:
            return fn(raw)
        if not limiter:
            limiter.append(anyio.CapacityLimiter(max(1, settings.work_threads)))
        return await run_off_loop(fn, raw, limiter[0])

    def _post(meter: m.Endpoint, fn, arrow_fn=None, fast_fn=None, parse=_parse_json, encode=_json):
        """A POST endpoint: ``answer`` (the route FastAPI calls: errors raised, answered by its exception handlers)
        and ``direct`` (the ASGI app :class:`DirectRoutes` calls: the same answer from the scope and the ASGI messages,
        its errors answered by the same :func:`error_response`, the request counted)."""
        hypotheses = meter.hypotheses

        def by_json(raw: bytes, query: Mapping[str, str] | None = None) -> Response:
            if fast_fn is not None:
                try:
                    out, n = fast_fn(raw, query)
                    hypotheses.inc(n)
                    return out
                except fast.Miss:  # not for the fast path: the field-by-field path answers (or names the bad field)
                    pass
            out, n = fn(parse(raw), query)
            hypotheses.inc(n)
            return encode(out)

        def by_arrow(raw: bytes, query: Mapping[str, str] | None = None) -> Response:
            out, n = arrow_fn(_arrow_table(raw, settings))
            hypotheses.inc(n)
            return out

        async def answered(scope, receive) -> Response:
            ensure_watching()
            content_type, declared = body_headers(scope["headers"])
            arrow = arrow_fn is not None and ARROW in (content_type or "")
            query = QueryParams(scope["query_string"]) if scope.get("query_string") else None
            raw = await read_body(declared, receive, settings.max_body_bytes)
            return await _work(functools.partial(by_arrow if arrow else by_json, query=query), raw)

        async def answer(request: Request) -> Response:
            return await answered(request.scope, request.receive)

        async def direct(scope, receive, send) -> None:
            t0, response = time.perf_counter(), None
            try:
                response = await answered(scope, receive)
            except Exception as err:  # (a bug must not take the service down: error_response answers a 500)
                response = error_response(err, meter.name)
            finally:  # (a cancelled request has no response: counted as one that failed)
                meter.observe(500 if response is None else response.status_code, time.perf_counter() - t0)
            await response(scope, receive, send)

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
        n = sum(len(u.hypotheses) for u in req.utterances)
        results = codec.ranked_each(snapshot, req.utterances, top_k, fields)  # (each encoded, then freed, once ranked)
        return Response(codec.encode_batch(results, snapshot.generation), media_type="application/json"), n

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
             "/rank/batch": _post(meters["/rank/batch"], rank_batch, rank_arrow, fast_batch if codec else None, _parse_batch_json,
                                  _json_batch)}
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
                await handler(scope, receive, send)
                return
        await self.app(scope, receive, send)


def app_from_env() -> DirectRoutes:
    """The app of the settings in ``RERANK_SERVE_CONFIG`` (JSON): what each uvicorn worker process builds."""
    cfg = orjson.loads(os.environ["RERANK_SERVE_CONFIG"])
    return DirectRoutes(create_app(settings_from_config(cfg)))


def rank_records(ranked: Sequence[Mapping[str, Any]]) -> list[tuple]:
    """(domain, intent, score, version) of a response's hypotheses: what a check against offline ranking compares."""
    return [(h["domain"], h["intent"], h["score"], h["version"]) for h in ranked]
