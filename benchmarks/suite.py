"""``run_benchmark(cfg)``: every re-ranking approach on one corpus, then the asynchronous update and speed.

:class:`Suite` holds what the rows share (the splits, the trainer, the rows so far);
each result row, or family of rows, is one method. Every setting is chosen on dev;
test is evaluated once per configuration.

A per-domain row family is an experiment, ``configs/experiment/<name>.yaml``
(loss, slates, model, calibration); the suite trains it with ``experiment=<name>``
and the alpha/T it searches or chose as overrides on top, so that one row can be
rerun alone: ``python scripts/train.py experiment=<name> loss.temperature=... domain=...``
(a row's ``settings.overrides`` in results.json).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from benchmarks import alternatives as alt
from benchmarks.measure import REPO, machine
from benchmarks.report import command, render_report, update_benchmarks_md
from benchmarks.runs import Trainer, ranker_from
from benchmarks.speed import make_plots, peak_memory, speed_figures
from benchmarks.update import asynchronous_update
from rerank.hypotheses.figures import oracle_score, top_hypothesis_figures
from rerank.hypotheses.prepare import prepare
from rerank.hypotheses.tables import open_tables
from rerank.io import write_json, write_text
from rerank.merge.evaluate import SplitData, ece_interval, evaluate, load_split, split_baseline, top_hypotheses
from rerank.merge.top_calibration import fit_top_calibration
from rerank.metrics.calibration import ece
from rerank.model.spec import spec_from_manifest

log = logging.getLogger(__name__)
#: figures of a row, from evaluate()'s overall dict
ROW_FIGURES = ("semer", "semer_ci", "irer", "irer_ci", "domain_error", "intent_error", "slot_f1",
               "ece_top", "ece_top_ci", "mce_top", "brier_top", "nll_top")


def _g(x: float) -> str:
    return f"{x:g}"


def experiment(name: str) -> str:
    """The override selecting ``configs/experiment/<name>.yaml`` (``experiment: null`` is a default of train.yaml)."""
    return f"experiment={name}"


def make_row(name: str, kind: str, result: Mapping | None, *, train_seconds: float | None, retrain_alone: str,
             calibrated: bool, status: str = "ok", settings: Mapping | None = None) -> dict:
    row = {"name": name, "kind": kind, "status": status, "calibrated": calibrated, "train_seconds": train_seconds,
           "retrain_alone": retrain_alone, "settings": dict(settings or {})}
    if result is not None:
        o = result["overall"]
        row.update({k: o.get(k) for k in ROW_FIGURES})
        if not calibrated:
            row.update({k: None for k in ROW_FIGURES if k.startswith(("ece", "mce", "brier", "nll"))})
        row["per_domain"] = {d: {k: m.get(k) for k in ("semer", "irer", "ece_top")} for d, m in result["per_domain"].items()}
    return row


def dev_semer(dev: SplitData, score: np.ndarray) -> float:
    return top_hypothesis_figures(dev.utt_index, score, dev.sem_errors, dev.ie, dev.totals)["semer"]


class Suite:
    """The benchmark of one corpus: shared splits and trainer, the rows as they come."""

    def __init__(self, cfg: Mapping[str, Any]):
        self.cfg, self.b = cfg, cfg["benchmark"]
        self.seed, self.n_boot = int(cfg.get("seed", 0)), int(self.b.get("bootstrap", 1000))
        self.tables = open_tables(cfg)  # data=tables: imported ones, read as they are
        self.manifest = self.tables.manifest
        self.corpus, self.domains = self.manifest["corpus"], list(self.manifest["domains"])
        self.dir = Path(self.b["dir"]) / self.corpus
        self.dir.mkdir(parents=True, exist_ok=True)
        self.specs = {d: spec_from_manifest(self.manifest, d) for d in self.domains}
        self.train, self.dev, self.test = (load_split(self.tables, s) for s in ("train", "dev", "test"))
        self.trainer = Trainer(cfg, self.dir, self.domains)
        self.rows: list[dict] = []
        self.tops: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # calibrated rows' top hypotheses on test
        self.selection: dict[str, Any] = {}

    # ------------------------------------------------------------------ plumbing

    def evaluate_row(self, name, kind, score, calibrated, dev_score: np.ndarray | None = None, **kw) -> dict:
        """A row on test; with ``dev_score`` (its models on dev), also its top ECE through the merge's top calibration."""
        res = evaluate(self.test, score, calibrated, self.n_boot, self.seed)
        if calibrated:
            t = top_hypotheses(self.test, score)
            self.tops[name] = (t.conf, t.correct)
        row = make_row(name, kind, res, calibrated=calibrated, **kw)
        if calibrated and dev_score is not None:
            row.update(self.merge_calibrated(dev_score, *self.tops[name]))
        self.rows.append(row)
        print(f"benchmark: {name:<46} test SemER {row['semer']:.4f} IRER {row['irer']:.4f}"
              + (f" ECE {row['ece_top']:.4f}" if row.get("ece_top") is not None else ""), flush=True)
        return res

    def merge_calibrated(self, dev_score: np.ndarray, conf: np.ndarray, correct: np.ndarray) -> dict:
        """The merge's top calibration fitted on the row's dev lists, applied to its test tops ``conf`` (what the
        service reports)."""
        d = top_hypotheses(self.dev, dev_score)
        cal = fit_top_calibration(d.conf, d.correct, {})
        served = cal(conf)
        return {"ece_top_merge": ece(served, correct) if len(served) else None,
                "ece_top_merge_ci": ece_interval(served, correct, self.n_boot, self.seed) if len(served) and self.n_boot else None,
                "top_calibration": cal.to_dict()}

    def train_variant(self, variant: str, overrides: Sequence[str], **kw) -> dict:
        run = self.trainer.run(variant, overrides, **kw)
        run["ranker"] = ranker_from(run, self.corpus, self.domains, self.specs)
        run["dev_score"] = run["ranker"].score_tables(self.dev.tables).score
        run["dev_semer"] = dev_semer(self.dev, run["dev_score"])
        print(f"benchmark: trained {variant} ({run['seconds']:.1f} s): dev SemER {run['dev_semer']:.4f}", flush=True)
        return run

    def per_domain_row(self, name: str, run: dict, settings: Mapping) -> dict:
        return self.evaluate_row(name, "per-domain", run["ranker"].score_tables(self.test.tables).score, True,
                                 dev_score=run["dev_score"], train_seconds=run["seconds"], retrain_alone="yes",
                                 settings={**settings, "overrides": list(run["overrides"])})

    def utterance_rows(self, label: str, tag: str, chosen: list[str], settings: dict, domain_variant: str) -> None:
        """The two candidates=utterance rows of a loss (experiments ``<tag>_utterance_baseline|live``, ``chosen``
        overrides on top): competitors from the baseline, then live models."""
        if not self.b.get("utterance_candidates", True):
            for comp in ("baseline", "live"):
                self.rows.append(make_row(f"{label}, candidates=utterance, competitors={comp}", "per-domain", None,
                                          train_seconds=None, retrain_alone="yes", calibrated=True,
                                          status="skipped (benchmark.utterance_candidates=false)"))
            return
        for comp, kw, shown in (("baseline", {}, "baseline"),
                                ("live", {"competitors_from": self.trainer.registry_dir(domain_variant)},
                                 f"live ({domain_variant.split('_')[0]} candidates=domain)")):
            run = self.train_variant(f"{tag}_utterance_{comp}", [experiment(f"{tag.lower()}_utterance_{comp}"), *chosen], **kw)
            self.per_domain_row(f"{label}, candidates=utterance, competitors={comp}", run,
                                {**settings, "candidates": "utterance", "competitors": shown})

    # ------------------------------------------------------------------ the rows

    def baseline_row(self) -> None:
        score = split_baseline(self.test)
        self.evaluate_row("unweighted baseline (dc*ic*ner)", "baseline", score, True, train_seconds=0.0,
                          retrain_alone="yes (nothing to train)")

    def default_settings(self) -> dict:
        """What ``configs/train.yaml`` trains as it is: loss, alpha, T, slates, model, evidence families."""
        c = self.trainer.config("default", self.domains[0])
        loss, sl = c["loss"], c["slates"]
        return {"loss": loss["name"], "alpha": loss.get("alpha"), "temperature": loss.get("temperature"),
                "candidates": sl["candidates"], "competitors": sl["competitors"], "model": c["model"]["kind"],
                "evidence": list(c["features"]["evidence"])}

    def default_row(self) -> None:
        """The system ``make run`` trains: ``configs/train.yaml`` as it is (no experiment; nothing chosen here)."""
        run = self.train_variant("default", [])
        st = self.default_settings()
        self.per_domain_row(f"default system (configs/train.yaml: alpha={_g(st['alpha'])}, T={_g(st['temperature'])}, "
                            f"candidates={st['candidates']}, {st['model']}, {len(st['evidence'])} evidence families)",
                            run, st)

    def r1_rows(self, live_from: str) -> None:
        """R1 over the temperatures, chosen on dev; its candidates=utterance rows, whose live competitors are the
        calibrated models of the variant ``live_from`` (R3's): R1's own are not on a probability scale."""
        temps = [float(t) for t in self.b["temperatures"]]
        r1 = {t: self.train_variant(f"R1_domain_T{_g(t)}", [experiment("r1_domain"), f"loss.temperature={t}"]) for t in temps}
        t_r1 = min(temps, key=lambda t: (r1[t]["dev_semer"], temps.index(t)))
        self.selection["R1"] = {"temperature": t_r1, "dev_semer": {_g(t): r1[t]["dev_semer"] for t in temps},
                                "grid_seconds": sum(r["seconds"] for r in r1.values())}
        self.per_domain_row(f"R1 semer, candidates=domain (T={_g(t_r1)})", r1[t_r1],
                            {"loss": "semer", "candidates": "domain", "temperature": t_r1})
        self.utterance_rows("R1 semer", "R1", [f"loss.temperature={t_r1}"], {"loss": "semer", "temperature": t_r1}, live_from)

    def r2_row(self) -> dict:
        r2 = self.train_variant("R2", [experiment("r2")])
        self.per_domain_row("R2 crossentropy", r2, {"loss": "crossentropy"})
        return r2

    def r3_rows(self) -> tuple[dict, dict]:
        """R3 over the alpha x temperature grid, chosen on dev; its candidates=utterance rows. Returns (run, test result)."""
        temps, alphas = [float(t) for t in self.b["temperatures"]], [float(a) for a in self.b["alphas"]]
        grid = {(a, t): self.train_variant(f"R3_domain_a{_g(a)}_T{_g(t)}",
                                           [experiment("r3_domain"), f"loss.alpha={a}", f"loss.temperature={t}"])
                for a in alphas for t in temps}
        keys = list(grid)
        self.a_r3, self.t_r3 = min(keys, key=lambda k: (grid[k]["dev_semer"], keys.index(k)))
        self.selection["R3"] = {"alpha": self.a_r3, "temperature": self.t_r3,
                                "dev_semer": {f"alpha={_g(a)},T={_g(t)}": r["dev_semer"] for (a, t), r in grid.items()},
                                "grid_seconds": sum(r["seconds"] for r in grid.values())}
        best = grid[(self.a_r3, self.t_r3)]
        settings = {"loss": "combined", "alpha": self.a_r3, "temperature": self.t_r3}
        res = self.per_domain_row(f"R3 combined, candidates=domain (alpha={_g(self.a_r3)}, T={_g(self.t_r3)})", best,
                                  {**settings, "candidates": "domain"})
        self.r3_variant = f"R3_domain_a{_g(self.a_r3)}_T{_g(self.t_r3)}"
        self.utterance_rows("R3 combined", "R3", self.r3_chosen, settings, self.r3_variant)
        return best, res

    @property
    def r3_chosen(self) -> list[str]:
        """R3's alpha and T chosen on dev, as overrides on top of an r3_* experiment."""
        return [f"loss.alpha={self.a_r3}", f"loss.temperature={self.t_r3}"]

    def platt_rows(self) -> None:
        """R2 and the chosen R3 again, Platt-scaled on each domain's own dev."""
        run = self.train_variant("R2_platt", [experiment("r2_platt")])
        self.per_domain_row("R2 crossentropy + Platt on dev", run, {"loss": "crossentropy", "calibration": "platt"})
        utterance = self.b.get("utterance_candidates", True)
        # r3_platt trains on slates=utterance (competitors: baseline); without the utterance rows, on slates=domain
        run = self.train_variant("R3_platt", [experiment("r3_platt"), *self.r3_chosen, *([] if utterance else ["slates=domain"])])
        self.per_domain_row("R3 combined" + (", candidates=utterance, competitors=baseline" if utterance else "") + " + Platt on dev",
                            run, {"loss": "combined", "alpha": self.a_r3, "temperature": self.t_r3, "calibration": "platt"})

    def mlp_rows(self) -> None:
        """R2 and the chosen R3 with the MLP re-ranker."""
        run = self.train_variant("R2_mlp", [experiment("r2_mlp")])
        self.per_domain_row("R2 crossentropy, MLP", run, {"loss": "crossentropy", "model": "mlp"})
        run = self.train_variant("R3_mlp", [experiment("r3_mlp"), *self.r3_chosen])
        self.per_domain_row(f"R3 combined, candidates=domain, MLP (alpha={_g(self.a_r3)}, T={_g(self.t_r3)})", run,
                            {"loss": "combined", "candidates": "domain", "alpha": self.a_r3, "temperature": self.t_r3, "model": "mlp"})

    def interaction_row(self) -> None:
        """The default system with per-intent evidence weights (``model=intent_linear``), their L2 chosen on dev."""
        grid = [float(x) for x in self.b.get("interaction_l2") or ()]
        if not grid:
            return
        runs = {x: self.train_variant(f"intent_linear_l2{_g(x)}", ["model=intent_linear", f"model.interaction_l2={x}"]) for x in grid}
        best = min(grid, key=lambda x: (runs[x]["dev_semer"], grid.index(x)))
        self.selection["intent_linear"] = {"interaction_l2": best, "dev_semer": {_g(x): r["dev_semer"] for x, r in runs.items()},
                                           "grid_seconds": sum(r["seconds"] for r in runs.values())}
        self.per_domain_row(f"default system + per-intent evidence weights (model=intent_linear, L2 {_g(best)})", runs[best],
                            {**self.default_settings(), "model": "intent_linear", "interaction_l2": best})

    def trees_row(self) -> None:
        """Per-domain gradient-boosted trees (``experiment=r2_trees``, LightGBM), the settings of ``benchmark.trees_grid``
        chosen on dev."""
        grid = [dict(g) for g in self.b.get("trees_grid") or ()]
        if not grid:
            return
        runs = [self.train_variant("trees_" + "_".join(f"{k}{_g(v)}" for k, v in g.items()),
                                   [experiment("r2_trees"), *(f"model.{k}={v}" for k, v in g.items())]) for g in grid]
        best = min(range(len(grid)), key=lambda i: (runs[i]["dev_semer"], i))
        self.selection["trees"] = {"chosen": grid[best], "dev_semer": {str(g): r["dev_semer"] for g, r in zip(grid, runs)},
                                   "grid_seconds": sum(r["seconds"] for r in runs)}
        shown = ", ".join(f"{k}={v}" for k, v in grid[best].items())
        self.per_domain_row(f"per-domain LightGBM, binary on 1 - IE + Platt on dev ({shown})", runs[best],
                            {"loss": "crossentropy", "model": "trees", **grid[best]})

    def platt_baseline_row(self) -> None:
        params, seconds = alt.fit_platt(self.dev.tables)
        self.evaluate_row("Platt-scaled baseline (per domain, fit on dev)", "post-hoc", alt.platt_scores(self.test.tables, params),
                          True, train_seconds=seconds, retrain_alone="yes",
                          settings={"params": {d: list(p) for d, p in params.items()}})

    @property
    def anchor_specs(self) -> dict:
        """The default system's feature specs (its evidence families, where a domain's tables fill them): the anchors
        read what the per-domain default reads."""
        evidence = self.default_settings()["evidence"]
        return {d: spec_from_manifest(self.manifest, d, evidence, on_missing="skip") for d in self.domains}

    def joint_row(self) -> alt.JointModel:
        """The joint model on the default's features, its alpha and T chosen on dev over ``benchmark.joint.grid``
        (R3's chosen pair included)."""
        jcfg = self.b.get("joint") or {}
        grid = list(dict.fromkeys([(self.a_r3, self.t_r3), *((float(a), float(t)) for a, t in jcfg.get("grid") or ())]))
        specs, fits, seconds = self.anchor_specs, {}, 0.0
        for a, t in grid:
            joint = alt.JointModel(specs)
            info = joint.fit(self.train.tables, alpha=a, temperature=t, l2=float(jcfg.get("l2", 1e-4)),
                             max_iter=int(jcfg.get("max_iter", 200)), seed=self.seed)
            seconds += info["seconds"]
            fits[(a, t)] = (joint, info, joint.scores(self.dev.tables))
            print(f"benchmark: joint model alpha={_g(a)} T={_g(t)}: dev SemER {dev_semer(self.dev, fits[(a, t)][2]):.4f}", flush=True)
        a, t = min(grid, key=lambda k: (dev_semer(self.dev, fits[k][2]), grid.index(k)))
        joint, info, dev_score = fits[(a, t)]
        self.selection["joint"] = {**{k: v for k, v in info.items() if k != "seconds"}, "dev_semer": dev_semer(self.dev, dev_score),
                                   "grid": {f"alpha={_g(k[0])},T={_g(k[1])}": dev_semer(self.dev, f[2]) for k, f in fits.items()},
                                   "grid_seconds": seconds}
        self.evaluate_row(f"joint model, cross-domain softmax, default's features (alpha={_g(a)}, T={_g(t)})", "joint",
                          joint.scores(self.test.tables), True, dev_score=dev_score, train_seconds=info["seconds"],
                          retrain_alone="no", settings={"alpha": a, "temperature": t, "loss": "combined",
                                                        "evidence": self.default_settings()["evidence"]})
        return joint

    def lambdamart_row(self) -> None:
        name = "LightGBM LambdaMART"
        if not self.b.get("lightgbm", True) or not alt.lightgbm_available():
            status = "disabled" if not self.b.get("lightgbm", True) else "not installed"
            self.rows.append(make_row(name, "joint", None, train_seconds=None, retrain_alone="no", calibrated=False, status=status))
            if status == "not installed":
                print("benchmark: LightGBM LambdaMART: not installed (pip install -e '.[lightgbm]')")
            return
        layout = alt.SharedLayout(self.anchor_specs)
        grid = [dict(g) for g in self.b.get("lambdamart_grid") or [{}]]
        fits = []
        for g in grid:
            gbm, seconds = alt.fit_lambdamart(self.train.tables, self.dev.tables, layout, seed=self.seed, **g)
            fits.append((dev_semer(self.dev, alt.lambdamart_scores(gbm, self.dev.tables, layout)), gbm, seconds, g))
            print(f"benchmark: LambdaMART {g}: dev SemER {fits[-1][0]:.4f}", flush=True)
        best = min(range(len(fits)), key=lambda i: (fits[i][0], i))
        _, gbm, seconds, g = fits[best]
        self.selection["lambdamart"] = {"chosen": g, "dev_semer": {str(f[3]): f[0] for f in fits},
                                        "grid_seconds": sum(f[2] for f in fits), "features": len(layout.names)}
        self.evaluate_row(f"{name}, default's features", "joint", alt.lambdamart_scores(gbm, self.test.tables, layout), False,
                          train_seconds=seconds, retrain_alone="no", settings={**g, "features": len(layout.names)})

    def oracle_row(self) -> None:
        self.evaluate_row("oracle", "oracle", oracle_score(self.test.semer), False, train_seconds=None, retrain_alone="-")
        base, oracle = self.rows[0]["semer"], self.rows[-1]["semer"]
        for r in self.rows:
            ok = r.get("semer") is not None and base > oracle
            r["gap_closed"] = (base - r["semer"]) / (base - oracle) if ok else None


