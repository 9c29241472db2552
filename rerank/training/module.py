"""The LightningModule: one domain's re-ranker, its loss and its dev figures."""
from __future__ import annotations

from typing import Any, Mapping

import lightning.pytorch as L
import numpy as np
import torch

from rerank.losses import PADDED_Y_VALUE, get_loss
from rerank.metrics.calibration import brier, ece, nll
from rerank.model.scorer import sigmoid
from rerank.training.model import DomainReranker

OPTIMIZERS = ("lbfgs", "adam")


class RerankerModule(L.LightningModule):
    def __init__(self, model: DomainReranker, loss: Mapping[str, Any], optimizer: Mapping[str, Any], dev_errors: np.ndarray | None = None, dev_total: np.ndarray | None = None):
        super().__init__()
        # Plain containers only: a checkpoint must load with weights_only=True.
        self.save_hyperparameters(ignore=["model", "dev_errors", "dev_total"])
        self.model = model
        self.loss_cfg = dict(loss)
        self.optim_cfg = dict(optimizer)
        if self.optim_cfg["name"] not in OPTIMIZERS:
            raise ValueError(f"optimizer.name must be one of {OPTIMIZERS}, not {self.optim_cfg['name']!r}")
        self.loss_fn = get_loss(self.loss_cfg["name"])
        self.dev_errors, self.dev_total = dev_errors, dev_total
        self._val_logits: list[torch.Tensor] = []
        self._val_semer: list[torch.Tensor] = []
        self.dev_metrics: dict[str, float] = {}
        self.rows_seen = 0  # hypotheses through the loss, for throughput figures

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _loss(self, batch: Mapping[str, torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
        name = self.loss_cfg["name"]
        kwargs: dict[str, Any] = {}
        if name in ("semer", "combined"):
            kwargs["temperature"] = float(self.loss_cfg.get("temperature", 1.0))
            if self.loss_cfg.get("candidates", "domain") == "utterance" and "other_logsumexp" in batch:
                kwargs["other_logsumexp"] = batch["other_logsumexp"]
                kwargs["other_expected_semer"] = batch["other_expected_semer"]
        if name == "combined":
            kwargs["alpha"] = float(self.loss_cfg.get("alpha", 0.5))
        if name == "crossentropy":
            target = torch.where(batch["semer"] == PADDED_Y_VALUE, batch["semer"], (batch["semer"] == 0).float())
            return self.loss_fn(logits, target)
        return self.loss_fn(logits, batch["semer"], **kwargs)

    def training_step(self, batch, batch_idx):
        logits = self.model(batch["x"])
        loss = self._loss(batch, logits)
        self.rows_seen += int((batch["semer"] != PADDED_Y_VALUE).sum())
        l2 = float(self.optim_cfg.get("l2", 0.0))
        if l2 > 0:
            # L-BFGS has no weight decay; the penalty keeps one-hot columns of rare intents bounded.
            loss = loss + l2 * sum((p**2).sum() for n, p in self.model.named_parameters() if "weight" in n)
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
        cfg = self.optim_cfg
        if cfg["name"] == "lbfgs":
            return torch.optim.LBFGS(self.model.parameters(), lr=float(cfg.get("lr", 1.0)), max_iter=int(cfg.get("max_iter", 20)),
                                     history_size=int(cfg.get("history_size", 20)), line_search_fn="strong_wolfe",
                                     tolerance_grad=float(cfg.get("tolerance_grad", 1e-7)), tolerance_change=float(cfg.get("tolerance_change", 1e-9)))
        return torch.optim.Adam(self.model.parameters(), lr=float(cfg.get("lr", 0.01)))


def slate_metrics(logits: np.ndarray, semer: np.ndarray, errors: np.ndarray | None = None, total: np.ndarray | None = None) -> dict[str, float]:
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
            out["semer"] = float(errors[rows, top][has].sum() / total[has].sum())
        else:
            out["semer"] = float(semer[rows, top][has].mean())
        out["irer"] = float(1.0 - correct[rows, top][has].mean())
        top_p, top_c = p[rows, top][has], correct[rows, top][has]
        out["ece_top"] = ece(top_p, top_c)
        out["ece_all"] = ece(p[valid], correct[valid])
        out["brier_all"] = brier(p[valid], correct[valid])
        out["nll_all"] = nll(p[valid], correct[valid])
    return out
