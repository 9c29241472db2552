"""``model=intent_linear``: the linear model plus evidence weights per intent, published as data and scored by numpy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rerank.merge.ranker import CrossDomainRanker
from rerank.model.registry import Registry, RegistryError
from rerank.model.scorer import BadWeights, LogitScorer
from rerank.model.spec import FeatureSpec, layout
from rerank.training.model import DomainReranker
from rerank.training.train import train

SPEC = FeatureSpec(domain="Music", intents=("music_pause", "music_play", "music_query"), context=(("device", ("echo", "tv")),),
                   slot_types=("artist",), n_ranks=3, evidence=("length", "oov", "unigram"))


def random_model(seed: int = 0) -> DomainReranker:
    model = DomainReranker(SPEC, kind="intent_linear", interaction_l2=0.1)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
        model.mean.copy_(torch.randn(model.mean.shape, generator=g))
        model.std.copy_(torch.rand(model.std.shape, generator=g) + 0.5)
        model.calibration.copy_(torch.tensor([0.7, -0.2]))
    return model.eval()


def rows(n: int, seed: int = 1) -> np.ndarray:
    """Feature rows with a one-hot intent (or none: an intent the model never saw)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, SPEC.dim)).astype(np.float32)
    lay = layout(SPEC)
    X[:, lay.intent] = 0
    which = rng.integers(-1, len(SPEC.intents), n)
    X[which >= 0, lay.intent.start + which[which >= 0]] = 1
    return X


def test_the_numpy_scorer_equals_the_torch_model_and_hand_arithmetic():
    model = random_model()
    X = rows(64)
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(X)).double().numpy()
    np_logits = model.numpy_scorer()(X)
    assert np.max(np.abs(np_logits - torch_logits)) < 1e-5  # float32 torch against float64 numpy
    # by hand: the linear logit plus the row's intent's evidence weights on the standardised evidence
    w = model.weights()
    lay = layout(SPEC)
    z = (X.astype(np.float64) - w["mean"]) / w["std"]
    linear = z @ w["linear.weight"][0] + w["linear.bias"][0]
    U = w["intent.weight"].astype(np.float64)
    inter = np.array([U[np.argmax(x[lay.intent])] @ zz[lay.evidence] if x[lay.intent].any() else 0.0 for x, zz in zip(X, z)])
    scale, shift = w["calibration"]
    assert np.allclose(np_logits, (linear + inter) * scale + shift, atol=1e-9)
    # the interaction is there: an intent's evidence weights change its rows' scores only
    other = {k: v.copy() for k, v in w.items()}
    other["intent.weight"][1] += 1.0
    changed = LogitScorer("intent_linear", other, SPEC.dim)(X) != np_logits
    assert np.array_equal(changed, X[:, lay.intent.start + 1] == 1)


def test_published_as_data_and_ranked_with_linear_domains(tmp_path):
    reg = Registry(tmp_path)
    model = random_model(3)
    reg.publish("toy", "Music", model, loss="combined", config={}, metrics={}, data_hash="h")
    got = reg.load("toy", "Music", "v1")
    assert got.kind == "intent_linear" and got.weights()["intent.cols"].dtype == np.int64
    X = rows(20, 4)
    assert np.array_equal(got.scorer(X), model.numpy_scorer()(X))
    ranker = CrossDomainRanker.from_registry(reg, "toy", ["Music"], versions={"Music": "v1"})
    assert not ranker._is_linear("Music")  # scored through its own scorer, not the many-linear lookups


@pytest.mark.parametrize("edit,match", [
    (lambda w: w.update({"intent.cols": np.array([0, 0, 1])}), "intent.cols"),
    (lambda w: w.update({"evidence.cols": np.array([0, 1, SPEC.dim])}), "evidence.cols"),
    (lambda w: w.update({"evidence.cols": np.array([0.0, 1.0, 2.0])}), "evidence.cols"),
    (lambda w: w.update({"intent.weight": np.zeros((2, 3), np.float32)}), "intent.weight"),
    (lambda w: w["intent.weight"].__setitem__((0, 0), np.nan), "intent.weight"),
    (lambda w: w.pop("evidence.cols"), "evidence.cols"),
])
def test_bad_interaction_tensors_are_refused_naming_the_tensor(tmp_path, edit, match):
    w = random_model().weights()
    edit(w)
    with pytest.raises(BadWeights, match=match):
        LogitScorer("intent_linear", w, SPEC.dim)


def test_a_spec_without_evidence_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="intent_linear.*evidence"):
        DomainReranker(FeatureSpec("Music", ("a", "b"), (), (), 2), kind="intent_linear")


def test_trained_by_train_and_its_penalty_applies(train_config, prepared, tmp_path):
    domain = prepared.manifest["domains"][0]
    cfg = train_config(domain, "crossentropy", "model=intent_linear", "features=evidence", "trainer.max_epochs=3", "~callbacks",
                       "promote=false")
    out = train(cfg)
    pub = Registry(tmp_path / "registry").load(prepared.manifest["corpus"], domain, out["version"])
    assert pub.kind == "intent_linear" and np.abs(pub.weights()["intent.weight"]).sum() > 0
    model = DomainReranker.from_weights(pub.spec, "intent_linear", pub.weights())
    heavy = DomainReranker(pub.spec, kind="intent_linear", interaction_l2=2.0)
    with torch.no_grad():
        assert float(model.penalty()) == 0.0  # interaction_l2 shapes training only; a loaded model carries none
        heavy.intent.weight.fill_(1.0)
        assert float(heavy.penalty()) == pytest.approx(2.0 * heavy.intent.weight.numel())
    with pytest.raises(RegistryError):
        bad = DomainReranker.from_weights(pub.spec, "intent_linear", pub.weights())
        with torch.no_grad():
            bad.intent.weight.fill_(float("inf"))
        Registry(tmp_path / "registry").publish(prepared.manifest["corpus"], domain, bad, loss="crossentropy", config={},
                                                metrics={}, data_hash="h")
