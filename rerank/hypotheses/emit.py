"""From trained recognizers to n-best hypotheses with SemER labels.

Which domains emit for an utterance (``hypotheses.emit``):
- ``mode: all``: every domain, for every utterance;
- ``mode: floor``: a domain emits when its ``dc >= dc_floor`` or when it is
  among the ``top_domains`` domains with the highest ``dc`` for that utterance.
A domain that emits proposes up to ``n_best`` hypotheses: the pairs of its IC's
``intents_top_k`` intents and its CRF's ``ner_n_best`` labellings with the
highest ``ic * ner``. Labellings that read as the same slots are one
hypothesis (their probabilities add up).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping

import numpy as np

from rerank.corpus.annotation import tags_to_slots
from rerank.corpus.utterance import Utterance
from rerank.metrics.semer import semantic_errors
from rerank.recognizers.bundle import DomainRecognizers
from rerank.recognizers.text_features import TextFeatures


class HypothesisColumns:
    """Column lists of one domain's hypothesis table, appended to fold by fold."""

    def __init__(self, context_fields: tuple[str, ...]):
        self.context_fields = context_fields
        self.cols: dict[str, list] = defaultdict(list)

    def __len__(self) -> int:
        return len(self.cols["utt_id"])


def dc_matrix(recognizers: Mapping[str, DomainRecognizers], domains: list[str], rows: np.ndarray, features: TextFeatures) -> np.ndarray:
    """``dc`` of every domain (columns, in ``domains`` order) for ``rows``."""
    out = np.empty((len(rows), len(domains)))
    for j, d in enumerate(domains):
        rec = recognizers[d]
        out[:, j] = rec.dc.predict(features.matrix(rec.dc_ngram)[rows])
    return out


def emit_mask(dc: np.ndarray, emit_cfg: Mapping[str, Any]) -> np.ndarray:
    mode = emit_cfg["mode"]
    if mode == "all":
        return np.ones_like(dc, dtype=bool)
    if mode != "floor":
        raise ValueError(f"hypotheses.emit.mode must be 'all' or 'floor', not {mode!r}")
    mask = dc >= emit_cfg["dc_floor"]
    k = min(int(emit_cfg["top_domains"]), dc.shape[1])
    if k > 0:
        top = np.argpartition(-dc, k - 1, axis=1)[:, :k]
        np.put_along_axis(mask, top, True, axis=1)
    return mask


def emit(
    recognizers: Mapping[str, DomainRecognizers],
    domains: list[str],
    utts: list[Utterance],
    rows: np.ndarray,
    utt_index: np.ndarray,
    features: TextFeatures,
    hyp_cfg: Mapping[str, Any],
    sinks: Mapping[str, HypothesisColumns],
    fold: int,
) -> np.ndarray:
    """Append the hypotheses of ``utts[rows]`` to ``sinks``; returns the dc matrix."""
    dc = dc_matrix(recognizers, domains, rows, features)
    mask = emit_mask(dc, hyp_cfg["emit"])
    n_best, k_int, k_ner = int(hyp_cfg["n_best"]), int(hyp_cfg["intents_top_k"]), int(hyp_cfg["ner_n_best"])
    for j, d in enumerate(domains):
        sel = np.flatnonzero(mask[:, j])
        if not len(sel):
            continue
        rec = recognizers[d]
        sel_rows = rows[sel]
        int_idx, int_p = rec.ic.top_k(features.matrix(rec.ic_ngram)[sel_rows], k_int)
        nbests = rec.ner.nbest_many([list(utts[i].tokens) for i in sel_rows], k_ner)
        sink = sinks[d]
        for s, i in enumerate(sel_rows):
            _emit_one(sink, utts[i], int(utt_index[sel[s]]), d, float(dc[sel[s], j]),
                      rec.ic.intents[int_idx[s]], int_p[s], nbests[s], n_best, fold)
    return dc


def _emit_one(sink, utt, index, domain, dc, intents, intent_p, nbest, n_best, fold) -> None:
    labellings: dict[tuple, float] = {}
    for tags, p in nbest:
        slots = tags_to_slots(utt.tokens, tags)
        labellings[slots] = labellings.get(slots, 0.0) + p
    pairs = [
        (float(ip) * lp, str(intent), float(ip), slots, lp)
        for intent, ip in zip(intents, intent_p)
        for slots, lp in labellings.items()
    ]
    pairs.sort(key=lambda x: -x[0])
    cols = sink.cols
    total = 1 + len(utt.slots)
    for rank, (_, intent, ip, slots, lp) in enumerate(pairs[:n_best]):
        errors, _ = semantic_errors(utt.intent, utt.slots, intent, slots)
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
        # IE = 0 exactly when there is no semantic error (docs/DESIGN.md).
        cols["ie"].append(int(errors > 0))
        cols["gold_domain"].append(utt.domain)
        cols["gold_intent"].append(utt.intent)
        cols["fold"].append(fold)
