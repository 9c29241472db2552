"""The service against hostile requests (issue 19): bodies over the limit, compressed Arrow bombs, types it cannot
read, deep JSON, and a largest batch that must not stall /health. Every server is a real process on 127.0.0.1."""
from __future__ import annotations

import contextlib
import json
import select
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pytest

from test_serve import _arrow, serving, utterances

ARROW = {"content-type": "application/vnd.apache.arrow.stream"}
#: the limits of the hardened service below: 10,000 rows, 1 MiB of body, 16 MiB decoded
LIMITS = ("serve.max_hypotheses=200", "serve.max_utterances=50", "serve.max_body_bytes=1048576",
          "serve.max_decoded_bytes=16777216")


@pytest.fixture(scope="module")
def hard(live_world, tmp_path_factory):
    registry = live_world.registry_copy(tmp_path_factory.mktemp("hardening") / "registry")
    with serving(live_world, registry, *LIMITS) as service:
        yield service


def reset_peak_rss(pid: int) -> None:
    """Start the process's peak resident memory (VmHWM) afresh: what one request costs, not what an earlier one did."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM) since the last reset, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def rows_of(world, n: int = 3) -> list[dict]:
    return [{**h, "utt": f"u{i}"} for i, hyps in enumerate(utterances(world, n)) for h in hyps]


def zstd(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


# --------------------------------------------------------------------------- 1. Arrow: sized before decoded


def _wide_bomb() -> pa.Table:
    """64 rows (within the row limit) whose slot values decode to 256 MiB; compressed, a few KiB."""
    n, value = 64, "a" * (4 << 20)
    return pa.table({"utt": pa.array([f"u{i}" for i in range(n)]), "domain": pa.array(["Music"] * n),
                     "intent": pa.array(["Music_play"] * n),
                     "slots": pa.array([[{"type": "song", "value": value}]] * n), "dc": np.full(n, 0.5),
                     "ic": np.full(n, 0.5), "ner": np.full(n, 0.5)})


def _long_bomb() -> pa.Table:
    """3 million rows (300 times the row limit), 100 MiB decoded; compressed, well under the body limit."""
    n = 3_000_000
    one = lambda v: pa.DictionaryArray.from_arrays(np.zeros(n, np.int8), [v])  # noqa: E731
    return pa.table({"utt": np.arange(n, dtype=np.int32) // 10, "domain": one("Music"), "intent": one("Music_play"),
                     "slots": pa.ListArray.from_arrays(np.zeros(n + 1, np.int32), pa.array([], pa.struct(
                         [("type", pa.string()), ("value", pa.string())]))),
                     "dc": np.full(n, 0.5), "ic": np.full(n, 0.5), "ner": np.full(n, 0.5)})


# (the long one first: memory an allocator keeps after a bigger request could hide what a later one decodes)
@pytest.mark.parametrize("bomb, what", [(_long_bomb, "hypotheses, more than the limit"), (_wide_bomb, "decodes to")])
def test_a_compressed_arrow_body_is_refused_before_it_is_decoded(hard, bomb, what):
    url, _, pid = hard
    body = zstd(bomb())
    assert len(body) < 1 << 20  # within the body limit: only its decoded size or rows can refuse it
    reset_peak_rss(pid)
    before = peak_rss(pid)
    r = httpx.post(url + "/rank/batch", content=body, headers=ARROW, timeout=120)
    grown = peak_rss(pid) - before
    assert r.status_code == 413, r.content[:300]
    assert r.json()["field"] == "body" and what in r.json()["error"], r.text
    assert grown < 48 << 20, f"the server grew by {grown >> 20} MiB answering a {len(body)}-byte body"


def test_the_arrow_stream_is_measured_without_decoding_and_bad_bytes_are_bad_streams():
    from rerank.serving.arrow_stream import BadStream, decode, measure

    table = _wide_bomb().slice(0, 3)
    for compression in (None, "zstd", "lz4"):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression=compression)) as w:
            w.write_table(table)
            w.write_table(table)
        body = sink.getvalue().to_pybytes()
        size = measure(body)
        assert size.rows == 6 and size.schema.equals(table.schema)
        # the buffers as written (each padded to 8 bytes), whether compressed or not
        assert 2 * table.nbytes <= size.decoded_bytes <= 2 * table.nbytes + 1024, (compression, size.decoded_bytes)
        assert decode(body, [0, 4]).column_names == ["utt", "dc"]
    # a corrupted stream is a BadStream (a 400), never a crash or another error
    rng = np.random.default_rng(0)
    raw = np.frombuffer(zstd(table), np.uint8)
    for _ in range(300):
        bad = raw.copy()
        at = rng.integers(0, len(bad), size=rng.integers(1, 4))
        bad[at] = rng.integers(0, 256, size=len(at))
        try:
            size = measure(bad.tobytes())
            if size.rows <= 1000 and size.decoded_bytes <= 64 << 20:  # what the service decodes
                decode(bad.tobytes(), range(len(size.schema)))
        except BadStream:
            pass


# --------------------------------------------------------------------------- 2. the body limit while the body streams


def _send_until_answered(port: int, head: bytes, chunks, wait: float = 5.0) -> tuple[bytes, int]:
    """Send a request's head, then body chunks until the server answers (or all are sent); (answer, body bytes sent)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        for chunk in chunks:
            if select.select([s], [], [], 0)[0]:
                break  # an answer before the body ended
            try:
                s.sendall(chunk)
            except OSError:  # the server closed the connection: its answer waits in our receive queue
                break
            sent += len(chunk)
        s.settimeout(wait)
        answer = b""
        with contextlib.suppress(OSError):
            while part := s.recv(65536):
                answer += part
    return answer, sent


