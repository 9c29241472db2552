"""Logits of the other domains, held fixed for ``slates.candidates=utterance`` (``slates=utterance|utterance_live``).

``slates.competitors=baseline``: the unweighted baseline read as a probability,
``logit(dc*ic*ner)``. ``live``: the other domains' live re-rankers, the ones that
serve traffic (calibrated: a version goes live only through the promotion gate);
a domain without a live version competes with its baseline.
"""
from __future__ import annotations

import numpy as np

from rerank.hypotheses.figures import baseline_score
from rerank.hypotheses.tables import TableSet
from rerank.metrics.logistic import logit
from rerank.model.features import features_from_table
from rerank.model.registry import Registry

COMPETITORS = ("baseline", "live")


def baseline_logit(dc, ic, ner) -> np.ndarray:
    return logit(baseline_score(dc, ic, ner))


def world_of(world, domain: str) -> dict[str, str] | None:
    """The named world ``domain`` trains against (``slates.world``): a mapping, or a JSON file of one per domain."""
    if not world:
        return None
    if isinstance(world, str):
        import json

        try:
            with open(world, encoding="utf-8") as f:
                by_domain = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"slates.world: cannot read {world} ({err})") from None
        if domain not in by_domain:
            raise ValueError(f"slates.world: {world} names no world for {domain!r}; it has {sorted(by_domain)}")
        world = by_domain[domain]
    return {str(d): str(v) for d, v in dict(world).items()}


def other_domains(tables: TableSet, domain: str, split: str, competitors: str,
                  registry: Registry | None, world: dict[str, str] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(utt_index, logit, semer) of every hypothesis of the other domains in ``split``.

    ``world`` ({domain: version or "baseline"}), with ``competitors=live``: those versions instead of the
    live ones, for the domains it names (the world a release would create).
    """
    if competitors not in COMPETITORS:
        raise ValueError(f"competitors must be one of {COMPETITORS}, not {competitors!r}")
    utts, logits, semers = [], [], []
    for d in tables.domains:
        if d == domain:
            continue
        table = tables.read(d, split)
        live = registry.resolve(tables.name, d, "live") if competitors == "live" and registry is not None else None
        if competitors == "live" and world and d in world:
            live = None if world[d] == "baseline" else world[d]
        if live is not None:
            published = registry.load(tables.name, d, live)
            value = published.scorer(features_from_table(table, published.spec))
        else:
            value = baseline_logit(table["dc"].to_numpy(), table["ic"].to_numpy(), table["ner"].to_numpy())
        utts.append(table["utt_index"].to_numpy())
        logits.append(np.asarray(value, dtype=np.float64))
        semers.append(table["semer"].to_numpy())
    if not utts:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    return np.concatenate(utts), np.concatenate(logits), np.concatenate(semers)
