"""``promote(cfg)``: gate a domain's version, then make it live (or refuse, or roll back).

``python scripts/promote.py data=hwu64 domain=music version=v4`` gates v4 and moves
``music``'s live pointer to it when the gate accepts; ``version=v3`` (an older one)
is a rollback through the same gate; ``force=true`` moves the pointer whatever the
gate says, and the history records the override. Training calls the same function
after publishing (``scripts/train.py promote=gate``).

Gates of one corpus run one at a time (a file lock): each is evaluated against a
live set that no other promotion changes before its pointer moves.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping

from rerank.hypotheses.tables import TableSet, open_tables
from rerank.io import write_json, write_text
from rerank.merge.gate import GateLimits, evaluate_candidate, render_gate_report
from rerank.merge.evaluate import load_split, top_hypotheses
from rerank.merge.ranker import CrossDomainRanker
from rerank.merge.top_calibration import NAME as TOP_CALIBRATION
from rerank.merge.top_calibration import TopCalibration, fit_top_calibration
from rerank.model.registry import VERSION_DIR, Registry, RegistryError

log = logging.getLogger(__name__)
MODES = ("gate", "force", "none")


class Refused(RuntimeError):
    """The gate refused the version; the message names the failed checks and the report."""


def promote_version(tables: TableSet, registry: Registry, domain: str, version: str, gate_cfg: Mapping[str, Any],
                    force: bool = False, report_dir: str | Path | None = None) -> dict:
    """Gate ``domain``'s ``version`` and move its live pointer if accepted (or forced); returns the decision.

    The decision holds ``accepted`` (the gate's verdict), ``live`` (the live version after),
    ``action`` and ``report`` (the path of the markdown report; a JSON one sits beside it).
    """
    corpus = tables.name
    limits = GateLimits.from_config(gate_cfg)
    resolved = registry.resolve(corpus, domain, version)
    if resolved is None:
        raise RegistryError(f"{registry.domain_dir(corpus, domain)}: no version {version!r}")
    with registry.promotion_lock(corpus):
        current = registry.live(corpus, domain)
        if resolved == current:
            print(f"promote {corpus}/{domain}: {resolved} is live already")
            return {"domain": domain, "version": resolved, "accepted": True, "live": current, "action": "none", "report": None}
        result = evaluate_candidate(tables, registry, domain, resolved, limits)
        folder = Path(report_dir) if report_dir else registry.domain_dir(corpus, domain) / "gate"
        stem = f"{time.strftime('%Y%m%dT%H%M%S')}-{current or 'baseline'}-to-{resolved}"
        write_json(folder / f"{stem}.json", result)
        write_text(folder / f"{stem}.md", render_gate_report(result))
        report = str(folder / f"{stem}.md")
        older = current is not None and _number(resolved) < _number(current)
        action = "rollback" if older else "promote"
        verdict = "accepted" if result["accepted"] else "refused: " + ", ".join(result["failed"])
        details = {"report": report, "gate_seconds": result["seconds"], "checks_failed": result["failed"]}
        if result["accepted"] or force:
            # the merge's top calibration for the new live set, in place before the pointer moves
            registry.write_merge(corpus, TOP_CALIBRATION, result["top_calibration"])
            registry.set_live(corpus, domain, resolved, action=action, verdict=verdict, forced=force and not result["accepted"],
                              report=report, expect_from=current, details={k: v for k, v in details.items() if k != "report"})
            live = resolved
        else:
            registry.record(corpus, domain, {"action": action, "to": resolved, "verdict": verdict, "forced": False, **details})
            live = current
    semer = result["checks"][0]
    print(f"promote {corpus}/{domain} {current or 'baseline'} -> {resolved}: {verdict}"
          + (" (forced)" if force and not result["accepted"] else "")
          + f"; dev SemER {semer['before']:.4f} -> {semer['after']:.4f}; live: {live or 'baseline'}; report {report}")
    return {"domain": domain, "version": resolved, "accepted": result["accepted"], "forced": bool(force and not result["accepted"]),
            "live": live, "action": action, "report": report, "failed": result["failed"]}


def _number(version: str) -> int:
    m = VERSION_DIR.fullmatch(version)
    return int(m.group(1)) if m else -1


def recalibrate(tables: TableSet, registry: Registry, gate_cfg: Mapping[str, Any]) -> TopCalibration:
    """Refit the merge's top calibration for the live set as it is (on the gate's split) and store it."""
    limits = GateLimits.from_config(gate_cfg)
    with registry.promotion_lock(tables.name):
        data = load_split(tables, limits.split)
        ranker = CrossDomainRanker.from_registry(registry, tables.name, tables.domains)
        tops = top_hypotheses(data, ranker.score_tables(data.tables).score)
        cal = fit_top_calibration(tops.conf, tops.correct, {d: s.version for d, s in ranker.scorers.items()}, limits.split)
        path = registry.write_merge(tables.name, TOP_CALIBRATION, cal.to_dict())
    print(f"recalibrate {tables.name}: top confidence = sigmoid({cal.scale:.3f} * logit(top) {cal.shift:+.3f}); "
          f"{limits.split} top-hypothesis ECE {cal.ece_before:.4f} -> {cal.ece_after:.4f}; {path}")
    return cal


def refused_candidates(registry: Registry, corpus: str, domains) -> dict[str, str]:
    """Every domain's newest version when the gate refused it the last time it was gated and it is not live."""
    out = {}
    for d in domains:
        newest = registry.resolve(corpus, d, "latest")
        if newest is None or newest == registry.live(corpus, d):
            continue
        gated = [h for h in registry.history(corpus, d) if h.get("to") == newest and "verdict" in h]
        if gated and str(gated[-1]["verdict"]).startswith("refused") and not gated[-1].get("forced"):
            out[d] = newest
    return out


