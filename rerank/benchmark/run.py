"""``run_benchmark(cfg)``: prepare, train every variant, the alternatives, the async update, speed; report."""
from __future__ import annotations

import logging
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from rerank.benchmark import alternatives as alt
from rerank.benchmark.report import render_report, update_benchmarks_md
from rerank.benchmark.runs import Trainer, ranker_from
from rerank.hypotheses.figures import baseline_score, oracle_score, top_hypothesis_figures
from rerank.hypotheses.prepare import prepare
from rerank.hypotheses.tables import open_tables
from rerank.io import read_json, write_json, write_text
from rerank.merge.evaluate import SplitData, evaluate, load_split
from rerank.merge.ranker import CrossDomainRanker
from rerank.model.features import spec_from_manifest

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
#: the overrides a training sweep takes from the benchmark's command line: which tables, where
TABLE_KEYS = ("data", "paths")


def _fmt_num(x: float) -> str:
    return f"{x:g}"


def _row(name: str, kind: str, result: Mapping | None, *, train_seconds: float | None, retrain_alone: str,
         calibrated: bool, status: str = "ok", settings: Mapping | None = None) -> dict:
    row = {"name": name, "kind": kind, "status": status, "calibrated": calibrated, "train_seconds": train_seconds,
           "retrain_alone": retrain_alone, "settings": dict(settings or {})}
    if result is not None:
        o = result["overall"]
        row.update({k: o.get(k) for k in ("semer", "semer_ci", "irer", "irer_ci", "domain_error", "intent_error", "slot_f1",
                                         "ece", "ece_ci", "mce", "brier", "nll")})
        if not calibrated:
            row.update(ece=None, ece_ci=None, mce=None, brier=None, nll=None)
        row["per_domain"] = {d: {k: m.get(k) for k in ("semer", "irer", "ece")} for d, m in result["per_domain"].items()}
    return row


def machine() -> str:
    import os
    import platform

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor()) \
        if Path("/proc/cpuinfo").exists() else platform.processor()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Python {platform.python_version()}"


def dev_semer(dev: SplitData, score: np.ndarray) -> float:
    return top_hypothesis_figures(dev.utt_index, score, dev.sem_errors, dev.ie, dev.totals)["semer"]


def run_scaling_only(cfg: Mapping[str, Any]) -> dict:
    """``benchmark.scaling_only=true``: only the scaling sizes, merged into the synthetic results.json.

    For a size too slow to run with the whole suite, e.g. 1M utterances with
    ``benchmark.trainer_overrides=['trainer.max_epochs=3']`` (the note column says so).
    """
    b = cfg["benchmark"]
    bench_dir = Path(b["dir"]) / "synthetic"
    rows = run_scaling(cfg, b, bench_dir)
    note = " ".join(b.get("trainer_overrides") or [])
    for r in rows:
        r["note"] = note
    path = bench_dir / "results.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the synthetic suite first (python scripts/benchmark.py)")
    results = read_json(path)
    sizes = {r["utterances"] for r in rows}
    results["scaling"] = sorted([r for r in results.get("scaling") or [] if r["utterances"] not in sizes] + rows,
                                key=lambda r: r["utterances"])
    write_json(path, results)
    write_text(bench_dir / "report.md", render_report(results))
    if cfg.get("write_benchmarks_md"):
        update_benchmarks_md(benchmarks_md_path(cfg), results)
    return results


def benchmarks_md_path(cfg: Mapping[str, Any]) -> Path:
    path = Path(cfg.get("benchmarks_md") or "BENCHMARKS.md")
    return path if path.is_absolute() else REPO / path


