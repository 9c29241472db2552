"""``DomainReranker``: a domain's hypothesis features -> logit ``s``; ``sigmoid(s)`` is calibrated."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rerank.metrics.calibration import platt
from rerank.model.scorer import LogitScorer
from rerank.model.spec import FeatureSpec, layout

#: the kinds of rerank.model.scorer.KINDS that torch trains (trees: rerank.training.trees)
TORCH_KINDS = ("linear", "mlp", "intent_linear")


class DomainReranker(nn.Module):
    """Linear (default, as in the paper), linear with evidence weights per intent, or a small MLP over standardised
    features.

    The standardisation (``mean``, ``std``: buffers fitted on the training
    rows) is part of the weights, so a published model is self-contained. The
    MLP adds its hidden layer to a linear path, so it starts where the linear
    model is and only learns what the linear model cannot.
    """

    def __init__(self, spec: FeatureSpec, kind: str = "linear", hidden: int = 32, interaction_l2: float = 0.0):
        super().__init__()
        if kind not in TORCH_KINDS:
            raise ValueError(f"a DomainReranker's kind must be one of {TORCH_KINDS}, not {kind!r} "
                             f"(trees: model=trees, rerank.training.trees.TreeReranker)")
        self.spec = spec
        self.kind = kind
        self.hidden = hidden
        self.interaction_l2 = float(interaction_l2)
        dim = spec.dim
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        # Post-hoc Platt scaling on dev (train.calibration=platt): logit' = scale * logit + shift.
        self.register_buffer("calibration", torch.tensor([1.0, 0.0]))
        self.linear = nn.Linear(dim, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        if kind == "mlp":
            self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))
            nn.init.zeros_(self.mlp[2].weight)
            nn.init.zeros_(self.mlp[2].bias)
        if kind == "intent_linear":
            lay = layout(spec)
            intent_cols, evidence_cols = list(range(lay.intent.start, lay.intent.stop)), list(range(lay.evidence.start, lay.evidence.stop))
            if not intent_cols or not evidence_cols:
                raise ValueError(f"model=intent_linear crosses the intent with the evidence: {spec.domain} has "
                                 f"{len(intent_cols)} intents and {len(evidence_cols)} evidence features (features.evidence)")
            # (submodules named as the published tensors: intent.weight, intent.cols, evidence.cols)
            self.intent, self.evidence = nn.Module(), nn.Module()
            self.intent.weight = nn.Parameter(torch.zeros(len(intent_cols), len(evidence_cols)))
            self.intent.register_buffer("cols", torch.tensor(intent_cols, dtype=torch.int64))
            self.evidence.register_buffer("cols", torch.tensor(evidence_cols, dtype=torch.int64))

    def fit_standardisation(self, X: torch.Tensor) -> None:
        mean = X.mean(dim=0)
        std = X.std(dim=0, unbiased=False)
        # Constant columns (a device never seen, one intent) keep scale 1.
        self.mean.copy_(mean)
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean) / self.std
        out = self.linear(z).squeeze(-1)
        if self.kind == "mlp":
            out = out + self.mlp(z).squeeze(-1)
        elif self.kind == "intent_linear":  # the intent's own evidence weights: one-hot(intent) @ U . z_evidence
            out = out + ((x[..., self.intent.cols] @ self.intent.weight) * z[..., self.evidence.cols]).sum(-1)
        return out * self.calibration[0] + self.calibration[1]

    def fit_calibration(self, x: torch.Tensor, correct: torch.Tensor) -> tuple[float, float]:
        """Platt scaling of the output on held-out rows (:func:`rerank.metrics.calibration.platt`).

        ``(1, 0)`` keeps the model as trained, e.g. when the fit would reverse the ranking inside the domain.
        """
        self.calibration.copy_(torch.tensor([1.0, 0.0]))
        with torch.no_grad():
            logits = self.forward(x).double().numpy()
        scale, shift = platt(logits, correct.double().numpy())
        self.calibration.copy_(torch.tensor([scale, shift]))
        return scale, shift

    def penalty(self) -> torch.Tensor | float:
        """The model's own regularisation, added to the loss: the per-intent evidence weights' L2 (``interaction_l2``)."""
        return self.interaction_l2 * (self.intent.weight ** 2).sum() if self.kind == "intent_linear" else 0.0

    def feature_weights(self) -> dict[str, float]:
        """Weight of every feature on the standardised scale: comparable across features."""
        w = self.linear.weight.detach().cpu().numpy()[0]
        return dict(zip(self.spec.names, map(float, w)))

    def weights(self) -> dict[str, np.ndarray]:
        """The tensors in the published format (``rerank.model.scorer``), as numpy arrays."""
        return {k: v.detach().cpu().numpy().copy() for k, v in self.state_dict().items()}

    @classmethod
    def from_weights(cls, spec: FeatureSpec, kind: str, weights: dict[str, np.ndarray]) -> "DomainReranker":
        hidden = int(weights["mlp.0.weight"].shape[0]) if kind == "mlp" else 32
        model = cls(spec, kind=kind, hidden=hidden)  # (interaction_l2 shapes training only, not the weights)
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
        model.eval()
        return model

    def numpy_scorer(self) -> LogitScorer:
        """The published model's numpy scorer of these weights (the same logits, without torch)."""
        return LogitScorer(self.kind, self.weights(), self.spec.dim)
