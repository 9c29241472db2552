"""The merge report: ``report.md`` with tables and pictures, ``metrics.json``, PNGs, TensorBoard images."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from rerank.io import write_json, write_text


def _fmt(x, digits=4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _ci(m: Mapping, key: str) -> str:
    ci = m.get(f"{key}_ci")
    return f"{_fmt(m.get(key))} [{ci[0]:.4f}, {ci[1]:.4f}]" if ci and m.get(key) is not None else _fmt(m.get(key))


def main_table(metrics: Mapping[str, Mapping]) -> list[str]:
    base, oracle = metrics["baseline"]["semer"], metrics["oracle"]["semer"]
    lines = ["| system | SemER [95% CI] | IRER [95% CI] | domain err | intent err | slot F1 | ECE [95% CI] | MCE | Brier | NLL | SemER vs baseline | gap closed |",
             "| --- | --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, m in metrics.items():
        rel = (m["semer"] - base) / base if base else float("nan")
        gap = (base - m["semer"]) / (base - oracle) if base > oracle else float("nan")
        lines.append(f"| {name} | {_ci(m, 'semer')} | {_ci(m, 'irer')} | {_fmt(m['domain_error'])} | {_fmt(m['intent_error'])} | "
                     f"{_fmt(m['slot_f1'])} | {_ci(m, 'ece_top')} | {_fmt(m.get('mce_top'))} | {_fmt(m.get('brier_top'))} | {_fmt(m.get('nll_top'))} | "
                     f"{rel:+.1%} | {gap:.1%} |")
    return lines


def write_report(report_dir: Path, metrics: dict, meta: dict, tops: dict, scorers: dict, log_dir: str | None) -> str:
    """``tops``: the :class:`~rerank.merge.evaluate.TopHypotheses` of every calibrated system, for the diagrams."""
    from rerank.plots import feature_weights, reliability_diagram, reliability_grid, save

    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    write_json(report_dir / "metrics.json", {**metrics, "_meta": meta})
    calibrated = {n: (t.conf, t.correct) for n, t in tops.items()}
    figs = {"reliability": reliability_diagram(calibrated, title=f"{meta['corpus']} {meta['split']}: top hypothesis")}
    per_domain = {}
    for n, t in tops.items():
        for d in sorted(set(t.gold_domain)):
            m = t.gold_domain == d
            per_domain.setdefault(d, {})[n] = (t.conf[m], t.correct[m])
    figs["reliability_per_domain"] = reliability_grid(per_domain)
    W = {d: w for d, s in scorers.items() if (w := s.feature_weights()) is not None}
    if W:
        figs["feature_weights"] = feature_weights(W)
    if log_dir:
        try:
            from torch.utils.tensorboard import SummaryWriter

            with SummaryWriter(str(Path(log_dir) / "tensorboard" / meta["corpus"] / "_merge" / meta["split"])) as w:
                for name, fig in figs.items():
                    w.add_figure(f"merge/{name}", fig)
                for sys_name, m in metrics.items():
                    for k in ("semer", "irer", "ece_top", "brier_top"):
                        if m.get(k) is not None:
                            w.add_scalar(f"merge/{sys_name}/{k}", m[k])
        except ImportError:
            pass
    for name, fig in figs.items():
        save(fig, report_dir / f"{name}.png")

    lines = [f"# Merge report: {meta['corpus']} / {meta['split']}", "",
             f"{meta['utterances']} utterances, {meta['hypotheses']} hypotheses. Top hypothesis of each utterance; "
             "an utterance with no hypothesis counts as a full error. Intervals: bootstrap over utterances, 95%.", "",
             *main_table(metrics), "",
             "*gap closed*: share of the baseline-to-oracle SemER gap that the system closes. "
             "Calibration figures (ECE with 15 bins, MCE, Brier, NLL) are of the top hypothesis' score read as P(exactly right).", ""]
    if (tc := meta.get("top_calibration")) is not None:
        stale = f" It was fitted for other versions of {', '.join(tc['stale'])}: refit it with `scripts/promote.py recalibrate=true`." if tc["stale"] else ""
        lines += [f"The first row's top-hypothesis confidence is the merge's top calibration "
                  f"(sigmoid({tc['scale']:.3f} * logit(top score) {tc['shift']:+.3f}), fitted on {tc['split']} by the "
                  f"promotion gate, {tc['fitted_at']}); the other rows show their raw top scores.{stale}", ""]
    flagged = {n: f for n, f in meta["fallback_domains"].items() if f}
    if flagged:
        lines += ["## Domains scored by the unweighted baseline (no live version, or none of that loss)", ""]
        lines += [f"- **{n}**: {', '.join(f)}" for n, f in flagged.items()] + [""]
    lines += ["## Calibration", "", "![reliability diagram](reliability.png)", "", "![per domain](reliability_per_domain.png)", ""]
    if "feature_weights" in figs:
        lines += ["## Learned feature weights (published models, standardised)", "", "![feature weights](feature_weights.png)", ""]
    names = list(metrics)
    lines += ["## SemER per gold domain", "", "| domain | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    for d in metrics["baseline"]["per_domain"]:
        lines.append(f"| {d} | " + " | ".join(_fmt(metrics[n]["per_domain"].get(d, {}).get("semer")) for n in names) + " |")
    lines += ["", "## ECE (top hypothesis) per gold domain", "", "| domain | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    for d in metrics["baseline"]["per_domain"]:
        lines.append(f"| {d} | " + " | ".join(_fmt(metrics[n]["per_domain"].get(d, {}).get("ece_top")) for n in names) + " |")
    if meta.get("versions"):
        lines += ["", "## Model versions", "", "| system | " + " | ".join(sorted(next(iter(meta["versions"].values())))) + " |"]
        doms = sorted(next(iter(meta["versions"].values())))
        lines.append("| --- |" + " --- |" * len(doms))
        for n, v in meta["versions"].items():
            lines.append(f"| {n} | " + " | ".join(v.get(d, "-") for d in doms) + " |")
    text = "\n".join(lines) + "\n"
    write_text(report_dir / "report.md", text)
    return text