def run_benchmark(cfg: Mapping[str, Any], cli_overrides: Sequence[str] = ()) -> dict:
    """The whole suite on ``cfg.data``; returns the results dict written to ``results.json``."""
    if cfg["benchmark"].get("scaling_only"):
        return run_scaling_only(cfg)
    t_start = time.perf_counter()
    b = cfg["benchmark"]
    seed, n_boot = int(cfg.get("seed", 0)), int(b.get("bootstrap", 1000))
    if cfg["data"].get("format") != "tables":
        # The explicit first step, as in `make run`. A fresh build by default: the prepare time in
        # the speed table is then this run's, on this machine.
        prepare(cfg, force=bool(cfg.get("force", True)))
    tables = open_tables(cfg)  # data=tables: imported ones, read as they are
    manifest = tables.manifest
    corpus, domains = manifest["corpus"], list(manifest["domains"])
    bench_dir = Path(b["dir"]) / corpus
    bench_dir.mkdir(parents=True, exist_ok=True)
    specs = {d: spec_from_manifest(manifest, d) for d in domains}
    train_split, dev, test = (load_split(tables, s) for s in ("train", "dev", "test"))
    trainer = Trainer(cfg, bench_dir, domains)
    rows: list[dict] = []
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # calibrated rows' top-hypothesis (conf, correct) on test
    runs: dict[str, dict] = {}
    selection: dict[str, Any] = {}

    def evaluate_row(name, kind, score, calibrated, **kw) -> dict:
        res = evaluate(test, score, calibrated, n_boot, seed)
        if calibrated:
            arrays[name] = (res["_arrays"]["conf"], res["_arrays"]["correct"])
        row = _row(name, kind, res, calibrated=calibrated, **kw)
        rows.append(row)
        print(f"benchmark: {name:<46} test SemER {row['semer']:.4f} IRER {row['irer']:.4f}"
              + (f" ECE {row['ece']:.4f}" if row.get("ece") is not None else ""), flush=True)
        return res

    def train_variant(variant, overrides, **kw) -> dict:
        run = trainer.run(variant, overrides, **kw)
        run["ranker"] = ranker_from(run, corpus, domains, specs)
        run["dev_semer"] = dev_semer(dev, run["ranker"].score_tables(dev.tables).score)
        runs[variant] = run
        print(f"benchmark: trained {variant} ({run['seconds']:.1f} s): dev SemER {run['dev_semer']:.4f}", flush=True)
        return run

    def utterance_rows(label: str, tag: str, base: list[str], settings: dict, domain_variant: str) -> None:
        """The two candidates=utterance rows of a loss: competitors from the baseline, then live models."""
        if not b.get("utterance_candidates", True):
            for comp in ("baseline", "live"):
                rows.append(_row(f"{label}, candidates=utterance, competitors={comp}", "per-domain", None, train_seconds=None,
                                 retrain_alone="yes", calibrated=True, status="skipped (benchmark.utterance_candidates=false)"))
            return
        for comp, kw, shown in (("baseline", {}, "baseline"),
                                ("live", {"competitors_from": trainer.registry_dir(domain_variant)}, f"live ({tag} candidates=domain)")):
            run = train_variant(f"{tag}_utterance_{comp}", [*base, "loss.candidates=utterance", f"loss.competitors={comp}"], **kw)
            evaluate_row(f"{label}, candidates=utterance, competitors={comp}", "per-domain", run["ranker"].score_tables(test.tables).score, True,
                         train_seconds=run["seconds"], retrain_alone="yes",
                         settings={**settings, "candidates": "utterance", "competitors": shown})

    # ------------------------------------------------------------ baseline
    base_test = baseline_score(*(np.concatenate([test.tables[d][c].to_numpy() for d in test.domains]) for c in ("dc", "ic", "ner")))
    evaluate_row("unweighted baseline (dc*ic*ner)", "baseline", base_test, True, train_seconds=0.0,
                            retrain_alone="yes (nothing to train)")

    # ------------------------------------------------------------ R1: temperature on dev
    temps = [float(t) for t in b["temperatures"]]
    r1 = {t: train_variant(f"R1_domain_T{_fmt_num(t)}", ["loss=semer", f"loss.temperature={t}", "loss.candidates=domain"]) for t in temps}
    t_r1 = min(temps, key=lambda t: (r1[t]["dev_semer"], temps.index(t)))
    selection["R1"] = {"temperature": t_r1, "dev_semer": {_fmt_num(t): r1[t]["dev_semer"] for t in temps},
                       "grid_seconds": sum(r["seconds"] for r in r1.values())}
    best_r1 = r1[t_r1]
    evaluate_row(f"R1 semer, candidates=domain (T={_fmt_num(t_r1)})", "per-domain", best_r1["ranker"].score_tables(test.tables).score, True,
                 train_seconds=best_r1["seconds"], retrain_alone="yes", settings={"loss": "semer", "candidates": "domain", "temperature": t_r1})
    utterance_rows("R1 semer", "R1", ["loss=semer", f"loss.temperature={t_r1}"], {"loss": "semer", "temperature": t_r1},
                   f"R1_domain_T{_fmt_num(t_r1)}")

    # ------------------------------------------------------------ R2
    r2 = train_variant("R2", ["loss=crossentropy"])
    evaluate_row("R2 crossentropy", "per-domain", r2["ranker"].score_tables(test.tables).score, True,
                 train_seconds=r2["seconds"], retrain_alone="yes", settings={"loss": "crossentropy"})

    # ------------------------------------------------------------ R3: alpha x temperature on dev
    alphas = [float(a) for a in b["alphas"]]
    grid = {}
    for a in alphas:
        for t in temps:
            grid[(a, t)] = train_variant(f"R3_domain_a{_fmt_num(a)}_T{_fmt_num(t)}",
                                         ["loss=combined", f"loss.alpha={a}", f"loss.temperature={t}", "loss.candidates=domain"])
    keys = list(grid)
    a_r3, t_r3 = min(keys, key=lambda k: (grid[k]["dev_semer"], keys.index(k)))
    selection["R3"] = {"alpha": a_r3, "temperature": t_r3,
                       "dev_semer": {f"alpha={_fmt_num(a)},T={_fmt_num(t)}": r["dev_semer"] for (a, t), r in grid.items()},
                       "grid_seconds": sum(r["seconds"] for r in grid.values())}
    best_r3 = grid[(a_r3, t_r3)]
    r3_name = f"R3 combined, candidates=domain (alpha={_fmt_num(a_r3)}, T={_fmt_num(t_r3)})"
    r3_res = evaluate_row(r3_name, "per-domain", best_r3["ranker"].score_tables(test.tables).score, True,
                          train_seconds=best_r3["seconds"], retrain_alone="yes",
                          settings={"loss": "combined", "candidates": "domain", "alpha": a_r3, "temperature": t_r3})
    r3_base = ["loss=combined", f"loss.alpha={a_r3}", f"loss.temperature={t_r3}"]
    utterance_rows("R3 combined", "R3", r3_base, {"loss": "combined", "alpha": a_r3, "temperature": t_r3},
                   f"R3_domain_a{_fmt_num(a_r3)}_T{_fmt_num(t_r3)}")

    # ------------------------------------------------------------ the same, Platt-scaled on each domain's own dev
    if b.get("platt_rows", True):
        run = train_variant("R2_platt", ["loss=crossentropy", "calibration=platt"])
        evaluate_row("R2 crossentropy + Platt on dev", "per-domain", run["ranker"].score_tables(test.tables).score, True,
                     train_seconds=run["seconds"], retrain_alone="yes", settings={"loss": "crossentropy", "calibration": "platt"})
        best_u = [*r3_base, "loss.candidates=utterance", "loss.competitors=baseline"] if b.get("utterance_candidates", True) \
            else [*r3_base, "loss.candidates=domain"]
        run = train_variant("R3_platt", [*best_u, "calibration=platt"])
        evaluate_row("R3 combined" + (", candidates=utterance, competitors=baseline" if b.get("utterance_candidates", True) else "")
                     + " + Platt on dev", "per-domain", run["ranker"].score_tables(test.tables).score, True,
                     train_seconds=run["seconds"], retrain_alone="yes",
                     settings={"loss": "combined", "alpha": a_r3, "temperature": t_r3, "calibration": "platt"})

    # ------------------------------------------------------------ the MLP re-ranker (model=mlp), same losses and settings
    if b.get("mlp_rows", True):
        run = train_variant("R2_mlp", ["loss=crossentropy", "model=mlp"])
        evaluate_row("R2 crossentropy, MLP", "per-domain", run["ranker"].score_tables(test.tables).score, True,
                     train_seconds=run["seconds"], retrain_alone="yes", settings={"loss": "crossentropy", "model": "mlp"})
        run = train_variant("R3_mlp", [*r3_base, "loss.candidates=domain", "model=mlp"])
        evaluate_row(f"R3 combined, candidates=domain, MLP (alpha={_fmt_num(a_r3)}, T={_fmt_num(t_r3)})", "per-domain",
                     run["ranker"].score_tables(test.tables).score, True, train_seconds=run["seconds"], retrain_alone="yes",
                     settings={"loss": "combined", "candidates": "domain", "alpha": a_r3, "temperature": t_r3, "model": "mlp"})

    # ------------------------------------------------------------ Platt
    params, platt_s = alt.fit_platt(dev.tables, seed)
    evaluate_row("Platt-scaled baseline (per domain, fit on dev)", "post-hoc", alt.platt_scores(test.tables, params), True,
                 train_seconds=platt_s, retrain_alone="yes", settings={"params": {d: list(p) for d, p in params.items()}})

    # ------------------------------------------------------------ joint model
    joint = alt.JointModel(specs)
    jcfg = b.get("joint") or {}
    jinfo = joint.fit(train_split.tables, alpha=a_r3, temperature=t_r3, l2=float(jcfg.get("l2", 1e-4)),
                      max_iter=int(jcfg.get("max_iter", 200)), seed=seed)
    selection["joint"] = {k: v for k, v in jinfo.items() if k != "seconds"}
    selection["joint"]["dev_semer"] = dev_semer(dev, joint.scores(dev.tables))
    evaluate_row(f"joint model, cross-domain softmax (alpha={_fmt_num(a_r3)}, T={_fmt_num(t_r3)})", "joint", joint.scores(test.tables), True,
                 train_seconds=jinfo["seconds"], retrain_alone="no", settings={"alpha": a_r3, "temperature": t_r3, "loss": "combined"})

    # ------------------------------------------------------------ LambdaMART
    if not b.get("lightgbm", True):
        rows.append(_row("LightGBM LambdaMART", "joint", None, train_seconds=None, retrain_alone="no", calibrated=False, status="disabled"))
    elif not alt.lightgbm_available():
        rows.append(_row("LightGBM LambdaMART", "joint", None, train_seconds=None, retrain_alone="no", calibrated=False, status="not installed"))
        print("benchmark: LightGBM LambdaMART: not installed (pip install -e '.[lightgbm]')")
    else:
        gbm, gbm_s = alt.fit_lambdamart(train_split.tables, dev.tables, domains, seed)
        evaluate_row("LightGBM LambdaMART", "joint", alt.lambdamart_scores(gbm, test.tables, domains), False,
                     train_seconds=gbm_s, retrain_alone="no")

    # ------------------------------------------------------------ oracle
    evaluate_row("oracle", "oracle", oracle_score(test.semer), False, train_seconds=None, retrain_alone="-")

    base_semer = rows[0]["semer"]
    oracle_semer = rows[-1]["semer"]
    for r in rows:
        if r.get("semer") is not None and base_semer > oracle_semer:
            r["gap_closed"] = (base_semer - r["semer"]) / (base_semer - oracle_semer)
        else:
            r["gap_closed"] = None

    # ------------------------------------------------------------ asynchronous update
    async_update = None
    if (b.get("async_update") or {}).get("enabled", True):
        async_update = asynchronous_update(b["async_update"], trainer, best_r3, r3_res, test, corpus, domains, specs,
                                           ["loss=combined", f"loss.alpha={a_r3}", f"loss.temperature={t_r3}", "loss.candidates=domain"],
                                           n_boot, seed, tables=tables, gate_cfg=cfg["gate"])

    # ------------------------------------------------------------ speed
    speed = speed_figures(b.get("speed") or {}, manifest, r2, best_r3, test, bench_dir, cfg, cli_overrides)
    scaling = run_scaling(cfg, b, bench_dir) if b.get("scaling") else None

    # ------------------------------------------------------------ plots
    plots = make_plots(bench_dir, arrays, best_r3["ranker"], joint, corpus)

    results = {
        "corpus": corpus,
        "utterances": {"train": train_split.n_utterances, "dev": dev.n_utterances, "test": test.n_utterances},
        "hypotheses": {"train": int(len(train_split.utt_index)), "dev": int(len(dev.utt_index)), "test": int(len(test.utt_index))},
        "domains": domains,
        "bootstrap": n_boot,
        "rows": rows,
        "selection": selection,
        "async_update": async_update,
        "speed": speed,
        "scaling": scaling,
        "plots": plots,
        "seconds": None,
        "config": {k: cfg[k] for k in ("benchmark", "data", "recognizers", "hypotheses", "seed") if k in cfg},
        "command": " ".join(["python scripts/benchmark.py", *cli_overrides]),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    speed["peak_rss_mb"] = peak_memory()
    write_json(bench_dir / "results.json", results)
    text = render_report(results)
    write_text(bench_dir / "report.md", text)
    print(f"benchmark: wrote {bench_dir / 'report.md'} and results.json in {results['seconds']} s")
    if cfg.get("write_benchmarks_md"):
        path = benchmarks_md_path(cfg)
        update_benchmarks_md(path, results)
        print(f"benchmark: updated the section of {corpus} in {path}")
    results["report_dir"] = str(bench_dir)
    return results


def asynchronous_update(acfg, trainer: Trainer, base_run, base_res, test: SplitData, corpus, domains, specs, overrides, n_boot, seed,
                        tables=None, gate_cfg=None) -> dict:
    """Retrain one domain of the selected R3 system with changed settings; publish; gate; merge; compare.

    The other domains' selected versions are live; the retrained version is a candidate that the
    promotion gate (on dev) makes live or refuses. "after" is what the candidate would do on test;
    "live after the gate" is what would serve.
    """
    from rerank.merge.promote import promote_version
    from rerank.model.registry import Registry

    counts = {d: int((test.gold_domain == d).sum()) for d in domains}
    domain = acfg.get("domain") or max(domains, key=lambda d: (counts[d], -domains.index(d)))
    change = list(acfg.get("change") or ["model=mlp"])
    reg = trainer.registry_dir("async_update")
    if reg.exists():
        shutil.rmtree(reg)
    base_reg = Path(base_run["registries"][domains[0]])
    shutil.copytree(base_reg, reg)
    registry = Registry(reg)
    for d in domains:
        if (v := registry.resolve(corpus, d, "latest")) is not None:
            registry.set_live(corpus, d, v, action="promote", verdict="benchmark: the selected R3 system", forced=True)
    before_ranker = CrossDomainRanker.from_registry(reg, corpus, domains, specs=specs)
    before = before_ranker.score_tables(test.tables).score
    versions_before = {d: s.version for d, s in before_ranker.scorers.items()}
    t0 = time.perf_counter()
    run = trainer.run("async_update", [*overrides, *change], domains=[domain], fresh=False)
    candidate = run["results"][domain]["version"]
    after_ranker = CrossDomainRanker.from_registry(reg, corpus, domains, versions={domain: candidate}, specs=specs)
    after = after_ranker.score_tables(test.tables).score
    update_seconds = time.perf_counter() - t0
    gate = None
    if tables is not None and gate_cfg is not None:
        t1 = time.perf_counter()
        gate = promote_version(tables, registry, domain, candidate, gate_cfg)
        gate["seconds"] = time.perf_counter() - t1
    code = test.domains.index(domain)
    others = test.domain_code != code
    after_res = evaluate(test, after, True, n_boot, seed)
    per_domain = {}
    for d in sorted(base_res["per_domain"]):
        b0, a0 = base_res["per_domain"][d], after_res["per_domain"].get(d, {})
        per_domain[d] = {k: {"before": b0.get(k), "after": a0.get(k)} for k in ("semer", "irer", "ece")}
    return {
        "domain": domain, "change": change,
        "versions_before": versions_before, "versions_after": {d: s.version for d, s in after_ranker.scorers.items()},
        "other_domains_bit_identical": bool(np.array_equal(before[others], after[others])),
        "other_domain_rows": int(others.sum()),
        "updated_domain_rows_changed": int((before[~others] != after[~others]).sum()),
        "updated_domain_rows": int((~others).sum()),
        "overall": {k: {"before": base_res["overall"].get(k), "after": after_res["overall"].get(k)} for k in ("semer", "irer", "ece", "brier")},
        "per_domain": per_domain,
        "gate": gate,
        "update_seconds": update_seconds, "update_train_seconds": run["seconds"],
        "full_retrain_seconds": base_run["seconds"],
        "full_retrain_seconds_of_that_domain": base_run["train_seconds"].get(domain),
    }


def rank_latency(ranker: CrossDomainRanker, test: SplitData, n: int) -> dict:
    per_utt: dict[int, list] = {}
    for d in test.domains:
        for rec in test.tables[d].to_pylist():
            if rec["utt_index"] < n:
                per_utt.setdefault(rec["utt_index"], []).append(rec)
    times = []
    for recs in per_utt.values():
        t = time.perf_counter()
        ranker.rank(recs)
        times.append(time.perf_counter() - t)
    if not times:
        return {"utterances": 0}
    times.sort()
    return {"utterances": len(times), "p50_ms": 1e3 * statistics.median(times),
            "p99_ms": 1e3 * times[min(len(times) - 1, int(np.ceil(0.99 * len(times))) - 1)],
            "mean_hypotheses": float(np.mean([len(r) for r in per_utt.values()]))}


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
                           "prepare_note": "this run's build" if cfg.get("force", True) else "time of the build that made the cached tables (manifest['seconds'])"}
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
        cmd = [python, str(REPO / "scripts" / "train.py"), "-m", "domain=all", "loss=crossentropy", *launcher, *keep,
               f"paths.registry_dir={bench_dir / 'registry' / key}", f"paths.log_dir={bench_dir / 'logs' / key}"]
        if not any(o.startswith("paths.output_dir") for o in keep):
            cmd.append(f"paths.output_dir={cfg['paths']['output_dir']}")
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        secs = time.perf_counter() - t
        out[key] = {**extra, "seconds": secs, "returncode": proc.returncode, "command": " ".join(cmd[1:]),
                    "note": "subprocess: includes interpreter start, imports, the prepare cache check and the TensorBoard logger"}
        if proc.returncode != 0:
            out[key]["stderr_tail"] = proc.stderr[-2000:]
    ranker = r3["ranker"]
    t = time.perf_counter()
    reps = 0
    while reps < 3 or time.perf_counter() - t < 0.5:
        ranker.score_tables(test.tables)
        reps += 1
    secs = (time.perf_counter() - t) / reps
    out["merge_hypotheses_per_second"] = len(test.utt_index) / secs if secs > 0 else None
    out["merge_seconds"] = secs
    out["rank_latency"] = rank_latency(ranker, test, int(scfg.get("rank_utterances", 2000)))
    return out


