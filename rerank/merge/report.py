"""The merge report: ``report.md`` with tables and pictures, ``metrics.json``, PNGs, TensorBoard images.

It stays readable at a thousand domains: the pictures and tables that show domains one by one show
the few that matter (the worst calibrated, the busiest, the furthest from the baseline), one summary
picture shows every domain, and ``per_domain.csv`` holds every figure of every domain.
"""
from __future__ import annotations

import csv
import io
import struct
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from rerank.io import write_json, write_text
from rerank.merge.evaluate import FIGURES
from rerank.merge.top_calibration import describe

#: panels of the per-domain reliability grid
GRID_DOMAINS = 12
#: the grid's bins: a domain of 40 test utterances gets two, one of 200 or more ten
GRID_BINS, GRID_BIN_COUNT = 10, 20
#: rows of the weights heat map and of the per-domain tables; a corpus with no more domains shows them all
TABLE_DOMAINS = 30
#: the system the others are compared with
REFERENCE = "baseline"


def _fmt(x, digits=4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _ci(m: Mapping, key: str) -> str:
    ci = m.get(f"{key}_ci")
    return f"{_fmt(m.get(key))} [{ci[0]:.4f}, {ci[1]:.4f}]" if ci and m.get(key) is not None else _fmt(m.get(key))


def main_table(metrics: Mapping[str, Mapping]) -> list[str]:
    base, oracle = metrics["baseline"]["semer"], metrics["oracle"]["semer"]
    lines = ["| system | SemER [95% CI] | IRER [95% CI] | domain err | intent err | slot F1 | ECE [95% CI] "
             "| MCE | Brier | NLL | SemER vs baseline | gap closed |",
             "| --- | --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, m in metrics.items():
        rel = (m["semer"] - base) / base if base else float("nan")
        gap = (base - m["semer"]) / (base - oracle) if base > oracle else float("nan")
        lines.append(f"| {name} | {_ci(m, 'semer')} | {_ci(m, 'irer')} | {_fmt(m['domain_error'])} | {_fmt(m['intent_error'])} | "
                     f"{_fmt(m['slot_f1'])} | {_ci(m, 'ece_top')} | {_fmt(m.get('mce_top'))} | "
                     f"{_fmt(m.get('brier_top'))} | {_fmt(m.get('nll_top'))} | "
                     f"{rel:+.1%} | {gap:.1%} |")
    return lines


# ------------------------------------------------------------------ which domains a picture shows


def worst_calibrated(per_domain: Mapping[str, Mapping], k: int = GRID_DOMAINS) -> list[str]:
    """The ``k`` domains whose top-hypothesis ECE has the highest lower 95% bound: the most surely miscalibrated.

    Ranking by the ECE itself would pick the smallest domains, whose binned ECE is large by chance alone.
    Without intervals (no bootstrap), by the ECE.
    """
    rated = [d for d, m in per_domain.items() if m.get("ece_top") is not None]
    return sorted(rated, key=lambda d: (-(per_domain[d].get("ece_top_ci") or [per_domain[d]["ece_top"]])[0],
                                        -per_domain[d]["ece_top"], d))[:k]


def busiest(per_domain: Mapping[str, Mapping], among: Sequence[str], k: int = TABLE_DOMAINS) -> list[str]:
    """The ``k`` domains of ``among`` with the most test utterances (gold), busiest first."""
    return sorted(among, key=lambda d: (-per_domain.get(d, {}).get("n", 0), d))[:k]


def furthest_from_reference(metrics: Mapping[str, Mapping], system: str, k: int = TABLE_DOMAINS) -> list[str]:
    """The ``k`` domains where ``system``'s SemER rose most above the reference's (or fell least)."""
    ref = metrics[REFERENCE]["per_domain"]
    return sorted(ref, key=lambda d: (-_semer_change(metrics, system, d), d))[:k]


def shared_features(weights: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The features at least half the domains have, in the order first seen: the dense, rank, context and
    evidence features; each domain's own intents and slot types drop out (at 1,000 domains, thousands of them)."""
    count: dict[str, int] = {}
    for w in weights.values():
        for f in w:
            count[f] = count.get(f, 0) + 1
    return [f for f, c in count.items() if 2 * c >= len(weights)]


def _semer_change(metrics: Mapping[str, Mapping], system: str, domain: str) -> float:
    m = metrics[system]["per_domain"].get(domain, {})
    if "semer_vs_baseline" in m:
        return m["semer_vs_baseline"]
    return m.get("semer", np.nan) - metrics[REFERENCE]["per_domain"][domain]["semer"]


# ------------------------------------------------------------------ pictures


def domain_tops(tops: Mapping, domains: Sequence[str]) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """``{domain: {system: (confidence, correct)}}`` of the top hypotheses of the gold ``domains``."""
    out: dict[str, dict] = {d: {} for d in domains}
    for name, t in tops.items():
        for d in domains:
            m = t.gold_domain == d
            out[d][name] = (t.conf[m], t.correct[m])
    return out


def summary_figure(metrics: Mapping[str, Mapping], system: str):
    """Every domain: SemER change and ECE of ``system`` against the reference (:func:`rerank.plots.domain_summary`)."""
    from rerank.plots import domain_summary

    pd, ref = metrics[system]["per_domain"], metrics[REFERENCE]["per_domain"]
    domains = [d for d in ref if d in pd]
    change = np.array([_semer_change(metrics, system, d) for d in domains])
    change_ci = np.array([pd[d].get("semer_vs_baseline_ci") or [c, c] for d, c in zip(domains, change)])
    rated = [d for d in domains if pd[d].get("ece_top") is not None]
    ece = np.array([pd[d]["ece_top"] for d in rated])
    ece_ci = np.array([pd[d].get("ece_top_ci") or [e, e] for d, e in zip(rated, ece)])
    ece_ref = np.array([np.nan if ref[d].get("ece_top") is None else ref[d]["ece_top"] for d in rated])
    return domain_summary((domains, change, change_ci.reshape(-1, 2)), (rated, ece, ece_ci.reshape(-1, 2), ece_ref),
                          system, REFERENCE)


def figures(metrics: Mapping[str, Mapping], meta: Mapping, tops: Mapping, scorers: Mapping) -> dict:
    """The report's pictures, each of a size that does not grow with the number of domains."""
    from rerank.plots import reliability_diagram, reliability_grid, weights_overview

    system = next(iter(metrics))  # the live models come first: what serves traffic
    per_domain = metrics[system]["per_domain"]
    worst = worst_calibrated(per_domain)
    figs = {"reliability": reliability_diagram({n: (t.conf, t.correct) for n, t in tops.items()},
                                               title=f"{meta['corpus']} {meta['split']}: top hypothesis"),
            "reliability_per_domain": reliability_grid(domain_tops(tops, worst), n_bins=GRID_BINS, min_count=GRID_BIN_COUNT,
                                                       title=_grid_title(len(worst), len(per_domain), system)),
            "domains": summary_figure(metrics, system)}
    W = {d: w for d, s in scorers.items() if (w := s.feature_weights()) is not None}
    if W:
        rows = busiest(per_domain, list(W))
        figs["feature_weights"] = weights_overview(W, rows, shared_features(W), title=(
            f"learned weights (standardised) of the features most domains have: the {len(rows)} busiest domains"))
    return figs


def _grid_title(shown: int, domains: int, system: str) -> str:
    which = f"the {shown} domains" if shown < domains else "every domain"
    return (f"{which} by the lower 95% bound of their top-hypothesis ECE ({system}), highest first "
            f"(bins of equal count: at most {GRID_BINS}, of at least {GRID_BIN_COUNT} points)")


# ------------------------------------------------------------------ tables


def per_domain_csv(metrics: Mapping[str, Mapping]) -> str:
    """Every figure of every system and gold domain, one row per (domain, system)."""
    rows = [(d, name, m["per_domain"].get(d, {})) for d in metrics[REFERENCE]["per_domain"] for name, m in metrics.items()]
    with_ci = {k for _, _, f in rows for k in f if f"{k}_ci" in f}
    keys = [k for k in ("n", *FIGURES, "semer_vs_baseline") if any(k in f for _, _, f in rows)]
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["domain", "system", *(c for k in keys for c in ((k, f"{k}_ci_low", f"{k}_ci_high") if k in with_ci else (k,)))])
    for d, name, f in rows:
        w.writerow([d, name, *(v for k in keys for v in ((f.get(k), *(f.get(f"{k}_ci") or (None, None))) if k in with_ci
                                                          else (f.get(k),)))])
    return out.getvalue()


def per_domain_tables(metrics: Mapping[str, Mapping]) -> list[str]:
    names, system = list(metrics), next(iter(metrics))
    all_domains = list(metrics[REFERENCE]["per_domain"])
    few = len(all_domains) <= TABLE_DOMAINS
    semer_rows = all_domains if few else furthest_from_reference(metrics, system)
    ece_rows = all_domains if few else worst_calibrated(metrics[system]["per_domain"])
    head = ["| domain | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]

    def rows(domains, key):
        return [f"| {d} | " + " | ".join(_fmt(metrics[n]["per_domain"].get(d, {}).get(key)) for n in names) + " |" for d in domains]

    every = "" if few else f" Every domain's figures: [per_domain.csv](per_domain.csv) ({len(all_domains)} domains)."
    return ["## SemER per gold domain", "",
            *([] if few else [f"The {len(semer_rows)} domains where {system}'s SemER rose most above the {REFERENCE}'s "
                              f"(or fell least).{every}", ""]),
            *head, *rows(semer_rows, "semer"), "",
            "## ECE (top hypothesis) per gold domain", "",
            *([] if few else [f"The {len(ece_rows)} domains of the reliability grid.{every}", ""]),
            *head, *rows(ece_rows, "ece_top")]


def versions_table(versions: Mapping[str, Mapping[str, str]]) -> list[str]:
    doms = sorted(next(iter(versions.values())))
    if len(doms) > TABLE_DOMAINS:
        return ["", "## Model versions", "", "| system | published models | baseline |", "| --- | ---: | ---: |",
                *(f"| {n} | {sum(x != 'baseline' for x in v.values())} | {sum(x == 'baseline' for x in v.values())} |"
                  for n, v in versions.items()), "", "Every domain's version: `_meta.versions` in metrics.json."]
    return ["", "## Model versions", "", "| system | " + " | ".join(doms) + " |", "| --- |" + " --- |" * len(doms),
            *(f"| {n} | " + " | ".join(v.get(d, "-") for d in doms) + " |" for n, v in versions.items())]


# ------------------------------------------------------------------ the report


def write_report(report_dir: Path, metrics: dict, meta: dict, tops: dict, scorers: dict, log_dir: str | None) -> str:
    """``tops``: the :class:`~rerank.merge.evaluate.TopHypotheses` of every calibrated system, for the diagrams."""
    from rerank.plots import save

    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    write_json(report_dir / "metrics.json", {**metrics, "_meta": meta})
    write_text(report_dir / "per_domain.csv", per_domain_csv(metrics))
    figs = figures(metrics, meta, tops, scorers)
    for name, fig in figs.items():
        save(fig, report_dir / f"{name}.png")
    if log_dir:
        _tensorboard(Path(log_dir) / "tensorboard" / meta["corpus"] / "_merge" / meta["split"],
                     {name: report_dir / f"{name}.png" for name in figs}, metrics)
    text = "\n".join(_markdown(metrics, meta, "feature_weights" in figs)) + "\n"
    write_text(report_dir / "report.md", text)
    return text


def _tensorboard(event_dir: Path, pictures: Mapping[str, Path], metrics: Mapping) -> None:
    """The pictures (their PNG files as they are) and the headline figures as one TensorBoard event.

    Written with the tensorboard package alone: torch's SummaryWriter would cost the merge an import of
    torch (3.5 s) and a second drawing of every picture.
    """
    try:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError:
        return
    values = []
    for name, path in pictures.items():
        png = path.read_bytes()
        width, height = struct.unpack(">II", png[16:24])  # the PNG's IHDR chunk
        values.append(Summary.Value(tag=f"merge/{name}", image=Summary.Image(
            height=height, width=width, colorspace=4, encoded_image_string=png)))  # RGBA, as matplotlib writes it
    for sys_name, m in metrics.items():
        values += [Summary.Value(tag=f"merge/{sys_name}/{k}", simple_value=m[k])
                   for k in ("semer", "irer", "ece_top", "brier_top") if m.get(k) is not None]
    event_dir.mkdir(parents=True, exist_ok=True)
    writer = EventFileWriter(str(event_dir))
    writer.add_event(Event(wall_time=time.time(), step=0, summary=Summary(value=values)))
    writer.close()


def _some(domains: Sequence[str]) -> str:
    """The domains by name, or the first of them and how many (a thousand names are no longer read)."""
    if len(domains) <= TABLE_DOMAINS:
        return ", ".join(domains)
    return f"{len(domains)} domains: {', '.join(domains[:TABLE_DOMAINS])}, ... (all in `_meta.fallback_domains` of metrics.json)"


def _markdown(metrics: Mapping, meta: Mapping, weights: bool) -> list[str]:
    system = next(iter(metrics))
    lines = [f"# Merge report: {meta['corpus']} / {meta['split']}", "",
             f"{meta['utterances']} utterances, {meta['hypotheses']} hypotheses. Top hypothesis of each utterance; "
             "an utterance with no hypothesis counts as a full error. Intervals: bootstrap over utterances, 95%.", "",
             *main_table(metrics), "",
             "*gap closed*: share of the baseline-to-oracle SemER gap that the system closes. "
             "Calibration figures (ECE with 15 bins, MCE, Brier, NLL) are of the top hypothesis' score read as P(exactly right).", ""]
    if (tc := meta.get("top_calibration")) is not None:
        stale = (f" It was fitted for other versions of {', '.join(tc['stale'])}: "
                 "refit it with `scripts/promote.py recalibrate=true`." if tc["stale"] else "")
        lines += [f"The first row's top-hypothesis confidence is the merge's top calibration "
                  f"({describe(tc)}, fitted on {tc['split']} by the "
                  f"promotion gate, {tc['fitted_at']}); the other rows show their raw top scores.{stale}", ""]
    flagged = {n: f for n, f in meta["fallback_domains"].items() if f}
    if flagged:
        lines += ["## Domains scored by the unweighted baseline (no live version, or none of that loss)", ""]
        lines += [f"- **{n}**: {_some(f)}" for n, f in flagged.items()] + [""]
    lines += ["## Calibration", "", "![reliability diagram](reliability.png)", "",
              f"Per domain, at most {GRID_DOMAINS}: those whose top-hypothesis ECE ({system}) has the highest lower 95% bound, "
              "the most surely miscalibrated (a small domain's ECE is large by chance alone).", "",
              "![per domain](reliability_per_domain.png)", "",
              "## Every domain", "",
              f"SemER change of {system} against the {REFERENCE} (paired bootstrap intervals) and top-hypothesis ECE, "
              "every gold domain, sorted; the worst few are named.", "",
              "![every domain](domains.png)", ""]
    if weights:
        lines += ["## Learned feature weights (published models, standardised)", "",
                  f"The features at least half the domains have (dense, rank, context, evidence), for the domains with the "
                  f"most test utterances (at most {TABLE_DOMAINS}); below, their spread over every domain with a published model.", "",
                  "![feature weights](feature_weights.png)", ""]
    lines += per_domain_tables(metrics)
    if meta.get("versions"):
        lines += versions_table(meta["versions"])
    return lines
