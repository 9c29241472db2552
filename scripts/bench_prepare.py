"""Benchmark of ``scripts/prepare.py`` (BENCHMARKS.md, section Prepare).

    python scripts/bench_prepare.py [--hwu64 ../shared/data/hwu64] [--n-utterances 100000]
                                    [--corpora hwu64 synthetic] [--root DIR] [--keep]
                                    [--check [--check-n 4000] [--check-hwu64]] [-- extra Hydra overrides]

Runs a fresh ``prepare`` (``force=true``, a new temporary ``paths.output_dir``)
of HWU64 and of the synthetic corpus with ``--n-utterances`` utterances, each
in a subprocess, and prints a markdown table: wall time, CPU time (user + sys
of the process and the worker processes it reaped), peak RSS of the largest
single process (``wait4``'s ``ru_maxrss``), peak RSS of the whole process tree
(``/proc``, sampled every 0.2 s: prepare plus its loky workers; shared pages
count once per process, so an upper bound), and the baseline/oracle test
SemER of ``summary.json``. The 1-minute load average before and after each run
is printed too: on a shared 2-core machine wall times are noisy.

``--check``: builds a small synthetic corpus (``--check-n``, default 4000
utterances) with ``recognizers.n_jobs=1`` and ``=2`` and checks that every
table and ``summary.json`` are identical; ``--check-hwu64`` adds HWU64.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rerank.benchmark.measure import TreeSampler, machine

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- one prepare run


def run_prepare(overrides: list[str], out: Path, log: Path, root: Path = ROOT) -> dict:
    """``<root>/scripts/prepare.py overrides`` into ``out``, measured; returns the figures."""
    cmd = [sys.executable, str(root / "scripts" / "prepare.py"), *overrides, f"paths.output_dir={out}", "force=true"]
    env = dict(os.environ)
    if root != ROOT:  # another copy of the code: its package before the installed one
        env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=root, stdout=fh, stderr=subprocess.STDOUT, env=env)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        sampler.stop()
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"prepare failed (exit {proc.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    data = next(p.parent for p in out.rglob("manifest.json"))
    manifest = json.loads((data / "manifest.json").read_text())
    summary = json.loads((data / "summary.json").read_text())
    test = summary["splits"]["test"]
    return {
        "corpus": manifest["corpus"],
        "utterances": sum(manifest["splits"].values()),
        "hypotheses": sum(n for rows in manifest["rows"].values() for n in rows.values()),
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_max_mib": usage.ru_maxrss / 1024,
        "rss_tree_mib": sampler.peak_kib / 1024,
        "baseline_semer": test["baseline"]["semer"],
        "baseline_irer": test["baseline"]["irer"],
        "oracle_semer": test["oracle"]["semer"],
        "hyps_per_utt": test["hypotheses_per_utterance"],
        "load": (load_before, os.getloadavg()[0]),
        "data_dir": data,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| corpus | utterances | hypotheses | wall s | CPU s | peak RSS MiB (largest process) | peak RSS MiB (process tree) "
        "| test baseline SemER | test oracle SemER | load avg before / after |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['utterances']:,} | {r['hypotheses']:,} | {r['wall']:.1f} | {r['cpu']:.1f} "
            f"| {r['rss_max_mib']:.0f} | {r['rss_tree_mib']:.0f} | {r['baseline_semer']:.4f} | {r['oracle_semer']:.4f} "
            f"| {r['load'][0]:.1f} / {r['load'][1]:.1f} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- n_jobs=1 vs 2


def same_tables(a: Path, b: Path) -> list[str]:
    """Differences between two prepared corpora (parquet tables and summary.json); empty if identical."""
    import pyarrow.parquet as pq

    fa = sorted(p.relative_to(a) for p in a.rglob("*.parquet"))
    fb = sorted(p.relative_to(b) for p in b.rglob("*.parquet"))
    problems = [f"only in one: {sorted(set(map(str, fa)) ^ set(map(str, fb)))}"] if fa != fb else []
    for f in sorted(set(fa) & set(fb)):
        ta, tb = pq.read_table(a / f), pq.read_table(b / f)
        if not ta.equals(tb):
            cols = [c for c in ta.column_names if c not in tb.column_names or not ta[c].equals(tb[c])]
            problems.append(f"{f}: {ta.num_rows} vs {tb.num_rows} rows, columns differing: {cols}")
    if json.loads((a / "summary.json").read_text()) != json.loads((b / "summary.json").read_text()):
        problems.append("summary.json differs")
    return problems


def check(name: str, overrides: list[str], tmp: Path) -> bool:
    dirs = {}
    for n_jobs in (1, 2):
        out = tmp / f"check_{name}_j{n_jobs}"
        r = run_prepare([*overrides, f"recognizers.n_jobs={n_jobs}"], out, tmp / f"check_{name}_j{n_jobs}.log")
        dirs[n_jobs] = r["data_dir"]
        print(f"check {name}: n_jobs={n_jobs}: {r['hypotheses']:,} hypotheses in {r['wall']:.1f} s")
    problems = same_tables(dirs[1], dirs[2])
    n = len(list(dirs[1].rglob("*.parquet")))
    print(f"check {name}: n_jobs=1 vs 2: " + ("all %d tables and summary.json identical" % n if not problems else "DIFFERENT"))
    for p in problems[:20]:
        print("   ", p)
    return not problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hwu64", default="../shared/data/hwu64", help="HWU64 folder (relative to the repository root)")
    ap.add_argument("--n-utterances", type=int, default=100_000, help="size of the synthetic corpus")
    ap.add_argument("--corpora", nargs="+", default=["hwu64", "synthetic"], choices=["hwu64", "synthetic"])
    ap.add_argument("--check", action="store_true", help="check n_jobs=1 vs 2 give identical tables, then exit")
    ap.add_argument("--check-n", type=int, default=4000, help="synthetic corpus size of --check")
    ap.add_argument("--check-hwu64", action="store_true", help="--check on HWU64 too")
    ap.add_argument("--keep", action="store_true", help="keep the temporary output directories")
    ap.add_argument("--root", default=str(ROOT),
                    help="the copy of the project whose scripts/prepare.py and rerank package run (e.g. a copy of the "
                         "code before a change; default: this one)")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run (after --)")
    args = ap.parse_args()

    hwu = Path(args.hwu64)
    hwu = hwu if hwu.is_absolute() else (ROOT / hwu).resolve()
    tmp = Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    print(f"# prepare benchmark, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"# machine: {machine()}")
    print(f"# code: {Path(args.root).resolve()}; output under {tmp}")
    try:
        if args.check or args.check_hwu64:
            ok = check("synthetic", [f"data.synthetic.n_utterances={args.check_n}", *args.overrides], tmp)
            if args.check_hwu64:
                ok &= check("hwu64", ["data=hwu64", f"data.path={hwu}", *args.overrides], tmp)
            return 0 if ok else 1
        runs = {
            "hwu64": ("HWU64", ["data=hwu64", f"data.path={hwu}"]),
            "synthetic": (f"synthetic {args.n_utterances // 1000}k", [f"data.synthetic.n_utterances={args.n_utterances}"]),
        }
        rows = []
        for key in args.corpora:
            label, overrides = runs[key]
            print(f"running prepare: {label} ...", flush=True)
            r = run_prepare([*overrides, *args.overrides], tmp / key, tmp / f"{key}.log", Path(args.root).resolve())
            r["label"] = label
            rows.append(r)
            print(f"  {r['wall']:.1f} s wall, {r['cpu']:.1f} s CPU, peak RSS {r['rss_tree_mib']:.0f} MiB (tree)", flush=True)
        print()
        print(table(rows))
        return 0
    finally:
        if args.keep:
            print(f"# kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
