"""From a domain's recognizers to its n-best hypotheses with SemER labels.

Which domains emit for an utterance (``hypotheses.emit``):
- ``mode: all``: every domain, for every utterance;
- ``mode: floor``: a domain emits when its ``dc >= dc_floor`` or when it is
  among the ``top_domains`` domains with the highest ``dc`` for that utterance;
- ``max_domains`` (optional, either mode): at most that many domains emit, those
  with the highest ``dc`` (with hundreds of domains, dozens pass a floor).
A domain that emits proposes up to ``n_best`` hypotheses: the pairs of its IC's
``intents_top_k`` intents and its slot tagger's ``ner_n_best`` labellings with the
highest ``ic * ner``. Labellings that read as the same slots are one
hypothesis (their probabilities add up; its token marginals are those of the most
probable of them). Every hypothesis carries the evidence columns of
:mod:`rerank.hypotheses.evidence`.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping, Sequence

import numpy as np

from rerank.corpus.utterance import Utterance
from rerank.hypotheses.evidence import DomainData, intent_evidence
from rerank.hypotheses.labels import label
from rerank.recognizers.base import Interpreter


class HypothesisColumns:
    """Column lists of one domain's hypothesis table, appended to utterance by utterance."""

    def __init__(self, context_fields: tuple[str, ...]):
        self.context_fields = context_fields
        self.cols: dict[str, list] = defaultdict(list)

    def __len__(self) -> int:
        return len(self.cols["utt_id"])


def emit_mask(dc: np.ndarray, emit_cfg: Mapping[str, Any]) -> np.ndarray:
    """``[utterances, domains]``: which domain emits for which utterance, from every domain's ``dc``."""
    mode = emit_cfg["mode"]
    if mode == "all":
        mask = np.ones_like(dc, dtype=bool)
    elif mode == "floor":
        mask = dc >= emit_cfg["dc_floor"]
        k = min(int(emit_cfg["top_domains"]), dc.shape[1])
        if k > 0:
            top = np.argpartition(-dc, k - 1, axis=1)[:, :k]
            np.put_along_axis(mask, top, True, axis=1)
    else:
        raise ValueError(f"hypotheses.emit.mode must be 'all' or 'floor', not {mode!r}")
    cap = emit_cfg.get("max_domains")
    if cap and int(cap) < dc.shape[1]:
        best = np.zeros_like(mask)
        np.put_along_axis(best, np.argpartition(-dc, int(cap) - 1, axis=1)[:, :int(cap)], True, axis=1)
        mask &= best
    return mask


def emit_domain(interpreter: Interpreter, domain: str, utts: Sequence[Utterance], rows: np.ndarray,
                utt_index: np.ndarray, dc: np.ndarray, hyp_cfg: Mapping[str, Any], sink: HypothesisColumns,
                fold: int, data: DomainData) -> None:
    """Append ``domain``'s hypotheses of the utterances ``utts[rows]`` (with their ``dc``) to ``sink``.

    ``data``: the domain's training vocabulary and catalogue of the fold (the rows its interpreter was fitted on).
    """
    if not len(rows):
        return
    n_best, k_int, k_ner = int(hyp_cfg["n_best"]), int(hyp_cfg["intents_top_k"]), int(hyp_cfg["ner_n_best"])
    # every intent's probability, for the margin and entropy; the hypotheses pair the k best
    names, probs = interpreter.intents(rows, 1 << 30)
    margin, entropy = intent_evidence(probs)
    names, probs = names[:, :k_int], probs[:, :k_int]
    labellings = interpreter.labellings_with_marginals(rows, k_ner)
    by_intent = data.nearest_by_intent([utts[i].tokens for i in rows])  # (all rows in one product)
    for s, i in enumerate(rows):
        utt = utts[i]
        evidence = {"ic_margin": float(margin[s]), "ic_entropy": float(entropy[s]),
                    **data.utterance_evidence(utt.tokens, by_intent[s])}
        _emit_one(sink, utt, int(utt_index[s]), domain, float(dc[s]), names[s], probs[s], labellings[s], n_best, fold,
                  evidence, data, by_intent[s])


def _emit_one(sink, utt, index, domain, dc, intents, intent_p, labellings, n_best, fold, evidence, data, by_intent) -> None:
    merged: dict[tuple, float] = {}
    best: dict[tuple, tuple] = {}  # the token marginals of the most probable labelling of the same slots
    for slots, p, marginals in labellings:
        merged[slots] = merged.get(slots, 0.0) + p
        if slots not in best or p > best[slots][0]:
            best[slots] = (p, marginals or (None, None))
    pairs = [
        (float(ip) * lp, str(intent), float(ip), slots, lp)
        for intent, ip in zip(intents, intent_p)
        for slots, lp in merged.items()
    ]
    pairs.sort(key=lambda x: -x[0])
    cols = sink.cols
    for rank, (_, intent, ip, slots, lp) in enumerate(pairs[:n_best]):
        ner_min, ner_mean = best[slots][1]
        for name, value in evidence.items():
            cols[name].append(value)
        cols["ner_min"].append(ner_min)
        cols["ner_mean"].append(ner_mean)
        for name, value in data.hypothesis_evidence(intent, slots, by_intent).items():
            cols[name].append(value)
        errors, total, ie = label(utt.domain, utt.intent, utt.slots, domain, intent, slots)
        cols["utt_id"].append(utt.id)
        cols["utt_index"].append(index)
        cols["domain"].append(domain)
        cols["rank"].append(rank)
        cols["intent"].append(intent)
        cols["slots"].append([{"type": t, "value": v} for t, v in slots])
        cols["n_slots"].append(len(slots))
        for c in sink.context_fields:
            cols[c].append(utt.context.get(c, "unknown"))
        cols["dc"].append(dc)
        cols["ic"].append(ip)
        cols["ner"].append(lp)
        cols["sem_errors"].append(errors)
        cols["sem_total"].append(total)
        cols["semer"].append(errors / total)
        cols["ie"].append(ie)
        cols["gold_domain"].append(utt.domain)
        cols["gold_intent"].append(utt.intent)
        cols["fold"].append(fold)
