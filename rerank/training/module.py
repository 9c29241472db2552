"""The LightningModule: one domain's re-ranker, its loss and its dev figures."""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Mapping

import lightning.pytorch as L
import numpy as np
import torch
from hydra.utils import instantiate

from rerank.losses import LOSSES, build_loss
from rerank.metrics.calibration import brier, ece, nll
from rerank.metrics.corpus import corpus_semer, irer
from rerank.metrics.logistic import sigmoid
from rerank.training.data import PADDED_Y_VALUE
from rerank.training.model import DomainReranker

#: the dev figures of :func:`slate_metrics` (``optimized_metric`` names one of them)
DEV_METRICS = ("semer", "irer", "ece_top", "ece_all", "brier_all", "nll_all")


def check_partial(make: Callable, *runtime: Any) -> Callable:
    """``make`` if it is a partial whose bound arguments (and ``runtime``, the arguments it
    will get at run time) fit its target's signature; ``TypeError`` otherwise.

    Hydra's ``_partial_: true`` binds the keys of a node without looking at them; this
    looks, so that a misspelt key (``+loss.alpah=0.3``) fails before any data is read.
    """
    if not isinstance(make, functools.partial):
        raise TypeError(f"expected a partial (_partial_: true in its config), got {type(make).__name__}")
    target, args, kwargs = make.func, list(make.args), dict(make.keywords)
    try:
        inspect.signature(target).bind_partial(*args, *runtime, **kwargs)
    except TypeError as err:
        raise TypeError(f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', target)}: {err}") from None
    return make


def build_optimizer(cfg: Mapping[str, Any]) -> Callable[..., torch.optim.Optimizer]:
    """The optimizer factory (parameters -> optimizer) of a ``configs/optimizer`` node's ``torch`` part."""
    return check_partial(instantiate(cfg["torch"]), [])


def build_model(cfg: Mapping[str, Any]) -> Callable[..., DomainReranker]:
    """The model factory (feature spec -> ``DomainReranker``) of a ``configs/model`` node."""
    return check_partial(instantiate(cfg), None)


class RerankerModule(L.LightningModule):
    """``loss``: a ``configs/loss`` node (``name`` and keyword arguments); ``optimizer``: a
    ``configs/optimizer`` node (``torch``: the torch optimizer's node; ``l2``: the weight penalty).

    Both stay plain containers here (a checkpoint must load with ``weights_only=True``);
    the callables are built from them.
    """

    def __init__(self, model: DomainReranker, loss: Mapping[str, Any], optimizer: Mapping[str, Any],
                 dev_errors: np.ndarray | None = None, dev_total: np.ndarray | None = None):
        super().__init__()
        # Plain containers only: a checkpoint must load with weights_only=True.
        self.save_hyperparameters(ignore=["model", "dev_errors", "dev_total"])
        self.model = model
        self.loss_cfg = dict(loss)
        self.optim_cfg = dict(optimizer)
        self.loss_fn = build_loss(self.loss_cfg)
        self.loss_name = self.loss_cfg["name"]
        self.target = LOSSES[self.loss_name].target
        self.listwise = LOSSES[self.loss_name].listwise
        self.make_optimizer = build_optimizer(self.optim_cfg)
        self.l2 = float(self.optim_cfg["l2"])
        self.dev_errors, self.dev_total = dev_errors, dev_total
        self._val_logits: list[torch.Tensor] = []
        self._val_semer: list[torch.Tensor] = []
        self.dev_metrics: dict[str, float] = {}
        self.rows_seen = 0  # hypotheses through the loss, for throughput figures

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _loss(self, batch: Mapping[str, torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
        semer = batch["semer"]
        if self.target == "correct":
            target = torch.where(semer == PADDED_Y_VALUE, semer, (semer == 0).float())
            return self.loss_fn(logits, target)
        kwargs: dict[str, Any] = {}
        if self.listwise and "other_logsumexp" in batch:
            # slates.candidates=utterance: train() added the other domains' two numbers per utterance
            kwargs["other_logsumexp"] = batch["other_logsumexp"]
            kwargs["other_expected_semer"] = batch["other_expected_semer"]
        return self.loss_fn(logits, semer, **kwargs)

    def training_step(self, batch, batch_idx):
        logits = self.model(batch["x"])
        loss = self._loss(batch, logits)
        self.rows_seen += int((batch["semer"] != PADDED_Y_VALUE).sum())
        if self.l2 > 0:
            # L-BFGS has no weight decay; the penalty keeps one-hot columns of rare intents bounded.
            loss = loss + self.l2 * sum((p**2).sum() for n, p in self.model.named_parameters() if "weight" in n)
        loss = loss + self.model.penalty()
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=batch["x"].shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self.model(batch["x"])
        loss = self._loss(batch, logits)
        self.log("val/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=batch["x"].shape[0])
        self._val_logits.append(logits.detach())
        self._val_semer.append(batch["semer"].detach())

    def on_validation_epoch_end(self) -> None:
        if not self._val_logits:
            return
        logits = torch.cat(self._val_logits).cpu().numpy()
        semer = torch.cat(self._val_semer).cpu().numpy()
        self._val_logits.clear()
        self._val_semer.clear()
        self.dev_metrics = slate_metrics(logits, semer, self.dev_errors, self.dev_total)
        for k, v in self.dev_metrics.items():
            self.log(f"val/{k}", v, on_step=False, on_epoch=True)

    def configure_optimizers(self):
        return self.make_optimizer(self.model.parameters())


def slate_metrics(logits: np.ndarray, semer: np.ndarray, errors: np.ndarray | None = None,
                  total: np.ndarray | None = None) -> dict[str, float]:
    """Within-domain dev figures: top-hypothesis SemER/IRER and calibration of all and of the top hypotheses."""
    valid = semer != PADDED_Y_VALUE
    has = valid.any(axis=1)
    masked = np.where(valid, logits, -np.inf)
    top = masked.argmax(axis=1)
    rows = np.arange(len(top))
    p = sigmoid(logits)
    correct = (semer == 0).astype(np.float64)
    out: dict[str, float] = {}
    if has.any():
        if errors is not None and total is not None:
            out["semer"] = corpus_semer(errors[rows, top][has], total[has])
        else:
            out["semer"] = float(semer[rows, top][has].mean())
        out["irer"] = irer(1.0 - correct[rows, top][has])
        top_p, top_c = p[rows, top][has], correct[rows, top][has]
        out["ece_top"] = ece(top_p, top_c)
        out["ece_all"] = ece(p[valid], correct[valid])
        out["brier_all"] = brier(p[valid], correct[valid])
        out["nll_all"] = nll(p[valid], correct[valid])
    return out
