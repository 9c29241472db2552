"""The evidence ablation: the default re-ranker with each family of evidence a domain owns.

``python benchmarks/run.py bench=ablation [data=hwu64 ...]`` trains the default system
(``configs/train.yaml``, no experiment) per domain with ``features.evidence`` set to nothing,
to each family alone (``rerank.model.features.EVIDENCE``), to every family, and to the
families that each improved dev SemER on their own. Every variant is measured on dev (SemER
and top ECE with bootstrap intervals); the variant best on dev SemER is evaluated on test
once, beside the variant without evidence (today's default), the baseline and the oracle.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from benchmarks.measure import machine
from benchmarks.report import _ci, _pct, command, quality_table, replace_section
from rerank.hypotheses.fields import NLU_FIELDS
from rerank.hypotheses.figures import oracle_score
from rerank.hypotheses.prepare import prepare
from rerank.io import write_json, write_text
from rerank.merge.evaluate import evaluate, split_baseline
from rerank.model.spec import EVIDENCE as FAMILIES, evidence_fields
from rerank.plots import interval_rows, save

SECTION = "Evidence ablation"


def _variant(families: Sequence[str]) -> str:
    return "evidence_" + ("+".join(families) or "none")


def evidence_override(families: Sequence[str]) -> str:
    return f"features.evidence=[{','.join(families)}]"


def ablation_rows(suite, families: Sequence[str], nlu_margin: float = 0.005) -> dict:
    """Train and measure every variant on dev; returns ``{"dev": [...], "chosen": [...], "runs": {...}}``."""
    runs, dev = {}, []

    def measure(label: str, fams: list[str]) -> dict:
        run = suite.train_variant(_variant(fams), [evidence_override(fams)])
        fig = evaluate(suite.dev, run["dev_score"], True, suite.n_boot, suite.seed)["overall"]
        row = {"name": label, "evidence": fams, "train_seconds": run["seconds"],
               **{k: fig.get(k) for k in ("semer", "semer_ci", "irer", "irer_ci", "domain_error", "ece_top", "ece_top_ci")}}
        runs[tuple(fams)] = run
        dev.append(row)
        return row

    none = measure("no evidence (features=base)", [])
    helped = []
    for f in families:
        row = measure(f"+ {f}", [f])
        if row["semer"] < none["semer"]:
            helped.append(f)
    every = measure("+ every family (text-derived and NLU-side)", list(families))
    if helped and helped != list(families) and len(helped) > 1:
        measure("+ the families that helped alone: " + ", ".join(helped), helped)
    text = [f for f in families if f not in nlu_families()]
    if not text or text == list(families):
        best = min(dev, key=lambda r: (r["semer"], dev.index(r)))
        return {"dev": dev, "chosen": best["evidence"], "helped_alone": helped, "runs": runs, "rule": "lowest dev SemER"}
    text_row = measure("+ the text-derived families only (a client sends dc, ic, ner and the text)", text)
    # The NLU-side families burden every client (fields its NLU must compute and send): they join the default only
    # if they lower dev SemER by more than nlu_margin.
    gain = text_row["semer"] - every["semer"]
    chosen = list(families) if gain > nlu_margin else text
    rule = (f"the text-derived families, unless adding the NLU-side ones ({', '.join(f for f in families if f not in text)}) "
            f"lowers dev SemER by more than {nlu_margin}: it lowers it by {gain:.4f}")
    return {"dev": dev, "chosen": chosen, "helped_alone": helped, "runs": runs, "rule": rule,
            "nlu_gain": gain, "every": list(families)}


def nlu_families() -> list[str]:
    """The evidence families that read only fields the NLU alone can send (the IC's and the tagger's)."""
    return [f for f in FAMILIES if (fields := evidence_fields([f])) and all(x in NLU_FIELDS for x in fields)]


def run_ablation(cfg: Mapping[str, Any], cli_overrides: Sequence[str] = ()) -> dict:
    from benchmarks.suite import Suite, benchmarks_md_path

    t0 = time.perf_counter()
    if cfg["data"].get("format") != "tables":
        prepare(cfg, force=False)
    s = Suite(cfg)
    families = list(cfg["benchmark"]["ablation"]["families"])
    s.baseline_row()
    out = ablation_rows(s, families, float(cfg["benchmark"]["ablation"].get("nlu_margin", 0.005)))
    shown = [[], out["chosen"]] if out["chosen"] else [[]]
    if out.get("every") and out["every"] != out["chosen"]:
        shown.append(out["every"])
    for fams in shown:
        run = out["runs"][tuple(fams)]
        what = "(chosen on dev)" if fams == out["chosen"] else "(not chosen: NLU-side evidence a client must send)"
        s.per_domain_row("default, features=base (no evidence)" if not fams else f"default + evidence [{', '.join(fams)}] {what}",
                         run, {"evidence": fams})
    s.oracle_row()
    base = evaluate(s.dev, split_baseline(s.dev), False, 0)["overall"]["semer"]
    oracle_dev = evaluate(s.dev, oracle_score(s.dev.semer), False, 0)["overall"]["semer"]
    for r in out["dev"]:
        r["gap_closed"] = (base - r["semer"]) / (base - oracle_dev) if base > oracle_dev else None
    st = s.default_settings()
    system = (f"{st['loss']} alpha {st['alpha']}, T {st['temperature']}, slates={st['candidates']} "
              f"(competitors {st['competitors']}), {st['model']}")
    results = {
        "corpus": s.corpus, "domains": s.domains, "bootstrap": s.n_boot, "families": families, "system": system,
        "dev": out["dev"], "dev_baseline_semer": base, "dev_oracle_semer": oracle_dev,
        "chosen": out["chosen"], "rule": out.get("rule"), "helped_alone": out["helped_alone"], "test_rows": s.rows,
        "command": command("ablation", cli_overrides),
        "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    out_dir = Path(s.dir)
    fig = interval_rows([(r["name"][:60], r["semer"], r["semer_ci"]) for r in out["dev"]], "dev SemER (95% bootstrap interval)",
                        f"{s.corpus}: evidence families, dev (dashed: no evidence)", reference=out["dev"][0]["semer"])
    save(fig, out_dir / "ablation.png")
    results["plot"] = "ablation.png"
    write_json(out_dir / "ablation.json", results)
    text = render_ablation(results)
    write_text(out_dir / "ablation.md", text)
    print(text)
    if cfg.get("write_benchmarks_md"):
        path = benchmarks_md_path(cfg)
        old = path.read_text(encoding="utf-8") if path.exists() else ""
        write_text(path, replace_section(old, text, s.corpus, SECTION).rstrip("\n") + "\n")
        print(f"benchmark: updated the section '{SECTION}: {s.corpus}' of {path}")
    return results


def render_ablation(results: Mapping[str, Any]) -> str:
    """The ``## Evidence ablation: <corpus>`` section (BENCHMARKS.md) and ``ablation.md``, from ``ablation.json``."""
    lines = [f"## {SECTION}: {results['corpus']}", "",
             f"Generated by `{results['command']}` on {results['machine']}, {results['date']} ({results['seconds']} s). "
             f"The default system ({results.get('system', 'R3, `slates=utterance`, linear')}) trained per domain with "
             "`features.evidence` set as in each "
             f"row; dev split, 95% bootstrap intervals ({results['bootstrap']} resamples); gap closed on dev (baseline "
             f"{results['dev_baseline_semer']:.4f}, oracle {results['dev_oracle_semer']:.4f}). Chosen on dev "
             f"({results.get('rule') or 'lowest dev SemER'}): `{results['chosen'] or 'none'}`; evaluated on test once, "
             "below, beside no evidence and every family.", "",
             "### Dev, one row per evidence family", "",
             "| evidence | dev SemER [95% CI] | dev IRER [95% CI] | domain err | dev top ECE [95% CI] | gap closed (dev) |",
             "| --- | --- | --- | ---: | --- | ---: |"]
    for r in results["dev"]:
        lines.append(f"| {r['name']} | {_ci(r, 'semer')} | {_ci(r, 'irer')} | {r['domain_error']:.4f} | {_ci(r, 'ece_top')} | "
                     f"{_pct(r.get('gap_closed'))} |")
    if results.get("plot"):
        lines += ["", f"![dev SemER per evidence family]({results['plot']})"]
    lines += ["", "### Test, evaluated once", "", *quality_table(results["test_rows"]), ""]
    return "\n".join(lines)
