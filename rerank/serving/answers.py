"""The service's answers: a ranked utterance, the errors (one mapping from exception to response, used by the
exception handlers and by the direct path), the documented bodies of ``/health`` and ``/versions``, and the
request meters of the FastAPI path."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Literal, Mapping

import numpy as np
import orjson
from fastapi import Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rerank.merge.ranker import BASELINE
from rerank.model.spec import BadFeatures
from rerank.serving import metrics as m
from rerank.serving.requests import BadRequest, BodyTooLarge

log = logging.getLogger(__name__)
ARROW = "application/vnd.apache.arrow.stream"


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


def _json_batch(obj: dict) -> Response:
    """``_json(obj)`` of a batch's answer (``{"results": [...], "generation": g}``, in that order), one result encoded per
    call: one call for all of them holds the GIL for tens of milliseconds, and the event loop waits that long."""
    assert list(obj) == ["results", "generation"], list(obj)
    parts = [orjson.dumps(r, option=orjson.OPT_SERIALIZE_NUMPY) for r in obj["results"]]
    return Response(b"".join((b'{"results":[', b",".join(parts), b'],"generation":', orjson.dumps(obj["generation"]), b"}")),
                    media_type="application/json")


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
    method: str
    """``platt`` (``sigmoid(scale * logit(top) + shift)``) or ``isotonic`` (interpolated between the knots)."""
    knots_x: list[float]
    knots_y: list[float]
    fitted_for: dict[str, str]
    """The version of every domain it was fitted for."""
    split: str
    utterances: int
    ece_before: float | None
    ece_after: float | None
    """Its cross-fitted ECE on ``split``."""
    fitted_at: str
    chosen_by: dict[str, float]
    """Each method's cross-fitted ECE, when the gate chose between them (``gate.top_calibration=auto``)."""
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


