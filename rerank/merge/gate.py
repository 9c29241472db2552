r"""The promotion gate: does a domain's candidate version help the cross-domain merge, without harming others?

The candidate is evaluated where it will serve: in the merge of every domain's
hypotheses on ``gate.split`` (dev by default), against the live versions of every
other domain, and compared with what serves now (the domain's live version, or the
baseline fallback when it has none). Both rankings see the same utterances, so every
figure is a *paired* difference, with a paired bootstrap interval over utterances
(:func:`rerank.metrics.corpus.bootstrap_ci`, the same resamples for both rankings):

.. math::
    \Delta_{SemER} = \frac{\sum_u e^{cand}_u - \sum_u e^{now}_u}{\sum_u t_u}, \qquad
    \Delta_{ECE} = ECE^{cand}_{top} - ECE^{now}_{top}

The candidate is promoted only when all checks pass (limits in ``configs/gate/``):

- overall SemER, what the assistant is judged by, is not worse:
  :math:`\Delta_{SemER} \le` ``semer_max_delta``, and not plausibly worse beyond a
  tolerance: the upper end of its interval is at most ``semer_max_upper``
  (non-inferiority: the candidate must show it does no harm);
- top-hypothesis ECE is not worse beyond a tolerance: it fails when it rises by more
  than ``ece_max_delta`` with an interval above 0 (ECE of a few hundred utterances is
  noisy; an improvement in SemER is not refused over noise in ECE). It is the ECE of the
  confidence the service reports: the top score through the merge's top calibration
  (:mod:`rerank.merge.top_calibration`), the stored one for what serves now and the one
  the gate fits for the candidate's live set (which the promotion stores) for the candidate;
  before any calibration was stored, what serves now is the raw top score;
- no *other* gold domain gets worse: a domain whose SemER rises by more than
  ``domain_max_delta`` with an interval above 0 fails the gate. A domain that turns
  over-confident steals the others' utterances, and this is the check that catches it.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from rerank.hypotheses.figures import top_hypothesis_outcome
from rerank.hypotheses.tables import TableSet
from rerank.merge.evaluate import SplitData, load_split
from rerank.merge.ranker import BASELINE, CrossDomainRanker, DomainScorer
from rerank.merge.top_calibration import TopCalibration, fit_top_calibration, read_top_calibration
from rerank.metrics.calibration import bin_index, ece, ece_rows
from rerank.metrics.corpus import bootstrap_ci
from rerank.model.features import spec_from_manifest
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

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "GateLimits":
        known = set(cls.__dataclass_fields__)
        if unknown := sorted(set(cfg) - known):
            raise ValueError(f"unknown gate settings {unknown}; known: {sorted(known)}")
        return cls(**{k: type(getattr(cls, k))(v) for k, v in cfg.items()})


_SCORES: OrderedDict = OrderedDict()


def _scores(tables: TableSet, split: str, domain: str, scorer: DomainScorer, table) -> np.ndarray:
    file = tables.manifest["files"][f"{domain}/{split}.parquet"]["sha256"]
    who = str(scorer.published.path) if scorer.published is not None else scorer.version
    key = (str(tables.path), file, domain, who)
    if (hit := _SCORES.get(key)) is None:
        hit = _SCORES[key] = scorer.score_table(table)
        if len(_SCORES) > 16384:
            _SCORES.popitem(last=False)
    return hit


def _outcome(data: SplitData, score: np.ndarray):
    top, errors, ie = top_hypothesis_outcome(data.utt_index, score, data.sem_errors, data.ie, data.totals)
    has = top >= 0
    conf = np.where(has, score[np.where(has, top, 0)] if len(score) else 0.0, 0.0)
    return top, errors.astype(np.float64), ie, has, conf


def _ci(stat, *arrays, limits: GateLimits) -> list[float]:
    if limits.bootstrap <= 0 or not len(arrays[0]):
        return [float("nan"), float("nan")]
    return list(bootstrap_ci(stat, *arrays, n_resamples=limits.bootstrap, confidence=limits.confidence,
                             seed=limits.seed, vectorized=True))


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


def evaluate_candidate(tables: TableSet, registry: Registry, domain: str, version: str | None,
                       limits: GateLimits, data: SplitData | None = None) -> dict:
    """The gate's report on ``domain`` at ``version`` (None: back to the baseline) against what serves now."""
    t0 = time.perf_counter()
    manifest = tables.manifest
    corpus, domains = manifest["corpus"], list(manifest["domains"])
    if domain not in domains:
        raise ValueError(f"unknown domain {domain!r}; the tables' domains: {domains}")
    data = data if data is not None else load_split(tables, limits.split)
    specs = {d: spec_from_manifest(manifest, d) for d in domains}
    now = CrossDomainRanker.from_registry(registry, corpus, domains, specs=specs)
    if version is None:
        cand = DomainScorer(domain, BASELINE)
    else:
        cand = DomainScorer.from_published(registry.load(corpus, domain, version, expect_spec=specs[domain]))
    # Only the candidate's own rows change: the others are scored once (and once per process: a sweep
    # worker gates domain after domain against mostly the same live versions).
    parts = {d: _scores(tables, limits.split, d, now.scorers[d], data.tables[d]) for d in data.domains}
    score_now = np.concatenate([parts[d] for d in data.domains]) if data.domains else np.zeros(0)
    parts[domain] = cand.score_table(data.tables[domain])
    score_cand = np.concatenate([parts[d] for d in data.domains]) if data.domains else np.zeros(0)

    top_n, e_n, ie_n, has, conf_n = _outcome(data, score_now)
    top_c, e_c, ie_c, _, conf_c = _outcome(data, score_cand)
    t = data.totals
    diff = e_c - e_n
    ratio = lambda d, tt: d.sum(1) / tt.sum(1)  # noqa: E731 (one line, used thrice)
    y_n, y_c = 1.0 - ie_n[has], 1.0 - ie_c[has]
    # What the merge reports as the top's confidence if this live set is accepted (the promotion stores it)
    world = {d: s.version for d, s in now.scorers.items()} | {domain: cand.version}
    top_cal = fit_top_calibration(conf_c[has], y_c, world, limits.split)
    served = read_top_calibration(registry, corpus) or TopCalibration()
    c_n, c_c = np.clip(served(conf_n[has]), 0, 1), np.clip(top_cal(conf_c[has]), 0, 1)
    checks = []
    checks.append(_no_worse("overall SemER", float(e_n.sum() / t.sum()), float(e_c.sum() / t.sum()),
                            _ci(ratio, diff, t, limits=limits), limits.semer_max_delta, limits.semer_max_upper))
    if has.any():
        b_n, b_c = bin_index(c_n), bin_index(c_c)
        ci = _ci(lambda a, b, c, d, e, f: ece_rows(d, e, f) - ece_rows(a, b, c), c_n, y_n, b_n, c_c, y_c, b_c, limits=limits)
        checks.append(_no_harm("top-hypothesis ECE (served confidence)", ece(c_n, y_n), ece(c_c, y_c), ci, limits.ece_max_delta))
    per_domain = {}
    for d in sorted(set(data.gold_domain)):
        m = data.gold_domain == d
        delta = float(diff[m].sum() / t[m].sum())
        dci = _ci(ratio, diff[m], t[m], limits=limits) if np.any(diff[m]) else [0.0, 0.0]
        row = {"n": int(m.sum()), "before": float(e_n[m].sum() / t[m].sum()), "after": float(e_c[m].sum() / t[m].sum()),
               "delta": delta, "ci": dci, "changed": int((top_n[m] != top_c[m]).sum())}
        per_domain[d] = row
        if d != domain:
            checks.append(_no_harm(f"SemER of {d}", row["before"], row["after"], dci, limits.domain_max_delta))
    failed = [c["check"] for c in checks if not c["passed"]]
    return {
        "corpus": corpus, "domain": domain, "candidate": version or BASELINE, "current": now.scorers[domain].version,
        "others": {d: s.version for d, s in now.scorers.items() if d != domain}, "split": limits.split,
        "utterances": int(data.n_utterances), "changed_top": int((top_n != top_c).sum()),
        "accepted": not failed, "failed": failed, "checks": checks, "per_domain": per_domain,
        "limits": limits.__dict__, "top_calibration": top_cal.to_dict(),
        "served_top_calibration": served.to_dict(), "seconds": round(time.perf_counter() - t0, 3),
    }