def promote_refused(tables: TableSet, registry: Registry, gate_cfg: Mapping[str, Any]) -> list[dict]:
    """Gate again the newest versions that were refused, against the live set as it is now.

    Gates run one at a time, each against the live set of its moment: early in a sweep most
    other domains are still at the baseline, and a version refused then can pass once they
    are live. Passes repeat while one of them is accepted (each acceptance changes the live set).
    """
    decisions: list[dict] = []
    while True:
        accepted = False
        for d, v in refused_candidates(registry, tables.name, tables.domains).items():
            decision = promote_version(tables, registry, d, v, gate_cfg)
            decisions.append(decision)
            accepted = accepted or decision["accepted"]
        if not accepted:  # every acceptance makes a version live, so this ends within one pass per domain
            return decisions


def promote(cfg: Mapping[str, Any]) -> dict:
    """``scripts/promote.py``: the composed config names data, domain, version and force (or ``recalibrate``)."""
    tables = open_tables(cfg)
    registry = Registry(cfg["paths"]["registry_dir"])
    if cfg.get("recalibrate"):
        return recalibrate(tables, registry, cfg["gate"]).to_dict()
    if cfg.get("refused"):
        decisions = promote_refused(tables, registry, cfg["gate"])
        print(f"promote {tables.name}: {sum(d['accepted'] for d in decisions)} of {len(decisions)} gates of refused "
              "versions accepted")
        return {"decisions": decisions}
    if not cfg.get("domain"):
        raise ValueError("promote: say which domain (domain=music), or recalibrate=true, or refused=true")
    decision = promote_version(tables, registry, cfg["domain"], str(cfg.get("version") or "latest"), cfg["gate"],
                               force=bool(cfg.get("force", False)))
    if not decision["accepted"] and not decision.get("forced"):
        raise Refused(f"the gate refused {cfg['domain']} {decision['version']} ({', '.join(decision['failed'])}); "
                      f"live stays {decision['live'] or 'baseline'}; report: {decision['report']}")
    return decision


def promote_trained(cfg: Mapping[str, Any], result: Mapping[str, Any]) -> dict:
    """After ``train()`` published a version: ``promote=gate`` gates it, ``promote=force`` makes it live."""
    mode = cfg.get("promote", "gate")
    if mode not in MODES:
        raise ValueError(f"promote must be one of {MODES}, not {mode!r}")
    registry = Registry(cfg["paths"]["registry_dir"])
    if mode == "force":
        # live without evaluating: promote=force is for runs that want every new version serving
        # (a benchmark, a first deployment); scripts/promote.py force=true still writes the gate's report
        entry = registry.set_live(cfg["data"]["name"], result["domain"], result["version"], action="promote",
                                  verdict="not gated (promote=force)", forced=True)
        print(f"promote {cfg['data']['name']}/{result['domain']} {entry['from'] or 'baseline'} -> {result['version']}: "
              "live without the gate (promote=force)")
        return {"domain": result["domain"], "version": result["version"], "accepted": None, "forced": True,
                "live": result["version"], "action": "promote", "report": None, "failed": []}
    return promote_version(open_tables(cfg), registry, result["domain"], result["version"], cfg["gate"])
