"""``merge(cfg)``: load every domain's published re-ranker, rank the split, evaluate, report."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping

import pyarrow.parquet as pq

from rerank.hypotheses.figures import oracle_score
from rerank.hypotheses.tables import open_tables
from rerank.io import atomic_path
from rerank.merge.evaluate import evaluate, load_split, semer_change, split_baseline, top_hypotheses
from rerank.merge.ranker import CrossDomainRanker, ranked_table
from rerank.merge.report import write_report
from rerank.merge.top_calibration import read_top_calibration
from rerank.model.registry import Registry
from rerank.model.spec import spec_from_manifest

#: the per-loss systems of the report, in this order: the newest version of each loss (live or not);
#: R1 last, as it loses by design with candidates=domain (BENCHMARKS.md)
LOSS_NAMES = ("combined", "crossentropy", "semer")

log = logging.getLogger(__name__)


def merge(cfg: Mapping[str, Any]) -> dict:
    t0 = time.perf_counter()
    tables = open_tables(cfg)
    manifest = tables.manifest
    corpus, split = manifest["corpus"], cfg["split"]
    domains = manifest["domains"]
    mcfg = cfg["merge"]
    data = load_split(tables, split)
    specs = {d: spec_from_manifest(manifest, d) for d in domains}
    registry = Registry(cfg["paths"]["registry_dir"])
    n_boot, seed = int(mcfg.get("bootstrap", 1000)), int(cfg.get("seed", 0))

    pins = dict(cfg.get("versions") or {})
    main = CrossDomainRanker.from_registry(registry, corpus, domains, versions=pins,
                                           missing=mcfg.get("missing", "baseline"), specs=specs)
    t_rank = time.perf_counter()
    ranked = main.score_tables(data.tables)
    rank_seconds = time.perf_counter() - t_rank
    report_dir = Path(cfg["paths"]["report_dir"]) / corpus / split
    with atomic_path(report_dir / "ranked.parquet") as tmp:
        pq.write_table(ranked_table(ranked, data.tables), tmp)

    systems: dict[str, dict] = {}
    flags: dict[str, list[str]] = {}
    versions: dict[str, dict[str, str]] = {}
    # The live (or pinned) models first: that is what serves traffic.
    main_name = "live" if not pins else "live+pinned"
    top_cal = read_top_calibration(registry, corpus) if mcfg.get("top_calibration", True) else None
    tops = {main_name: top_hypotheses(data, ranked.score, top_cal)}
    systems[main_name] = evaluate(data, ranked.score, True, n_boot, seed, top_cal)
    flags[main_name] = main.fallbacks
    versions[main_name] = {d: s.version for d, s in main.scorers.items()}
    base = split_baseline(data)
    systems["baseline"] = evaluate(data, base, True, n_boot, seed)
    for d, change in semer_change(data, ranked.score, base, n_boot, seed).items():
        systems[main_name]["per_domain"][d].update(change)  # the report's every-domain picture
    tops["baseline"] = top_hypotheses(data, base)
    for loss in LOSS_NAMES:
        if not any(registry.resolve(corpus, d, loss=loss) for d in domains):
            continue
        ranker = CrossDomainRanker.from_registry(registry, corpus, domains, versions=_pins_of_loss(registry, corpus, pins, loss),
                                                 loss=loss, missing="baseline", specs=specs)
        versions[f"newest {loss}"] = {d: s.version for d, s in ranker.scorers.items()}
        # the live models are often the newest of their loss: the same models give the same scores
        same = versions[f"newest {loss}"] == versions[main_name]
        score = ranked.score if same else ranker.score_tables(data.tables).score
        systems[f"newest {loss}"] = evaluate(data, score, True, n_boot, seed)
        tops[f"newest {loss}"] = top_hypotheses(data, score)
        flags[f"newest {loss}"] = ranker.fallbacks
    systems["oracle"] = evaluate(data, oracle_score(data.semer), False, n_boot, seed)

    metrics = {name: {**{k: v for k, v in r["overall"].items()}, "per_domain": r["per_domain"]} for name, r in systems.items()}
    meta = {"corpus": corpus, "split": split, "utterances": data.n_utterances, "hypotheses": int(len(data.utt_index)),
            "fallback_domains": flags, "versions": versions, "rank_seconds": rank_seconds,
            "top_calibration": None if top_cal is None else {**top_cal.to_dict(), "stale": top_cal.stale(versions[main_name])},
            "hypotheses_per_second": len(data.utt_index) / rank_seconds if rank_seconds > 0 else None}
    weights = {d: main.scorers[d] for d in domains}
    text = write_report(report_dir, metrics, meta, tops, weights, cfg["paths"].get("log_dir"))
    print(text.split("\n## ")[0] + "\n" if cfg.get("print_full") is False else _terminal_table(metrics))
    print(f"merge: report in {report_dir / 'report.md'} ({time.perf_counter() - t0:.1f} s)")
    return {"metrics": metrics, "meta": meta, "report_dir": str(report_dir)}


def _pins_of_loss(registry: Registry, corpus: str, pins: Mapping[str, str], loss: str) -> dict[str, str]:
    """The pinned versions trained with ``loss``: that loss' system uses them instead of its newest."""
    out = {}
    for d, v in pins.items():
        if registry.resolve(corpus, d, v) and registry.meta(corpus, d, v).get("loss") == loss:
            out[d] = v
    return out


def _terminal_table(metrics: dict) -> str:
    base, oracle = metrics["baseline"]["semer"], metrics["oracle"]["semer"]
    lines = [f"{'system':<22}{'SemER':>8}{'IRER':>8}{'top ECE':>9}{'Brier':>8}{'gap closed':>12}"]
    for name, m in metrics.items():
        ece = f"{m['ece_top']:.4f}" if m.get("ece_top") is not None else "-"
        brier = f"{m['brier_top']:.4f}" if m.get("brier_top") is not None else "-"
        gap = (base - m["semer"]) / (base - oracle) if base > oracle else float("nan")
        lines.append(f"{name:<22}{m['semer']:>8.4f}{m['irer']:>8.4f}{ece:>9}{brier:>8}{gap:>12.1%}")
    return "\n".join(lines)