def benchmarks_md_path(cfg: Mapping[str, Any]) -> Path:
    path = Path(cfg.get("benchmarks_md") or "BENCHMARKS.md")
    return path if path.is_absolute() else REPO / path


def run_benchmark(cfg: Mapping[str, Any], cli_overrides: Sequence[str] = ()) -> dict:
    """The whole suite on ``cfg.data``; returns the results dict written to ``results.json``."""
    t_start = time.perf_counter()
    b = cfg["benchmark"]
    if cfg["data"].get("format") != "tables":
        # The explicit first step, as in `make run`. A fresh build by default: the prepare time in
        # the speed table is then this run's, on this machine.
        prepare(cfg, force=bool(cfg.get("force", True)))
    s = Suite(cfg)
    s.baseline_row()
    s.default_row()
    r2 = s.r2_row()
    r3, r3_res = s.r3_rows()
    s.r1_rows(live_from=s.r3_variant)
    if b.get("platt_rows", True):
        s.platt_rows()
    if b.get("mlp_rows", True):
        s.mlp_rows()
    s.interaction_row()
    if alt.lightgbm_available():
        s.trees_row()
    s.platt_baseline_row()
    joint = s.joint_row()
    s.lambdamart_row()
    s.oracle_row()
    async_update = None
    if (b.get("async_update") or {}).get("enabled", True):
        async_update = asynchronous_update(b["async_update"], s.trainer, r3, r3_res, s.test, s.corpus, s.domains, s.specs,
                                           [experiment("r3_domain"), *s.r3_chosen], s.n_boot, s.seed,
                                           tables=s.tables, gate_cfg=cfg["gate"])
    speed = speed_figures(b.get("speed") or {}, s.manifest, r2, r3, s.test, s.dir, cfg, cli_overrides)
    plots = make_plots(s.dir, s.tops, r3["ranker"], joint, s.corpus)
    results = {
        "corpus": s.corpus,
        "utterances": {"train": s.train.n_utterances, "dev": s.dev.n_utterances, "test": s.test.n_utterances},
        "hypotheses": {k: int(len(x.utt_index)) for k, x in (("train", s.train), ("dev", s.dev), ("test", s.test))},
        "domains": s.domains,
        "bootstrap": s.n_boot,
        "rows": s.rows,
        "selection": s.selection,
        "async_update": async_update,
        "speed": speed,
        "plots": plots,
        "seconds": None,
        "config": {k: cfg[k] for k in ("benchmark", "data", "recognizers", "hypotheses", "seed") if k in cfg},
        "command": command("suite", cli_overrides),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    speed["peak_rss_mb"] = peak_memory()
    write_json(s.dir / "results.json", results)
    write_text(s.dir / "report.md", render_report(results))
    print(f"benchmark: wrote {s.dir / 'report.md'} and results.json in {results['seconds']} s")
    if cfg.get("write_benchmarks_md"):
        path = benchmarks_md_path(cfg)
        update_benchmarks_md(path, results)
        print(f"benchmark: updated the section of {s.corpus} in {path}")
    results["report_dir"] = str(s.dir)
    return results
