"""Load test of the ranking service, with domains promoted under load (issue 9): ``python benchmarks/run.py bench=serve``.

Concurrent clients send real utterances (a prepared corpus' test hypotheses, ~85 per
utterance on HWU64) to ``POST /rank`` for ``seconds``, while a promoter makes new
versions of three domains live every ``promote_every`` seconds, one of those versions
deliberately broken (its weights file truncated after publishing). Measured:

- requests/s and the client-side latency (p50, p99, max), errors;
- for every promotion, the time from the live pointer's move to the first response
  that uses the new version; the broken version must never serve;
- that every sampled response's scores equal an offline ``CrossDomainRanker`` with the
  versions the response reports (within 1e-9);
- ``POST /rank/batch`` throughput in hypotheses/s;
- where a request's time goes (parse, checks, ranking, encoding; the rest is HTTP);
- **side by side with its floor** (``side_by_side_seconds``): the same bodies sent by the same client (wrk, a Lua
  script rotating the bodies, ``connections`` keep-alive connections) to the floor app
  (:mod:`benchmarks.serve_floor`: FastAPI + orjson, parse, ``dc*ic*ner``, sort, answer) and to the service,
  in turn, ``side_by_side_rounds`` times each; requests/s, p50/p99 and server CPU per request of both, and their
  ratio; then the service again with a client that asks for less (``top_k=5`` and three fields).

The client is a minimal asyncio HTTP/1.1 client over keep-alive connections (bodies
encoded once up front), so that it costs the shared 2 cores as little as possible.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import orjson

from benchmarks.measure import REPO, machine, utterance_pool
from rerank.serving.process import free_port, running_service


def load_pool(tables, split: str, limit: int) -> list[list[dict]]:
    """Every utterance's hypotheses of ``split`` in the n-best format (as a client sends them)."""
    return utterance_pool({d: tables.read(d, split) for d in tables.domains}, tables.manifest["context_fields"], limit)


@contextlib.contextmanager
def server(output_dir: Path, registry: Path, data: str, workers: int, log: Path, extra: list[str]):
    overrides = [f"data={data}", f"workers={workers}", f"paths.output_dir={output_dir}", f"paths.registry_dir={registry}",
                 f"paths.log_dir={registry.parent / 'logs'}", *extra]
    with running_service(overrides, log) as (port, proc, cmd):
        yield ("127.0.0.1", port), proc, " ".join(cmd[1:])


def request_bytes(path: str, body: bytes, content_type: str = "application/json") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def arrow_batch(utterances: list[list[dict]], first: int) -> bytes:
    """An Arrow IPC stream of many utterances' hypotheses (the columnar n-best of /rank/batch)."""
    import pyarrow as pa

    rows = [{**h, "utt": first + i} for i, hyps in enumerate(utterances) for h in hyps]
    table = pa.Table.from_pylist(rows)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


async def _connection(addr, requests: list[bytes], until: float, out: list, start_index: int, keep_every: int,
                      stop_after: int | None = None) -> None:
    reader, writer = await asyncio.open_connection(*addr)
    i = start_index
    try:
        while time.monotonic() < until and (stop_after is None or i - start_index < stop_after):
            idx = i % len(requests)
            t0 = time.monotonic()
            writer.write(requests[idx])
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            n = int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0]) if b"content-length:" in head \
                else int(head.split(b"Content-Length:", 1)[1].split(b"\r\n", 1)[0])
            body = await reader.readexactly(n)
            t1 = time.monotonic()
            tail = body[body.rfind(b'"versions":') + 11:body.rfind(b',"fallback"')] if status == 200 else b"{}"
            keep = body if (status != 200 or i % keep_every == 0) else None
            out.append((t0, t1, idx, status, tail, keep))
            i += 1
    finally:
        writer.close()


def run_clients(addr, requests: list[bytes], seconds: float, connections: int, keep_every: int,
                stop_after: int | None = None) -> list:
    out: list = []

    async def main():
        until = time.monotonic() + seconds
        await asyncio.gather(*(_connection(addr, requests, until, out, k * 7919, keep_every, stop_after)
                               for k in range(connections)))

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
    return out


