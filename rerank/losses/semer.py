"""R1: expected semantic error (REFERENCE.md s.3)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from rerank.losses._helpers import (
    PADDED_Y_VALUE,
    _check_pair,
    _check_row_vector,
    _check_temperature,
    _masked_mean,
)


def semer_loss(
    y_pred: Tensor,
    y_true: Tensor,
    padded_value_indicator: float = PADDED_Y_VALUE,
    temperature: float = 1.0,
    other_logsumexp: Optional[Tensor] = None,
    other_expected_semer: Optional[Tensor] = None,
) -> Tensor:
    r"""Expected SemER of the row's candidate list under ``softmax(s / T)``.

    ``candidates=domain`` (``other_*`` left ``None``). For a row with own
    (non-padded) hypotheses ``O`` and logits ``s``, with ``z = s / T``::

        q_h  = exp(z_h) / sum_{k in O} exp(z_k)         (h in O)
        loss = sum_{h in O} q_h * SemER_h

    ``candidates=utterance``. The list is ``C = O u O'`` where ``O'`` are the
    other domains' hypotheses of the same utterance, whose logits ``s'`` are
    held fixed (``z' = s' / T``). The caller passes two numbers per row::

        L' = other_logsumexp      = log sum_{k in O'} exp(z'_k)        (-inf if O' empty)
        E' = other_expected_semer = sum_{k in O'} softmax(z')_k SemER_k (ignored if O' empty)

    Derivation. The normaliser over ``C`` is
    ``Z = log(sum_{O} exp(z_h) + sum_{O'} exp(z'_k)) = logsumexp(z_O, L')``
    because ``sum_{O'} exp(z'_k) = exp(L')``. Then ``q_h = exp(z_h - Z)`` for
    ``h in O`` and, for ``k in O'``, ``q_k = exp(z'_k - Z)
    = exp(L' - Z) * exp(z'_k - L') = exp(L' - Z) * softmax(z')_k``. Hence::

        loss = sum_{h in O} exp(z_h - Z) SemER_h
             + sum_{k in O'} exp(L' - Z) softmax(z')_k SemER_k
             = sum_{h in O} exp(z_h - Z) SemER_h + exp(L' - Z) * E'

    i.e. exactly the expected SemER over the concatenated list, with the other
    logits detached. ``exp(L' - Z)`` is the probability mass the other domains
    keep; with ``L' = -inf`` it is 0 and ``Z = logsumexp(z_O)``, which gives
    back the ``candidates=domain`` loss. The gradient of a row's loss w.r.t.
    its own logits is ``q_h (SemER_h - row_loss) / T`` (before the mean over
    rows): a hypothesis gains mass when it is better than the current
    expectation over the *whole* list. ``L'`` and
    ``E'`` are detached (the other logits are fixed by definition) and must
    already include the temperature (``L'`` is a logsumexp of ``s' / T``).

    Reduction: mean of the row losses over the rows that have at least one own
    non-padded entry. A row without own entries contributes nothing, even if
    it has others; a batch of only padding returns 0 (a tensor connected to
    ``y_pred`` whose gradient is all zeros). Padded entries of ``y_pred`` are
    set to ``-inf`` before the softmax, so whatever value they hold has no
    effect on the value and gets a zero gradient.

    :param y_pred: logits of one domain's hypotheses, shape [batch_size, slate_length]
    :param y_true: SemER of each hypothesis (>= 0, may exceed 1), padded entries
        equal to ``padded_value_indicator``, shape [batch_size, slate_length]
    :param padded_value_indicator: value of ``y_true`` marking a padded entry
    :param temperature: softmax temperature ``T > 0``; 1 is the plain softmax (the value the
        toolkit uses is ``configs/loss/semer.yaml``'s)
    :param other_logsumexp: ``log sum exp(s'/T)`` over the other domains'
        candidates of the row's utterance, ``-inf`` when there are none, shape [batch_size]
    :param other_expected_semer: ``sum softmax(s'/T) * SemER`` over those
        candidates (any finite value when there are none), shape [batch_size]
    :return: loss value, a scalar tensor
    """
    _check_pair(y_pred, y_true)
    t = _check_temperature(temperature)
    if (other_logsumexp is None) != (other_expected_semer is None):
        raise ValueError(
            "other_logsumexp and other_expected_semer must be given together "
            "(candidates=utterance) or both left None (candidates=domain)"
        )
    batch = y_pred.shape[0]
    dtype, device = y_pred.dtype, y_pred.device

    valid = y_true != padded_value_indicator  # [batch, slate]
    row_has_own = valid.any(dim=1)  # [batch]
    semer = torch.where(valid, y_true.to(dtype), torch.zeros((), dtype=dtype, device=device))

    if other_logsumexp is None:
        other_lse = torch.full((batch,), float("-inf"), dtype=dtype, device=device)
        other_es = torch.zeros((batch,), dtype=dtype, device=device)
    else:
        _check_row_vector(other_logsumexp, batch, "other_logsumexp")
        _check_row_vector(other_expected_semer, batch, "other_expected_semer")
        other_lse = other_logsumexp.detach().to(device=device, dtype=dtype)
        other_es = other_expected_semer.detach().to(device=device, dtype=dtype)

    # Rows without own entries are computed on harmless finite stand-ins (all
    # logits 0, other mass with SemER 0) and then selected out, so that a
    # softmax over nothing but -inf (NaN) can appear in neither the value nor
    # the gradient. Other summaries of rows without others (L' = -inf) are
    # ignored, whatever E' holds.
    minus_inf = torch.full((batch,), float("-inf"), dtype=dtype, device=device)
    zeros = torch.zeros((batch,), dtype=dtype, device=device)
    has_other = (other_lse != float("-inf")) & row_has_own
    pad_fill = torch.where(row_has_own, minus_inf, zeros)
    other_lse = torch.where(has_other, other_lse, pad_fill)
    other_es = torch.where(has_other, other_es, zeros)
    pad_fill = pad_fill.unsqueeze(1)

    z = torch.where(valid, y_pred / t, pad_fill)  # masked -> -inf before the softmax
    # softmax over [own z..., L']: q_h = exp(z_h - Z) and exp(L' - Z) in one go
    # (torch.softmax subtracts the row max first: exact ties stay exact even
    # for logits of 1e5 in float32, where exp(z - logsumexp(z)) would not)
    probs = torch.softmax(torch.cat([z, other_lse.unsqueeze(1)], dim=1), dim=1)
    q = probs[:, :-1]  # 0 on padded entries
    other_mass = probs[:, -1]  # 0 where there are no others
    row_loss = (q * semer).sum(dim=1) + other_mass * other_es
    return _masked_mean(row_loss, row_has_own)