def test_a_chunked_body_over_the_limit_is_refused_while_it_streams(hard):
    _, port, pid = hard
    piece = b"x" * (64 << 10)
    total = 64 << 20  # 64 times the limit, and the final chunk never comes: only an early 413 can answer
    chunks = (b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(total // len(piece)))
    head = (b"POST /rank HTTP/1.1\r\nHost: local\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    reset_peak_rss(pid)
    before = peak_rss(pid)
    answer, sent = _send_until_answered(port, head, chunks)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"limit of 1048576" in answer and sent < total
    assert peak_rss(pid) - before < 32 << 20


def test_a_declared_content_length_over_the_limit_is_refused_before_the_body(hard):
    _, port, _ = hard
    head = (b"POST /rank/batch HTTP/1.1\r\nHost: local\r\nContent-Type: application/vnd.apache.arrow.stream\r\n"
            b"Content-Length: %d\r\n\r\n" % (600 << 20))
    answer, sent = _send_until_answered(port, head, (b"\0" * (64 << 10) for _ in range(256)))
    assert answer.startswith(b"HTTP/1.1 413") and b"Content-Length" in answer, answer[:200]
    assert sent < 16 << 20
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert "629145600" in body["error"] and "1048576" in body["error"]


def test_a_body_within_the_limit_still_ranks(hard, live_world):
    url, _, _ = hard
    hyps = utterances(live_world, 1)[0]
    body = json.dumps({"hypotheses": hyps}).encode()
    # a generator: httpx sends it chunked, without a Content-Length
    r = httpx.post(url + "/rank", content=(body[i:i + 1000] for i in range(0, len(body), 1000)),
                   headers={"content-type": "application/json"})
    assert r.status_code == 200 and len(r.json()["hypotheses"]) == len(hyps), r.text


# --------------------------------------------------------------------------- 5, 6. 4xx, not 500, naming the field


def _deep_json() -> bytes:
    return b'{"hypotheses": ' + b"[" * 1100 + b"]" * 1100 + b"}"


def _big_rank(world) -> bytes:
    hyps = [dict(h) for h in utterances(world, 1)[0]]
    hyps[0]["rank"] = 2 ** 63
    return json.dumps({"hypotheses": hyps}).encode()


def _big_utt_id(world) -> bytes:
    # NaN is not JSON: the body is read by Python's json, which keeps any integer; the answer could not echo it
    hyps = utterances(world, 1)[0]
    return json.dumps({"utt_id": 2 ** 70, "hypotheses": hyps, "extra": float("nan")}).encode()


def _arrow_with(world, name: str, make) -> bytes:
    rows = rows_of(world)
    table = pa.Table.from_pylist(rows)
    return _arrow(table.set_column(table.schema.get_field_index(name), name, make(table[name], len(rows))))


REQUESTS = {
    "json nested 1,100 deep": (lambda w: _deep_json(), "/rank", None, 400, "body"),
    "rank = 2**63": (_big_rank, "/rank", None, 422, "hypotheses[0].rank"),
    "utt_id beyond 64 bits": (_big_utt_id, "/rank", None, 422, "utt_id"),
    "arrow rank as strings": (lambda w: _arrow_with(w, "rank", lambda c, n: pa.array([str(x) for x in c.to_pylist()])),
                              "/rank/batch", ARROW, 422, "rank"),
    "arrow utt as a struct": (lambda w: _arrow_with(w, "utt", lambda c, n: pa.array([{"id": x} for x in c.to_pylist()])),
                              "/rank/batch", ARROW, 422, "utt"),
    "arrow domain as a dictionary of ints": (
        lambda w: _arrow_with(w, "domain", lambda c, n: pa.DictionaryArray.from_arrays(np.zeros(n, np.int32), [7])),
        "/rank/batch", ARROW, 422, "domain"),
    "arrow rank 65536 (beyond int16)": (
        lambda w: _arrow_with(w, "rank", lambda c, n: pa.array(np.where(np.arange(n) == 2, 65536, np.asarray(c)))),
        "/rank/batch", ARROW, 422, "rank"),
}


@pytest.mark.parametrize("case", list(REQUESTS))
def test_a_hostile_request_gets_a_4xx_naming_the_field(hard, live_world, case):
    make, path, headers, status, field = REQUESTS[case]
    url, _, _ = hard
    r = httpx.post(url + path, content=make(live_world), headers=headers or {"content-type": "application/json"})
    assert r.status_code == status, r.content[:300]
    assert r.json()["field"] == field, r.text
    assert field.split(".")[-1].split("[")[0] in r.json()["error"] or field == "body", r.text


def test_an_arrow_rank_beyond_int16_is_not_served_wrapped(hard, live_world):
    """65536 stored as int16 is 0: the service must refuse it, naming the column and the row, not serve rank 0."""
    url, _, _ = hard
    r = httpx.post(url + "/rank/batch", headers=ARROW, content=_arrow_with(
        live_world, "rank", lambda c, n: pa.array(np.where(np.arange(n) == 2, 65536, np.asarray(c)))))
    assert r.status_code == 422, r.content[:300]
    assert "row 2" in r.json()["error"] and "32767" in r.json()["error"], r.text
    ok = httpx.post(url + "/rank/batch", headers=ARROW, content=_arrow_with(
        live_world, "rank", lambda c, n: pa.array(np.asarray(c) + 32767 - np.asarray(c).max())))
    assert ok.status_code == 200, ok.text  # the deepest rank int16 holds is fine
    out = pa.ipc.open_stream(ok.content).read_all()
    assert out["domain_rank"].to_numpy().max() == 32767


# --------------------------------------------------------------------------- 3. no sys.intern of request strings


def test_request_strings_are_not_interned_and_the_name_cache_is_bounded():
    from rerank.hypotheses import nbest

    def fresh(tag: str) -> str:
        return "".join(["x", tag, str(time.monotonic_ns())])  # built at run time: not a constant

    domain, device = fresh("d"), fresh("dev")
    h = nbest.parse_hypothesis({"domain": domain, "intent": fresh("i"), "slots": [{"type": fresh("t"), "value": "v"}],
                                "dc": 0.5, "ic": 0.5, "ner": 0.5, "device": device}, ["device"])
    # sys.intern of an equal string built apart returns the interned one: it must not be the request's
    for got, want in ((h["domain"], domain), (h["intent"], h["intent"]), (h["slots"][0][0], h["slots"][0][0]),
                      (h["device"], device)):
        assert sys.intern("".join(list(want))) is not got
    before = len(nbest._shared)
    for i in range(nbest.SHARED_NAMES + 1000):
        nbest._intern(f"name-{i}-{time.monotonic_ns()}")
    nbest._intern("y" * (nbest.SHARED_NAME_CHARS + 1))
    assert len(nbest._shared) == nbest.SHARED_NAMES >= before
    assert "y" * (nbest.SHARED_NAME_CHARS + 1) not in nbest._shared
    # an equal name met again is the one kept: a million hypotheses hold one copy of their domain
    assert nbest._intern("".join(list(domain))) is h["domain"]


# --------------------------------------------------------------------------- 4. /health while the largest batch is scored


def _largest_batch(world, max_body: int) -> tuple[bytes, int]:
    pool = utterances(world, 400)
    batch, i = [], 0
    while len(batch) < 1000:
        batch.append({"utt_id": i, "hypotheses": pool[i % len(pool)]})
        i += 1
    body = json.dumps({"utterances": batch}).encode()
    while len(body) > max_body:  # the most utterances within the body limit
        batch = batch[: int(len(batch) * max_body / len(body) * 0.98)]
        body = json.dumps({"utterances": batch}).encode()
    return body, len(batch)


def test_health_answers_while_the_largest_batch_is_scored(live_world, tmp_path):
    registry = live_world.registry_copy(tmp_path / "registry")
    body, n = _largest_batch(live_world, 16 << 20)
    with serving(live_world, registry) as (url, _, _):
        httpx.post(url + "/rank/batch", content=body, headers={"content-type": "application/json"}, timeout=120)  # warm
        done: dict = {}

        def batch() -> None:
            t0 = time.monotonic()
            r = httpx.post(url + "/rank/batch", content=body, headers={"content-type": "application/json"}, timeout=120)
            done.update(t0=t0, t1=time.monotonic(), response=r)  # (read once the polls are over: parsing 18 MB here
            # would hold this process's GIL and delay the polls' own timing)

        health = []
        with httpx.Client(base_url=url, timeout=30) as client:
            client.get("/health")
            thread = threading.Thread(target=batch)
            thread.start()
            deadline = time.monotonic() + 120
            while thread.is_alive() and time.monotonic() < deadline:
                t0 = time.monotonic()
                r = client.get("/health")
                health.append((t0, time.monotonic(), r.status_code))
                time.sleep(0.005)
            thread.join(timeout=60)
    assert done["response"].status_code == 200 and len(done["response"].json()["results"]) == n
    seconds = done["t1"] - done["t0"]
    during = [t1 - t0 for t0, t1, _ in health if t0 >= done["t0"] and t1 <= done["t1"]]
    overlapping = [t1 - t0 for t0, t1, _ in health if t1 >= done["t0"] and t0 <= done["t1"]]
    assert seconds > 0.3, f"the batch of {n} utterances took {seconds:.2f} s: too quick to show anything"
    assert all(s == 200 for *_, s in health)
    # the loop is free: /health answers all along (a loop busy scoring answers once the batch is done). How fast it
    # answers is a speed target (p99 under 50 ms), measured by `bench=serve bench.mode=health`, not by this test: on a
    # shared machine the figure moves with the load; what is checked here is that no single stall lasts half the batch.
    assert len(during) >= 5, (len(during), seconds)
    worst = max(overlapping)
    print(f"/health during a {seconds:.2f} s batch of {n} utterances: {len(overlapping)} answers, p50 "
          f"{np.percentile(overlapping, 50) * 1e3:.1f} ms, p99 {np.percentile(overlapping, 99) * 1e3:.1f} ms, "
          f"max {worst * 1e3:.1f} ms")
    assert worst < min(1.0, seconds / 2), (
        f"/health took {worst:.3f} s while a {seconds:.2f} s batch was scored (p99 {np.percentile(overlapping, 99):.3f} s)")


# --------------------------------------------------------------------------- 9. /health tells no PID


def test_health_does_not_show_the_pid(hard):
    url, _, pid = hard
    r = httpx.get(url + "/health")
    assert r.status_code == 200 and "pid" not in r.json(), r.text
    assert str(pid) not in r.text and r.json()["worker"]