def run_scaling(cfg, b, bench_dir: Path) -> list[dict]:
    """Synthetic corpora of growing size: prepare, R2 over every domain, merge throughput."""
    import copy

    out = []
    for n in b.get("scaling_sizes") or []:
        c = copy.deepcopy(dict(cfg))
        c["data"] = {**c["data"], "name": f"synthetic_{n}", "format": "synthetic",
                     "synthetic": {**(c["data"].get("synthetic") or {}), "n_utterances": int(n)}}
        t = time.perf_counter()
        manifest = prepare(c, force=bool(cfg.get("force", True)))  # measured, not a cache hit
        prep = time.perf_counter() - t
        c_tables = open_tables(c)
        sub = bench_dir / "scaling" / str(n)
        trainer = Trainer(c, sub, manifest["domains"])
        run = trainer.run("R2", ["loss=crossentropy"])
        ranker = ranker_from(run, manifest["corpus"], manifest["domains"])
        test = load_split(c_tables, "test")
        t = time.perf_counter()
        ranker.score_tables(test.tables)
        ms = time.perf_counter() - t
        out.append({"utterances": int(n), "prepare_seconds": prep, "train_seconds": run["seconds"],
                    "train_hypotheses": sum(r["train_hypotheses"] for r in run["results"].values()),
                    "merge_hypotheses_per_second": len(test.utt_index) / ms if ms > 0 else None, "peak_rss_mb": peak_memory()})
        print(f"benchmark: scaling {n}: prepare {prep:.1f} s, train {run['seconds']:.1f} s", flush=True)
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
