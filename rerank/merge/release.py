"""``release(cfg)``: plan a release over every pending candidate, co-adapt the harmed domains, apply it atomically.

``python scripts/release.py data=hwu64 [release.domains=[a,b]] [release.versions={a: v3}] [release.dry_run=true]``

The data takes one pass: the split is loaded once, every version is scored once
(:class:`rerank.merge.world.World`), the plan is decided on those arrays
(:func:`rerank.merge.plan.make_plan`), and the live state is written once, as one
release (:meth:`rerank.model.registry.Registry.release`). Releases of one corpus run
one at a time (the corpus' promotion lock); a release that names a version that does
not exist or does not load stops before anything is written.

``release.rollback=true`` undoes the newest release (``=N``: back to the state after
release N), in one release of its own.
"""
from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, Mapping

from rerank.hypotheses.tables import TableSet, open_tables
from rerank.merge.coadapt import retrain
from rerank.merge.gate import GateLimits
from rerank.merge.plan import Plan, make_plan, pending, trained_world, units_of
from rerank.merge.release_report import write_release_report
from rerank.merge.world import World
from rerank.model.registry import Registry, RegistryError


def _stem() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"


def report_folder(registry: Registry, corpus: str, dry_run: bool, log_dir: str | None) -> Path:
    if dry_run and log_dir:
        return Path(log_dir) / "release" / corpus
    return registry.releases(corpus).folder / "reports"


def coadapt_worlds(world: World, plan: Plan) -> dict[str, dict[str, str]]:
    """Each harmed domain's world: the plan's moves and every refused unit that harms it (the domain itself aside)."""
    harm: dict[str, dict] = {}
    for d in plan.report["harmed"]:
        harm.setdefault(d, {}).update(plan.moves)
    for r in plan.refused.values():
        if r.get("refused_for_harm_only"):
            for d in r["harmed"]:
                harm.setdefault(d, dict(plan.moves)).update({m: (None if v == "baseline" else v) for m, v in r["moves"].items()})
    out = {}
    for d, moves in harm.items():
        versions = world.versions({m: v for m, v in moves.items() if m != d})
        out[d] = {o: v for o, v in versions.items() if o != d}
    return out


def plan_release(tables: TableSet, registry: Registry, limits: GateLimits, rcfg: Mapping[str, Any],
                 overrides=(), log=print) -> tuple[World, Plan, dict]:
    """Plan (and co-adapt, ``rcfg["coadapt"]``) without writing the live state; returns the world, the plan and
    the report's fields."""
    corpus = tables.name
    domains = list(rcfg.get("domains") or tables.domains)
    named = dict(rcfg.get("versions") or {})
    t0 = time.perf_counter()
    world = World(tables, registry, limits)
    world_seconds = time.perf_counter() - t0
    rounds: list[dict] = []
    evaluations = 0
    tried: dict[str, dict] = {}
    coadapt_seconds = 0.0
    for round_ in range(int(rcfg.get("coadapt_rounds", 2)) + 1):
        candidates = pending(registry, corpus, domains, named)
        units = units_of(registry, corpus, candidates)
        t = time.perf_counter()
        for d, v in candidates.items():
            world.scores(d, v)  # every candidate loads and scores before any plan: a broken one stops here
        world_seconds += time.perf_counter() - t
        plan = make_plan(world, units, progress=log)
        evaluations += plan.evaluations
        if rounds:
            rounds[-1].update(moves=len(plan.moves), semer=plan.report["checks"][0]["after"])
        if not rcfg.get("coadapt") or round_ == int(rcfg.get("coadapt_rounds", 2)):
            break
        worlds = {d: w for d, w in coadapt_worlds(world, plan).items()
                  if d in domains and tried.get(d) != w and trained_world(registry, corpus, d, candidates.get(d, "")) != w}
        if not worlds:
            break
        tried.update(worlds)
        folder = report_folder(registry, corpus, True, rcfg.get("log_dir")) if rcfg.get("log_dir") else \
            registry.releases(corpus).folder / "coadapt"
        t = time.perf_counter()
        new = retrain(registry, corpus, worlds, overrides, folder, log=log)
        coadapt_seconds += time.perf_counter() - t
        named = {**named, **new} if named else named
        rounds.append({"round": round_ + 1, "retrained": sorted(worlds), "new": new, "worlds": worlds})
        log(f"co-adaptation round {round_ + 1}: published {', '.join(f'{d} {v}' for d, v in new.items()) or 'nothing'}")
    fields = {"candidates": candidates, "rounds": rounds, "evaluations": evaluations, "world_seconds": round(world_seconds, 3),
              "coadapt_seconds": round(coadapt_seconds, 3),
              "plan_seconds": round(time.perf_counter() - t0 - coadapt_seconds, 3)}
    return world, plan, fields


