"""Release planning at scale: how many domains stay on the baseline, live against newest, the plan's time and memory.

    python benchmarks/run.py bench=release bench.work=/tmp/release [bench.sizes=[200,1000]]

For every size (a synthetic assistant of that many domains): prepare, a sweep of every
domain that only publishes (``promote=none``), then one ``scripts/release.py`` over every
pending candidate (wall time and peak memory of its process), and the test split's SemER
of four worlds: the baseline, the live state after the release, every domain's newest
version, and the oracle. Results go to ``<work>/release.json``.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from benchmarks.measure import REPO, machine, run_measured, script
from benchmarks.scale import MANY, utterances_for
from rerank.io import read_json, write_json


def test_worlds(work: Path, name: str) -> dict:
    """Test SemER of the baseline, the live state, the newest versions and the oracle; the gap each closes."""
    from rerank.hypotheses.figures import oracle_score, top_hypothesis_outcome
    from rerank.hypotheses.tables import open_tables
    from rerank.merge.gate import GateLimits
    from rerank.merge.world import World
    from rerank.model.registry import Registry

    tables = open_tables({"paths": {"data_dir": str(work / "data")}, "data": {"name": name, "format": "massive"}})
    reg = Registry(work / "registry")
    world = World(tables, reg, GateLimits(split="test", bootstrap=0))
    data = world.data

    def semer(score) -> float:
        _, errors, _ = top_hypothesis_outcome(data.utt_index, score, data.sem_errors, data.ie, data.totals)
        return float(np.sum(errors) / data.totals.sum())

    newest = {d: (reg.versions(name, d) or [None])[-1] for d in tables.domains}
    out = {"baseline": semer(world.world_scores({d: None for d in tables.domains})), "live": semer(world.base),
           "newest": semer(world.world_scores(newest)), "oracle": semer(oracle_score(data.semer))}
    gap = out["baseline"] - out["oracle"]
    out.update({f"{k}_gap_closed": (out["baseline"] - out[k]) / gap for k in ("live", "newest")})
    out["domains_on_baseline"] = sum(world.live[d] is None for d in tables.domains)
    out["domains_with_a_version"] = sum(v is not None for v in newest.values())
    return out


def run_size(n_domains: int, work: Path, fresh: bool, n_utterances: int | None = None) -> dict:
    name = f"synthetic_{n_domains}d"
    n = n_utterances or utterances_for(n_domains)
    data = ["data=synthetic", f"data.name={name}", f"data.synthetic.n_domains={n_domains}", f"data.synthetic.n_utterances={n}"]
    work.mkdir(parents=True, exist_ok=True)
    row: dict = {"domains": n_domains, "utterances": n}
    if fresh or not (work / "data" / name / "manifest.json").exists():
        m = run_measured(script("prepare", *data, *MANY, f"paths.output_dir={work}", "force=true"), work / "prepare.log", cwd=REPO)
        row["prepare_seconds"] = m["wall"]
        print(f"release bench {n_domains}: prepare {m['wall']:.0f} s", flush=True)
    if fresh or not (work / "registry").exists():
        s = run_measured(script("train", "-m", *data, "domain=all", f"paths.output_dir={work}", "hydra.launcher.n_jobs=2",
                                "promote=none", "~logger"), work / "train.log", cwd=REPO)
        row["sweep_seconds"] = s["wall"]
        print(f"release bench {n_domains}: sweep {s['wall']:.0f} s", flush=True)
    r = run_measured(script("release", *data, f"paths.output_dir={work}"), work / "release.log", cwd=REPO)
    text = (work / "release.log").read_text()
    plan = re.search(r"release \S+: (\d+) moves .*?; (\d+) units refused; dev SemER ([0-9.]+) -> ([0-9.]+); plan ([0-9.]+) s", text)
    row.update(release_wall_seconds=r["wall"], release_peak_mb=r["rss_max_mib"], plan_seconds=float(plan.group(5)),
               moves=int(plan.group(1)), refused_units=int(plan.group(2)), dev_semer=[float(plan.group(3)), float(plan.group(4))])
    row.update(test_worlds(work, name))
    print(f"release bench {n_domains}: {json.dumps(row)}", flush=True)
    return row


def run(work: str, sizes: Sequence[int] = (200, 1000), fresh: bool = False, utterances: dict | None = None) -> int:
    """``utterances``: {domains: utterances} of a corpus (default: enough for 100 training utterances a domain)."""
    work_dir = Path(work).resolve()
    out = work_dir / "release.json"
    results = read_json(out) if out.exists() else []
    print(f"# release benchmark, {time.strftime('%Y-%m-%d %H:%M %Z')}\n# machine: {machine()}", flush=True)
    for size in sizes:
        row = run_size(int(size), work_dir / f"d{int(size)}", fresh, (utterances or {}).get(int(size)))
        results = [r for r in results if r["domains"] != row["domains"]] + [row]
        write_json(out, sorted(results, key=lambda r: r["domains"]))
    print("\n| domains | utterances | moves | refused | on the baseline | plan s | release process s | peak MB | "
          "test SemER baseline / live / newest / oracle | gap closed live / newest |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for r in sorted(results, key=lambda r: r["domains"]):
        print(f"| {r['domains']} | {r['utterances']:,} | {r['moves']} | {r['refused_units']} | {r['domains_on_baseline']} | "
              f"{r['plan_seconds']:.1f} | {r['release_wall_seconds']:.1f} | {r['release_peak_mb']:.0f} | "
              f"{r['baseline']:.4f} / {r['live']:.4f} / {r['newest']:.4f} / {r['oracle']:.4f} | "
              f"{100 * r['live_gap_closed']:.1f}% / {100 * r['newest_gap_closed']:.1f}% |")
    return 0
