"""Speed of ``prepare`` (BENCHMARKS.md, Prepare): ``python benchmarks/run.py bench=prepare``.

A fresh ``prepare`` (``force=true``, a new temporary ``paths.output_dir``) of HWU64 and of
the synthetic corpus with ``n_utterances`` utterances, each in a subprocess: wall time, CPU
time (the process and the workers it reaped), peak RSS of the largest process and of the
whole process tree (sampled; shared pages count once per process, so an upper bound), and
the test baseline/oracle SemER of ``summary.json``. The load average before and after each
run is printed too: on a shared 2-core machine wall times are noisy.

``check=true``: builds a small synthetic corpus (``check_n`` utterances) with
``recognizers.n_jobs=1`` and ``=2`` and checks that every table and ``summary.json`` are
identical; ``check_hwu64=true`` adds HWU64.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Sequence

from benchmarks.measure import REPO, machine, run_measured, script


def run_prepare(overrides: Sequence[str], out: Path, log: Path, root: Path = REPO) -> dict:
    """``<root>/scripts/prepare.py overrides`` into ``out``, measured; returns the figures."""
    cmd = script("prepare", *overrides, f"paths.output_dir={out}", "force=true")
    env = dict(os.environ)
    if root != REPO:  # another copy of the code: its scripts and its package before the installed one
        cmd[1] = str(root / "scripts" / "prepare.py")
        env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    load_before = os.getloadavg()[0]
    m = run_measured(cmd, log, cwd=root, env=env)
    data = next(p.parent for p in out.rglob("manifest.json"))
    manifest = json.loads((data / "manifest.json").read_text())
    test = json.loads((data / "summary.json").read_text())["splits"]["test"]
    return {
        **m,
        "corpus": manifest["corpus"],
        "utterances": sum(manifest["splits"].values()),
        "hypotheses": sum(n for rows in manifest["rows"].values() for n in rows.values()),
        "baseline_semer": test["baseline"]["semer"],
        "oracle_semer": test["oracle"]["semer"],
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


def check_identical(name: str, overrides: Sequence[str], tmp: Path) -> bool:
    """Build ``name`` with 1 and 2 recognizer jobs; True if the tables are identical."""
    dirs = {}
    for n_jobs in (1, 2):
        r = run_prepare([*overrides, f"recognizers.n_jobs={n_jobs}"], tmp / f"check_{name}_j{n_jobs}", tmp / f"check_{name}_j{n_jobs}.log")
        dirs[n_jobs] = r["data_dir"]
        print(f"check {name}: n_jobs={n_jobs}: {r['hypotheses']:,} hypotheses in {r['wall']:.1f} s")
    problems = same_tables(dirs[1], dirs[2])
    n = len(list(dirs[1].rglob("*.parquet")))
    print(f"check {name}: n_jobs=1 vs 2: " + (f"all {n} tables and summary.json identical" if not problems else "DIFFERENT"))
    for p in problems[:20]:
        print("   ", p)
    return not problems


def run(hwu64: str, n_utterances: int = 100_000, corpora: Sequence[str] = ("hwu64", "synthetic"), check: bool = False,
        check_n: int = 4000, check_hwu64: bool = False, keep: bool = False, root: str | None = None,
        overrides: Sequence[str] = ()) -> int:
    hwu = Path(hwu64).resolve()
    code = Path(root).resolve() if root else REPO
    tmp = Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    print(f"# prepare benchmark, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n# machine: {machine()}")
    print(f"# code: {code}; output under {tmp}")
    try:
        if check or check_hwu64:
            ok = check_identical("synthetic", [f"data.synthetic.n_utterances={check_n}", *overrides], tmp)
            if check_hwu64:
                ok &= check_identical("hwu64", ["data=hwu64", f"data.path={hwu}", *overrides], tmp)
            return 0 if ok else 1
        runs = {"hwu64": ("HWU64", ["data=hwu64", f"data.path={hwu}"]),
                "synthetic": (f"synthetic {n_utterances // 1000}k", [f"data.synthetic.n_utterances={n_utterances}"])}
        rows = []
        for key in corpora:
            if key not in runs:
                raise ValueError(f"bench.corpora: {key!r} is not one of {sorted(runs)}")
            label, data = runs[key]
            print(f"running prepare: {label} ...", flush=True)
            r = run_prepare([*data, *overrides], tmp / key, tmp / f"{key}.log", code)
            rows.append({**r, "label": label})
            print(f"  {r['wall']:.1f} s wall, {r['cpu']:.1f} s CPU, peak RSS {r['rss_tree_mib']:.0f} MiB (tree)", flush=True)
        print("\n" + table(rows))
        return 0
    finally:
        if keep:
            print(f"# kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
