"""The service as a FastAPI app: its lifespan (the live watcher from startup to shutdown, in a real server process),
its exception handlers (the same answers as the direct path of ``POST /rank``), its OpenAPI document, and no
DeprecationWarning from rerank's own code at import, startup or shutdown.

None of these needs trained models: the service runs on an empty registry (every domain served by the baseline).
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from rerank.serving.process import running_service

REPO = Path(__file__).resolve().parents[1]
ONE = {"domain": "Music", "intent": "play", "slots": [], "dc": 0.5, "ic": 0.5, "ner": 0.5}


def test_the_service_starts_and_stops_through_its_lifespan_and_documents_its_api(tmp_path):
    """scripts/serve.py (uvicorn): the lifespan starts the live watcher before the first request and stops it when
    the server stops; /openapi.json declares the bodies of the POSTs and the answers of /health and /versions."""
    from rerank.serving.answers import Health, VersionsAnswer

    log = tmp_path / "serve.log"
    overrides = [f"paths.output_dir={tmp_path / 'out'}", f"paths.registry_dir={tmp_path / 'registry'}",
                 f"paths.log_dir={tmp_path / 'logs'}", "serve.log_level=info"]
    # every DeprecationWarning shown once in the log (pytest's filters do not reach a child process)
    env = {**os.environ, "PYTHONWARNINGS": "default::DeprecationWarning"}
    with running_service(overrides, log, env=env) as (port, proc, _):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            health, versions = client.get("/health"), client.get("/versions")
            spec = client.get("/openapi.json").json()
            ranked = client.post("/rank", json={"hypotheses": [ONE]})
    text = log.read_text()
    # (uvicorn shuts down gracefully on SIGTERM, then raises the signal again: the exit status tells it was killed)
    assert proc.returncode in (0, -signal.SIGTERM), text[-3000:]
    assert health.status_code == 200 and versions.status_code == 200 and ranked.status_code == 200, text[-3000:]
    Health(**health.json())  # (the documented answers: a field they do not declare, or a missing one, is a TypeError)
    VersionsAnswer(**versions.json())

    # the lifespan ran: the watcher started before the server took requests, and stopped before the process ended
    lines = text.splitlines()

    def at(pattern: str) -> int:
        found = [i for i, line in enumerate(lines) if re.search(pattern, line)]
        assert found, f"no {pattern!r} in the log:\n{text[-3000:]}"
        return found[0]

    assert at(r"Waiting for application startup") < at(r"following the live state of synthetic") \
        < at(r"Application startup complete")
    assert at(r"Waiting for application shutdown") < at(r"stopped following the live state") \
        < at(r"Application shutdown complete")
    assert "unsupported" not in text, text[-3000:]  # (uvicorn: "ASGI 'lifespan' protocol appears unsupported")
    assert "Traceback" not in text, text[-3000:]
    ours = [line for line in lines if "DeprecationWarning" in line and str(REPO / "rerank") in line]
    assert ours == [], "\n".join(ours)

    # the OpenAPI document: the request bodies (from the table of fields) and the answers' schemas
    schemas = spec["components"]["schemas"]

    def resolve(schema: dict) -> dict:
        return schemas[schema["$ref"].rsplit("/", 1)[1]] if "$ref" in schema else schema

    rank = spec["paths"]["/rank"]["post"]
    body = rank["requestBody"]["content"]["application/json"]["schema"]
    assert "hypotheses" in body["required"]
    hypothesis = body["properties"]["hypotheses"]["items"]
    assert {"domain", "intent", "slots", "dc", "ic", "ner"} <= set(hypothesis["properties"])
    batch = spec["paths"]["/rank/batch"]["post"]["requestBody"]["content"]
    assert set(batch) == {"application/json", "application/vnd.apache.arrow.stream"}
    assert batch["application/json"]["schema"]["required"] == ["utterances"]
    for path in ("/rank", "/rank/batch"):
        answers = spec["paths"][path]["post"]["responses"]
        for status in ("400", "413", "422", "500"):
            error = resolve(answers[status]["content"]["application/json"]["schema"])
            assert set(error["properties"]) == {"error", "field"}, (path, status)
    health_answers = spec["paths"]["/health"]["get"]["responses"]
    assert set(health_answers) == {"200", "503"}
    for status in ("200", "503"):
        schema = resolve(health_answers[status]["content"]["application/json"]["schema"])
        assert set(schema["properties"]) == {f.name for f in dataclasses.fields(Health)}
        assert "seconds_since_poll" in schema["required"] and schema["additionalProperties"] is False
        assert "live watcher" in schema["properties"]["status"]["description"]  # (each field's docstring)
    versions_schema = resolve(spec["paths"]["/versions"]["get"]["responses"]["200"]["content"]["application/json"]["schema"])
    assert {"versions", "top_calibration", "generation", "release"} <= set(versions_schema["properties"])
    assert "text/plain" in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]


def test_the_answers_documented_for_versions_are_the_top_calibrations_fields():
    """/versions' top_calibration is TopCalibration.to_dict() and its stale domains: the schema follows the dataclass."""
    from rerank.merge.top_calibration import TopCalibration
    from rerank.serving.answers import TopCalibrationAnswer

    fields = {f.name for f in dataclasses.fields(TopCalibrationAnswer)}
    assert fields == {f.name for f in dataclasses.fields(TopCalibration)} | {"stale"}
    cal = TopCalibration(1.5, -0.5, {"Music": "v1"}, "dev", 10, 0.2, 0.1, "now")
    TopCalibrationAnswer(**{**cal.to_dict(), "stale": cal.stale({"Music": "v2"})})