class Promoter(threading.Thread):
    """Moves live pointers of three domains in turn, every ``every`` seconds; one version is broken."""

    def __init__(self, registry, corpus: str, plan: list[tuple[str, str]], every: float):
        super().__init__(daemon=True)
        self.registry, self.corpus, self.plan, self.every = registry, corpus, plan, every
        self.events: list[tuple[float, str, str]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        for domain, version in self.plan:
            if self.stop_event.wait(self.every):
                return
            t = time.monotonic()
            self.registry.set_live(self.corpus, domain, version, action="promote", verdict="load test", forced=True)
            self.events.append((t, domain, version))


def prepare_versions(reg, corpus: str, domains: list[str], rounds: int) -> tuple[list[tuple[str, str]], set]:
    """New versions of ``domains`` (their live weights, bias shifted) to promote in turn; the last domain's every
    second version is broken. Returns the plan and the broken versions."""

    class Shifted:
        def __init__(self, pub, shift):
            self.spec, self.kind, self.pub, self.shift = pub.spec, pub.kind, pub, shift

        def weights(self):
            w = self.pub.weights()
            w["linear.bias"] = w["linear.bias"] + np.float32(self.shift)
            return w

    plan, broken = [], set()
    for r in range(rounds):
        for j, d in enumerate(domains):
            pub = reg.load(corpus, d)
            v = reg.publish(corpus, d, Shifted(pub, 0.05 * (r + 1) * (-1) ** r), loss="crossentropy",
                            config={"load_test": True}, metrics={}, data_hash="load test")
            if j == len(domains) - 1 and r % 2 == 0:
                w = reg.domain_dir(corpus, d) / v / "weights.safetensors"
                w.write_bytes(w.read_bytes()[:64])
                broken.add((d, v))
            plan.append((d, v))
    return plan, broken


def stage_profile(ranker, pool: list[list[dict]], context_fields, n: int = 500) -> dict:
    """Microseconds per request of each stage the server runs, measured in this process."""
    from rerank.hypotheses.nbest import parse_hypothesis

    bodies = [orjson.dumps({"hypotheses": h}) for h in pool[:n]]
    t = {"parse JSON": 0.0, "check hypotheses": 0.0, "rank (features, models, sort)": 0.0, "encode JSON": 0.0}
    for b in bodies:
        t0 = time.perf_counter()
        obj = orjson.loads(b)
        t1 = time.perf_counter()
        hyps = [parse_hypothesis(h, context_fields) for h in obj["hypotheses"]]
        t2 = time.perf_counter()
        ranked = ranker.rank(hyps, unknown="baseline")
        t3 = time.perf_counter()
        for h in ranked:
            h["slots"] = [{"type": a, "value": v} for a, v in h["slots"]]
        orjson.dumps({"hypotheses": ranked})
        t4 = time.perf_counter()
        for k, dt in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            t[k] += dt
    return {k: 1e6 * v / len(bodies) for k, v in t.items()}


def tree_rss_mb(pid: int) -> float:
    from benchmarks.measure import tree_rss_kib

    return tree_rss_kib(pid) / 1024


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children so far (from /proc)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid] + [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()] \
        if Path(f"/proc/{pid}/task/{pid}/children").exists() else [pid]
    for p in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


WRK_SCRIPT = Path(__file__).with_name("wrk_bodies.lua")


