"""A domain's hypothesis table as padded per-utterance tensors, and the fixed competitors.

Rows are grouped by utterance into ``[utterances, slate]`` so that the listwise
loss (R1) sees each candidate list whole; padding is marked by
``PADDED_Y_VALUE`` in ``semer``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from rerank.losses import PADDED_Y_VALUE  # (the losses own it: they read it)
from rerank.model.features import features_from_table
from rerank.model.spec import FeatureSpec


@dataclass
class SlateTensors:
    """One split of one domain: ``x [U, N, F]``, ``semer [U, N]`` (padding = PADDED_Y_VALUE)."""

    x: torch.Tensor
    semer: torch.Tensor
    utt_index: np.ndarray  # [U] utterance index in the split
    row_of: np.ndarray  # [U, N] row of the table (-1: padding)
    errors: np.ndarray  # [U, N] sem_errors (0 on padding)
    total: np.ndarray  # [U] sem_total of each utterance
    other_logsumexp: torch.Tensor | None = None  # [U], s'/T of the other domains
    other_expected_semer: torch.Tensor | None = None  # [U]

    @property
    def n_hypotheses(self) -> int:
        return int((self.row_of >= 0).sum())

    def __len__(self) -> int:
        return self.x.shape[0]

    def batch(self, idx) -> dict[str, torch.Tensor]:
        out = {"x": self.x[idx], "semer": self.semer[idx]}
        if self.other_logsumexp is not None:
            out["other_logsumexp"] = self.other_logsumexp[idx]
            out["other_expected_semer"] = self.other_expected_semer[idx]
        return out


def group_slots(utt_index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For rows sorted by utterance: (unique utterances, group of each row, position inside the group)."""
    if len(utt_index) == 0:
        return utt_index[:0], np.zeros(0, np.int64), np.zeros(0, np.int64)
    start = np.ones(len(utt_index), dtype=bool)
    start[1:] = utt_index[1:] != utt_index[:-1]
    group = np.cumsum(start) - 1
    first = np.flatnonzero(start)
    pos = np.arange(len(utt_index)) - first[group]
    return utt_index[start], group, pos


def to_slates(table: pa.Table, spec: FeatureSpec) -> SlateTensors:
    utt = table["utt_index"].to_numpy()
    if len(utt) > 1 and np.any(np.diff(utt) < 0):
        raise ValueError("hypothesis table must be sorted by utt_index (prepare and import write it so)")
    X = features_from_table(table, spec)
    uniq, group, pos = group_slots(utt)
    n_slate = int(pos.max()) + 1 if len(pos) else 1
    x = np.zeros((len(uniq), n_slate, X.shape[1]), dtype=np.float32)
    semer = np.full((len(uniq), n_slate), PADDED_Y_VALUE, dtype=np.float32)
    row_of = np.full((len(uniq), n_slate), -1, dtype=np.int64)
    x[group, pos] = X
    semer[group, pos] = table["semer"].to_numpy()
    row_of[group, pos] = np.arange(len(utt))
    errors = np.zeros((len(uniq), n_slate), dtype=np.float64)
    errors[group, pos] = table["sem_errors"].to_numpy()
    total = np.zeros(len(uniq), dtype=np.float64)
    total[group] = table["sem_total"].to_numpy()
    return SlateTensors(torch.from_numpy(x), torch.from_numpy(semer), uniq, row_of, errors, total)


def competitor_numbers(
    utt_index: np.ndarray, others_utt: np.ndarray, others_logit: np.ndarray, others_semer: np.ndarray, temperature: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per utterance of ``utt_index``: ``log sum exp(s'/T)`` and ``sum softmax(s'/T) * SemER`` of the others.

    Utterances without competitors get ``-inf`` and 0 (REFERENCE.md s.3:
    the fixed part of the list enters only through these two numbers).
    """
    lse = np.full(len(utt_index), -np.inf)
    expected = np.zeros(len(utt_index))
    if len(others_utt) == 0:
        return lse, expected
    order = np.argsort(others_utt, kind="stable")
    u, z, e = others_utt[order], others_logit[order] / temperature, others_semer[order]
    uniq, group, _ = group_slots(u)
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    m = np.maximum.reduceat(z, starts)
    w = np.exp(z - m[group])
    tot = np.add.reduceat(w, starts)
    o_lse = m + np.log(tot)
    o_exp = np.add.reduceat(w * e, starts) / tot
    where = np.searchsorted(uniq, utt_index)
    where = np.clip(where, 0, len(uniq) - 1)
    hit = uniq[where] == utt_index
    lse[hit] = o_lse[where[hit]]
    expected[hit] = o_exp[where[hit]]
    return lse, expected
