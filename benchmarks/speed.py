"""The speed figures of the benchmark suite: training throughput, sweeps, merge and rank() latency; its plots."""
from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.measure import latency, throughput, timed_sweep, utterance_pool
from rerank.merge.evaluate import SplitData
from rerank.merge.ranker import CrossDomainRanker

#: the overrides a training sweep takes from the benchmark's command line: which tables, where
TABLE_KEYS = ("data", "paths")


def rank_latency(ranker: CrossDomainRanker, test: SplitData, n: int, context_fields, warmup: int = 0) -> dict:
    """``rank()`` on the first ``n`` test utterances, one call each (after ``warmup`` calls)."""
    pool = utterance_pool(test.tables, context_fields, n)
    lat = latency(ranker.rank, pool, warmup=warmup)
    if not lat["calls"]:
        return {"utterances": 0}
    return {"utterances": lat["calls"], "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"],
            "mean_hypotheses": float(np.mean([len(h) for h in pool]))}


def peak_memory() -> dict:
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"self": self_kb / 1024, "largest_child": child_kb / 1024}


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def speed_figures(scfg, manifest, r2, r3, test: SplitData, bench_dir: Path, cfg, cli_overrides) -> dict:
    out: dict[str, Any] = {"prepare_seconds": manifest.get("seconds"),
                           "prepare_note": ("this run's build" if cfg.get("force", True)
                                            else "time of the build that made the cached tables (manifest['seconds'])")}
    out["train_hypotheses_per_second"] = {
        "R2": {d: r["hypotheses_per_second"] for d, r in r2["results"].items()},
        "R3": {d: r["hypotheses_per_second"] for d, r in r3["results"].items()},
    }
    out["train_seconds_per_domain"] = {"R2": dict(r2["train_seconds"]), "R3": dict(r3["train_seconds"])}
    out["sweep_sequential_seconds"] = r2["seconds"]
    out["sweep_sequential_note"] = "R2 over every domain, in-process loop of train(), no logger"
    n_jobs = int(scfg.get("n_jobs", 2))
    sweeps = []
    if scfg.get("joblib_sweep", True):
        sweeps.append(("sweep_joblib", sys.executable, [f"hydra.launcher.n_jobs={n_jobs}"], {"n_jobs": n_jobs}))
    # Ray conflicts with joblib on cloudpickle unless installed together (the [ray] extra), so it
    # may live in another environment: benchmark.speed.ray_python names its interpreter.
    ray_python = scfg.get("ray_python") or (sys.executable if _importable("hydra_plugins.hydra_ray_launcher") else None)
    if scfg.get("ray_sweep", True) and ray_python:
        sweeps.append(("sweep_ray", ray_python, ["hydra/launcher=ray"], {}))
    keep = [o for o in cli_overrides if o.lstrip("+~").split("=", 1)[0].split(".")[0].split("/")[0] in TABLE_KEYS
            and not o.startswith(("paths.registry_dir", "paths.log_dir"))]
    for key, python, launcher, extra in sweeps:
        where = [f"paths.registry_dir={bench_dir / 'registry' / key}", f"paths.log_dir={bench_dir / 'logs' / key}"]
        if not any(o.startswith("paths.output_dir") for o in keep):
            where.append(f"paths.output_dir={cfg['paths']['output_dir']}")
        out[key] = {**extra, **timed_sweep(launcher, *keep, *where, python=python),
                    "note": "subprocess: includes interpreter start, imports, the prepare cache check and the TensorBoard logger"}
    ranker = r3["ranker"]
    merge = throughput(lambda: ranker.score_tables(test.tables), len(test.utt_index))
    out["merge_hypotheses_per_second"] = merge["median_per_second"]
    out["merge_seconds"] = merge["median_seconds"]
    out["rank_latency"] = rank_latency(ranker, test, int(scfg.get("rank_utterances", 2000)), manifest["context_fields"])
    return out


def make_plots(bench_dir: Path, arrays, r3_ranker: CrossDomainRanker, joint, corpus) -> list[str]:
    from rerank.plots import feature_weights, reliability_diagram, save

    files = []
    save(reliability_diagram(arrays, title=f"{corpus} test: top hypothesis, calibrated rows"), bench_dir / "reliability.png")
    files.append("reliability.png")
    W = {d: w for d, s in r3_ranker.scorers.items() if (w := s.feature_weights()) is not None}
    if W:
        save(feature_weights(W, title="R3 (selected) per-domain weights, standardised"), bench_dir / "feature_weights.png")
        files.append("feature_weights.png")
    save(feature_weights(joint.feature_weights(), title="joint model weights, standardised"), bench_dir / "feature_weights_joint.png")
    files.append("feature_weights_joint.png")
    return files
