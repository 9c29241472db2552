r"""The promotion gate's rules: does a world (the live state with some moves applied) help the merge, without harming others?

A world is evaluated where it will serve: in the merge of every domain's hypotheses on
``gate.split`` (dev by default), and compared with what serves now. Both rankings see
the same utterances, so every figure is a *paired* difference, with a paired bootstrap
interval over utterances (:mod:`rerank.merge.world` computes them, the same resamples
for every world):

.. math::
    \Delta_{SemER} = \frac{\sum_u e^{world}_u - \sum_u e^{now}_u}{\sum_u t_u}, \qquad
    \Delta_{ECE} = ECE^{world}_{top} - ECE^{now}_{top}

The checks (limits in ``configs/gate/``):

- overall SemER, what the assistant is judged by, is not worse:
  :math:`\Delta_{SemER} \le` ``semer_max_delta``, and not plausibly worse beyond a
  tolerance: the upper end of its interval is at most ``semer_max_upper``;
- top-hypothesis ECE of the confidence the service reports (the top score through the
  merge's top calibration: the stored one now, the one fitted for the world after) fails
  when it rises by more than ``ece_max_delta`` with an interval above 0;
- a gold domain that does not move is *harmed* when its SemER rises by more than
  ``domain_max_delta`` with an interval above 0: an update changes which domain wins an
  utterance, so it is never purely local (a moving domain's own SemER is its owner's choice).

``policy`` says what harm costs. ``no_harm`` refuses any. ``bounded_harm`` weighs it
openly: a world that harms other domains passes only when

- overall SemER improves, with its whole interval below 0;
- each harmed domain's rise is at most ``harm_max_delta``;
- the errors it adds (utterances whose top got worse) are at most ``harm_max_share`` of
  the errors it removes.

The report names every harmed domain with its delta and interval, so its owner can respond
(the release planner retrains it against the new world: co-adaptation).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from rerank.hypotheses.tables import TableSet
from rerank.merge.evaluate import SplitData
from rerank.merge.ranker import BASELINE
from rerank.merge.top_calibration import CHOICES, describe
from rerank.model.registry import Registry


@dataclass(frozen=True)
class GateLimits:
    split: str = "dev"
    bootstrap: int = 1000
    confidence: float = 0.95
    seed: int = 0
    semer_max_delta: float = 0.0
    semer_max_upper: float = 0.005
    ece_max_delta: float = 0.01
    domain_max_delta: float = 0.01
    policy: str = "bounded_harm"
    harm_max_delta: float = 0.02
    harm_max_share: float = 0.34
    #: the merge's top calibration: platt, isotonic or auto (rerank.merge.top_calibration)
    top_calibration: str = "auto"

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "GateLimits":
        known = set(cls.__dataclass_fields__)
        if unknown := sorted(set(cfg) - known):
            raise ValueError(f"unknown gate settings {unknown}; known: {sorted(known)}")
        out = cls(**{k: type(getattr(cls, k))(v) for k, v in cfg.items()})
        if out.policy not in POLICIES:
            raise ValueError(f"gate.policy must be one of {POLICIES}, not {out.policy!r}")
        if out.top_calibration not in CHOICES:
            raise ValueError(f"gate.top_calibration must be one of {CHOICES}, not {out.top_calibration!r}")
        return out


POLICIES = ("no_harm", "bounded_harm")


def _no_worse(name: str, before: float, after: float, ci: list[float], max_delta: float, max_upper: float) -> dict:
    """Non-inferiority: not worse, and the interval's upper end within the tolerance."""
    delta = after - before
    upper_ok = ci[1] <= max_upper if np.isfinite(ci[1]) else True  # no bootstrap: the point alone
    return {"check": name, "before": before, "after": after, "delta": delta, "ci": ci,
            "limit": f"delta <= {max_delta:g} and upper end <= {max_upper:g}", "passed": bool(delta <= max_delta and upper_ok)}


def _no_harm(name: str, before: float, after: float, ci: list[float], max_delta: float) -> dict:
    """Fails only on evidence of harm: a rise beyond the tolerance with the interval above 0."""
    delta = after - before
    harm = delta > max_delta and (ci[0] > 0 if np.isfinite(ci[0]) else True)
    return {"check": name, "before": before, "after": after, "delta": delta, "ci": ci,
            "limit": f"not (delta > {max_delta:g} and interval above 0)", "passed": not harm}


