"""``promote(cfg)``: gate one domain's version, then make it live (or refuse, or roll back): a release of one move.

``python scripts/promote.py data=hwu64 domain=music version=v4`` gates v4 on the world it
makes (every other domain at its live version) and applies it as a release of one move
when the gate accepts; ``version=v3`` (an older one) is a rollback through the same gate;
``force=true`` applies it whatever the gate says, and the history records the override.
A single training run calls the same function after publishing (``promote=gate``); a
sweep publishes, then plans one release over every domain (:mod:`rerank.merge.release`).

Gates and releases of one corpus run one at a time (the promotion lock): each is decided
on a live state that nothing changes before it is written.
"""
from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any, Mapping

from rerank.hypotheses.tables import TableSet, open_tables
from rerank.io import write_json, write_text
from rerank.merge.evaluate import top_hypotheses
from rerank.merge.gate import GateLimits, render_gate_report
from rerank.merge.top_calibration import TopCalibration, describe, fit_top_calibration
from rerank.merge.world import World
from rerank.model.registry import VERSION_DIR, Registry, RegistryError

log = logging.getLogger(__name__)
MODES = ("gate", "force", "none")


class Refused(RuntimeError):
    """The gate refused the version; the message names the failed checks and the report."""


def promote_version(tables: TableSet, registry: Registry, domain: str, version: str | None, gate_cfg: Mapping[str, Any],
                    force: bool = False, report_dir: str | Path | None = None) -> dict:
    """Gate ``domain``'s ``version`` (None: the baseline) and release it if accepted (or forced); returns the decision.

    The decision holds ``accepted`` (the gate's verdict), ``live`` (the live version after),
    ``action`` and ``report`` (the path of the markdown report; a JSON one sits beside it).
    """
    corpus = tables.name
    limits = GateLimits.from_config(gate_cfg)
    resolved = None if version is None else registry.resolve(corpus, domain, version)
    if resolved is None and version is not None:
        raise RegistryError(f"{registry.domain_dir(corpus, domain)}: no version {version!r}")
    with registry.promotion_lock(corpus):
        current = registry.live(corpus, domain)
        if resolved == current:
            print(f"promote {corpus}/{domain}: {resolved or 'baseline'} is live already")
            return {"domain": domain, "version": resolved, "accepted": True, "live": current, "action": "none", "report": None}
        world = World(tables, registry, limits)
        result = world.evaluate({domain: resolved})
        result.update({"domain": domain, "candidate": resolved or "baseline", "current": current or "baseline"})
        folder = Path(report_dir) if report_dir else registry.domain_dir(corpus, domain) / "gate"
        # unique: two gates in one second must not overwrite a report that a history entry names
        stem = f"{time.strftime('%Y%m%dT%H%M%S')}-{current or 'baseline'}-to-{resolved or 'baseline'}-{uuid.uuid4().hex[:8]}"
        write_json(folder / f"{stem}.json", result)
        write_text(folder / f"{stem}.md", render_gate_report(result))
        report = str(folder / f"{stem}.md")
        older = current is not None and _number(resolved) < _number(current)
        action = "rollback" if older else "promote"
        verdict = "accepted" if result["accepted"] else "refused: " + ", ".join(result["failed"])
        details = {"gate_seconds": result["seconds"], "checks_failed": result["failed"],
                   "harmed": {d: {"delta": result["per_domain"][d]["delta"], "ci": result["per_domain"][d]["ci"]}
                              for d in result["harmed"]}}
        forced = bool(force and not result["accepted"])
        if result["accepted"] or force:
            registry.release(corpus, {domain: resolved}, {"action": action, "verdict": verdict, "forced": forced,
                                                          "report": report, **details},
                             top_calibration=result["top_calibration"], expect_release=world.state.release)
            live = resolved
        else:
            registry.record(corpus, domain, {"action": action, "to": resolved, "verdict": verdict, "forced": False,
                                             "report": report, **details})
            live = current
    semer = result["checks"][0]
    print(f"promote {corpus}/{domain} {current or 'baseline'} -> {resolved or 'baseline'}: {verdict}"
          + (" (forced)" if forced else "")
          + f"; dev SemER {semer['before']:.4f} -> {semer['after']:.4f}; live: {live or 'baseline'}; report {report}")
    return {"domain": domain, "version": resolved, "accepted": result["accepted"], "forced": forced,
            "live": live, "action": action, "report": report, "failed": result["failed"]}


def _number(version: str) -> int:
    m = VERSION_DIR.fullmatch(version)
    return int(m.group(1)) if m else -1


def recalibrate(tables: TableSet, registry: Registry, gate_cfg: Mapping[str, Any]) -> TopCalibration:
    """Refit the merge's top calibration for the live state as it is (on the gate's split): a release of no move."""
    limits = GateLimits.from_config(gate_cfg)
    with registry.promotion_lock(tables.name):
        world = World(tables, registry, limits)
        tops = top_hypotheses(world.data, world.base)
        cal = fit_top_calibration(tops.conf, tops.correct, world.versions({}), limits.split, limits.top_calibration)
        rec = registry.release(tables.name, {}, {"action": "recalibrate", "verdict": "top calibration refitted", "forced": False,
                                                 "report": None}, top_calibration=cal.to_dict(), expect_release=world.state.release)
    print(f"recalibrate {tables.name}: top confidence = {describe(cal)}; {limits.split} top-hypothesis ECE "
          f"{cal.ece_before:.4f} -> {cal.ece_after:.4f} (cross-fitted); release {rec['release']}")
    return cal


def promote(cfg: Mapping[str, Any]) -> dict:
    """``scripts/promote.py``: the composed config names data, domain, version and force (or ``recalibrate``)."""
    tables = open_tables(cfg)
    registry = Registry(cfg["paths"]["registry_dir"])
    if cfg.get("recalibrate"):
        return recalibrate(tables, registry, cfg["gate"]).to_dict()
    if not cfg.get("domain"):
        raise ValueError("promote: say which domain (domain=music), or recalibrate=true; "
                         "every pending version at once: scripts/release.py")
    decision = promote_version(tables, registry, cfg["domain"], str(cfg.get("version") or "latest"), cfg["gate"],
                               force=bool(cfg.get("force", False)))
    if not decision["accepted"] and not decision.get("forced"):
        raise Refused(f"the gate refused {cfg['domain']} {decision['version']} ({', '.join(decision['failed'])}); "
                      f"live stays {decision['live'] or 'baseline'}; report: {decision['report']}")
    return decision


def promote_trained(cfg: Mapping[str, Any], result: Mapping[str, Any]) -> dict:
    """After a single ``train()`` published a version: ``promote=gate`` gates it, ``promote=force`` makes it live.

    Either way it is a release of one move under the promotion lock, with the top calibration fitted
    for the world it makes (written with the move, in one release, never before it).
    """
    mode = cfg.get("promote", "gate")
    if mode not in MODES:
        raise ValueError(f"promote must be one of {MODES}, not {mode!r}")
    registry = Registry(cfg["paths"]["registry_dir"])
    return promote_version(open_tables(cfg), registry, result["domain"], result["version"], cfg["gate"], force=mode == "force")