def release(cfg: Mapping[str, Any], overrides=(), log=print) -> dict:
    """``scripts/release.py``: plan, co-adapt, write one release (or, ``release.rollback``, undo one)."""
    tables = open_tables(cfg)
    registry = Registry(cfg["paths"]["registry_dir"])
    rcfg = {**cfg["release"], "log_dir": cfg["paths"].get("log_dir")}
    if rcfg.get("rollback") not in (None, False):
        return rollback(registry, tables.name, rcfg["rollback"], log=log)
    limits = GateLimits.from_config(cfg["gate"])
    corpus = tables.name
    with registry.promotion_lock(corpus):
        world, plan, fields = plan_release(tables, registry, limits, rcfg, overrides, log)
        dry = bool(rcfg.get("dry_run"))
        refused = {n: r for n, r in plan.refused.items() if "checks" in r}
        # the number this release will have: the report is written before the state that commits it
        number = world.state.release + 1 if plan.moves and not dry else None
        result = {"dry_run": dry, "plan": plan.report, "refused": refused, **fields, "release": number}
        stem = _stem()
        paths = write_release_report(result, report_folder(registry, corpus, dry, rcfg.get("log_dir")), stem)
        if not dry and plan.moves:
            harmed = {d: {"delta": plan.report["per_domain"][d]["delta"], "ci": plan.report["per_domain"][d]["ci"],
                          "coadapt": [r["new"].get(d) for r in fields["rounds"] if d in r["retrained"]]}
                      for d in plan.report["harmed"]}
            record = {"action": "release", "verdict": f"accepted ({limits.policy})", "forced": False, "report": paths["md"],
                      "harmed": harmed, "units": [u.name for u in plan.accepted],
                      "refused": {n: r["failed"] for n, r in refused.items()}, "plan_seconds": fields["plan_seconds"],
                      "dev_semer": [plan.report["checks"][0]["before"], plan.report["checks"][0]["after"]]}
            rec = registry.release(corpus, plan.moves, record, top_calibration=plan.report["top_calibration"],
                                   expect_release=world.state.release)
            result["release"] = rec["release"]
        if not dry:
            for name, r in refused.items():
                for d, v in r["moves"].items():
                    registry.record(corpus, d, {"action": "release plan", "to": v, "verdict": "refused: " + ", ".join(r["failed"]),
                                                "forced": False, "report": paths["md"],
                                                "harmed": {h: r["per_domain"][h]["delta"] for h in r["harmed"]}})
    moves = ", ".join(f"{d} {world.live.get(d) or 'baseline'} -> {v or 'baseline'}" for d, v in sorted(plan.moves.items()))
    semer = plan.report["checks"][0]
    log(f"release {corpus}: {'dry run: ' if dry else ''}{len(plan.moves)} moves ({moves or 'none'}); "
        f"{len(refused)} units refused; dev SemER {semer['before']:.4f} -> {semer['after']:.4f}; "
        f"plan {fields['plan_seconds']:.1f} s" + (f" (and co-adaptation {fields['coadapt_seconds']:.1f} s)" if fields["rounds"] else "")
        + f"; report {paths['md']}")
    return {**result, "report": paths["md"], "paths": paths}


def rollback(registry: Registry, corpus: str, to, log=print) -> dict:
    """Undo the newest release (``to`` true), or go back to the state after release ``to``, as one new release."""
    with registry.promotion_lock(corpus):
        state = registry.live_state(corpus)
        if state.release == 0:
            raise RegistryError(f"{corpus}: no release to roll back")
        records = registry.releases(corpus).records()
        target = state.release - 1 if to is True or str(to).lower() == "true" else int(to)
        if not 0 <= target < state.release:
            raise RegistryError(f"{corpus}: release.rollback={to!r}: pick a release in 0..{state.release - 1}")
        if target > 0:
            versions, cal = dict(records[target - 1]["state"]["versions"]), records[target - 1]["state"]["top_calibration"]
        else:
            first = records[0]
            versions = {**dict(state.versions)}
            for r in reversed(records):
                for m in r["moves"]:
                    versions.pop(m["domain"], None) if m["from"] is None else versions.__setitem__(m["domain"], m["from"])
            cal = first.get("top_calibration_before")
        moves = {d: versions.get(d) for d in set(versions) | set(state.versions) if versions.get(d) != state.version(d)}
        rec = registry.release(corpus, moves, {"action": "rollback", "verdict": f"rollback to release {target}", "forced": True,
                                               "report": None, "rollback_of": state.release},
                               top_calibration=cal, expect_release=state.release)
    said = ", ".join(f"{m['domain']} {m['from'] or 'baseline'} -> {m['to'] or 'baseline'}" for m in rec["moves"])
    log(f"release {corpus}: rolled back to release {target} as release {rec['release']} ({said or 'no move'})")
    return {"release": rec["release"], "moves": rec["moves"], "rollback_to": target}
