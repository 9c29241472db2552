"""How the speed benchmarks measure, defined once: the machine; a command's wall time, CPU time and peak memory;
a call's latency percentiles; a batch call's throughput; the utterances a client would send."""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from rerank.hypotheses.schema import EVIDENCE_COLUMNS

REPO = Path(__file__).resolve().parents[1]  # the repository (benchmarks/ sits beside rerank/)


def script(name: str, *args: str, python: str | None = None) -> list[str]:
    """The command line of ``scripts/<name>.py`` with ``args``, run by ``python`` (default: this interpreter)."""
    return [python or sys.executable, str(REPO / "scripts" / f"{name}.py"), *args]


def machine() -> str:
    """One line: cores, CPU model, memory, Python."""
    cpu = platform.processor() or "?"
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), cpu)
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Python {platform.python_version()}"


def machine_info() -> dict[str, str]:
    """:func:`machine` with what else moves a timing: the date, usable cores, the load average, library versions."""
    import pyarrow

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(),
            "usable cores": str(usable), "load average (1/5/15 min)": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
            "numpy / pyarrow": f"{np.__version__} / {pyarrow.__version__}"}


def latency(call: Callable[[Any], Any], inputs: Sequence, calls: int | None = None, warmup: int = 0) -> dict[str, float]:
    """Wall and thread-CPU milliseconds of ``call(x)`` over ``inputs`` (cycled to ``calls``), after ``warmup`` calls.

    Both clocks, because on a shared machine a wall-clock p99 far above the CPU-time p99 is
    preemption, not the code.
    """
    n = len(inputs) if calls is None else calls
    if not inputs or n <= 0:
        return {"calls": 0}
    for i in range(warmup):
        call(inputs[i % len(inputs)])
    wall, cpu = np.empty(n), np.empty(n)
    for i in range(n):
        x = inputs[i % len(inputs)]
        c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
        call(x)
        wall[i], cpu[i] = time.perf_counter_ns() - t0, time.thread_time_ns() - c0
    wall, cpu = wall / 1e6, cpu / 1e6
    return {"calls": n, "p50_ms": float(np.percentile(wall, 50)), "p90_ms": float(np.percentile(wall, 90)),
            "p99_ms": float(np.percentile(wall, 99)), "mean_ms": float(wall.mean()), "max_ms": float(wall.max()),
            "cpu_p50_ms": float(np.percentile(cpu, 50)), "cpu_p99_ms": float(np.percentile(cpu, 99))}


def throughput(call: Callable[[], Any], items: int, min_repeats: int = 3, min_seconds: float = 0.5) -> dict[str, float]:
    """Items per second of ``call()`` (one warm-up, then at least ``min_repeats`` calls and ``min_seconds``)."""
    call()
    times, cpu = [], []
    while len(times) < min_repeats or sum(times) < min_seconds:
        c0, t0 = time.process_time(), time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    best, median = min(times), statistics.median(times)
    return {"items": items, "repeats": len(times), "best_seconds": best, "median_seconds": median,
            "cpu_seconds": min(cpu), "best_per_second": items / best, "median_per_second": items / median}


def utterance_pool(tables: Mapping[str, Any], context_fields: Iterable[str], limit: int | None = None) -> list[list[dict]]:
    """Every utterance's hypotheses (the n-best a client sends), from one split's tables, by utterance index."""
    fields = ["utt_index", "domain", "intent", "slots", "dc", "ic", "ner", "rank", *context_fields]
    by_utt: dict[int, list[dict]] = {}
    for d in sorted(tables):
        # with the evidence the tables hold (null fields are left out: the n-best format's "not given")
        evidence = [c for c in EVIDENCE_COLUMNS if c in tables[d].column_names]
        for row in tables[d].select([*fields, *evidence]).to_pylist():
            for c in evidence:
                if row[c] is None:
                    del row[c]
            if limit is None or row["utt_index"] < limit:
                by_utt.setdefault(row.pop("utt_index"), []).append(row)
    return [by_utt[u] for u in sorted(by_utt)]


def timed_sweep(launcher: Sequence[str], *overrides: str, python: str | None = None) -> dict:
    """Wall time of ``scripts/train.py -m domain=all loss=crossentropy`` with a launcher's overrides (a subprocess:
    interpreter start and imports included); the return code, and the tail of the output when it failed."""
    cmd = script("train", "-m", "domain=all", "loss=crossentropy", *launcher, *overrides, python=python)
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    out = {"seconds": time.perf_counter() - t, "returncode": proc.returncode, "command": " ".join(cmd[1:])}
    if proc.returncode != 0:
        out["stderr_tail"] = (proc.stdout + proc.stderr)[-2000:]
    return out


def tree_rss_kib(root: int) -> int:
    """Sum of VmRSS (KiB) of ``root`` and all its descendants (shared pages count once per process)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'
        parent[int(entry)] = int(stat[stat.rfind(")") + 2:].split()[1])
    tree, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        for pid, pp in parent.items():
            if pp == p and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


class TreeSampler(threading.Thread):
    """Samples the resident memory of a process tree every ``every`` seconds; keeps the peak."""

    def __init__(self, pid: int, every: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.every, self.peak_kib, self._stop_event = pid, every, 0, threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak_kib = max(self.peak_kib, tree_rss_kib(self.pid))
            self._stop_event.wait(self.every)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def run_measured(cmd: Sequence[str], log: Path, cwd: Path | None = None, env: dict | None = None) -> dict:
    """Run ``cmd`` (output to ``log``); wall and CPU seconds, peak RSS of the largest process and of the tree (MiB)."""
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(list(cmd), cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        sampler.stop()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {code}); see {log}:\n{Path(log).read_text()[-3000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_max_mib": usage.ru_maxrss / 1024,
            "rss_tree_mib": sampler.peak_kib / 1024}
