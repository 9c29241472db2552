"""The text-derived evidence of one utterance's hypotheses, computed by the versions that carry their resources.

A request gives the utterance's ``text`` once; every domain whose published version carries its evidence
resources (:class:`rerank.hypotheses.evidence.DomainData`) computes, for its own hypotheses, the fields of
:data:`~rerank.hypotheses.evidence.TEXT_FIELDS` that the client did not send (a field the client sends takes
precedence). The numbers are those of the dev and test tables, which prepare and import compute with the
same resources from the same text (:meth:`DomainData.utterance_evidence`, :meth:`DomainData.hypothesis_evidence`).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, MutableSequence, Sequence

import numpy as np

from rerank.corpus.massive import MAX_TOKENS
from rerank.corpus.utterance import text_tokens
from rerank.hypotheses.evidence import TEXT_FIELDS, DomainData


class BadText(ValueError):
    """A request's ``text`` that cannot be read (not a string, too many tokens); ``field`` names it."""

    def __init__(self, message: str, field: str = "text"):
        super().__init__(message)
        self.field = field


def request_tokens(text: Any, where: str = "") -> tuple[str, ...]:
    """The tokens of a request's ``text``, checked: a string of at most :data:`MAX_TOKENS` tokens."""
    if not isinstance(text, str):
        raise BadText(f"field '{where}text' must be a string (the utterance), not {type(text).__name__}", f"{where}text")
    tokens = text_tokens(text)
    if len(tokens) > MAX_TOKENS:
        raise BadText(f"field '{where}text' has {len(tokens)} tokens; an utterance has at most {MAX_TOKENS}", f"{where}text")
    return tokens


def domain_values(data: DomainData, tokens: Sequence[str], intents: Sequence[str],
                  slots: Sequence[Sequence[tuple[str, str]]]) -> np.ndarray:
    """``[len(intents), len(TEXT_FIELDS)]``: the text-derived fields of one domain's hypotheses of one utterance
    (``intents`` domain-qualified; ``slots`` their ``(type, value)`` pairs)."""
    by_intent = data.nearest_one(tokens)
    common = data.utterance_evidence(tokens, by_intent)
    out = np.empty((len(intents), len(TEXT_FIELDS)))
    for j, f in enumerate(TEXT_FIELDS):
        if f in common:
            out[:, j] = common[f]
    # DomainData.hypothesis_evidence, a column at a time (an intent the domain never had: 0, the appended entry)
    out[:, _CATALOGUE] = [data.catalogue_miss(p) for p in slots]
    out[:, _NEIGHBOUR_INTENT] = np.append(by_intent, 0.0)[[data.intent_index.get(i, -1) for i in intents]]
    return out


_CATALOGUE, _NEIGHBOUR_INTENT = TEXT_FIELDS.index("catalogue_miss"), TEXT_FIELDS.index("neighbour_intent_jaccard")


def fill_records(records: MutableSequence[Mapping[str, Any]], by_domain: Mapping[str, Sequence[int]],
                 resources: Callable[[str], DomainData | None], tokens: Sequence[str],
                 intent_of: Callable[[str, Any], str]) -> None:
    """Give every hypothesis dict of a domain with resources the text-derived fields it lacks (new dicts; the
    client's values stay). ``intent_of(domain, intent)``: the domain-qualified intent."""
    for d, idx in by_domain.items():
        data = resources(d)
        if data is None or all(all(f in records[i] for f in TEXT_FIELDS) for i in idx):
            continue
        hyps = [records[i] for i in idx]
        values = domain_values(data, tokens, [intent_of(d, h.get("intent")) for h in hyps], [_pairs(h.get("slots")) for h in hyps])
        for i, h, row in zip(idx, hyps, values.tolist()):
            computed = dict(zip(TEXT_FIELDS, row))
            computed["n_tokens"], computed["catalogue_miss"] = int(computed["n_tokens"]), int(computed["catalogue_miss"])
            records[i] = {**computed, **h}


def fill_columns(E: np.ndarray, fields: Sequence[str], domains: Sequence[str], by_domain: Mapping[str, Sequence[int]],
                 resources: Callable[[str], DomainData | None], tokens: Sequence[str], intents: Sequence[str],
                 slots_of: Callable[[int], Sequence[tuple[str, str]]]) -> np.ndarray:
    """``E`` (``[n, len(fields)]``, NaN where a field was not given) with the text-derived fields that the domains
    with resources compute where the client gave none (a copy when anything is filled)."""
    cols = [fields.index(f) for f in TEXT_FIELDS]
    out = E
    for d, idx in by_domain.items():
        data = resources(d)
        if data is None:
            continue
        idx = list(idx)
        given = E[np.ix_(idx, cols)]
        missing = np.isnan(given)
        if not missing.any():
            continue
        values = domain_values(data, tokens, [intents[i] for i in idx], [slots_of(i) for i in idx])
        if out is E:
            out = E.copy()
        out[np.ix_(idx, cols)] = np.where(missing, values, given)
    return out


def _pairs(slots: Any) -> list[tuple[str, str]]:
    out = []
    for s in slots or ():
        if isinstance(s, Mapping):
            out.append((s.get("type"), s.get("value")))
        else:
            out.append((s[0], s[1]))
    return out