def wrk(port: int, bodies: Path, seconds: float, connections: int, path: str = "/rank", threads: int = 1) -> dict:
    """One wrk run of ``POST path`` with the bodies of ``bodies`` (one a line) in turn; its figures (latencies in µs)."""
    exe = shutil.which("wrk")
    if exe is None:
        raise RuntimeError("the side-by-side run needs wrk (apt-get install -y wrk)")
    cmd = [exe, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "-s", str(WRK_SCRIPT), f"http://127.0.0.1:{port}",
           "--", str(bodies), path]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next((x for x in out.splitlines() if x.startswith("WRK_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{out[-2000:]}")
    return orjson.loads(line.split(" ", 1)[1])


@contextlib.contextmanager
def floor_server(log: Path):
    """The floor app (:mod:`benchmarks.serve_floor`) on a free port; yields (port, process)."""
    from rerank.serving.process import _healthy

    port = free_port()
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.serve_floor", str(port)], cwd=REPO, stdout=fh,
                                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)})
        try:
            deadline = time.monotonic() + 60
            while not _healthy(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the floor app did not start:\n{log.read_text()[-2000:]}")
                time.sleep(0.2)
            yield port, proc
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def side_by_side(floor: tuple[int, int], service: tuple[int, int], bodies: Path, seconds: float, connections: int,
                 rounds: int, warmup: float = 3.0) -> dict:
    """The floor and the service in turn (``rounds`` times each, after a warm-up of each), the same bodies and client."""
    runs: dict[str, list[dict]] = {"floor": [], "service": [], "service, top_k=5 and 3 fields": []}
    targets = [("floor", floor, "/rank"), ("service", service, "/rank")]
    for name, (port, _), path in targets:
        wrk(port, bodies, warmup, connections, path)
    for _ in range(rounds):
        for name, (port, pid), path in targets:
            cpu = proc_cpu_seconds(pid)
            r = wrk(port, bodies, seconds, connections, path)
            r["cpu_s"] = proc_cpu_seconds(pid) - cpu
            runs[name].append(r)
    port, pid = service
    cpu = proc_cpu_seconds(pid)
    r = wrk(port, bodies, seconds, connections, "/rank?top_k=5&fields=domain,intent,score")
    r["cpu_s"] = proc_cpu_seconds(pid) - cpu
    runs["service, top_k=5 and 3 fields"].append(r)
    return runs


def _summary(rs: list[dict]) -> dict:
    n = sum(r["requests"] for r in rs)
    return {"rps": n / (sum(r["duration_us"] for r in rs) / 1e6), "p50": float(np.median([r["p50_us"] for r in rs])) / 1e3,
            "p99": max(r["p99_us"] for r in rs) / 1e3, "cpu_ms": 1e3 * sum(r["cpu_s"] for r in rs) / max(1, n),
            "errors": sum(r["status_errors"] + r["read_errors"] + r["timeouts"] for r in rs), "requests": n,
            "kb": sum(r["bytes"] for r in rs) / max(1, n) / 1024, "per_round": [r["requests"] / (r["duration_us"] / 1e6) for r in rs]}


def _print_side_by_side(runs: dict, command: str, connections: int, sizes, n_bodies: int, checked: int, worst: float) -> None:
    s = {k: _summary(v) for k, v in runs.items() if v}
    f, v = s["floor"], s["service"]
    print(f"\n## Service, side by side with its floor\n\ncommand: {command}\n"
          f"client: wrk, 1 thread, {connections} keep-alive connections, {n_bodies} bodies in turn "
          f"({np.mean(sizes):.1f} hypotheses each, evidence included); {len(runs['floor'])} rounds of "
          f"{runs['floor'][0]['duration_us'] / 1e6:.0f} s each, floor and service in turn\n")
    print("| app | requests/s | p50 (ms) | p99 (ms) | server CPU per request (ms) | answer (KB) | errors | requests/s per round |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, x in s.items():
        print(f"| {name} | {x['rps']:,.0f} | {x['p50']:.2f} | {x['p99']:.2f} | {x['cpu_ms']:.3f} | {x['kb']:.1f} | {x['errors']} | "
              f"{', '.join(f'{r:,.0f}' for r in x['per_round'])} |")
    print("\n| ratio | service / floor | target |\n| --- | ---: | --- |")
    print(f"| requests/s | {v['rps'] / f['rps']:.1%} | >= 50% |")
    print(f"| server CPU per request (floor / service) | {f['cpu_ms'] / v['cpu_ms']:.1%} | |")
    print(f"| service p99 at {connections} connections | {v['p99']:.2f} ms | <= 5 ms |")
    print(f"| service answers checked against the offline ranker | {checked}, max abs diff {worst:.1e} | <= 1e-9 |")


def run(output_dir: str, data: str = "hwu64", seconds: float = 60.0, connections: int = 8, promote_every: float = 3.0,
        workers: int = 1, batch_utterances: int = 200, batch_seconds: float = 10.0, keep_every: int = 25, ray: int = 0,
        side_by_side_seconds: float = 0.0, side_by_side_rounds: int = 2, mode: str = "all", health_rounds: int = 0) -> int:
    """The load test (or, with ``ray`` replicas, the Ray Serve run) against the tables and registry of ``output_dir``."""
    from rerank.hypotheses.tables import open_tables
    from rerank.merge.ranker import CrossDomainRanker
    from rerank.model.registry import Registry

    if ray:
        print(f"# Ray Serve run, {time.strftime('%Y-%m-%d %H:%M %Z')}\n# machine: {machine()}\n")
        ray_serve_run(Path(output_dir).resolve(), data, ray, min(seconds, 10.0))
        return 0

    out_dir = Path(output_dir).resolve()
    work = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    cfg = {"paths": {"data_dir": str(out_dir / "data")}, "data": {"name": data, "format": "massive"}}
    tables = open_tables(cfg)
    corpus, domains = tables.name, tables.domains
    registry_dir = work / "registry"
    shutil.copytree(out_dir / "registry", registry_dir)
    reg = Registry(registry_dir)
    for d in domains:  # every domain serves a model: its live version, else its newest
        if reg.live(corpus, d) is None and reg.versions(corpus, d):
            reg.set_live(corpus, d, reg.versions(corpus, d)[-1], action="promote", verdict="load test setup", forced=True)
    pool = load_pool(tables, "test", 10**9)
    sizes = [len(h) for h in pool]
    counts = {d: sum(any(h["domain"] == d for h in u) for u in pool) for d in domains}
    moving = sorted(domains, key=lambda d: -counts[d])[:3]
    if mode == "health":
        return _health_only(out_dir, work, tables, data, pool, workers, health_rounds)
    if mode == "side_by_side":
        return _side_by_side_only(out_dir, work, reg, corpus, data, pool, sizes, workers, connections,
                                  side_by_side_seconds or 20.0, side_by_side_rounds)
    rounds = max(1, int(seconds / promote_every / 3) + 1)
    prof = stage_profile(CrossDomainRanker.from_registry(reg, corpus, domains), pool, tables.manifest["context_fields"])
    plan, broken = prepare_versions(reg, corpus, moving, rounds)
    requests = [request_bytes("/rank", orjson.dumps({"utt_id": i, "hypotheses": h})) for i, h in enumerate(pool)]
    print(f"# service load test, {time.strftime('%Y-%m-%d %H:%M %Z')}\n# machine: {machine()}")
    print(f"# {corpus} test: {len(pool)} utterances, {np.mean(sizes):.1f} hypotheses each (max {max(sizes)}); "
          f"{connections} connections for {seconds:.0f} s; promotions of {', '.join(moving)} every "
          f"{promote_every:g} s ({len(broken)} broken)", flush=True)

    # VmRSS, not ru_maxrss: a child forked from this big process would report the parent's high-water mark
    imp = subprocess.run([sys.executable, "-c", "import time; t = time.perf_counter(); import rerank.serving.app; "
                          "print(time.perf_counter() - t, next(int(x.split()[1]) for x in open('/proc/self/status') "
                          "if x.startswith('VmRSS')))"], capture_output=True, text=True, check=True).stdout.split()
    import_seconds, import_rss_mb = float(imp[0]), int(imp[1]) / 1024
    with server(out_dir, registry_dir, data, workers, work / "serve.log", []) as (addr, proc, command):
        rss_start = tree_rss_mb(proc.pid)
        promoter = Promoter(reg, corpus, plan, promote_every)
        cpu0, t0 = proc_cpu_seconds(proc.pid), time.monotonic()
        promoter.start()
        results = run_clients(addr, requests, seconds, connections, keep_every)
        wall = time.monotonic() - t0
        server_cpu = proc_cpu_seconds(proc.pid) - cpu0
        rss_end = tree_rss_mb(proc.pid)
        promoter.stop_event.set()
        # batch throughput: the Arrow form, then the JSON form
        chunks = [pool[i:i + batch_utterances] for i in range(0, len(pool), batch_utterances)]
        batch_hyps = [sum(len(h) for h in c) for c in chunks]
        batch_rates = {}
        for form, reqs in (("Arrow IPC", [request_bytes("/rank/batch", arrow_batch(c, i * batch_utterances),
                                                        "application/vnd.apache.arrow.stream") for i, c in enumerate(chunks)]),
                           ("JSON", [request_bytes("/rank/batch", orjson.dumps({"utterances": [{"hypotheses": h} for h in c]}))
                                     for c in chunks])):
            b0 = time.monotonic()
            batch = run_clients(addr, reqs, batch_seconds, 2, 10**9)
            done = [b for b in batch if b[3] == 200]
            if len(done) != len(batch):
                raise RuntimeError(f"/rank/batch ({form}) answered {len(batch) - len(done)} requests with errors")
            batch_rates[form] = sum(batch_hyps[b[2]] for b in done) / (time.monotonic() - b0)
        metrics = run_clients(addr, [b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"], 0.01, 1, 1)
    metrics_text = metrics[0][5].decode() if metrics and metrics[0][5] else ""

    ok = [r for r in results if r[3] == 200]
    errors = len(results) - len(ok)
    lat = np.array([1e3 * (r[1] - r[0]) for r in ok])
    rps = len(ok) / wall
    # promotion -> first response that uses the new version
    versions = [(r[0], r[1], orjson.loads(r[4]) if r[4] else {}) for r in ok]
    swaps, served_broken, good_events = [], 0, []
    for t_event, d, v in promoter.events:
        if (d, v) in broken:
            served_broken += sum(1 for _, _, vs in versions if vs.get(d) == v)
            continue
        good_events.append((t_event, d, v))
        firsts = [t1 for _, t1, vs in versions if t1 >= t_event and vs.get(d) == v]
        swaps.append((d, v, (min(firsts) - t_event) if firsts else None))
    # offline equality of the kept responses
    cache: dict = {}
    checked, worst = 0, 0.0
    for r in ok:
        if r[5] is None:
            continue
        body = orjson.loads(r[5])
        key = tuple(sorted(body["versions"].items()))
        if key not in cache:
            pins = {d: v for d, v in body["versions"].items() if v != "baseline"}
            cache[key] = CrossDomainRanker.from_registry(reg, corpus, sorted(body["versions"]), versions=pins)
        want = cache[key].rank(pool[r[2]], unknown="baseline")
        got = body["hypotheses"]
        assert [(h["domain"], h["intent"]) for h in got] == [(h["domain"], h["intent"]) for h in want], "ranking differs"
        worst = max(worst, max(abs(a["score"] - b["score"]) for a, b in zip(got, want)))
        checked += 1
    refused = sum(float(line.split()[-1]) for line in metrics_text.splitlines() if line.startswith("rerank_refused_versions_total{"))
    swap_times = [s[2] for s in swaps if s[2] is not None]

    print(f"\ncommand: python benchmarks/run.py bench=serve bench.output_dir={output_dir} bench.data={data} bench.seconds={seconds:g} "
          f"bench.connections={connections} bench.workers={workers}\nserver: {command}\n")
    print("| measure | result | target |\n| --- | --- | --- |")
    print(f"| requests/s, one utterance each ({np.mean(sizes):.0f} hypotheses) | {rps:.0f} | >= 500 |")
    print(f"| latency p50 / p99 / max (ms, client side) | {np.percentile(lat, 50):.1f} / {np.percentile(lat, 99):.1f} / "
          f"{lat.max():.1f} | p99 < 25 |")
    print(f"| errors | {errors} of {len(results)} | 0 |")
    print(f"| promote -> first response with the new version (s): median / max over {len(swap_times)} promotions | "
          f"{statistics.median(swap_times):.3f} / {max(swap_times):.3f} | < 1 |" if swap_times else "| promotions | none measured | |")
    print(f"| promotions never seen in a response (the last second excluded) | "
          f"{sum(1 for s, e in zip(swaps, good_events) if s[2] is None and e[0] < t0 + wall - 1.0)} | 0 |")
    print(f"| broken versions promoted / refused by the service / served | {len([e for e in promoter.events if (e[1], e[2]) in broken])}"
          f" / {refused:.0f} / {served_broken} | served 0 |")
    print(f"| responses checked against an offline CrossDomainRanker with their versions | {checked}, max abs diff {worst:.1e} | <= 1e-9 |")
    for form, rate in batch_rates.items():
        print(f"| /rank/batch, {form} ({batch_utterances} utterances a request, 2 connections) | "
              f"{rate / 1e6:.2f} M hypotheses/s | >= 1 M/s |")
    print(f"| server CPU per /rank request (ms) | {1e3 * server_cpu / max(1, len(results)):.2f} | |")
    print(f"| `import rerank.serving.app` (fresh interpreter) | {import_seconds:.2f} s, {import_rss_mb:.0f} MB resident | |")
    print(f"| service resident memory ({len(domains)} domains loaded; {workers} worker(s), process tree) | "
          f"{rss_start:.0f} MB at start, {rss_end:.0f} MB after the run | |")
    print("\npromote -> first use, per promotion (s): " + ", ".join(f"{d} {v} {x:.2f}" for d, v, x in swaps if x is not None))
    print("\nWhere a /rank request's server time goes (in-process, µs per request): "
          + ", ".join(f"{k} {v:.0f}" for k, v in prof.items())
          + f"; total {sum(prof.values()):.0f} of {1e6 * server_cpu / max(1, len(results)):.0f} µs of server CPU per request "
          "(the rest: HTTP, ASGI and the event loop).")
    shutil.rmtree(work, ignore_errors=True)
    if health_rounds:
        run(output_dir, data, workers=workers, health_rounds=health_rounds, mode="health")
    if side_by_side_seconds:
        return run(output_dir, data, connections=connections, workers=workers, side_by_side_seconds=side_by_side_seconds,
                   side_by_side_rounds=side_by_side_rounds, mode="side_by_side")
    return 0


def _health_only(out_dir: Path, work: Path, tables, data: str, pool, workers: int, rounds: int) -> int:
    from benchmarks.serve_health import run_health

    print(f"# /health while the largest batch is scored, {time.strftime('%Y-%m-%d %H:%M %Z')}\n# machine: {machine()}; "
          f"load average before: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    texts = tables.read_utterances("test").sort_by("utt_index")["text"].to_pylist()
    texts = texts if len(texts) == len(pool) else None  # (one per utterance of the pool, in its order, or none)
    with server(out_dir, work / "registry", data, workers, work / "serve.log", []) as (addr, proc, command):
        lines = run_health(addr, pool, texts, max(1, rounds))
    print(f"\ncommand: python benchmarks/run.py bench=serve bench.mode=health bench.output_dir={out_dir} bench.data={data} "
          f"bench.health_rounds={rounds}\nserver: {command}\n")
    print("\n".join(lines))
    print(f"\nload average after: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def _side_by_side_only(out_dir: Path, work: Path, reg, corpus: str, data: str, pool, sizes, workers: int, connections: int,
                       seconds: float, rounds: int) -> int:
    from rerank.merge.ranker import CrossDomainRanker

    bodies = work / "bodies.jsonl"
    encoded = [orjson.dumps({"utt_id": i, "hypotheses": h}) for i, h in enumerate(pool)]
    bodies.write_bytes(b"\n".join(encoded) + b"\n")
    print(f"# service side by side with its floor, {time.strftime('%Y-%m-%d %H:%M %Z')}\n# machine: {machine()}; "
          f"load average before: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    with floor_server(work / "floor.log") as (floor_port, floor_proc), \
            server(out_dir, work / "registry", data, workers, work / "serve.log", []) as (addr, proc, command):
        runs = side_by_side((floor_port, floor_proc.pid), (addr[1], proc.pid), bodies, seconds, connections, rounds)
        # answers equal to the offline ranker (every 12th body, one connection)
        picks = list(range(0, len(pool), 12))
        got = run_clients(addr, [request_bytes("/rank", encoded[i]) for i in picks], 1e9, 1, 1, stop_after=len(picks))
    ranker_cache: dict = {}
    checked, worst = 0, 0.0
    for t0, t1, idx, status, tail, body in got:
        assert status == 200, body[:300]
        answer = orjson.loads(body)
        key = tuple(sorted(answer["versions"].items()))
        if key not in ranker_cache:
            pins = {d: v for d, v in answer["versions"].items() if v != "baseline"}
            ranker_cache[key] = CrossDomainRanker.from_registry(reg, corpus, sorted(answer["versions"]), versions=pins)
        want = ranker_cache[key].rank(pool[picks[idx]], unknown="baseline")
        assert [(h["domain"], h["intent"]) for h in answer["hypotheses"]] == [(h["domain"], h["intent"]) for h in want]
        worst = max(worst, max((abs(a["score"] - b["score"]) for a, b in zip(answer["hypotheses"], want)), default=0.0))
        checked += 1
    cmd = (f"python benchmarks/run.py bench=serve bench.mode=side_by_side bench.output_dir={out_dir} bench.data={data} "
           f"bench.connections={connections} bench.side_by_side_seconds={seconds:g} bench.side_by_side_rounds={rounds}")
    _print_side_by_side(runs, cmd, connections, sizes, len(pool), checked, worst)
    print(f"\nserver: {command}\nload average after: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def ray_serve_run(output_dir: Path, data: str, replicas: int, seconds: float) -> None:
    """The same service as a Ray Serve deployment on a local Ray instance: it serves, follows a swap, and its rate."""
    import httpx
    from ray import serve

    from rerank.hypotheses.tables import open_tables
    from rerank.model.registry import Registry
    from rerank.serving.ray_serve import deploy

    work = Path(tempfile.mkdtemp(prefix="bench_serve_ray_"))
    registry = work / "registry"
    shutil.copytree(output_dir / "registry", registry)
    cfg = {"paths": {"output_dir": str(output_dir), "data_dir": str(output_dir / "data"), "registry_dir": str(registry)},
           "data": {"name": data, "format": "massive"},
           "serve": {"poll_seconds": 0.2, "max_hypotheses": 2000, "max_utterances": 1000, "max_body_bytes": 16 << 20,
                     "context_fields": None}}
    tables = open_tables(cfg)
    pool = load_pool(tables, "test", 200)
    reg = Registry(registry)
    domain = max(tables.domains, key=lambda d: sum(any(h["domain"] == d for h in u) for u in pool))
    port = free_port()
    t0 = time.monotonic()
    deploy(cfg, replicas=replicas, port=port)
    started = time.monotonic() - t0
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, timeout=30) as client:
        before = {client.post("/rank", json={"hypotheses": pool[i]}).json()["versions"][domain] for i in range(20)}
        t_swap = time.monotonic()
        reg.set_live(tables.name, domain, None, action="rollback", verdict="ray serve run", forced=True)
        seen = None
        while time.monotonic() - t_swap < 10 and seen is None:
            if client.post("/rank", json={"hypotheses": pool[0]}).json()["versions"][domain] == "baseline":
                seen = time.monotonic() - t_swap
        time.sleep(1.0)  # every replica polls on its own: a second later, all of them have swapped
        after = {client.post("/rank", json={"hypotheses": pool[i]}).json()["versions"][domain] for i in range(40)}
        n, t1 = 0, time.monotonic()
        while time.monotonic() - t1 < seconds:
            assert client.post("/rank", json={"hypotheses": pool[n % len(pool)]}).status_code == 200
            n += 1
        rate = n / (time.monotonic() - t1)
    serve.shutdown()
    print(f"| Ray Serve, {replicas} replicas, local Ray instance | started in {started:.1f} s; {domain}: {sorted(before)} -> "
          f"baseline first seen {seen:.2f} s after the pointer moved; 40 responses a second later: {sorted(after)}; "
          f"{rate:.0f} requests/s from one sequential client |")
    shutil.rmtree(work, ignore_errors=True)
