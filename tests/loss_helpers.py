"""Shared by the one-file-per-loss tests."""
import math

from rerank.losses import PADDED_Y_VALUE

PAD = PADDED_Y_VALUE
LN3 = math.log(3.0)


def loss_and_grad(fn, y_pred, *args, **kwargs):
    """The loss and its gradient with respect to a fresh leaf copy of ``y_pred``."""
    y_pred = y_pred.detach().clone().requires_grad_(True)
    loss = fn(y_pred, *args, **kwargs)
    loss.backward()
    return loss.detach(), y_pred.grad
