"""R2: binary cross-entropy against ``y = 1 - IE`` (REFERENCE.md s.3)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rerank.losses._helpers import PADDED_Y_VALUE, _check_pair, _masked_mean


def _masked_crossentropy(y_pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Mean BCE-with-logits over the entries where ``valid`` holds (0 if none)."""
    zero = torch.zeros((), dtype=y_pred.dtype, device=y_pred.device)
    logits = torch.where(valid, y_pred, zero)  # padded logits never reach the BCE
    target = torch.where(valid, target.to(y_pred.dtype), zero)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return _masked_mean(bce, valid)


def crossentropy_loss(
    y_pred: Tensor,
    y_true: Tensor,
    padded_value_indicator: float = PADDED_Y_VALUE,
) -> Tensor:
    r"""Binary cross-entropy on logits, averaged over the non-padded hypotheses.

    With ``p = sigmoid(s)`` read as ``P(IE(h) = 0)`` and the target
    ``y = 1 - IE(h)``::

        loss = mean_{h non-padded} -( y_h log sigmoid(s_h) + (1 - y_h) log(1 - sigmoid(s_h)) )

    computed by ``torch.nn.functional.binary_cross_entropy_with_logits``
    (log-sum-exp form, stable for logits of any magnitude). Every hypothesis
    weighs the same, whatever the length of its row. Padded entries are
    replaced by a logit 0 / target 0 and then selected out, so their value
    (however extreme) changes nothing and they get a zero gradient. A batch of
    only padding returns 0 (connected to ``y_pred``, zero gradient).

    :param y_pred: logits of one domain's hypotheses, shape [batch_size, slate_length]
    :param y_true: target ``1 - IE`` in {0, 1} (soft targets in [0, 1] also
        work), padded entries equal to ``padded_value_indicator``, shape [batch_size, slate_length]
    :param padded_value_indicator: value of ``y_true`` marking a padded entry
    :return: loss value, a scalar tensor
    """
    _check_pair(y_pred, y_true)
    valid = y_true != padded_value_indicator
    return _masked_crossentropy(y_pred, y_true, valid)
