"""The release planner: which pending versions go live together, decided on the joint world they make.

Every domain's pending candidate (its newest version that has never been live, or the
versions named) is a *unit* of one move; a version trained against a world in which
other pending versions are live (co-adaptation records that world in its config) also
makes a *bundle* with them, since it is only meant to serve beside them.

The plan is greedy over units in an order that depends only on what they are, never on
when they were trained or published: units that lower the overall dev SemER most on
their own come first (ties: fewer moves, then names). A unit joins the plan when the
world of the plan so far plus the unit passes every check of the gate
(:func:`rerank.merge.gate.judge`); passes repeat while a unit joins (one unit can make
room for another). The last evaluation is of the whole plan, so what goes live was
judged as one world, with the top calibration fitted for it.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from rerank.merge.world import World
from rerank.model.registry import VERSION_DIR, Registry, RegistryError

MAX_PASSES = 8


@dataclass(frozen=True)
class Unit:
    moves: Mapping[str, str | None]

    @property
    def name(self) -> str:
        return " + ".join(f"{d} {v or 'baseline'}" for d, v in sorted(self.moves.items()))


@dataclass
class Plan:
    moves: dict[str, str | None]
    report: dict  # the gate's report of the whole plan's world
    accepted: list[Unit] = field(default_factory=list)
    refused: dict[str, dict] = field(default_factory=dict)  # unit name -> its last report
    evaluations: int = 0
    seconds: float = 0.0


def _number(version: str | None) -> int:
    m = VERSION_DIR.fullmatch(version or "")
    return int(m.group(1)) if m else -1


def pending(registry: Registry, corpus: str, domains: Sequence[str], named: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every domain's candidate: the versions ``named``, else its newest version if that was never live."""
    if named:
        out = {}
        for d, v in named.items():
            if d not in domains:
                raise RegistryError(f"release: unknown domain {d!r}; the tables' domains: {list(domains)}")
            resolved = registry.resolve(corpus, d, str(v))
            if resolved is None:
                raise RegistryError(f"release: {d} has no version {v!r}; published: {registry.versions(corpus, d)}")
            out[d] = resolved
        return out
    state = registry.live_state(corpus)
    out = {}
    ever_live = {(m["domain"], m["to"]) for r in registry.releases(corpus).records() for m in r["moves"]}
    for d in domains:
        versions = registry.versions(corpus, d)
        if not versions:
            continue
        newest = versions[-1]
        live = state.version(d)
        if newest == live or (d, newest) in ever_live or _number(newest) < _number(live):
            continue  # live, or live once and rolled back since: not a candidate until named
        out[d] = newest
    return out


def trained_world(registry: Registry, corpus: str, domain: str, version: str) -> dict[str, str]:
    """The world a version was trained against (``slates.world`` in its config), or {}."""
    path = registry.domain_dir(corpus, domain) / version / "config.json"
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    world = (cfg.get("slates") or {}).get("world") if isinstance(cfg, dict) else None
    return {str(k): str(v) for k, v in world.items()} if isinstance(world, dict) else {}


def units_of(registry: Registry, corpus: str, candidates: Mapping[str, str]) -> list[Unit]:
    """One unit per candidate, and a bundle per candidate trained against other candidates."""
    units = [Unit({d: v}) for d, v in sorted(candidates.items())]
    for d, v in sorted(candidates.items()):
        world = trained_world(registry, corpus, d, v)
        partners = {o: wv for o, wv in world.items() if o != d and candidates.get(o) == wv}
        if partners:
            units.append(Unit({d: v, **partners}))
    return units


def make_plan(world: World, units: Sequence[Unit], progress=print) -> Plan:
    """The moves to release: greedy over ``units`` on the joint world (the module's docstring)."""
    t0 = time.perf_counter()
    evaluations = 0
    solo = {}
    for u in units:
        solo[u.name] = world.overall_delta(u.moves)  # (the figure alone: it only orders the units)
        evaluations += 1
    order = sorted(units, key=lambda u: (solo[u.name], len(u.moves), u.name))
    chosen: dict[str, str | None] = {}
    accepted: list[Unit] = []
    refused: dict[str, dict] = {}
    for _ in range(MAX_PASSES):
        joined = False
        for u in order:
            if u in accepted:
                continue
            if any(d in chosen and chosen[d] != v for d, v in u.moves.items()):
                refused[u.name] = {"accepted": False, "failed": ["conflicts with the plan"], "conflict": True}
                continue
            trial = {**chosen, **u.moves}
            r = world.evaluate(trial, intervals="checks")
            evaluations += 1
            if r["accepted"]:
                chosen, joined = trial, True
                accepted.append(u)
                refused.pop(u.name, None)
            else:
                refused[u.name] = r
        if not joined:
            break
        if len(units) > 20:
            progress(f"release plan: {len(accepted)} of {len(units)} units in the plan after a pass "
                     f"({evaluations} worlds evaluated, {time.perf_counter() - t0:.1f} s)")
    # units whose moves all joined through other units are not refused
    refused = {n: r for n, r in refused.items()
               if not all(chosen.get(d) == v for u in units if u.name == n for d, v in u.moves.items())}
    final = world.evaluate(chosen)
    return Plan(chosen, final, accepted, refused, evaluations + 1, round(time.perf_counter() - t0, 3))
