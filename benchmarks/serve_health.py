"""``/health`` while the largest allowed batch is scored (issue 19: p99 under 50 ms), JSON rows and Arrow IPC.

``python benchmarks/run.py bench=serve bench.mode=health`` (``bench.mode=all`` runs it after the load test). The
service serves the prepared corpus' live models; the batch is the most utterances of its test split (cycled, each
its own ``utt_id``) whose body fits the service's body limit (16 MiB; the JSON form also within its 1,000
utterances). One client thread posts the batch again and again over a raw keep-alive socket; another polls
``GET /health`` every ``poll_ms`` over its own keep-alive connection. Every ``/health`` sent while a batch was in
flight counts: its latency, client side (p50, p99, max). The timing is a benchmark's, never a test's: on a shared
machine it moves with the load (``tests/test_hardening.py`` only checks that the loop is not blocked for the
whole batch).
"""
from __future__ import annotations

import socket
import threading
import time

import numpy as np
import orjson

from benchmarks.serve_load import arrow_batch

MAX_BODY = 16 << 20
MAX_UTTERANCES = 1000


def with_text(pool: list[list[dict]], texts: list[str]) -> list[list[dict]]:
    """``pool`` with each utterance's text (on its first hypothesis, as an Arrow row or a body's ``text``) instead of
    the evidence fields the models compute from it."""
    from rerank.hypotheses.evidence import TEXT_FIELDS

    return [[{**{k: v for k, v in h.items() if k not in TEXT_FIELDS}, **({"text": t} if j == 0 else {})} for j, h in enumerate(hyps)]
            for hyps, t in zip(pool, texts)]


def _utterance(hyps: list[dict], i: int) -> dict:
    text = hyps[0].get("text") if hyps else None
    return {"utt_id": i, "hypotheses": [{k: v for k, v in h.items() if k != "text"} for h in hyps]} | (
        {"text": text} if text is not None else {})


def largest_json(pool: list[list[dict]], max_body: int = MAX_BODY, max_utterances: int = MAX_UTTERANCES) -> tuple[bytes, int]:
    """The largest JSON ``/rank/batch`` body of ``pool``'s utterances (cycled) within the limits, and its utterances."""
    n = max_utterances
    while True:
        body = orjson.dumps({"utterances": [_utterance(pool[i % len(pool)], i) for i in range(n)]})
        if len(body) <= max_body:
            return body, n
        n = min(n - 1, int(n * max_body / len(body)))


def largest_arrow(pool: list[list[dict]], max_body: int = MAX_BODY) -> tuple[bytes, int]:
    """The largest Arrow IPC ``/rank/batch`` body of ``pool``'s utterances (cycled) within the body limit."""
    body = lambda n: arrow_batch([pool[i % len(pool)] for i in range(n)], 0)  # noqa: E731
    n = int(200 * max_body / len(body(200)))  # (its size grows with the utterances, nearly in proportion)
    while len(b := body(n)) > max_body:
        n = int(n * 0.99)
    return b, n


def _request(path: str, body: bytes = b"", content_type: str = "application/json", method: str = "POST") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\n"
    if method == "POST":
        head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


def _exchange(sock: socket.socket, request: bytes, buf: bytearray) -> int:
    """Send one request on a keep-alive socket and read its whole answer (the body is dropped); its status."""
    sock.sendall(request)
    buf.clear()
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("the service closed the connection")
        buf += chunk
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end]).lower()
    remaining = int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0]) - (len(buf) - end)
    scratch = bytearray(min(1 << 20, max(0, remaining)))
    while remaining > 0:
        got = sock.recv_into(scratch, min(len(scratch), remaining))
        if not got:
            raise ConnectionError("the service closed the connection")
        remaining -= got
    return int(head[9:12])


def during_batches(addr: tuple[str, int], body: bytes, content_type: str, rounds: int, poll_ms: float = 5.0) -> dict:
    """``rounds`` batches posted one after another (after one to warm up) while ``/health`` is polled; the figures."""
    batch_req = _request("/rank/batch", body, content_type)
    windows: list[tuple[float, float]] = []
    stop = threading.Event()
    failures: list = []

    def batches() -> None:
        try:
            with socket.create_connection(addr) as s:
                buf = bytearray()
                for _ in range(rounds):
                    t0 = time.monotonic()
                    status = _exchange(s, batch_req, buf)
                    windows.append((t0, time.monotonic()))
                    if status != 200:
                        raise RuntimeError(f"/rank/batch answered {status}")
                    time.sleep(0.05)
        except Exception as err:  # reported by the caller
            failures.append(err)
        finally:
            stop.set()

    with socket.create_connection(addr) as s:
        buf = bytearray()
        _exchange(s, batch_req, buf)  # warm
        health = _request("/health", method="GET")
        _exchange(s, health, buf)
        polls: list[tuple[float, float, int]] = []
        sender = threading.Thread(target=batches, daemon=True)
        sender.start()
        while not stop.is_set():
            t0 = time.monotonic()
            status = _exchange(s, health, buf)
            polls.append((t0, time.monotonic(), status))
            time.sleep(poll_ms / 1e3)
        sender.join()
    if failures:
        raise failures[0]
    during = np.array([1e3 * (t1 - t0) for t0, t1, _ in polls if any(t0 < b1 and t1 > b0 for b0, b1 in windows)])
    seconds = [b1 - b0 for b0, b1 in windows]
    return {"rounds": len(windows), "batch_s": float(np.median(seconds)), "polls": len(during),
            "not_ok": sum(1 for *_, st in polls if st != 200),
            "p50": float(np.percentile(during, 50)), "p99": float(np.percentile(during, 99)), "max": float(during.max())}


def run_health(addr: tuple[str, int], pool: list[list[dict]], texts: list[str] | None = None, rounds: int = 10) -> list[str]:
    """Both forms measured on a running service (and, given the utterances' ``texts``, both again with the text instead
    of the text-derived evidence: the models compute it); the table's lines (markdown)."""
    pools = [("", pool)] + ([(", text instead of its evidence", with_text(pool, texts))] if texts else [])
    hyps = lambda n: sum(len(pool[i % len(pool)]) for i in range(n))  # noqa: E731
    lines = ["| batch | body (MiB) | utterances / hypotheses | batch (s, median) | /health answers during it | "
             "/health p50 / p99 / max (ms) | not 200 |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    forms = [(f"JSON rows{how}", *largest_json(p), "application/json") for how, p in pools] + \
            [(f"Arrow IPC{how}", *largest_arrow(p), "application/vnd.apache.arrow.stream") for how, p in pools]
    for name, body, n, ctype in forms:
        r = during_batches(addr, body, ctype, rounds)
        lines.append(f"| {name} | {len(body) / 2**20:.1f} | {n:,} / {hyps(n):,} | {r['batch_s']:.3f} ({r['rounds']} batches) | "
                     f"{r['polls']} | {r['p50']:.1f} / {r['p99']:.1f} / {r['max']:.1f} | {r['not_ok']} |")
    return lines
