"""The ranking service as a real process on a free local port: answers, bad requests, hot swaps, refusals, workers."""
from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from benchmarks.measure import utterance_pool
from rerank.hypotheses.tables import TableSet
from rerank.merge.ranker import CrossDomainRanker
from rerank.model.registry import Registry
from rerank.serving.process import running_service

CORPUS = "synthetic"


@contextlib.contextmanager
def serving(world, registry: Path, *overrides: str):
    """``scripts/serve.py`` on 127.0.0.1 and a free port, started and stopped here; yields (base URL, port, PID)."""
    log = registry.parent / f"serve-{time.monotonic_ns()}.log"
    with running_service([f"paths.output_dir={world.output_dir}", f"paths.registry_dir={registry}",
                          f"paths.log_dir={registry.parent / 'logs'}", "serve.poll_seconds=0.1", *overrides],
                         log) as (port, proc, _):
        yield f"http://127.0.0.1:{port}", port, proc.pid


@contextlib.contextmanager
def service(world, registry: Path, *overrides: str):
    """:func:`serving`, yielding its base URL only."""
    with serving(world, registry, *overrides) as (url, _, _):
        yield url


def utterances(world, n: int = 40) -> list[list[dict]]:
    """Dev utterances' hypotheses in the n-best format (what a client sends), with the evidence the models need."""
    tables = TableSet.open(world.output_dir / "data" / CORPUS)
    return utterance_pool({d: tables.read(d, "dev") for d in tables.domains}, ["device"], limit=n)


def offline(registry: Path, versions: dict[str, str], hyps: list[dict]) -> list[tuple]:
    pins = {d: v for d, v in versions.items() if v != "baseline"}
    ranker = CrossDomainRanker.from_registry(Registry(registry), CORPUS, sorted(versions), versions=pins)
    return [(h["domain"], h["intent"], h["score"]) for h in ranker.rank(hyps)]


def served(response: dict) -> list[tuple]:
    return [(h["domain"], h["intent"], h["score"]) for h in response["hypotheses"]]


def assert_same_ranking(got: list[tuple], want: list[tuple]) -> None:
    assert [g[:2] for g in got] == [w[:2] for w in want]
    np.testing.assert_allclose([g[2] for g in got], [w[2] for w in want], rtol=0, atol=1e-9)


@pytest.fixture(scope="module")
def basic(live_world, tmp_path_factory):
    registry = live_world.registry_copy(tmp_path_factory.mktemp("serve_basic") / "registry")
    with service(live_world, registry, "serve.max_hypotheses=200") as url:
        yield url, registry


def test_rank_answers_as_the_offline_ranker(basic, live_world):
    url, registry = basic
    with httpx.Client(base_url=url) as client:
        versions = client.get("/versions").json()["versions"]
        assert versions == {d: "v1" for d in live_world.manifest["domains"]}
        for hyps in utterances(live_world, 10):
            r = client.post("/rank", json={"utt_id": "u", "hypotheses": hyps})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["utt_id"] == "u" and body["fallback"] == []
            assert set(body["versions"]) == {h["domain"] for h in hyps}
            assert [h["rank"] for h in body["hypotheses"]] == list(range(len(hyps)))
            scores = [h["score"] for h in body["hypotheses"]]
            assert scores == sorted(scores, reverse=True)
            assert_same_ranking(served(body), offline(registry, body["versions"], hyps))
        batch = [{"utt_id": i, "hypotheses": h} for i, h in enumerate(utterances(live_world, 6))]
        r = client.post("/rank/batch", json={"utterances": batch})
        assert r.status_code == 200
        results = r.json()["results"]
        assert [x["utt_id"] for x in results] == list(range(len(batch)))
        for x, b in zip(results, batch):
            assert_same_ranking(served(x), offline(registry, x["versions"], b["hypotheses"]))


