"""The release report for people: markdown, JSON, and one forest plot of the per-domain SemER deltas.

At 1,000 domains most rows do not move: the plot draws at most ``MAX_ROWS`` domains (the
largest changes, moved or harmed first) and summarises the rest in its title.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from rerank.io import write_json, write_text
from rerank.merge.gate import _num, render_gate_report

MAX_ROWS = 40


def forest_rows(report: Mapping[str, Any]) -> tuple[list[tuple[str, float, list[float], str]], int]:
    """The drawn rows (label, delta, interval, role) and how many changed domains were left out."""
    changed = [(d, p) for d, p in report["per_domain"].items() if p["changed"] or p["delta"]]
    role = {d: "moves" if d in report["moves"] else "harmed" if p.get("harmed") else "other" for d, p in changed}
    first = {"moves": 0, "harmed": 1, "other": 2}
    changed.sort(key=lambda x: (first[role[x[0]]], -abs(x[1]["delta"]), x[0]))
    rows = [(d, p["delta"], list(p["ci"]), role[d]) for d, p in changed[:MAX_ROWS]]
    return rows, max(0, len(changed) - MAX_ROWS)


def forest_plot(report: Mapping[str, Any], title: str):
    """Per-domain dev SemER delta with its interval, for the domains that changed (at most ``MAX_ROWS``)."""
    from rerank.plots import plt

    rows, left_out = forest_rows(report)
    fig, ax = plt.subplots(figsize=(7.5, 0.28 * max(1, len(rows)) + 1.6))
    colours = {"moves": "#4c72b0", "harmed": "#c44e52", "other": "#8c8c8c"}
    y = np.arange(len(rows))[::-1]
    for yi, (label, delta, ci, role) in zip(y, rows):
        lo, hi = (ci if np.all(np.isfinite(ci)) else [delta, delta])
        ax.plot([lo, hi], [yi, yi], color=colours[role], lw=1.5)
        ax.plot([delta], [yi], "o", color=colours[role], ms=4)
    ax.axvline(0.0, color="k", ls="--", lw=0.8)
    ax.set_yticks(y, [f"{r[0]} ({r[3]})" if r[3] != "other" else r[0] for r in rows], fontsize=7)
    ax.set_xlabel(f"{report['split']} SemER delta (after - now), {report['limits']['confidence']:.0%} paired bootstrap interval")
    more = f"; {left_out} more changed domains not drawn" if left_out else ""
    unchanged = len(report["per_domain"]) - len(rows) - left_out
    ax.set_title(f"{title}\n{unchanged} domains unchanged{more}", fontsize=9)
    fig.tight_layout()
    return fig


def render_release(result: Mapping[str, Any]) -> str:
    """The markdown report of a release plan: what goes live, what was refused and why, what co-adaptation did."""
    plan = result["plan"]
    head = "Dry run: nothing was applied" if result["dry_run"] else (
        f"Release {result['release']} applied" if result.get("release") else "Nothing to release")
    lines = [f"# Release plan: {plan['corpus']}", "",
             f"{head}. {len(result['candidates'])} pending candidates, {len(plan['moves'])} moves in the plan; "
             f"plan {result['plan_seconds']:.1f} s over {result['evaluations']} evaluated worlds "
             f"(scoring every version once: {result['world_seconds']:.1f} s)"
             + (f"; co-adaptation's retrains {result['coadapt_seconds']:.1f} s" if result["rounds"] else "") + ".", ""]
    lines.append("Candidates: " + (", ".join(f"{d} {v}" for d, v in sorted(result["candidates"].items())) or "none") + ".")
    if result["refused"]:
        lines += ["", "## Refused", "", "| unit | failed checks | harmed domains (delta [interval]) |", "| --- | --- | --- |"]
        for name, r in sorted(result["refused"].items()):
            harmed = ", ".join(f"{d} {r['per_domain'][d]['delta']:+.4f} [{_num(r['per_domain'][d]['ci'][0])}, "
                               f"{_num(r['per_domain'][d]['ci'][1])}]" for d in r.get("harmed", [])) or "-"
            lines.append(f"| {name} | {', '.join(r['failed'])} | {harmed} |")
    if result["rounds"]:
        lines += ["", "## Co-adaptation", "", "| round | retrained (against the release's world) | new versions | "
                  "moves in the plan | dev SemER of the plan |", "| ---: | --- | --- | ---: | ---: |"]
        for r in result["rounds"]:
            lines.append(f"| {r['round']} | {', '.join(r['retrained']) or '-'} | "
                         f"{', '.join(f'{d} {v}' for d, v in r['new'].items()) or '-'} | {r['moves']} | {r['semer']:.4f} |")
    lines += ["", "#" + render_gate_report(plan, title="The plan's world")]
    return "\n".join(lines) + "\n"


def write_release_report(result: Mapping[str, Any], folder: Path, stem: str) -> dict[str, str]:
    """``<stem>.md``, ``<stem>.json`` and ``<stem>.png`` in ``folder``; returns their paths."""
    from rerank.plots import save

    folder.mkdir(parents=True, exist_ok=True)
    paths = {k: str(folder / f"{stem}.{k}") for k in ("md", "json", "png")}
    write_json(paths["json"], result)
    write_text(paths["md"], render_release(result))
    save(forest_plot(result["plan"], f"Release plan of {result['plan']['corpus']}: per-domain {result['plan']['split']} SemER"),
         paths["png"])
    return paths