def judge(limits: GateLimits, overall: Mapping, ece_fig: Mapping | None, per_domain: Mapping[str, dict], *,
          moved=(), added: float, removed: float) -> dict:
    """The checks of one world from its figures; ``per_domain`` rows gain ``harmed``. Returns the verdict's part
    of the report: ``accepted``, ``failed``, ``checks``, ``harmed``, ``per_domain``, ``policy``, ``errors_added``..."""
    checks = [_no_worse("overall SemER", overall["before"], overall["after"], list(overall["ci"]),
                        limits.semer_max_delta, limits.semer_max_upper)]
    if ece_fig is not None:
        checks.append(_no_harm("top-hypothesis ECE (served confidence)", ece_fig["before"], ece_fig["after"],
                               list(ece_fig["ci"]), limits.ece_max_delta))
    harmed = []
    for d, row in per_domain.items():
        # a moving domain's own SemER is its owner's choice (a better calibrated version may give up some of its
        # own utterances), as the single-domain gate always had it; what it does to the others is checked
        c = _no_harm(f"SemER of {d}", row["before"], row["after"], row["ci"], limits.domain_max_delta)
        row["harmed"] = d not in moved and not c["passed"]
        if d in moved:
            continue
        if row["harmed"]:
            harmed.append(d)
            if limits.policy == "bounded_harm":
                c = {**c, "limit": f"harm: delta <= {limits.harm_max_delta:g} (bounded_harm)",
                     "passed": bool(row["delta"] <= limits.harm_max_delta)}
        checks.append(c)
    share = added / removed if removed > 0 else (0.0 if added == 0 else float("inf"))
    if harmed and limits.policy == "bounded_harm":
        hi = overall["ci"][1]
        checks.append({"check": "overall SemER improves (harm is traded)", "before": overall["before"],
                       "after": overall["after"], "delta": overall["after"] - overall["before"], "ci": list(overall["ci"]),
                       "limit": "interval below 0", "passed": bool(hi < 0 if np.isfinite(hi) else overall["after"] < overall["before"])})
        checks.append({"check": "errors added / errors removed", "before": removed, "after": added, "delta": share,
                       "ci": [float("nan"), float("nan")], "limit": f"<= {limits.harm_max_share:g}",
                       "passed": bool(share <= limits.harm_max_share)})
    failed = [c["check"] for c in checks if not c["passed"]]
    # refused only for what it takes from other domains: co-adaptation may resolve it
    takes_only = bool(failed) and checks[0]["passed"] and all(
        f.startswith("SemER of ") or f in ("overall SemER improves (harm is traded)", "errors added / errors removed")
        for f in failed)
    return {"accepted": not failed, "failed": failed, "checks": checks, "per_domain": dict(per_domain), "harmed": harmed,
            "refused_for_harm_only": takes_only, "policy": limits.policy, "errors_added": added, "errors_removed": removed,
            "added_share": share, "limits": limits.__dict__}


def evaluate_candidate(tables: TableSet, registry: Registry, domain: str, version: str | None,
                       limits: GateLimits, data: SplitData | None = None) -> dict:
    """The gate's report on ``domain`` at ``version`` (None: back to the baseline) against what serves now."""
    from rerank.merge.world import World  # (the world reads these rules)

    if domain not in tables.domains:
        raise ValueError(f"unknown domain {domain!r}; the tables' domains: {list(tables.domains)}")
    world = World(tables, registry, limits, data=data)
    report = world.evaluate({domain: version})
    report.update({"domain": domain, "candidate": version or BASELINE, "current": world.live[domain] or BASELINE,
                   "others": {d: v for d, v in world.versions({}).items() if d != domain}})
    return report


def _num(x) -> str:
    return "-" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:+.4f}" if isinstance(x, float) else str(x)


def _moves(r: Mapping[str, Any]) -> str:
    return ", ".join(f"{d} {r['from'].get(d, '?')} -> {v}" for d, v in r["moves"].items()) or "no move"


def render_gate_report(r: Mapping[str, Any], title: str | None = None) -> str:
    """The gate's report of one world, in markdown: the checks, then every gold domain whose SemER moved."""
    verdict = "**accepted**" if r["accepted"] else f"**refused** ({', '.join(r['failed'])})"
    lines = [f"# {title or 'Gate'}: {r['corpus']}: {_moves(r)}", "",
             f"Verdict: {verdict} (policy {r['policy']}). Merge of every domain on {r['split']} ({r['utterances']} "
             f"utterances), every other domain at its live version (release {r['release']}); {r['changed_top']} utterances "
             f"change their top hypothesis. Intervals: paired bootstrap over utterances ({r['limits']['bootstrap']} "
             f"resamples, {r['limits']['confidence']:.0%}).", "",
             "| check | now | after | delta | interval | limit | passed |", "| --- | ---: | ---: | ---: | --- | --- | --- |"]
    quiet = [c for c in r["checks"] if c["check"].startswith("SemER of ") and c["passed"] and not c["delta"]]
    for c in r["checks"]:
        if any(c is q for q in quiet):
            continue
        lines.append(f"| {c['check']} | {c['before']:.4f} | {c['after']:.4f} | {_num(c['delta'])} | "
                     f"[{_num(c['ci'][0])}, {_num(c['ci'][1])}] | {c['limit']} | {'yes' if c['passed'] else '**no**'} |")
    if quiet:
        lines += ["", f"The SemER of {len(quiet)} other domains does not change (their checks pass)."]
    if r["harmed"]:
        lines += ["", f"Harmed domains ({len(r['harmed'])}): " + ", ".join(
            f"{d} {r['per_domain'][d]['delta']:+.4f} [{_num(r['per_domain'][d]['ci'][0])}, {_num(r['per_domain'][d]['ci'][1])}]"
            for d in r["harmed"]) + f". Errors added {r['errors_added']:.0f}, removed {r['errors_removed']:.0f}."]
    if (tc := r.get("top_calibration")) and tc.get("ece_before") is not None:
        lines += ["", f"Top calibration fitted for this world (stored with the release): confidence = "
                      f"{describe(tc)}; {r['split']} top-hypothesis ECE "
                      f"{tc['ece_before']:.4f} -> {tc['ece_after']:.4f} (cross-fitted) over {tc['utterances']} utterances."]
    moved = [(d, p) for d, p in r["per_domain"].items() if p["changed"] or p["delta"]]
    lines += ["", f"## SemER per gold domain ({len(moved)} of {len(r['per_domain'])} changed)", "",
              "| domain | utterances | now | after | delta | interval | top changed |",
              "| --- | ---: | ---: | ---: | ---: | --- | ---: |"]
    for d, p in sorted(moved, key=lambda x: -abs(x[1]["delta"])):
        mark = " (moves)" if d in r["moves"] else " (**harmed**)" if p.get("harmed") else ""
        lines.append(f"| {d}{mark} | {p['n']} | {p['before']:.4f} | {p['after']:.4f} | {_num(p['delta'])} | "
                     f"[{_num(p['ci'][0])}, {_num(p['ci'][1])}] | {p['changed']} |")
    return "\n".join(lines) + "\n"
