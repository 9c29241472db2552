"""Losses of the per-domain re-rankers, allRank-style (REFERENCE.md s.3).

Every loss takes ``(y_pred, y_true, padded_value_indicator=PADDED_Y_VALUE, ...)``
with ``y_pred`` the logits ``[batch, slate]`` of one domain's hypotheses (a row
is one utterance's candidate list, padded to the slate length) and ``y_true``
the per-hypothesis target of the same shape, padded entries marked by
``padded_value_indicator``. Each returns a scalar tensor.

- ``semer``: R1, expected SemER under ``softmax(s / T)`` (``y_true`` = SemER);
- ``crossentropy``: R2, BCE on logits against ``1 - IE`` (``y_true`` = 1 - IE);
- ``combined``: R3, ``alpha * R1 + (1 - alpha) * R2`` (``y_true`` = SemER).

A loss is chosen by its config, ``configs/loss/<name>.yaml``: ``_target_`` is
the function, ``_partial_: true``, and the keys beside them are its keyword
arguments (``temperature``, ``alpha``), whose values there are the ones the
toolkit uses. The short name of a loss (the registry's ``meta.json`` "loss",
checkpoint folders, printed lines) is read from the function through
:data:`LOSSES`, the one mapping between the two.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Dict

from rerank.losses.combined import combined_loss
from rerank.losses.crossentropy import crossentropy_loss
from rerank.losses.semer import semer_loss
from rerank.training.data import PADDED_Y_VALUE

#: every loss by its short name
LOSSES: Dict[str, Callable] = {
    "semer": semer_loss,
    "crossentropy": crossentropy_loss,
    "combined": combined_loss,
}
#: the ``y_true`` each loss takes: "semer" (the hypothesis's SemER) or "correct" (``1 - IE``)
TARGETS: Dict[str, str] = {"semer": "semer", "crossentropy": "correct", "combined": "semer"}


def get_loss(name: str) -> Callable:
    """The loss function registered as ``name`` (one of ``LOSSES``)."""
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}"
        ) from None


def unwrap_partial(f: Callable) -> tuple[Callable, list, dict[str, Any]]:
    """The function behind ``f`` (a function or a nested ``functools.partial``) and what the partials bind."""
    args: list = []
    kwargs: dict[str, Any] = {}
    while isinstance(f, functools.partial):
        args, kwargs = [*f.args, *args], {**f.keywords, **kwargs}
        f = f.func
    return f, args, kwargs


def loss_function(loss: Callable) -> Callable:
    """The function behind ``loss``: itself, or what a (nested) ``functools.partial`` wraps."""
    return unwrap_partial(loss)[0]


def loss_name(loss: Callable) -> str:
    """The short name of ``loss`` (a loss function or a partial of one), e.g. ``"combined"``."""
    fn = loss_function(loss)
    for name, registered in LOSSES.items():
        if fn is registered:
            return name
    raise ValueError(
        f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', fn)!s} is not a registered loss; "
        f"known losses: {', '.join(f'{n} ({f.__module__}.{f.__name__})' for n, f in LOSSES.items())}"
    )


def takes_competitors(loss: Callable) -> bool:
    """Whether ``loss`` sees the whole cross-domain list (``other_logsumexp``, ``other_expected_semer``)."""
    return "other_logsumexp" in inspect.signature(loss_function(loss)).parameters


def bound_argument(loss: Callable, name: str) -> Any:
    """The value ``loss`` passes as ``name``: what its partial binds, else the function's default."""
    loss, _, bound = unwrap_partial(loss)
    if name in bound:
        return bound[name]
    param = inspect.signature(loss).parameters.get(name)
    if param is None or param.default is inspect.Parameter.empty:
        raise TypeError(f"{loss.__name__} has no value for {name!r}: set it in the loss config (loss.{name}=...)")
    return param.default


__all__ = [
    "PADDED_Y_VALUE",
    "LOSSES",
    "TARGETS",
    "get_loss",
    "loss_function",
    "unwrap_partial",
    "loss_name",
    "takes_competitors",
    "bound_argument",
    "semer_loss",
    "crossentropy_loss",
    "combined_loss",
]
