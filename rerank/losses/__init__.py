"""Losses of the per-domain re-rankers, allRank-style (REFERENCE.md s.3).

Every loss takes ``(y_pred, y_true, padded_value_indicator=PADDED_Y_VALUE, ...)``
with ``y_pred`` the logits ``[batch, slate]`` of one domain's hypotheses (a row
is one utterance's candidate list, padded to the slate length) and ``y_true``
the per-hypothesis target of the same shape, padded entries marked by
``padded_value_indicator``. Each returns a scalar tensor.

- ``semer``: R1, expected SemER under ``softmax(s / T)`` (``y_true`` = SemER);
- ``crossentropy``: R2, BCE on logits against ``1 - IE`` (``y_true`` = 1 - IE);
- ``combined``: R3, ``alpha * R1 + (1 - alpha) * R2`` (``y_true`` = SemER).

A loss is chosen by its config, ``configs/loss/<name>.yaml``: ``name`` (a key of
:data:`LOSSES`, as allRank looks a loss up) and its keyword arguments beside it
(``temperature``, ``alpha``), whose values there are the ones the toolkit uses.
:func:`build_loss` binds them, refusing a key the function does not take.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping

from rerank.losses._helpers import PADDED_Y_VALUE
from rerank.losses.combined import combined_loss
from rerank.losses.crossentropy import crossentropy_loss
from rerank.losses.semer import semer_loss


@dataclass(frozen=True)
class Loss:
    """A registered loss: its function, the ``y_true`` it takes and whether it sees the cross-domain list."""

    fn: Callable
    #: "semer" (the hypothesis's SemER) or "correct" (``1 - IE``)
    target: str
    #: takes ``other_logsumexp`` and ``other_expected_semer`` (``slates.candidates=utterance``)
    listwise: bool


#: every loss by its short name (a config's ``name``; the registry's ``meta.json`` "loss")
LOSSES: Dict[str, Loss] = {
    "semer": Loss(semer_loss, "semer", True),
    "crossentropy": Loss(crossentropy_loss, "correct", False),
    "combined": Loss(combined_loss, "semer", True),
}


def get_loss(name: str) -> Callable:
    """The loss function registered as ``name`` (one of ``LOSSES``)."""
    return _entry(name).fn


def _entry(name: str) -> Loss:
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}") from None


def build_loss(cfg: Mapping[str, Any]) -> Callable:
    """The loss of a ``configs/loss`` node: ``LOSSES[cfg["name"]]`` with the node's other keys bound.

    ``ValueError`` for an unknown name; ``TypeError`` for a key the function does not take
    (``+loss.alpah=0.3`` fails before any data is read).
    """
    if "name" not in cfg:
        raise ValueError(f"a loss config names its loss (name: one of {', '.join(sorted(LOSSES))}); got keys {sorted(cfg)}")
    entry = _entry(cfg["name"])
    kwargs = {k: v for k, v in cfg.items() if k != "name"}
    try:
        inspect.signature(entry.fn).bind_partial(None, None, **kwargs)
    except TypeError as err:
        raise TypeError(f"loss {cfg['name']!r} ({entry.fn.__module__}.{entry.fn.__name__}): {err}") from None
    return functools.partial(entry.fn, **kwargs)


def loss_argument(cfg: Mapping[str, Any], name: str) -> Any:
    """The value the loss of ``cfg`` passes as ``name``: the config's, else the function's default."""
    if name in cfg:
        return cfg[name]
    param = inspect.signature(_entry(cfg["name"]).fn).parameters.get(name)
    if param is None or param.default is inspect.Parameter.empty:
        raise TypeError(f"loss {cfg['name']!r} has no value for {name!r}: set it in the loss config (loss.{name}=...)")
    return param.default


__all__ = [
    "PADDED_Y_VALUE",
    "Loss",
    "LOSSES",
    "get_loss",
    "build_loss",
    "loss_argument",
    "semer_loss",
    "crossentropy_loss",
    "combined_loss",
]
