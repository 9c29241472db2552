"""The asynchronous update: one domain retrained alone on top of a trained system, gated, merged again."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from benchmarks.runs import Trainer
from rerank.merge.evaluate import SplitData, evaluate
from rerank.merge.ranker import CrossDomainRanker


def asynchronous_update(acfg, trainer: Trainer, base_run, base_res, test: SplitData, corpus, domains, specs, overrides, n_boot, seed,
                        tables=None, gate_cfg=None) -> dict:
    """Retrain one domain of the selected R3 system with changed settings; publish; gate; merge; compare.

    The other domains' selected versions are live; the retrained version is a candidate that the
    promotion gate (on dev) makes live or refuses. "after" is what the candidate would do on test;
    "live after the gate" is what would serve.
    """
    from rerank.merge.promote import promote_version
    from rerank.model.registry import Registry

    counts = {d: int((test.gold_domain == d).sum()) for d in domains}
    domain = acfg.get("domain") or max(domains, key=lambda d: (counts[d], -domains.index(d)))
    change = list(acfg.get("change") or ["model=mlp"])
    reg = trainer.registry_dir("async_update")
    if reg.exists():
        shutil.rmtree(reg)
    base_reg = Path(base_run["registries"][domains[0]])
    shutil.copytree(base_reg, reg)
    registry = Registry(reg)
    for d in domains:
        if (v := registry.resolve(corpus, d, "latest")) is not None:
            registry.set_live(corpus, d, v, action="promote", verdict="benchmark: the selected R3 system", forced=True)
    before_ranker = CrossDomainRanker.from_registry(reg, corpus, domains, specs=specs)
    before = before_ranker.score_tables(test.tables).score
    versions_before = {d: s.version for d, s in before_ranker.scorers.items()}
    t0 = time.perf_counter()
    run = trainer.run("async_update", [*overrides, *change], domains=[domain], fresh=False)
    candidate = run["results"][domain]["version"]
    after_ranker = CrossDomainRanker.from_registry(reg, corpus, domains, versions={domain: candidate}, specs=specs)
    after = after_ranker.score_tables(test.tables).score
    update_seconds = time.perf_counter() - t0
    gate = None
    if tables is not None and gate_cfg is not None:
        t1 = time.perf_counter()
        gate = promote_version(tables, registry, domain, candidate, gate_cfg)
        gate["seconds"] = time.perf_counter() - t1
    code = test.domains.index(domain)
    others = test.domain_code != code
    after_res = evaluate(test, after, True, n_boot, seed)
    per_domain = {}
    for d in sorted(base_res["per_domain"]):
        b0, a0 = base_res["per_domain"][d], after_res["per_domain"].get(d, {})
        per_domain[d] = {k: {"before": b0.get(k), "after": a0.get(k)} for k in ("semer", "irer", "ece_top")}
    return {
        "domain": domain, "change": change,
        "versions_before": versions_before, "versions_after": {d: s.version for d, s in after_ranker.scorers.items()},
        "other_domains_bit_identical": bool(np.array_equal(before[others], after[others])),
        "other_domain_rows": int(others.sum()),
        "updated_domain_rows_changed": int((before[~others] != after[~others]).sum()),
        "updated_domain_rows": int((~others).sum()),
        "overall": {k: {"before": base_res["overall"].get(k), "after": after_res["overall"].get(k)}
                    for k in ("semer", "irer", "ece_top", "brier_top")},
        "per_domain": per_domain,
        "gate": gate,
        "update_seconds": update_seconds, "update_train_seconds": run["seconds"],
        "full_retrain_seconds": base_run["seconds"],
        "full_retrain_seconds_of_that_domain": base_run["train_seconds"].get(domain),
    }
