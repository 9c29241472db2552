"""Scale: the whole offline loop and the serving-side figures at 18, 100 and 1,000 domains (issue 10).

    python benchmarks/run.py bench=scale bench.work=/tmp/scale [bench.sizes=[hwu64,100,1000]] [bench.utterances=[8:10000,8:100000]]

For every size: prepare (wall time and peak memory of its process tree), the training
sweep of every domain (``scripts/train.py -m domain=all``, joblib ``n_jobs=2``), the
time to load every domain's live model from the registry, merge throughput
(``CrossDomainRanker.score_tables`` on the test tables), ``rank()`` latency on real
test utterances (their hypotheses come from their top domains) with every domain
loaded, and the resident memory of a process that holds every domain's model.
Synthetic sizes get enough utterances that every domain has at least 100 training
utterances. ``utterances`` adds corpora of one domain count and growing size.
Results go to ``<work>/scale.json`` and the plots to ``<work>/*.png``.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from benchmarks.measure import REPO, machine, run_measured, script, throughput
from rerank.io import read_json, write_json

#: settings of the large synthetic assistants (README: Many domains)
MANY = ["recognizers.family.dc_max_negatives=5000", "hypotheses.emit.max_domains=5"]


def utterances_for(n_domains: int, min_train: int = 100, seed: int = 0) -> int:
    """The smallest corpus (in steps of 10%) whose every domain has ``min_train`` training utterances."""
    from rerank.corpus.synthetic import iter_records

    n = max(2000, int(min_train * n_domains / 0.7 * 2))
    while True:
        c = Counter(r["scenario"] for r in iter_records(n, seed, n_domains=n_domains) if r["partition"] == "train")
        if len(c) == n_domains and min(c.values()) >= min_train:
            return n
        n = int(n * 1.1)


def probe(work: Path, name: str, rank_calls: int) -> dict:
    """Registry load, merge throughput and rank() latency, in this process."""
    from benchmarks.speed import rank_latency
    from rerank.hypotheses.tables import open_tables
    from rerank.merge.evaluate import load_split
    from rerank.merge.ranker import CrossDomainRanker
    from rerank.model.registry import Registry

    cfg = {"paths": {"data_dir": str(work / "data")}, "data": {"name": name, "format": "massive"}}
    tables = open_tables(cfg)
    t = time.perf_counter()
    ranker = CrossDomainRanker.from_registry(Registry(work / "registry"), tables.name, tables.domains)
    load_s = time.perf_counter() - t
    test = load_split(tables, "test")
    merge = throughput(lambda: ranker.score_tables(test.tables), len(test.utt_index), min_seconds=2.0)
    lat = rank_latency(ranker, test, rank_calls, tables.manifest["context_fields"], warmup=200)
    return {"domains": len(tables.domains), "test_hypotheses": int(len(test.utt_index)),
            "registry_load_seconds": load_s, "live_models": len(tables.domains) - len(ranker.fallbacks),
            "merge_hypotheses_per_second": merge["median_per_second"], "rank_p50_ms": lat["p50_ms"],
            "rank_p99_ms": lat["p99_ms"], "rank_calls": lat["utterances"], "hypotheses_per_utterance": lat["mean_hypotheses"],
            "utterances": sum(tables.manifest["splits"].values()),
            "hypotheses": sum(n for r in tables.manifest["rows"].values() for n in r.values())}


def holder_rss(work: Path, name: str) -> float:
    """Resident MB of a fresh process that holds every domain's live model (what a server holds)."""
    code = ("from rerank.merge.ranker import CrossDomainRanker; from rerank.model.registry import Registry; "
            f"r = Registry('{work / 'registry'}'); k = CrossDomainRanker.from_registry(r, '{name}'); "
            "print(next(int(x.split()[1]) for x in open('/proc/self/status') if x.startswith('VmRSS')))")
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout) / 1024


def run_size(label: str, data: list[str], work: Path, extra_prepare: list[str], sweep: bool, rank_calls: int,
             previous: dict | None = None) -> dict:
    """One size; with ``previous`` (the row of an earlier run on the same folder), only the serving-side figures again."""
    name = next((a.split("=", 1)[1] for a in data if a.startswith("data.name=")), None) or \
        next(a.split("=", 1)[1] for a in data if a.startswith("data="))
    if previous is not None:
        return {**previous, **probe(work, name, rank_calls), "holder_rss_mb": holder_rss(work, name)}
    work.mkdir(parents=True, exist_ok=True)
    row = {"label": label, "data": data}
    m = run_measured(script("prepare", *data, *extra_prepare, f"paths.output_dir={work}", "force=true"), work / "prepare.log", cwd=REPO)
    row.update(prepare_seconds=m["wall"], prepare_peak_mb=m["rss_tree_mib"], prepare_cpu_seconds=m["cpu"])
    print(f"scale {label}: prepare {m['wall']:.0f} s, peak {m['rss_tree_mib']:.0f} MB", flush=True)
    if sweep:
        s = run_measured(script("train", "-m", *[a for a in data if not a.startswith("data.path")], "domain=all",
                                f"paths.output_dir={work}", "hydra.launcher.n_jobs=2", "promote=force", "~logger"),
                         work / "train.log", cwd=REPO)
        fits = [float(x) for x in re.findall(r"timing .*?fit=([0-9.]+)", (work / "train.log").read_text())]
        row.update(sweep_seconds=s["wall"], sweep_peak_mb=s["rss_tree_mib"], fit_seconds_sum=sum(fits), jobs=len(fits))
        print(f"scale {label}: sweep {s['wall']:.0f} s ({len(fits)} jobs, fits {sum(fits):.0f} s)", flush=True)
    row.update(probe(work, name, rank_calls), data_name=name, holder_rss_mb=holder_rss(work, name))
    print(f"scale {label}: {json.dumps({k: v for k, v in row.items() if k != 'data'})}", flush=True)
    return row


