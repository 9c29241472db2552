"""R3: ``alpha * L_semer + (1 - alpha) * L_ce`` (REFERENCE.md s.3)."""
from __future__ import annotations

import math
from typing import Optional

from torch import Tensor

from rerank.losses._helpers import PADDED_Y_VALUE, _check_pair
from rerank.losses.crossentropy import _masked_crossentropy
from rerank.losses.semer import semer_loss


def combined_loss(
    y_pred: Tensor,
    y_true: Tensor,
    padded_value_indicator: float = PADDED_Y_VALUE,
    *,
    alpha: float,
    temperature: float,
    other_logsumexp: Optional[Tensor] = None,
    other_expected_semer: Optional[Tensor] = None,
    y_correct: Optional[Tensor] = None,
) -> Tensor:
    r"""Convex combination of R1 (expected SemER) and R2 (cross-entropy)::

        loss = alpha * semer_loss(y_pred, y_true, T, other_*) + (1 - alpha) * CE(y_pred, y_correct)

    Each term keeps its own reduction: R1 is a mean over rows (utterances)
    that have own entries, R2 a mean over non-padded hypotheses. Padding is
    read from ``y_true`` (the SemER tensor) for both terms.

    The CE target ``y_correct = 1 - IE`` defaults to ``(y_true == 0)``: under
    REFERENCE.md's definitions ``IE(h) = 0`` exactly when ``errors(h) = 0``
    (the intent carries the domain; both compare normalised slot multisets),
    see docs/DESIGN.md. Pass ``y_correct`` explicitly to use another target;
    its values on padded entries are ignored. ``temperature`` and ``other_*``
    only affect the R1 term (see :func:`rerank.losses.semer.semer_loss`).

    :param y_pred: logits of one domain's hypotheses, shape [batch_size, slate_length]
    :param y_true: SemER of each hypothesis (>= 0), padded entries equal to
        ``padded_value_indicator``, shape [batch_size, slate_length]
    :param padded_value_indicator: value of ``y_true`` marking a padded entry
    :param alpha: weight of R1 in [0, 1]; 1 gives pure R1, 0 pure R2 (no default:
        the toolkit's value is the one in ``configs/loss/combined.yaml``)
    :param temperature: softmax temperature of R1, ``T > 0`` (no default, as ``alpha``)
    :param other_logsumexp: R1 ``candidates=utterance`` input, shape [batch_size]
    :param other_expected_semer: R1 ``candidates=utterance`` input, shape [batch_size]
    :param y_correct: CE target ``1 - IE`` in {0, 1}, shape [batch_size, slate_length];
        defaults to ``y_true == 0``
    :return: loss value, a scalar tensor
    """
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}") from None
    if not (0.0 <= a <= 1.0) or math.isnan(a):
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    _check_pair(y_pred, y_true)
    valid = y_true != padded_value_indicator
    if y_correct is None:
        y_correct = (y_true == 0).to(y_pred.dtype)
    else:
        _check_pair(y_pred, y_correct, name="y_correct")

    r1 = semer_loss(
        y_pred,
        y_true,
        padded_value_indicator=padded_value_indicator,
        temperature=temperature,
        other_logsumexp=other_logsumexp,
        other_expected_semer=other_expected_semer,
    )
    r2 = _masked_crossentropy(y_pred, y_correct, valid)
    return a * r1 + (1.0 - a) * r2
