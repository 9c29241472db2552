"""``TreeReranker``: a domain's gradient-boosted trees (LightGBM), published as arrays (:mod:`rerank.model.trees`).

``model=trees`` trains, for one domain, LightGBM's binary objective on "the hypothesis is exactly right"
(``semer == 0``, the target of R2 and of the Platt fit), on the domain's training hypotheses; it stops adding trees
when the log loss on the domain's dev hypotheses has not improved for ``early_stopping_rounds`` rounds and keeps the
best round; then Platt-scales the output on the same dev rows (:func:`rerank.metrics.calibration.platt`). The
booster is converted to arrays from its public JSON dump (``Booster.dump_model()``), checked against LightGBM's own
``predict(raw_score=True)`` on the dev rows, and published as data like every kind: the service scores it in numpy,
without LightGBM.

What Lightning does for it: nothing numerical. The job is the same Hydra job as the torch kinds' (config, seeding
by ``seed_everything``, the TensorBoard logger, which receives the hyper-parameters and the dev log loss of every
round); there is no ``Trainer``, no gradient step, no checkpoint and no optimizer (``optimizer=`` is ignored). Only the
pointwise ``loss=crossentropy`` fits a binary objective; a listwise loss is refused. LightGBM runs with the job's
threads (``threads``: the torch threads rule), ``deterministic`` and row-wise histograms, so one seed gives one model.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from rerank.metrics.calibration import platt
from rerank.model.scorer import LogitScorer
from rerank.model.spec import FeatureSpec
from rerank.model.trees import TreeEnsemble, from_lightgbm_dump
from rerank.training.data import PADDED_Y_VALUE, SlateTensors

#: how far the numpy trees may be from LightGBM's raw score before the export is refused (summed in the same order,
#: they are equal; the tolerance only covers a LightGBM that adds its trees another way)
EXPORT_TOLERANCE = 1e-9


def rows(s: SlateTensors) -> tuple[np.ndarray, np.ndarray]:
    """The hypotheses of a split (no padding): features ``[n, F]`` float32 and ``correct`` (``semer == 0``) float64."""
    valid = (s.semer != PADDED_Y_VALUE).numpy()
    return s.x.numpy()[valid], (s.semer.numpy()[valid] == 0).astype(np.float64)


class TreeReranker:
    """Boosted trees over a domain's raw features (no standardisation: trees do not need it), then Platt on dev.

    The arguments are ``configs/model/trees.yaml``'s (their values live there); ``platt``: Platt-scale on dev after
    the fit (``calibration=platt`` asks it too).
    """

    kind = "trees"

    def __init__(self, spec: FeatureSpec, *, n_estimators: int, learning_rate: float, num_leaves: int, min_child_samples: int,
                 reg_lambda: float, early_stopping_rounds: int, max_bin: int, platt: bool):
        self.spec = spec
        self.params = {"n_estimators": int(n_estimators), "learning_rate": float(learning_rate), "num_leaves": int(num_leaves),
                       "min_child_samples": int(min_child_samples), "reg_lambda": float(reg_lambda),
                       "early_stopping_rounds": int(early_stopping_rounds), "max_bin": int(max_bin)}
        self.platt = bool(platt)
        self.calibration = np.array([1.0, 0.0])
        self.trees: dict[str, np.ndarray] | None = None
        self.booster = None

    def fit(self, train: SlateTensors, dev: SlateTensors, seed: int, threads: int, logger: Any = None) -> dict:
        """Fit on ``train``'s hypotheses, early-stopped on ``dev``'s; returns ``trees`` (kept), ``rounds`` (run), ``rows``."""
        import lightgbm as lgb

        p = self.params
        X, y = rows(train)
        Xd, yd = rows(dev)
        params = {"objective": "binary", "metric": "binary_logloss", "learning_rate": p["learning_rate"],
                  "num_leaves": p["num_leaves"], "min_child_samples": p["min_child_samples"], "lambda_l2": p["reg_lambda"],
                  "max_bin": p["max_bin"], "seed": int(seed), "deterministic": True, "force_row_wise": True,
                  "num_threads": int(threads), "verbose": -1,
                  # the features are finite: no missing-value path, so the exported trees hold '<=' splits only
                  "use_missing": False}
        history: dict = {}
        callbacks = [lgb.record_evaluation(history)]
        valid = {}
        if len(Xd):
            valid = {"valid_sets": [lgb.Dataset(Xd, yd, free_raw_data=False)], "valid_names": ["dev"]}
            callbacks.append(lgb.early_stopping(p["early_stopping_rounds"], first_metric_only=True, verbose=False))
        booster = lgb.train(params, lgb.Dataset(X, y, free_raw_data=False), num_boost_round=p["n_estimators"],
                            callbacks=callbacks, **valid)
        best = booster.best_iteration or booster.current_iteration()
        self.trees = from_lightgbm_dump(booster.dump_model(num_iteration=best), self.spec.dim)
        self._ensemble = TreeEnsemble(self.trees, self.spec.dim)
        self.booster = booster
        check = Xd if len(Xd) else X
        gap = float(np.max(np.abs(self._ensemble(check) - booster.predict(check, raw_score=True, num_iteration=best))))
        if not gap <= EXPORT_TOLERANCE:
            raise RuntimeError(f"{self.spec.domain}: the exported trees differ from LightGBM's raw score by {gap:g}")
        dev_loss = history.get("dev", {}).get("binary_logloss", [])
        experiment = getattr(logger, "experiment", None) if logger else None
        if experiment is not None and hasattr(experiment, "add_scalar"):
            for step, value in enumerate(dev_loss):
                experiment.add_scalar("val/binary_logloss", value, step)
            logger.log_hyperparams({"model": "trees", **p, "trees_kept": best})
        return {"trees": best, "rounds": booster.current_iteration(), "rows": len(X)}

    def raw(self, x) -> np.ndarray:
        """The trees' summed output (LightGBM's raw score) of feature rows ``[..., F]``."""
        x = np.asarray(x, dtype=np.float32)
        return self._ensemble(x.reshape(-1, self.spec.dim)).reshape(x.shape[:-1])

    def __call__(self, x) -> np.ndarray:
        """Calibrated logits of feature rows ``[..., F]`` (torch or numpy)."""
        return self.raw(x) * self.calibration[0] + self.calibration[1]

    def fit_calibration(self, x, correct) -> tuple[float, float]:
        """Platt scaling of the output on held-out rows, as ``DomainReranker.fit_calibration``."""
        scale, shift = platt(self.raw(x), np.asarray(correct, dtype=np.float64))
        self.calibration = np.array([scale, shift])
        return scale, shift

    def feature_weights(self) -> None:
        """Trees have no weight per feature (the TensorBoard weights figure is not drawn)."""
        return None

    def weights(self) -> dict[str, np.ndarray]:
        """The tensors in the published format (``rerank.model.scorer``, kind ``trees``)."""
        if self.trees is None:
            raise RuntimeError(f"{self.spec.domain}: the trees are not fitted")
        dim = self.spec.dim
        return {"mean": np.zeros(dim, np.float32), "std": np.ones(dim, np.float32), "calibration": self.calibration.copy(),
                **{k: v.copy() for k, v in self.trees.items()}}

    def numpy_scorer(self) -> LogitScorer:
        return LogitScorer(self.kind, self.weights(), self.spec.dim)

