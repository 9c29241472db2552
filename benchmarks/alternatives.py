"""The alternatives the per-domain re-rankers are measured against.

- ``platt``: post-hoc Platt scaling of the baseline per domain (the cheap alternative);
- ``joint``: every domain's linear re-ranker trained together in one run, with a
  softmax over each utterance's whole cross-domain list (the non-modular reference);
- ``lambdamart``: LightGBM LambdaMART over all hypotheses (optional; scores are not probabilities).

The joint model and LambdaMART read the features the per-domain models read (evidence included), so that
the rows compare training schemes, not inputs.

Every function returns scores aligned with ``rerank.merge.evaluate.load_split``
(domains in sorted order, rows in table order).
"""
from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import torch

from rerank.metrics.calibration import platt
from rerank.metrics.logistic import sigmoid as _sigmoid
from rerank.model.features import features_from_table
from rerank.model.spec import FeatureSpec
from rerank.training.competitors import baseline_logit


def _base_logit(table: pa.Table) -> np.ndarray:
    return baseline_logit(table["dc"].to_numpy(), table["ic"].to_numpy(), table["ner"].to_numpy())


# ---------------------------------------------------------------- Platt scaling
def fit_platt(dev_tables: Mapping[str, pa.Table]) -> tuple[dict[str, tuple[float, float]], float]:
    """Per domain ``(a, b)`` with ``p = sigmoid(a * logit(dc*ic*ner) + b)``, fitted on its dev hypotheses (target 1 - IE)."""
    t0 = time.perf_counter()
    params = {d: platt(_base_logit(t), 1 - t["ie"].to_numpy().astype(np.float64)) for d, t in dev_tables.items()}
    return params, time.perf_counter() - t0


def platt_scores(tables: Mapping[str, pa.Table], params: Mapping[str, tuple[float, float]]) -> np.ndarray:
    parts = []
    for d in sorted(tables):
        a, b = params.get(d, (1.0, 0.0))
        parts.append(_sigmoid(a * _base_logit(tables[d]) + b))
    return np.concatenate(parts) if parts else np.zeros(0)


# ---------------------------------------------------------------- the joint model
def grouped_combined_loss(s: torch.Tensor, group: torch.Tensor, n_groups: int, semer: torch.Tensor, correct: torch.Tensor,
                          alpha: float, temperature: float) -> torch.Tensor:
    """R3 (:func:`rerank.losses.combined.combined_loss`) on a ragged list: row ``i`` belongs to utterance ``group[i]``.

    The same value as ``combined_loss`` on the padded ``[n_groups, slate]`` form (a test holds
    them together); written on the flat rows because the joint model's lists are whole
    cross-domain lists, up to hundreds long, and padding them every L-BFGS evaluation costs more.
    """
    zt = s / temperature
    mx = torch.full((n_groups,), -torch.inf, dtype=zt.dtype).scatter_reduce(0, group, zt.detach(), "amax")
    e = torch.exp(zt - mx[group])
    den = torch.zeros(n_groups, dtype=zt.dtype).index_add(0, group, e)
    num = torch.zeros(n_groups, dtype=zt.dtype).index_add(0, group, e * semer)
    l_semer = (num / den).mean()
    l_ce = torch.nn.functional.binary_cross_entropy_with_logits(s, correct)
    return alpha * l_semer + (1 - alpha) * l_ce


