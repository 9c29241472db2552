"""report.md of the benchmark and its section of BENCHMARKS.md, both rendered from results.json alone."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

#: the entry point every benchmark runs through (benchmarks/run.py)
ENTRY = "python benchmarks/run.py"


def command(bench: str, overrides: Sequence[str] = ()) -> str:
    """The command line that runs ``bench`` with ``overrides`` (as results.json and BENCHMARKS.md record it)."""
    return " ".join([ENTRY, f"bench={bench}", *(o for o in overrides if not o.startswith("bench="))])


# ECE, MCE and Brier are of the top hypothesis of each utterance (ece_top, ...); the second ECE is after
# the merge's top calibration (ece_top_merge), fitted on the row's dev lists
QUALITY_COLUMNS = ["system", "SemER [95% CI]", "IRER [95% CI]", "domain err", "top ECE [95% CI]",
                   "top ECE, merge top calibration [95% CI]", "top MCE", "top Brier", "gap closed", "train wall (s)",
                   "one domain retrains alone"]


def _f(x, digits=4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _ci(row: Mapping, key: str) -> str:
    v, ci = row.get(key), row.get(f"{key}_ci")
    if v is None:
        return "-"
    return f"{v:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else f"{v:.4f}"


def _pct(x) -> str:
    return "-" if x is None else f"{x:.1%}"


def quality_table(rows) -> list[str]:
    lines = ["| " + " | ".join(QUALITY_COLUMNS) + " |", "| --- | --- | --- |" + " ---: |" * (len(QUALITY_COLUMNS) - 4) + " --- |"]
    for r in rows:
        if r.get("status", "ok") != "ok":
            lines.append(f"| {r['name']} | {r['status']} |" + " - |" * (len(QUALITY_COLUMNS) - 3) + f" {r.get('retrain_alone', '-')} |")
            continue
        secs = r.get("train_seconds")
        lines.append(f"| {r['name']} | {_ci(r, 'semer')} | {_ci(r, 'irer')} | {_f(r.get('domain_error'))} | "
                     f"{_ci(r, 'ece_top')} | {_ci(r, 'ece_top_merge')} | "
                     f"{_f(r.get('mce_top'))} | {_f(r.get('brier_top'))} | {_pct(r.get('gap_closed'))} | "
                     f"{'-' if secs is None else f'{secs:.1f}'} | {r.get('retrain_alone', '-')} |")
    return lines


def _overlap(a: Mapping, b: Mapping, key: str = "semer") -> bool:
    ca, cb = a.get(f"{key}_ci"), b.get(f"{key}_ci")
    return bool(ca and cb and ca[0] <= cb[1] and cb[0] <= ca[1])


def findings(rows) -> list[str]:
    """Plain sentences: where a row loses to an alternative."""
    ok = [r for r in rows if r.get("status", "ok") == "ok" and r.get("semer") is not None]
    by_kind = {}
    for r in ok:
        by_kind.setdefault(r["kind"], []).append(r)
    base = next((r for r in ok if r["kind"] == "baseline"), None)
    platt = next((r for r in ok if r["kind"] == "post-hoc"), None)
    joints = by_kind.get("joint", [])
    out = []

    def cmp(r, other, key, label):
        a, b = r.get(key), other.get(key)
        if a is None or b is None or a <= b:
            return None
        note = (" (the 95% intervals overlap: not a significant difference at this test size)"
                if key == "semer" and _overlap(r, other) else "")
        return f"**{r['name']}** loses to **{other['name']}** on {label}: {a:.4f} vs {b:.4f}{note}."

    for r in by_kind.get("per-domain", []):
        for other, key, label in ((base, "semer", "SemER"), (base, "ece_top", "top ECE"),
                                  (platt, "semer", "SemER"), (platt, "ece_top", "top ECE"),
                                  *((j, "semer", "SemER") for j in joints)):
            if other is not None and (s := cmp(r, other, key, label)):
                out.append(s)
    if platt and base:
        for key, label in (("semer", "SemER"), ("ece_top", "top ECE")):
            if s := cmp(platt, base, key, label):
                out.append(s)
    for j in joints:
        if base and (s := cmp(j, base, "semer", "SemER")):
            out.append(s)
    per_domain = by_kind.get("per-domain", [])
    if per_domain:
        best = min(per_domain, key=lambda r: r["semer"])
        out.append(f"Best per-domain row by test SemER: **{best['name']}** "
                   f"({best['semer']:.4f}, gap closed {_pct(best.get('gap_closed'))}).")
        for j in joints:
            if j["semer"] < best["semer"]:
                out.append(f"The non-modular **{j['name']}** beats the best per-domain row on SemER "
                           f"({j['semer']:.4f} vs {best['semer']:.4f})"
                           + ("; intervals overlap" if _overlap(j, best) else "") + ": that is the price of modularity on this corpus.")
            elif j["semer"] == best["semer"]:
                out.append(f"The best per-domain row ties with **{j['name']}** on SemER ({best['semer']:.4f}).")
            else:
                out.append(f"The best per-domain row beats **{j['name']}** on SemER ({best['semer']:.4f} vs {j['semer']:.4f}).")
        calibrated = [r for r in ok if r.get("ece_top") is not None]
        if calibrated:
            c = min(calibrated, key=lambda r: r["ece_top"])
            out.append(f"Best calibrated row (lowest top-hypothesis ECE): **{c['name']}** ({c['ece_top']:.4f}).")
    return out


def speed_lines(speed: Mapping[str, Any] | None) -> list[str]:
    if not speed:
        return []
    lines = ["| figure | value |", "| --- | --- |"]
    lines.append(f"| prepare (recognizers + hypotheses; {speed.get('prepare_note', '')}) | {_f(speed.get('prepare_seconds'), 1)} s |")
    for loss, per in (speed.get("train_hypotheses_per_second") or {}).items():
        vals = [v for v in per.values() if v is not None]
        if vals:
            lines.append(f"| training throughput {loss} (hypotheses/s through the loss, per domain) | "
                         f"median {sorted(vals)[len(vals) // 2]:,.0f}, min {min(vals):,.0f}, max {max(vals):,.0f} |")
    lines.append(f"| sweep R2 over every domain, sequential in-process | {_f(speed.get('sweep_sequential_seconds'), 1)} s |")
    if sj := speed.get("sweep_joblib"):
        status = "" if sj.get("returncode") == 0 else f" (FAILED, return code {sj.get('returncode')})"
        lines.append(f"| sweep R2 over every domain, `scripts/train.py -m` joblib n_jobs={sj['n_jobs']} (subprocess) "
                     f"| {sj['seconds']:.1f} s{status} |")
    else:
        lines.append("| sweep, joblib | not run (benchmark.speed.joblib_sweep=false) |")
    if sr := speed.get("sweep_ray"):
        status = "" if sr.get("returncode") == 0 else f" (failed, exit {sr.get('returncode')})"
        lines.append("| sweep R2 over every domain, `scripts/train.py -m hydra/launcher=ray` (local cluster, subprocess) "
                     f"| {sr['seconds']:.1f} s{status} |")
    else:
        lines.append("| sweep, Ray | not run (no Ray launcher here: `pip install -e '.[ray]'` or benchmark.speed.ray_python=...) |")
    if speed.get("merge_hypotheses_per_second"):
        lines.append(f"| merge throughput (score_tables, test split) | {speed['merge_hypotheses_per_second']:,.0f} hypotheses/s |")
    if (rl := speed.get("rank_latency")) and rl.get("utterances"):
        lines.append(f"| rank() latency over {rl['utterances']} utterances (~{rl['mean_hypotheses']:.1f} hypotheses each) | "
                     f"p50 {rl['p50_ms']:.3f} ms, p99 {rl['p99_ms']:.3f} ms |")
    if pm := speed.get("peak_rss_mb"):
        lines.append(f"| peak memory (max RSS) | this process {pm['self']:.0f} MB, largest child {pm['largest_child']:.0f} MB |")
    return lines


def async_lines(a: Mapping[str, Any] | None) -> list[str]:
    if not a:
        return ["Not run (benchmark.async_update.enabled=false)."]
    o = a["overall"]
    lines = [f"Domain **{a['domain']}** retrained alone with `{' '.join(a['change'])}` on top of the selected R3 system, published "
             f"({a['versions_before'][a['domain']]} -> {a['versions_after'][a['domain']]}), merged again.", "",
             f"- other domains' scores bit-identical before and after: **{'yes' if a['other_domains_bit_identical'] else 'NO'}** "
             f"({a['other_domain_rows']} test hypotheses compared with `np.array_equal`); "
             f"{a['updated_domain_rows_changed']} of the updated domain's {a['updated_domain_rows']} scores changed;",
             f"- overall test SemER {_f(o['semer']['before'])} -> {_f(o['semer']['after'])}, IRER {_f(o['irer']['before'])} -> "
             f"{_f(o['irer']['after'])}, ECE {_f(o['ece_top']['before'])} -> {_f(o['ece_top']['after'])};",
             f"- wall time: single-domain update {a['update_seconds']:.1f} s "
             f"(training {a['update_train_seconds']:.1f} s, plus publish and merge) "
             f"vs full sequential retrain of every domain {a['full_retrain_seconds']:.1f} s "
             f"(that domain's share of it: {_f(a.get('full_retrain_seconds_of_that_domain'), 1)} s).", "",
             "| gold domain | SemER before | SemER after | change |", "| --- | ---: | ---: | ---: |"]
    for d, m in a["per_domain"].items():
        b0, a0 = m["semer"]["before"], m["semer"]["after"]
        lines.append(f"| {d}{' (updated)' if d == a['domain'] else ''} | {_f(b0)} | {_f(a0)} | "
                     f"{'-' if b0 is None or a0 is None else f'{a0 - b0:+.4f}'} |")
    lines += ["", "Utterances of other gold domains can still change their top hypothesis: the updated domain's hypotheses "
              "compete in every utterance's list. The other domains' *scores* do not change."]
    if g := a.get("gate"):
        verdict = "accepted: it went live" if g["accepted"] else f"**refused** ({', '.join(g['failed'])}): the previous version stays live"
        lines += ["", f"**The promotion gate** (dev, {g['seconds']:.1f} s) on this update: {verdict}. "
                  f"Live after the gate: {a['domain']} {g['live']}."]
    return lines


def selection_lines(sel: Mapping[str, Any]) -> list[str]:
    lines = []
    if r1 := sel.get("R1"):
        lines.append(f"- R1 temperature chosen on dev: T={r1['temperature']:g} (dev SemER per T: "
                     + ", ".join(f"{k}: {v:.4f}" for k, v in r1["dev_semer"].items()) + f"; grid {r1['grid_seconds']:.0f} s)")
    if r3 := sel.get("R3"):
        lines.append(f"- R3 chosen on dev: alpha={r3['alpha']:g}, T={r3['temperature']:g} (grid of {len(r3['dev_semer'])}, "
                     f"{r3['grid_seconds']:.0f} s; best dev SemER {min(r3['dev_semer'].values()):.4f}, "
                     f"worst {max(r3['dev_semer'].values()):.4f})")
    if j := sel.get("joint"):
        grid = "; dev SemER per (alpha, T): " + ", ".join(f"{k}: {v:.4f}" for k, v in j["grid"].items()) if j.get("grid") else ""
        lines.append(f"- joint model on the default's features: alpha={j.get('alpha')}, T={j.get('temperature')} chosen on dev, "
                     f"L-BFGS {j.get('evaluations')} function evaluations on {j.get('hypotheses')} training hypotheses, dev SemER "
                     f"{_f(j.get('dev_semer'))}{grid}")
    for key, label in (("lambdamart", "LightGBM LambdaMART on the default's features"), ("trees", "per-domain LightGBM"),
                       ("intent_linear", "per-intent evidence weights, L2")):
        if m := sel.get(key):
            chosen = m.get("chosen", m.get("interaction_l2"))
            lines.append(f"- {label}: {chosen} chosen on dev (dev SemER per setting: "
                         + ", ".join(f"{k}: {v:.4f}" for k, v in m["dev_semer"].items()) + f"; grid {m['grid_seconds']:.0f} s)")
    return lines


def render_report(results: Mapping[str, Any]) -> str:
    u = results["utterances"]
    lines = [f"# Benchmark suite: {results['corpus']}", "",
             f"{len(results['domains'])} domains; utterances train/dev/test {u['train']}/{u['dev']}/{u['test']}; "
             f"test hypotheses {results['hypotheses']['test']}. Every row ranks the same test hypotheses; figures of the top "
             f"hypothesis per utterance; 95% intervals: bootstrap over utterances ({results['bootstrap']} resamples). "
             f"Model selection on dev only; test evaluated once per configuration. Total wall time {results.get('seconds')} s.", "",
             "## Quality (test split)", "", *quality_table(results["rows"]), "",
             "*gap closed*: share of the baseline-to-oracle SemER gap closed. *train wall*: sequential wall time of "
             "training every domain of that row once (the selection grids are extra, below); per-domain rows go through "
             "`train()` (Lightning, checkpoints, publish), the joint model is a bare torch L-BFGS loop "
             "and Platt a few two-parameter Newton fits, "
             "so those times are not like for like. ECE/MCE/Brier: the top "
             "hypothesis' score read as P(exactly right); \"-\" where scores are not probabilities.", "",
             "## Where a row loses", "", *[f"- {s}" for s in findings(results["rows"])], "",
             "## Model selection (dev)", "", *selection_lines(results.get("selection") or {}), "",
             "## Asynchronous update of one domain", "", *async_lines(results.get("async_update")), "",
             "## Speed", "", *speed_lines(results.get("speed")), ""]
    rows = [r for r in results["rows"] if r.get("per_domain")]
    if rows:
        names = [r["name"] for r in rows]
        lines += ["## SemER per gold domain (test)", "", "| domain | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
        for d in rows[0]["per_domain"]:
            lines.append(f"| {d} | " + " | ".join(_f(r["per_domain"].get(d, {}).get("semer")) for r in rows) + " |")
        lines.append("")
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in results.get("plots") or []] + [""]
    return "\n".join(lines)


def render_benchmarks_md(results: Mapping[str, Any]) -> str:
    """The ``## Benchmark suite: <corpus>`` section of BENCHMARKS.md (headings one level down), from results.json."""
    corpus = results["corpus"]
    u = results["utterances"]
    lines = [f"## Benchmark suite: {corpus}", "",
             f"Generated by `{results.get('command', command('suite'))}` from `outputs/benchmarks/{corpus}/results.json` "
             f"(test split, {u['test']} utterances, {len(results['domains'])} domains; 95% bootstrap intervals) "
             f"on {results.get('machine', 'an unrecorded machine')}, {results.get('date', 'unrecorded date')}. "
             "Do not edit by hand: the next run replaces this section.", "",
             "### Quality", "", *quality_table(results["rows"]), "",
             "### Where a row loses", "", *[f"- {s}" for s in findings(results["rows"])], "",
             "### Model selection (dev)", "", *selection_lines(results.get("selection") or {}), "",
             "### Asynchronous update", "", *async_lines(results.get("async_update")), "",
             "### Speed", "", *speed_lines(results.get("speed")), "",
             "Growth with the number of domains and the size of the corpus: BENCHMARKS.md, Scale.", ""]
    return "\n".join(lines)


def replace_section(text: str, section: str, corpus: str, title: str = "Benchmark suite") -> str:
    """``text`` with its ``## <title>: <corpus>`` section (up to the next ``## `` heading) replaced or appended."""
    heading = f"## {title}: {corpus}"
    pattern = re.compile(rf"^{re.escape(heading)}[ \t]*$.*?(?=^## |\Z)", re.M | re.S)
    section = section.rstrip("\n") + "\n\n"
    if pattern.search(text):
        return pattern.sub(lambda _: section, text, count=1)
    if not text.strip():
        text = "# Benchmarks\n\n"
    return text.rstrip("\n") + "\n\n" + section


def update_benchmarks_md(path: str | Path, results: Mapping[str, Any]) -> str:
    from rerank.io import write_text

    path = Path(path)
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    new = replace_section(old, render_benchmarks_md(results), results["corpus"]).rstrip("\n") + "\n"
    write_text(path, new)
    return new
