"""Per-domain training runs of the benchmark: composed 'train' configs, one registry per variant.

Each variant (an experiment, ``configs/experiment/<name>.yaml``, with the
settings the suite chose on top) publishes into its own registry
(``<bench>/registry/<variant>``), so variants of one loss never mix. Models
are then read back per domain, possibly from different registries (the
``live``-competitor variant trains every domain against a frozen copy of
a base registry, so the order of the domains does not matter).
"""
from __future__ import annotations

import copy
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from rerank.config import compose_config
from rerank.merge.ranker import BASELINE, CrossDomainRanker, DomainScorer
from rerank.model.registry import Registry, RegistryError

log = logging.getLogger(__name__)


def compose_train(overrides: Sequence[str] = ()) -> dict:
    """``configs/train.yaml`` composed with ``overrides``, as a plain dict (works inside or outside a Hydra app)."""
    return compose_config("train", ["domain=_unset_", "~logger", *overrides])


class Trainer:
    """Runs ``rerank.reranker.train.train`` for one variant over the domains, in-process, sequentially."""

    def __init__(self, bench_cfg: Mapping[str, Any], bench_dir: Path, domains: Sequence[str]):
        self.cfg = bench_cfg
        self.bench_dir = Path(bench_dir)
        self.domains = list(domains)
        self.extra = list(bench_cfg["benchmark"].get("trainer_overrides") or [])
        self._composed: dict[tuple, dict] = {}

    def registry_dir(self, variant: str) -> Path:
        return self.bench_dir / "registry" / variant

    def config(self, variant: str, domain: str, overrides: Sequence[str] = (), registry_dir: Path | None = None) -> dict:
        key = tuple(overrides)
        if key not in self._composed:
            self._composed[key] = compose_train([*overrides, *self.extra])
        cfg = copy.deepcopy(self._composed[key])
        # The corpus settings and paths of the benchmark, so that prepare's cache is shared.
        cfg["data"] = copy.deepcopy(self.cfg["data"])
        cfg["paths"] = dict(self.cfg["paths"])
        cfg["paths"]["registry_dir"] = str(registry_dir or self.registry_dir(variant))
        cfg["paths"]["log_dir"] = str(self.bench_dir / "logs")
        cfg["trainer"]["default_root_dir"] = str(self.bench_dir / "lightning" / variant / domain)
        cfg.update(domain=domain, seed=int(self.cfg.get("seed", 0)), publish=True, logger=None, threads="auto", parallel_jobs=1)
        return cfg

    def run(self, variant: str, overrides: Sequence[str] = (), domains: Sequence[str] | None = None,
            competitors_from: Path | None = None, fresh: bool = True) -> dict:
        """Train every domain of ``variant``; returns per-domain train() results and the wall time.

        ``competitors_from``: a registry copied (frozen) per domain, its newest version of
        every domain made live, so that ``slates.competitors=live`` sees the same competitors
        for every domain.
        """
        from rerank.training.train import train

        quiet_lightning()
        reg = self.registry_dir(variant)
        if fresh and reg.exists():
            shutil.rmtree(reg)
        results, where = {}, {}
        t0 = time.perf_counter()
        for d in domains or self.domains:
            reg_d = reg
            if competitors_from is not None:
                reg_d = self.bench_dir / "registry" / f"{variant}__stage" / d
                if reg_d.exists():
                    shutil.rmtree(reg_d)
                shutil.copytree(competitors_from, reg_d)
                frozen = Registry(reg_d)
                corpus = self.cfg["data"]["name"]
                for other in frozen.domains(corpus):
                    frozen.set_live(corpus, other, frozen.resolve(corpus, other, "latest"), action="promote",
                                    verdict="benchmark: competitors", forced=True)
            res = train(self.config(variant, d, overrides, reg_d))
            results[d] = res
            where[d] = str(reg_d)
        seconds = time.perf_counter() - t0
        return {"variant": variant, "overrides": list(overrides), "results": results, "registries": where,
                "seconds": seconds, "train_seconds": {d: r["seconds"] for d, r in results.items()}}


def quiet_lightning() -> None:
    """Lightning's per-fit INFO lines (GPU available, max_epochs reached) x hundreds of runs: warnings only."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero",
                 "lightning.fabric.utilities.rank_zero", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)


def ranker_from(run: Mapping[str, Any], corpus: str, domains: Sequence[str], specs=None) -> CrossDomainRanker:
    """The cross-domain ranker of a run: every domain's model from the registry it was published in."""
    scorers = {}
    for d in domains:
        res = run["results"].get(d)
        if res is None or "version" not in res:
            scorers[d] = DomainScorer(d, BASELINE)
            continue
        try:
            pub = Registry(run["registries"][d]).load(corpus, d, res["version"], expect_spec=(specs or {}).get(d))
        except RegistryError as err:
            log.warning("%s: %s; baseline instead", d, err)
            scorers[d] = DomainScorer(d, BASELINE)
            continue
        scorers[d] = DomainScorer.from_published(pub)
    return CrossDomainRanker(scorers, corpus)
