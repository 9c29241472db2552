"""Losses of the per-domain re-rankers, allRank-style (REFERENCE.md s.3).

Every loss takes ``(y_pred, y_true, padded_value_indicator=PADDED_Y_VALUE, ...)``
with ``y_pred`` the logits ``[batch, slate]`` of one domain's hypotheses (a row
is one utterance's candidate list, padded to the slate length) and ``y_true``
the per-hypothesis target of the same shape, padded entries marked by
``padded_value_indicator``. Each returns a scalar tensor.

- ``semer``: R1, expected SemER under ``softmax(s / T)`` (``y_true`` = SemER);
- ``crossentropy``: R2, BCE on logits against ``1 - IE`` (``y_true`` = 1 - IE);
- ``combined``: R3, ``alpha * R1 + (1 - alpha) * R2`` (``y_true`` = SemER).
"""
from __future__ import annotations

import math
from typing import Callable, Dict

import torch
from torch import Tensor

#: value of ``y_true`` marking a padded slate entry (as allRank's ``PADDED_Y_VALUE``)
PADDED_Y_VALUE = -1.0

# Shared argument checks; defined before the loss modules are imported, since
# they import them (and PADDED_Y_VALUE) from this package, as allRank does.


def _check_pair(y_pred: Tensor, y_true: Tensor, name: str = "y_true") -> None:
    """Raise unless ``y_pred`` and ``y_true`` are 2-D tensors of the same shape."""
    if not isinstance(y_pred, Tensor) or not isinstance(y_true, Tensor):
        raise TypeError(
            f"y_pred and {name} must be torch tensors, got "
            f"{type(y_pred).__name__} and {type(y_true).__name__}"
        )
    if y_pred.dim() != 2:
        raise ValueError(
            f"y_pred must be 2-D [batch, slate], got shape {tuple(y_pred.shape)}"
        )
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_pred and {name} must have the same shape [batch, slate], got "
            f"{tuple(y_pred.shape)} and {tuple(y_true.shape)}"
        )


def _check_row_vector(x: Tensor, batch: int, name: str) -> None:
    """Raise unless ``x`` is a tensor of shape [batch]."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch tensor, got {type(x).__name__}")
    if tuple(x.shape) != (batch,):
        raise ValueError(
            f"{name} must have shape [batch] = ({batch},), got {tuple(x.shape)}"
        )


def _check_temperature(temperature: float) -> float:
    """Return ``temperature`` as a float, raising unless it is finite and > 0."""
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}") from None
    if not (t > 0 and math.isfinite(t)):
        raise ValueError(f"temperature must be finite and > 0, got {temperature!r}")
    return t


def _masked_mean(values: Tensor, keep: Tensor) -> Tensor:
    """Mean of ``values`` over the entries where ``keep`` holds; 0 if there are none.

    The unkept entries are *selected out* (``torch.where``), not multiplied by
    zero, so a non-finite value there can leak into neither the result nor the
    gradient. The result always carries ``values``' graph, so an all-padding
    batch still gives a 0 with a ``grad_fn`` whose gradient is all zeros.
    """
    total = torch.where(keep, values, torch.zeros_like(values)).sum()
    count = keep.sum().clamp(min=1).to(values.dtype)
    return total / count


# The loss modules import the names above from this package: keep them below.
from rerank.losses.semer import semer_loss  # noqa: E402
from rerank.losses.crossentropy import crossentropy_loss  # noqa: E402
from rerank.losses.combined import combined_loss  # noqa: E402

LOSSES: Dict[str, Callable] = {
    "semer": semer_loss,
    "crossentropy": crossentropy_loss,
    "combined": combined_loss,
}


def get_loss(name: str) -> Callable:
    """The loss function registered as ``name`` (one of ``LOSSES``)."""
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}"
        ) from None


__all__ = [
    "PADDED_Y_VALUE",
    "LOSSES",
    "get_loss",
    "semer_loss",
    "crossentropy_loss",
    "combined_loss",
]