def test_the_top_confidence_is_the_merges_calibration_and_a_refit_is_followed(basic, live_world):
    from rerank.merge.promote import recalibrate
    from rerank.merge.top_calibration import TopCalibration
    from rerank.serving.answers import TopCalibrationAnswer, VersionsAnswer

    url, registry = basic
    reg = Registry(registry)
    hyps = utterances(live_world, 2)[1]
    cal = recalibrate(TableSet.open(live_world.output_dir / "data" / CORPUS), reg, {"bootstrap": 0})

    def confidence_and_top(client):
        body = client.post("/rank", json={"hypotheses": hyps}).json()
        return body["confidence"], body["hypotheses"][0]["score"]

    with httpx.Client(base_url=url) as client:
        deadline = time.monotonic() + 10
        while (client.get("/versions").json()["top_calibration"] or {}).get("scale") != cal.scale and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/versions").json()["top_calibration"]["stale"] == []
        answer = client.get("/versions").json()  # as /openapi.json documents it (TypeError: a field it does not declare)
        VersionsAnswer(**answer)
        TopCalibrationAnswer(**answer["top_calibration"])
        conf, top = confidence_and_top(client)
        assert conf == pytest.approx(float(cal(top)), abs=1e-12) and conf != pytest.approx(top)
        new = TopCalibration(2.5, -1.0, dict(cal.fitted_for), "dev", 1, fitted_at="test")
        reg.release(CORPUS, {}, {"action": "recalibrate", "verdict": "test"}, top_calibration=new.to_dict())
        deadline = time.monotonic() + 10
        while client.get("/versions").json()["top_calibration"]["scale"] != 2.5 and time.monotonic() < deadline:
            time.sleep(0.05)
        conf, top = confidence_and_top(client)
        assert conf == pytest.approx(float(new(top)), abs=1e-12)
        # a broken one is refused: the last good one keeps serving
        state = reg.releases(CORPUS).state_path
        state.write_text(json.dumps({**json.loads(state.read_text()), "release": 99, "top_calibration": {"scale": -1}}))
        time.sleep(0.5)
        assert client.get("/versions").json()["top_calibration"]["scale"] == 2.5
        assert confidence_and_top(client)[0] == pytest.approx(float(new(top)), abs=1e-12)
        reg.release(CORPUS, {}, {"action": "recalibrate", "verdict": "test"}, top_calibration=cal.to_dict())


def test_the_n_best_format_and_the_request_context(basic, live_world):
    """Intents as in the gold file and no ranks (as import reads them), the device given once per request."""
    url, registry = basic
    hyps = utterances(live_world, 3)[2]
    bare = [{k: v for k, v in h.items() if k not in ("rank", "device")} for h in hyps]
    for h in bare:
        h["intent"] = h["intent"][len(h["domain"]) + 1:] if h["intent"].startswith(h["domain"] + "_") else h["intent"]
    with httpx.Client(base_url=url) as client:
        r = client.post("/rank", json={"hypotheses": bare, "context": {"device": hyps[0]["device"]}})
    assert r.status_code == 200, r.text
    reranked = [dict(h, rank=None) for h in hyps]
    for h in reranked:
        del h["rank"]
    assert_same_ranking(served(r.json()), offline(registry, r.json()["versions"], reranked))


def test_an_unknown_domain_is_served_by_the_baseline_and_flagged(basic, live_world):
    url, _ = basic
    hyps = utterances(live_world, 1)[0]
    extra = {"domain": "Astrology", "intent": "horoscope", "slots": [], "dc": 0.9, "ic": 0.9, "ner": 0.9}
    with httpx.Client(base_url=url) as client:
        body = client.post("/rank", json={"hypotheses": [*hyps, extra]}).json()
    assert body["fallback"] == ["Astrology"] and body["versions"]["Astrology"] == "baseline"
    astro = next(h for h in body["hypotheses"] if h["domain"] == "Astrology")
    assert astro["score"] == pytest.approx(0.9 ** 3) and astro["version"] == "baseline"