def test_importing_and_running_the_app_raise_no_deprecation_warning_of_ours(tmp_path):
    """A fresh interpreter (imports are cached here): the import, create_app, the lifespan as uvicorn runs it, a
    request on each path, and the shutdown, with every warning recorded; none may come from rerank's code."""
    code = f"""
import warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import rerank.serving.app
    import asyncio, sys
    sys.path.insert(0, {str(REPO / 'tests')!r})
    from test_serve_app import requests_on_both_paths
    asyncio.run(requests_on_both_paths({str(tmp_path / 'registry')!r}))
for w in caught:
    if issubclass(w.category, DeprecationWarning):
        print(f"DEPRECATED|{{w.filename}}:{{w.lineno}}|{{w.category.__name__}}: {{w.message}}")
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    caught = [line.split("|", 2)[1:] for line in out.stdout.splitlines() if line.startswith("DEPRECATED|")]
    ours = [c for c in caught if c[0].startswith(str(REPO / "rerank"))]
    assert ours == [], ours
    print("DeprecationWarnings of other packages:", caught)


# --------------------------------------------------------------------------- in-process: both paths, one mapping


@contextlib.asynccontextmanager
async def lifespan_of(asgi):
    """``asgi``'s lifespan as uvicorn runs it (its LifespanOn), around the block."""
    import uvicorn
    from uvicorn.lifespan.on import LifespanOn

    lifespan = LifespanOn(uvicorn.Config(asgi, lifespan="on", log_config=None))
    await lifespan.startup()
    try:
        assert not lifespan.startup_failed and not lifespan.should_exit
        yield
    finally:
        await lifespan.shutdown()
        gc.unfreeze()  # (the lifespan froze what this process held: give it back to the collector)
        assert not lifespan.shutdown_failed


def make_app(registry: str, **settings):
    from rerank.serving.app import ServiceSettings, create_app

    return create_app(ServiceSettings(registry_dir=registry, corpus="synthetic", **settings))


BAD = {  # name: (path, body, status, field)
    "not json": ("/rank", b"this is not json", 400, "body"),
    "no hypotheses": ("/rank", b'{"hyps": []}', 422, "hypotheses"),
    "a missing intent": ("/rank/batch", b'{"utterances": [{"hypotheses": [{"domain": "Music"}]}]}', 422,
                         "utterances[0].hypotheses[0].intent"),
    "too many hypotheses": ("/rank", json.dumps({"hypotheses": [ONE] * 3}).encode(), 413, "hypotheses"),
    "over the body limit": ("/rank", b" " * 5000, 413, None),
}