def _num(x) -> str:
    return "-" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:+.4f}" if isinstance(x, float) else str(x)


def render_gate_report(r: Mapping[str, Any]) -> str:
    verdict = "**accepted**" if r["accepted"] else f"**refused** ({', '.join(r['failed'])})"
    lines = [f"# Gate: {r['corpus']}/{r['domain']} {r['current']} -> {r['candidate']}", "",
             f"Verdict: {verdict}. Merge of every domain on {r['split']} ({r['utterances']} utterances), the other domains "
             f"at their live versions; {r['changed_top']} utterances change their top hypothesis. Intervals: paired "
             f"bootstrap over utterances ({r['limits']['bootstrap']} resamples, {r['limits']['confidence']:.0%}).", "",
             "| check | now | candidate | delta | interval | limit | passed |", "| --- | ---: | ---: | ---: | --- | --- | --- |"]
    for c in r["checks"]:
        lines.append(f"| {c['check']} | {c['before']:.4f} | {c['after']:.4f} | {_num(c['delta'])} | "
                     f"[{_num(c['ci'][0])}, {_num(c['ci'][1])}] | {c['limit']} | {'yes' if c['passed'] else '**no**'} |")
    if (tc := r.get("top_calibration")) and tc.get("ece_before") is not None:
        lines += ["", f"Top calibration fitted for the candidate's live set (stored when it goes live): confidence = "
                      f"sigmoid({tc['scale']:.3f} * logit(top score) {tc['shift']:+.3f}); {r['split']} top-hypothesis ECE "
                      f"{tc['ece_before']:.4f} -> {tc['ece_after']:.4f} over {tc['utterances']} utterances."]
    lines += ["", "## SemER per gold domain", "", "| domain | utterances | now | candidate | delta | interval | top changed |",
              "| --- | ---: | ---: | ---: | ---: | --- | ---: |"]
    for d, p in r["per_domain"].items():
        mark = " (the candidate's)" if d == r["domain"] else ""
        lines.append(f"| {d}{mark} | {p['n']} | {p['before']:.4f} | {p['after']:.4f} | {_num(p['delta'])} | "
                     f"[{_num(p['ci'][0])}, {_num(p['ci'][1])}] | {p['changed']} |")
    return "\n".join(lines) + "\n"