@pytest.mark.parametrize("body, status, field", [
    ('{"hypotheses": [{"domain": "Music", "slots": [], "dc": 0.5, "ic": 0.5, "ner": 0.5}]}', 422, "hypotheses[0].intent"),
    ('{"hypotheses": [{"domain": "Music", "intent": "x", "slots": [], "dc": NaN, "ic": 0.5, "ner": 0.5}]}', 422, "hypotheses[0].dc"),
    ('{"hypotheses": [{"domain": "Music", "intent": "x", "slots": [], "dc": 0.5, "ic": 1.5, "ner": 0.5}]}', 422, "hypotheses[0].ic"),
    ('{"hypotheses": [{"domain": "Music", "intent": "x", "slots": [{"type": "a"}], "dc": 0.5, "ic": 0.5, "ner": 0.5}]}', 422,
     "hypotheses[0].slots[0].value"),
    ('{"hypotheses": [{"domain": "../x", "intent": "x", "slots": [], "dc": 0.5, "ic": 0.5, "ner": 0.5}]}', 422, "hypotheses[0].domain"),
    ('{"hyps": []}', 422, "hypotheses"),
    ('{"hypotheses": [], "context": "echo"}', 422, "context"),
    ("this is not json", 400, "body"),
    ('{"utterances": [{"hypotheses": [{"domain": "Music"}]}]}', 422, "utterances[0].hypotheses[0].intent"),
])
def test_a_bad_request_gets_a_4xx_naming_the_field(basic, body, status, field):
    url, _ = basic
    path = "/rank/batch" if "utterances" in body else "/rank"
    r = httpx.post(url + path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["field"] == field and field.split(".")[-1].split("[")[0] in r.json()["error"]


def test_a_request_without_the_evidence_a_model_needs_gets_a_4xx_naming_it(basic, live_world):
    """A live model that reads text-derived evidence (the default features) computes it from the request's text: a
    client that sends neither the text nor the fields is told to send the text; one that sends the text is served."""
    import pyarrow as pa

    url, registry = basic
    published = Registry(registry).load(CORPUS, live_world.evidence_domain)
    assert "oov" in published.spec.evidence and "text" in published.request_fields
    hyps = next([dict(h) for h in hyps] for hyps in utterances(live_world) if any(h["domain"] == published.domain for h in hyps))
    for h in hyps:
        h.pop("oov_share", None)
    r = httpx.post(url + "/rank", json={"hypotheses": hyps})
    assert r.status_code == 422 and r.json()["field"] == "text" and "oov_share" in r.json()["error"], r.text
    r = httpx.post(url + "/rank/batch", json={"utterances": [{"hypotheses": utterances(live_world, 1)[0]}, {"hypotheses": hyps}]})
    assert r.status_code == 422 and r.json()["field"] == "utterances[1].text", r.text
    assert httpx.post(url + "/rank", json={"hypotheses": hyps, "text": "play some jazz"}).status_code == 200
    rows = [{**h, "utt": "u0"} for h in hyps]
    r = httpx.post(url + "/rank/batch", content=_arrow(pa.Table.from_pylist(rows)),
                   headers={"content-type": "application/vnd.apache.arrow.stream"})
    assert r.status_code == 422 and r.json()["field"] == "text" and "oov_share" in r.json()["error"], r.text


def test_too_many_hypotheses_and_the_metrics(basic):
    url, _ = basic
    one = {"domain": "Music", "intent": "x", "slots": [], "dc": 0.5, "ic": 0.5, "ner": 0.5}
    r = httpx.post(url + "/rank", json={"hypotheses": [one] * 201})
    assert r.status_code == 413 and "201" in r.json()["error"] and r.json()["field"] == "hypotheses"
    text = httpx.get(url + "/metrics").text
    for family in ("rerank_requests_total", "rerank_request_seconds_bucket", "rerank_hypotheses_total",
                   "rerank_swaps_total", "rerank_refused_versions_total", "rerank_errors_total", "rerank_live_version"):
        assert family in text, family
    assert 'rerank_requests_total{endpoint="rank",status="413"}' in text


def test_the_fast_path_scores_as_the_offline_ranker_exactly(live_world):
    """The compiled decoder and the column ranking (rerank.serving.fast) give the very numbers of CrossDomainRanker.rank,
    whatever form the request takes: ranks given or not, the device in the context, slots as pairs, an unknown domain."""

    from rerank.serving import fast

    ranker = CrossDomainRanker.from_registry(Registry(live_world.registry_dir), CORPUS).prepare()
    codec = fast.Codec(("device",), 2000, 1000)

    class Snap:
        versions, generation = {d: s.version for d, s in ranker.scorers.items()}, 1
        confidence = staticmethod(float)

    Snap.ranker = ranker
    forms = []
    for hyps in utterances(live_world, 12):
        forms.append({"utt_id": "u", "hypotheses": hyps})
        bare = [{k: v for k, v in h.items() if k not in ("rank", "device")} for h in hyps]
        for h in bare:
            h["slots"] = [[s["type"], s["value"]] for s in h["slots"]]
        forms.append({"hypotheses": bare, "context": {"device": hyps[0]["device"]}})
        forms.append({"hypotheses": [*hyps, {"domain": "Astrology", "intent": "x", "slots": [], "dc": 0.9, "ic": 0.8, "ner": 0.7}]})
    for body in forms:
        raw = json.dumps(body).encode()
        got = json.loads(codec.encode(codec.ranked(Snap, codec.decode_one(raw), None, None)))
        want = ranker.rank([parse(h, body.get("context")) for h in body["hypotheses"]], unknown="baseline")
        assert [(h["domain"], h["intent"], h["score"], h["domain_rank"], h["version"]) for h in got["hypotheses"]] == \
            [(h["domain"], h["intent"], h["score"], h["domain_rank"], h["version"]) for h in want]  # exactly
        assert got["hypotheses"] == json.loads(json.dumps([{**h, "slots": [{"type": t, "value": v} for t, v in h["slots"]]}
                                                           for h in want]))
    # what the field-by-field path refuses, the fast path does not take (it answers with the 4xx naming the field)
    for bad in ('{"hypotheses": [{"domain": "a b", "intent": "x", "slots": [], "dc": 0.5, "ic": 0.5, "ner": 0.5}]}',
                '{"hypotheses": [{"domain": "a", "intent": " ", "slots": [], "dc": 0.5, "ic": 0.5, "ner": 0.5}]}',
                '{"hypotheses": [{"domain": "a", "intent": "x", "slots": [["t t", "v"]], "dc": 0.5, "ic": 0.5, "ner": 0.5}]}',
                '{"hypotheses": [{"domain": "a", "intent": "x", "slots": [{"type": "t", "value": " "}], '
                '"dc": 0.5, "ic": 0.5, "ner": 0.5}]}',
                '{"hypotheses": [{"domain": "a", "intent": "x", "slots": [], "dc": true, "ic": 0.5, "ner": 0.5}]}',
                '{"hypotheses": [{"domain": "a", "intent": "x", "slots": [], "dc": 0.5, "ic": 0.5, "ner": 0.5, "n_tokens": 0}]}',
                '{"hypotheses": [{"domain": "a", "intent": "x", "slots": [], "dc": 0.5, "ic": 0.5, "ner": 0.5, "ic_entropy": 1e999}]}'):
        with pytest.raises(fast.Miss):
            codec.ranked(Snap, codec.decode_one(bad.encode()), None, None)


def test_a_batch_is_read_and_written_one_utterance_at_a_time_to_the_byte(live_world):
    """/rank/batch reads and writes a batch one utterance per call (so that no call holds the GIL for the whole body):
    the same objects, answers and errors as one call for all, on the fast path and on the field-by-field one."""
    import msgspec
    import orjson

    from rerank.serving import fast
    from rerank.serving.answers import _json, _json_batch
    from rerank.serving.requests import BadRequest, _parse_batch_json, _parse_json

    ranker = CrossDomainRanker.from_registry(Registry(live_world.registry_dir), CORPUS).prepare()
    codec = fast.Codec(("device",), 2000, 1000)

    class Snap:
        versions, generation = {d: s.version for d, s in ranker.scorers.items()}, 3
        confidence = staticmethod(float)

    Snap.ranker = ranker
    raw = json.dumps({"utterances": [{"utt_id": i, "hypotheses": h} for i, h in enumerate(utterances(live_world, 8))],
                      "top_k": 4}).encode()
    whole = msgspec.json.decode(raw, type=codec.Batch)
    parts = codec.decode_batch(raw)
    assert msgspec.json.encode(parts) == msgspec.json.encode(whole)
    want = codec.encode({"results": [codec.ranked(Snap, u, 4, None) for u in whole.utterances], "generation": 3})
    assert codec.encode_batch((codec.ranked(Snap, u, 4, None) for u in parts.utterances), 3) == want
    answer = orjson.loads(want)
    assert _json_batch(answer).body == _json(answer).body
    for body in (raw, b'{"utterances": 5}', b"[1, 2]", b'{"utterances": [{"hypotheses": []}, NaN]}', b'{"utterances": [1, 2',
                 b'{"utterances": [{"a": 1}], "top_k": 3, "utterances": []}', b'{"utterances": ["\\ud800"]}', b"{" * 2000,
                 b'{"utterances": [{"utt_id": 123456789012345678901234567890}]}', b'  {"utterances": [ {} , [] ] }  '):
        outcomes = []
        for read in (_parse_json, _parse_batch_json):
            try:
                outcomes.append(("read", read(body)))
            except BadRequest as err:
                outcomes.append(("refused", str(err), err.field, err.status))
        assert repr(outcomes[0]) == repr(outcomes[1]), (body[:60], outcomes)  # (repr: NaN is not equal to itself)


def parse(h: dict, context: dict | None) -> dict:
    from rerank.hypotheses.nbest import parse_hypothesis

    return parse_hypothesis(h, ["device"], context)


def test_a_client_asks_for_the_top_k_and_the_fields_it_wants(basic, live_world):
    url, registry = basic
    hyps = utterances(live_world, 4)[3]
    with httpx.Client(base_url=url) as client:
        full = client.post("/rank", json={"hypotheses": hyps}).json()
        for r in (client.post("/rank", json={"hypotheses": hyps, "top_k": 3, "fields": ["domain", "intent", "score"]}),
                  client.post("/rank?top_k=3&fields=domain,intent,score", json={"hypotheses": hyps}),
                  # the slow path (NaN in an unrelated field: read by Python's json) cuts the answer the same way
                  client.post("/rank?top_k=3&fields=domain,intent,score", content=json.dumps({"hypotheses": hyps, "x": float("nan")}),
                              headers={"content-type": "application/json"})):
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["hypotheses"] == [{k: h[k] for k in ("domain", "intent", "score")} for h in full["hypotheses"][:3]]
            assert body["confidence"] == full["confidence"] and body["versions"] == full["versions"]
        batch = client.post("/rank/batch", json={"utterances": [{"hypotheses": hyps}] * 2, "top_k": 1, "fields": ["intent"]}).json()
        assert [x["hypotheses"] for x in batch["results"]] == [[{"intent": full["hypotheses"][0]["intent"]}]] * 2
        for query, body, field in (("", {"top_k": 0}, "top_k"), ("?top_k=x", {}, "top_k"),
                                   ("", {"fields": ["domain", "nope"]}, "fields[1]"), ("?fields=nope", {}, "fields[0]")):
            r = client.post("/rank" + query, json={"hypotheses": hyps, **body})
            assert r.status_code == 422 and r.json()["field"] == field, r.text


def _client_loop(url: str, pool: list[list[dict]], stop: threading.Event, out: list, errors: list) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        i = 0
        while not stop.is_set():
            hyps = pool[i % len(pool)]
            t0 = time.monotonic()
            try:
                r = client.post("/rank", json={"utt_id": i % len(pool), "hypotheses": hyps})
            except httpx.HTTPError as err:
                errors.append(repr(err))
                continue
            if r.status_code != 200:
                errors.append(r.text)
            else:
                out.append((t0, time.monotonic(), i % len(pool), r.json()))
            i += 1


def test_a_domain_swaps_under_load_refuses_a_broken_version_and_rolls_back(live_world, tmp_path):
    registry = live_world.registry_copy(tmp_path / "registry")
    reg = Registry(registry)
    pool = utterances(live_world, 30)
    domain = "Music"
    # v2: v1 with another bias, so that its scores differ
    pub = reg.load(CORPUS, domain, "v1")

    class Shifted:
        spec, kind = pub.spec, pub.kind

        def weights(self):
            w = pub.weights()
            w["linear.bias"] = w["linear.bias"] + np.float32(0.7)
            return w

    v2 = reg.publish(CORPUS, domain, Shifted(), loss="crossentropy", config={}, metrics={}, data_hash="t")
    v3 = reg.publish(CORPUS, domain, Shifted(), loss="crossentropy", config={}, metrics={}, data_hash="t")
    weights = registry / CORPUS / domain / v3 / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # broken after publishing: the service must refuse it
    with service(live_world, registry) as url:
        stop, out, errors = threading.Event(), [], []
        clients = [threading.Thread(target=_client_loop, args=(url, pool, stop, out, errors)) for _ in range(3)]
        for c in clients:
            c.start()
        try:
            time.sleep(1.0)
            t_swap = time.monotonic()
            reg.set_live(CORPUS, domain, v2, action="promote", verdict="test", forced=True)
            time.sleep(1.5)
            t_broken = time.monotonic()
            reg.set_live(CORPUS, domain, v3, action="promote", verdict="test", forced=True)
            time.sleep(1.5)
            t_back = time.monotonic()
            reg.set_live(CORPUS, domain, "v1", action="rollback", verdict="test", forced=True)
            time.sleep(1.5)
        finally:
            stop.set()
            for c in clients:
                c.join(timeout=30)
        metrics = httpx.get(url + "/metrics").text
        health = httpx.get(url + "/health")
    assert errors == [] and len(out) > 50

    def version_of(r):
        return r[3]["versions"][domain]

    first_v2 = min(r[1] for r in out if version_of(r) == v2)
    assert first_v2 - t_swap < 1.0, first_v2 - t_swap
    assert all(version_of(r) == "v1" for r in out if r[1] < t_swap)
    assert all(version_of(r) == v2 for r in out if t_swap + 1.0 < r[0] < t_back)  # the broken v3 never served
    assert all(version_of(r) == "v1" for r in out if r[0] > t_back + 1.0)
    assert any(version_of(r) == "v1" for r in out if r[0] > t_back + 1.0)
    # every response was scored by one snapshot: it equals the offline ranking with the versions it reports
    for r in out[:: max(1, len(out) // 150)]:
        assert_same_ranking(served(r[3]), offline(registry, r[3]["versions"], pool[r[2]]))
    assert f'rerank_refused_versions_total{{domain="{domain}"}} 1.0' in metrics
    assert f'rerank_swaps_total{{domain="{domain}"}}' in metrics
    assert health.status_code == 200
    assert t_broken  # (the phase between t_broken and t_back is covered by the v2 check above)


def test_two_workers_follow_the_same_registry(live_world, tmp_path):
    registry = live_world.registry_copy(tmp_path / "registry")
    reg = Registry(registry)
    hyps = utterances(live_world, 1)[0]
    with service(live_world, registry, "workers=2") as url:
        workers = set()
        for _ in range(30):  # new connections: the kernel spreads them over the workers
            workers.add(httpx.get(url + "/health").json()["worker"])
        assert len(workers) == 2
        reg.set_live(CORPUS, "Books", None, action="rollback", verdict="test", forced=True)
        time.sleep(1.0)
        answers = [httpx.post(url + "/rank", json={"hypotheses": hyps}).json() for _ in range(20)]
        assert all(a["versions"].get("Books", "baseline") == "baseline" for a in answers)
        metrics = httpx.get(url + "/metrics").text
    # the counters of both workers, added up
    line = next(x for x in metrics.splitlines() if x.startswith('rerank_requests_total{endpoint="rank",status="200"}'))
    assert float(line.split()[-1]) == 20.0


def _arrow(table) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def test_the_arrow_batch_ranks_as_rank_does(basic, live_world):
    import pyarrow as pa

    url, registry = basic
    pool = utterances(live_world, 25)
    rows = [{**h, "utt": f"u{i}"} for i, hyps in enumerate(pool) for h in hyps]
    for r in rows[::3]:
        r["intent"] = r["intent"].split("_", 1)[1] if r["intent"].startswith(r["domain"] + "_") else r["intent"]
    for r in rows:
        del r["rank"]  # ranked by ic*ner, as import and /rank do
    headers = {"content-type": "application/vnd.apache.arrow.stream"}
    r = httpx.post(url + "/rank/batch", content=_arrow(pa.Table.from_pylist(rows)), headers=headers)
    assert r.status_code == 200, r.text
    out = pa.ipc.open_stream(r.content).read_all()
    versions = json.loads(out.schema.metadata[b"versions"])
    assert out.num_rows == len(rows) and out["row"].to_pylist() == list(range(len(rows)))
    for i, hyps in enumerate(pool):
        mine = [x for x in out.to_pylist() if x["utt"] == f"u{i}"]
        mine.sort(key=lambda x: x["rank"])
        assert [x["rank"] for x in mine] == list(range(len(hyps)))
        bare = [{k: v for k, v in h.items() if k != "rank"} for h in hyps]
        want = offline(registry, {d: versions[d] for d in {h["domain"] for h in hyps}}, bare)
        np.testing.assert_allclose([x["score"] for x in mine], [w[2] for w in want], rtol=0, atol=1e-12)
        assert [x["domain"] for x in mine] == [w[0] for w in want]
    # a bad column names the field and the row
    rows[7]["ner"] = 1.5
    r = httpx.post(url + "/rank/batch", content=_arrow(pa.Table.from_pylist(rows)), headers=headers)
    assert r.status_code == 422 and r.json()["field"] == "ner" and "row 7" in r.json()["error"]
    r = httpx.post(url + "/rank/batch", content=b"not arrow", headers=headers)
    assert r.status_code == 400 and r.json()["field"] == "body"


def test_the_service_follows_releases_atomically_under_load(live_world, tmp_path):
    """Releases of 5 domains at once under load: no error, and every response was scored by exactly one release
    (its five versions all from the same release), each release visible within a bounded time."""
    registry = live_world.registry_copy(tmp_path / "registry")
    reg = Registry(registry)
    pool = utterances(live_world, 30)
    moved = sorted(live_world.manifest["domains"])[:5]
    v2 = {}
    for d in moved:
        pub = reg.load(CORPUS, d, "v1")

        class Shifted:
            spec, kind = pub.spec, pub.kind

            def weights(self, pub=pub):
                w = pub.weights()
                w["linear.bias"] = w["linear.bias"] - np.float32(0.5)
                return w

        v2[d] = reg.publish(CORPUS, d, Shifted(), loss="crossentropy", config={}, metrics={}, data_hash="t")
    states = [{d: "v1" for d in moved}, dict(v2)]
    with service(live_world, registry) as url:
        stop, out, errors = threading.Event(), [], []
        clients = [threading.Thread(target=_client_loop, args=(url, pool, stop, out, errors)) for _ in range(3)]
        for c in clients:
            c.start()
        moments = []
        try:
            time.sleep(0.8)
            for i in range(6):  # bounded: six releases, 1.2 s apart
                moments.append(time.monotonic())
                reg.release(CORPUS, states[(i + 1) % 2], {"action": "release", "verdict": "test", "i": i})
                time.sleep(1.2)
        finally:
            stop.set()
            for c in clients:
                c.join(timeout=30)
    assert errors == [] and len(out) > 100
    for r in out:
        seen = {d: v for d, v in r[3]["versions"].items() if d in moved}
        assert seen and seen in [{d: s[d] for d in seen} for s in states], seen  # one release, never half of one
    for i, t in enumerate(moments):
        want = states[(i + 1) % 2]
        first = min(r[1] for r in out if r[0] > t and {d: v for d, v in r[3]["versions"].items() if d in moved}
                    == {d: want[d] for d in r[3]["versions"] if d in moved})
        assert first - t < 1.0, (i, first - t)