class JointModel:
    """One linear model per domain (own feature spec, own standardisation), trained jointly.

    Loss: ``alpha * E_q[SemER] + (1 - alpha) * BCE`` where ``q = softmax(s / T)``
    over each utterance's *whole* cross-domain list (no part held fixed) and
    BCE is on every hypothesis against 1 - IE; plus ``l2 * |w|^2``; full-batch L-BFGS.
    """

    def __init__(self, specs: Mapping[str, FeatureSpec]):
        self.specs = dict(specs)
        self.domains = sorted(specs)
        self.mean: dict[str, np.ndarray] = {}
        self.std: dict[str, np.ndarray] = {}
        self.w: dict[str, np.ndarray] = {}
        self.b: dict[str, float] = {}

    def _features(self, tables: Mapping[str, pa.Table]) -> dict[str, np.ndarray]:
        return {d: features_from_table(tables[d], self.specs[d]).astype(np.float64) for d in self.domains}

    def fit(self, tables: Mapping[str, pa.Table], *, alpha: float, temperature: float, l2: float = 1e-4,
            max_iter: int = 200, seed: int = 0) -> dict:
        """``alpha`` and ``temperature``: the suite passes the per-domain R3's (chosen on dev), so no defaults here."""
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        X = self._features(tables)
        Z, utt, sem, y = [], [], [], []
        for d in self.domains:
            m = X[d].mean(0)
            s = X[d].std(0)
            s = np.where(s > 1e-6, s, 1.0)
            self.mean[d], self.std[d] = m, s
            Z.append(torch.from_numpy((X[d] - m) / s))
            utt.append(tables[d]["utt_index"].to_numpy().astype(np.int64))
            sem.append(tables[d]["semer"].to_numpy().astype(np.float64))
            y.append(1.0 - tables[d]["ie"].to_numpy().astype(np.float64))
        u_all = np.concatenate(utt)
        _, group = np.unique(u_all, return_inverse=True)
        group = torch.from_numpy(group)
        n_groups = int(group.max()) + 1 if len(group) else 0
        semer_t = torch.from_numpy(np.concatenate(sem))
        y_t = torch.from_numpy(np.concatenate(y))
        params = [torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True) for z in Z]
        biases = [torch.zeros((), dtype=torch.float64, requires_grad=True) for _ in Z]
        opt = torch.optim.LBFGS(params + biases, lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-9, tolerance_change=1e-12)
        state = {"evals": 0}

        def closure():
            opt.zero_grad()
            s = torch.cat([z @ w + b for z, w, b in zip(Z, params, biases)])
            loss = grouped_combined_loss(s, group, n_groups, semer_t, y_t, alpha, temperature)
            loss = loss + l2 * sum((w ** 2).sum() for w in params)
            loss.backward()
            state["evals"] += 1
            state["loss"] = loss.item()
            return loss

        opt.step(closure)
        for d, w, b in zip(self.domains, params, biases):
            self.w[d] = w.detach().numpy().copy()
            self.b[d] = float(b.detach())
        return {"seconds": time.perf_counter() - t0, "loss": state.get("loss"), "evaluations": state["evals"],
                "hypotheses": int(len(u_all)), "alpha": alpha, "temperature": temperature}

    def scores(self, tables: Mapping[str, pa.Table]) -> np.ndarray:
        X = self._features(tables)
        parts = [_sigmoid(((X[d] - self.mean[d]) / self.std[d]) @ self.w[d] + self.b[d]) for d in self.domains if d in tables]
        return np.concatenate(parts) if parts else np.zeros(0)

    def feature_weights(self) -> dict[str, dict[str, float]]:
        return {d: dict(zip(self.specs[d].names, map(float, self.w[d]))) for d in self.domains}


# ---------------------------------------------------------------- LambdaMART
def lightgbm_available() -> bool:
    try:
        import lightgbm  # noqa: F401
    except ImportError:
        return False
    return True


class SharedLayout:
    """Every domain's features (:func:`features_from_table`, the per-domain models' very columns, evidence
    included) in one matrix of the union of their names, plus the domain's code: what a model of all domains at
    once reads, like for like with the per-domain models. A name two domains share is one column."""

    def __init__(self, specs: Mapping[str, FeatureSpec]):
        self.specs, self.domains = dict(specs), sorted(specs)
        self.names = list(dict.fromkeys(n for d in self.domains for n in self.specs[d].names)) + ["domain"]
        self._cols = {d: np.array([self.names.index(n) for n in self.specs[d].names], dtype=np.int64) for d in self.domains}

    def matrix(self, tables: Mapping[str, pa.Table]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(X, utt_index, relevance)`` of every domain's rows, in sorted-domain, table order (aligned with load_split)."""
        parts, utt, rel = [], [], []
        for j, d in enumerate(self.domains):
            if d not in tables:
                continue
            t = tables[d]
            X = np.zeros((t.num_rows, len(self.names)))
            X[:, self._cols[d]] = features_from_table(t, self.specs[d])
            X[:, -1] = j
            parts.append(X)
            utt.append(t["utt_index"].to_numpy().astype(np.int64))
            rel.append(1 - t["ie"].to_numpy().astype(int))
        return np.concatenate(parts), np.concatenate(utt), np.concatenate(rel)


def fit_lambdamart(train_tables, dev_tables, layout: SharedLayout, *, num_leaves: int = 31, learning_rate: float = 0.05,
                   n_estimators: int = 500, seed: int = 0) -> tuple[Any, float]:
    """LambdaMART over every domain's rows at once (``layout``: the per-domain models' features), early-stopped on
    dev's NDCG@1; the domain is a categorical feature."""
    import lightgbm as lgb

    t0 = time.perf_counter()
    sets = []
    for tables in (train_tables, dev_tables):
        X, u, r = layout.matrix(tables)
        order = np.argsort(u, kind="stable")
        _, counts = np.unique(u[order], return_counts=True)
        sets.append((X[order], r[order], counts))
    (Xt, rt, gt), (Xd, rd, gd) = sets
    model = lgb.LGBMRanker(objective="lambdarank", n_estimators=n_estimators, learning_rate=learning_rate, num_leaves=num_leaves,
                           random_state=seed, verbose=-1, n_jobs=1, deterministic=True, force_row_wise=True)
    model.fit(Xt, rt, group=gt, eval_set=[(Xd, rd)], eval_group=[gd], eval_at=[1],
              categorical_feature=[Xt.shape[1] - 1], callbacks=[lgb.early_stopping(30, verbose=False)])
    return model, time.perf_counter() - t0


def lambdamart_scores(model, tables, layout: SharedLayout) -> np.ndarray:
    X, _, _ = layout.matrix(tables)  # in sorted-domain, table order: aligned with load_split
    return np.asarray(model.predict(X), dtype=np.float64)