async def requests_on_both_paths(registry: str) -> dict:
    """Every request of BAD, a good one and an internal error, to the app behind DirectRoutes (what uvicorn serves)
    and to the bare FastAPI app (what Ray Serve serves), each run through its lifespan; the answers by path."""
    from rerank.serving.app import DirectRoutes

    out = {}
    for name in ("direct", "fastapi"):
        app = make_app(registry, max_hypotheses=2, max_body_bytes=4096, poll_seconds=30)
        asgi = DirectRoutes(app) if name == "direct" else app
        answers = out[name] = {}
        async with lifespan_of(asgi):
            assert app.state.live._stop.is_set() is False
            # (raise_app_exceptions=False: a 500 handler's answer is sent, then the exception raised to the server)
            transport = httpx.ASGITransport(app=asgi, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
                answers["good"] = await client.post("/rank", json={"hypotheses": [ONE]})
                for case, (path, body, _, _) in BAD.items():
                    answers[case] = await client.post(path, content=body, headers={"content-type": "application/json"})

                class Broken:  # a bug: the live snapshot cannot be read
                    def __getattr__(self, _):
                        raise RuntimeError("a bug")

                live, snapshot = app.state.live, app.state.live.snapshot
                live.snapshot = Broken()
                answers["internal"] = await client.post("/rank", json={"hypotheses": [ONE]})
                answers["internal health"] = await client.get("/health")
                live.snapshot = snapshot
                answers["metrics"] = await client.get("/metrics")
        assert app.state.live._stop.is_set()  # the lifespan stopped the watcher
    return out


def test_both_paths_answer_every_error_alike(tmp_path, caplog):
    """DirectRoutes (the direct path, its own try/except) and FastAPI (its exception handlers) answer through the one
    error_response: the same status, the same JSON body, the same headers; and both count the requests."""
    out = asyncio.run(requests_on_both_paths(str(tmp_path / "registry")))
    for name, answers in out.items():
        assert answers["good"].status_code == 200, answers["good"].text
        for case, (_, _, status, field) in BAD.items():
            r = answers[case]
            assert r.status_code == status and r.json()["field"] == field, (name, case, r.text)
        assert answers["over the body limit"].headers["connection"] == "close"
        for case in ("internal", "internal health"):
            r = answers[case]
            assert r.status_code == 500 and r.json() == {"error": "internal error: RuntimeError"}, (name, case, r.text)
    direct, fast = out["direct"], out["fastapi"]
    # the FastAPI path counts its requests as the direct path does (the counters are this process's: the difference)
    counted = {'rerank_requests_total{endpoint="rank",status="200"}': 1,
               'rerank_requests_total{endpoint="rank",status="400"}': 1,
               'rerank_requests_total{endpoint="rank",status="413"}': 2,
               'rerank_requests_total{endpoint="rank",status="500"}': 1,
               'rerank_requests_total{endpoint="rank_batch",status="422"}': 1,
               'rerank_errors_total{endpoint="rank",kind="bad_request"}': 4,
               'rerank_errors_total{endpoint="rank",kind="internal"}': 1,
               'rerank_errors_total{endpoint="health",kind="internal"}': 1}
    assert {k: value(fast["metrics"].text, k) - value(direct["metrics"].text, k) for k in counted} == counted
    for case in [*BAD, "internal", "internal health"]:
        assert direct[case].status_code == fast[case].status_code, case
        assert direct[case].content == fast[case].content, case
        assert direct[case].headers.get("connection") == fast[case].headers.get("connection"), case
    # the internal errors were logged, naming the endpoint
    assert any(r.levelname == "ERROR" and r.getMessage() == "rank: a bug" for r in caplog.records)


def value(metrics: str, series: str) -> float:
    return next(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(series + " "))


def test_an_answers_writes_go_out_together_and_before_a_close():
    """rerank.serving.http: the writes of one loop step reach the transport as one writelines (one system call), in
    order; closing sends what is pending first; writes after the transport closes are dropped, as uvloop drops them."""
    from rerank.serving.http import _GatheredWrites

    class Transport:
        def __init__(self):
            self.calls, self.closed = [], False

        def writelines(self, parts):
            self.calls.append(("writelines", list(parts)))

        def close(self):
            self.calls.append(("close",))
            self.closed = True

        def is_closing(self):
            return self.closed

        def get_extra_info(self, name, default=None):
            return ("127.0.0.1", 1) if name == "peername" else default

    async def main():
        loop = asyncio.get_running_loop()
        t = Transport()
        w = _GatheredWrites(t, loop)
        w.write(b"HTTP/1.1 200 OK\r\n\r\n")
        w.write(b"")
        w.write(b"body")
        assert t.calls == []  # (nothing sent within the step)
        await asyncio.sleep(0)
        assert t.calls == [("writelines", [b"HTTP/1.1 200 OK\r\n\r\n", b"body"])]
        w.writelines([b"a", b"b"])
        w.close()  # (a connection closed right after its answer: the answer first)
        assert t.calls[1:] == [("writelines", [b"a", b"b"]), ("close",)]
        w.write(b"late")
        await asyncio.sleep(0)
        assert len(t.calls) == 3 and w.is_closing() and w.get_extra_info("peername") == ("127.0.0.1", 1)

    asyncio.run(main())
