"""The merge report at many domains: no picture side over 4,000 px, a report.md that does not list every domain."""
from __future__ import annotations

import csv
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from rerank.merge import report
from rerank.merge.evaluate import TopHypotheses

MAX_SIDE = 4000
SHARED = ["dc", "ic", "ner", "log_dc", "log_ic", "log_ner", "n_slots", *(f"rank_{r}" for r in range(5)),
          "device=echo", "device=echo_show", "device=fire_tv", "ic_margin", "oov_share", "log_tokens"]
SYSTEMS = ("live", "baseline", "newest crossentropy", "oracle")


def png_size(path: Path) -> tuple[int, int]:
    width, height = struct.unpack(">II", path.read_bytes()[16:24])  # the IHDR chunk
    return width, height


def figures_of(rng: np.random.Generator, n: int, calibrated: bool) -> dict:
    semer = float(rng.uniform(0.02, 0.4))
    ece = float(rng.uniform(0.0, 0.2)) if calibrated else None
    return {"n": n, "semer": semer, "semer_ci": [semer * 0.8, semer * 1.2], "irer": semer, "irer_ci": [semer * 0.8, semer * 1.2],
            "domain_error": 0.1, "intent_error": 0.1, "slot_f1": 0.9, "ece_top": ece,
            "ece_top_ci": [max(ece - 0.05, 0.0), ece + 0.05] if calibrated else None,
            "mce_top": ece, "brier_top": ece, "nll_top": ece}


def synthetic_inputs(n_domains: int, seed: int = 0):
    """Metrics, meta, top hypotheses and published models of a merge of ``n_domains`` domains (no corpus needed)."""
    rng = np.random.default_rng(seed)
    domains = [f"Skill{k:04d}" for k in range(n_domains)]
    traffic = rng.lognormal(3, 1, n_domains).astype(int) + 5
    metrics = {}
    for name in SYSTEMS:
        calibrated = name != "oracle"
        metrics[name] = {**figures_of(rng, int(traffic.sum()), calibrated),
                         "per_domain": {d: figures_of(rng, int(t), calibrated) for d, t in zip(domains, traffic)}}
    for d in domains:
        change = metrics["live"]["per_domain"][d]["semer"] - metrics["baseline"]["per_domain"][d]["semer"]
        metrics["live"]["per_domain"][d].update(semer_vs_baseline=change, semer_vs_baseline_ci=[change - 0.05, change + 0.05])
    gold = np.repeat(np.array(domains, dtype=object), traffic)
    tops = {name: TopHypotheses(rng.random(len(gold)), (rng.random(len(gold)) < 0.8).astype(float), gold)
            for name in SYSTEMS if name != "oracle"}
    scorers = {d: SimpleNamespace(feature_weights=lambda d=d: {
        **{f: float(rng.normal()) for f in SHARED},
        **{f"intent={d.lower()}_{i}": float(rng.normal()) for i in range(4)},
        **{f"slot={d.lower()}_{s}": float(rng.normal()) for s in range(6)}}) for d in domains}
    versions = {name: {d: "v1" for d in domains} for name in ("live", "newest crossentropy")}
    meta = {"corpus": f"synthetic_{n_domains}d", "split": "test", "utterances": len(gold), "hypotheses": 5 * len(gold),
            "fallback_domains": {"live": [], "newest crossentropy": domains[::2]}, "versions": versions, "top_calibration": None}
    return metrics, meta, tops, scorers


@pytest.mark.parametrize("n_domains", [200, 1000])
def test_no_picture_side_exceeds_4000_px(tmp_path, n_domains):
    metrics, meta, tops, scorers = synthetic_inputs(n_domains)
    text = report.write_report(tmp_path, metrics, meta, tops, scorers, log_dir=None)
    pictures = sorted(tmp_path.glob("*.png"))
    for p in pictures:
        assert max(png_size(p)) <= MAX_SIDE, (p.name, png_size(p))
    assert {p.stem for p in pictures} == {"reliability", "reliability_per_domain", "domains", "feature_weights"}
    # report.md names the few domains that matter, in lines and tables that do not grow with the domains;
    # per_domain.csv holds every domain of every system
    named = {d for d in metrics["baseline"]["per_domain"] if f"| {d} |" in text}
    assert 0 < len(named) <= report.TABLE_DOMAINS + report.GRID_DOMAINS
    lines = text.splitlines()
    assert len(lines) < 150 and max(map(len, lines)) < 1500
    with open(tmp_path / "per_domain.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n_domains * len(SYSTEMS)


def test_the_domains_that_matter():
    metrics, _, _, scorers = synthetic_inputs(50, seed=1)
    weights = {d: s.feature_weights() for d, s in scorers.items()}
    assert report.shared_features(weights) == SHARED  # each domain's own intents and slot types drop out
    per_domain = metrics["live"]["per_domain"]
    worst = report.worst_calibrated(per_domain)
    assert len(worst) == report.GRID_DOMAINS
    lows = [per_domain[d]["ece_top_ci"][0] for d in worst]
    assert lows == sorted(lows, reverse=True)
    assert min(lows) >= max(m["ece_top_ci"][0] for d, m in per_domain.items() if d not in worst)