def plots(rows: list[dict], growth: list[dict], work: Path) -> None:
    import matplotlib.pyplot as plt

    from rerank.plots import save

    if rows:
        x = [r["domains"] for r in rows]
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        axes[0].plot(x, [r["prepare_seconds"] for r in rows], "o-", label="prepare")
        axes[0].plot(x, [r.get("sweep_seconds", np.nan) for r in rows], "s-", label="training sweep")
        axes[0].plot(x, [r["registry_load_seconds"] for r in rows], "^-", label="registry load")
        axes[0].set_ylabel("seconds")
        axes[1].plot(x, [r["prepare_peak_mb"] for r in rows], "o-", label="prepare peak")
        axes[1].plot(x, [r["holder_rss_mb"] for r in rows], "^-", label="process with every model")
        axes[1].set_ylabel("MB")
        axes[2].plot(x, [r["merge_hypotheses_per_second"] / 1e6 for r in rows], "o-", label="merge (M hyps/s)")
        axes[2].plot(x, [r["rank_p99_ms"] for r in rows], "^-", label="rank() p99 (ms)")
        for ax in axes:
            ax.set_xscale("log"), ax.set_xlabel("domains"), ax.legend(fontsize=8), ax.grid(alpha=0.3)
        fig.suptitle("growth with the number of domains")
        fig.tight_layout()
        save(fig, work / "growth_domains.png")
    if growth:
        x = [r["utterances"] for r in growth]
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        axes[0].plot(x, [r["prepare_seconds"] for r in growth], "o-", label="prepare")
        axes[0].plot(x, [r.get("sweep_seconds", np.nan) for r in growth], "s-", label="training sweep")
        axes[0].set_ylabel("seconds")
        axes[1].plot(x, [r["prepare_peak_mb"] for r in growth], "o-", label="prepare peak")
        axes[1].set_ylabel("MB")
        axes[2].plot(x, [r["merge_hypotheses_per_second"] / 1e6 for r in growth], "o-", label="merge (M hyps/s)")
        for ax in axes:
            ax.set_xscale("log"), ax.set_xlabel("utterances"), ax.legend(fontsize=8), ax.grid(alpha=0.3)
        fig.suptitle("growth with the corpus (8 domains)")
        fig.tight_layout()
        save(fig, work / "growth_utterances.png")


def run(work: str, hwu64: str, sizes: Sequence = ("hwu64", 100, 1000), utterances: Sequence[str] = (), rank_calls: int = 3000,
        sweep: bool = True, probe_only: bool = False) -> int:
    """Every size in ``sizes`` (``hwu64`` or a number of synthetic domains), then every ``domains:utterances`` corpus."""
    work = Path(work).resolve()
    out = work / "scale.json"
    results = read_json(out) if out.exists() else {"domains": [], "utterances": []}
    print(f"# scale benchmark, {time.strftime('%Y-%m-%d %H:%M %Z')}\n# machine: {machine()}", flush=True)
    for size in sizes:
        earlier = {r["label"]: r for r in results["domains"]} if probe_only else {}
        if size == "hwu64":
            row = run_size("HWU64", ["data=hwu64", f"data.path={Path(hwu64).resolve()}"], work / "hwu64", [],
                           sweep, rank_calls, earlier.get("HWU64"))
        else:
            n_domains = int(size)
            label = f"synthetic, {n_domains} domains"
            n = utterances_for(n_domains) if label not in earlier else 0
            data = ["data=synthetic", f"data.name=synthetic_{n_domains}d", f"data.synthetic.n_domains={n_domains}",
                    f"data.synthetic.n_utterances={n}"]
            row = run_size(label, data, work / f"d{n_domains}", MANY, sweep, rank_calls, earlier.get(label))
        results["domains"] = [r for r in results["domains"] if r["label"] != row["label"]] + [row]
        results["domains"].sort(key=lambda r: r["domains"])
        write_json(out, results)
    for spec in utterances:
        d, n = (int(x) for x in str(spec).split(":"))
        data = ["data=synthetic", f"data.name=synthetic_{n}u", f"data.synthetic.n_domains={d}", f"data.synthetic.n_utterances={n}"]
        row = run_size(f"synthetic, {d} domains, {n} utterances", data, work / f"u{n}", [], sweep, rank_calls)
        results["utterances"] = [r for r in results["utterances"] if r["label"] != row["label"]] + [row]
        results["utterances"].sort(key=lambda r: r["utterances"])
        write_json(out, results)
    plots(results["domains"], results["utterances"], work)
    print("\n| corpus | domains | utterances | hypotheses | prepare s | prepare peak MB | sweep s | registry load s | "
          "merge M hyps/s | rank() p50 / p99 ms | RSS with every model MB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    for r in results["domains"] + results["utterances"]:
        print(f"| {r['label']} | {r['domains']} | {r['utterances']:,} | {r['hypotheses']:,} | {r['prepare_seconds']:.0f} | "
              f"{r['prepare_peak_mb']:.0f} | {r.get('sweep_seconds', float('nan')):.0f} | {r['registry_load_seconds']:.2f} | "
              f"{r['merge_hypotheses_per_second'] / 1e6:.2f} | {r['rank_p50_ms']:.2f} / {r['rank_p99_ms']:.2f} | "
              f"{r['holder_rss_mb']:.0f} |")
    return 0
