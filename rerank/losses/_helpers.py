"""Argument checks and the masked mean shared by the loss modules."""
from __future__ import annotations

import math

import torch
from torch import Tensor

#: value of a loss's ``y_true`` marking a padded slate entry (allRank's ``PADDED_Y_VALUE``); the
#: losses take it as their ``padded_value_indicator`` default and the slates are padded with it
PADDED_Y_VALUE = -1.0


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
