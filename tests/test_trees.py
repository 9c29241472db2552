"""model=trees: LightGBM's trees as published arrays, scored in numpy exactly as LightGBM scores them, trained by
train(), ranked among linear domains offline, on the service's fast path and by the running service."""
from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import torch

import rerank.model.trees as trees_mod
from rerank.hypotheses.tables import TableSet
from rerank.merge.ranker import CrossDomainRanker
from rerank.metrics.logistic import sigmoid
from rerank.model.features import features_from_table
from rerank.model.registry import Registry, RegistryError
from rerank.model.scorer import BadWeights, LogitScorer, check_weights
from rerank.model.trees import BadTrees, TreeEnsemble, check_trees, from_lightgbm_dump
from test_serve import CORPUS, assert_same_ranking, offline, parse, served, service, utterances

lgb = pytest.importorskip("lightgbm")

DOMAIN, LINEAR_DOMAINS = "Music", ("Video", "Books")
PARAMS = {"objective": "binary", "learning_rate": 0.2, "num_leaves": 7, "min_child_samples": 5, "seed": 0,
          "deterministic": True, "force_row_wise": True, "num_threads": 1, "verbose": -1, "use_missing": False}


def _booster(seed: int = 0, rounds: int = 20) -> tuple[lgb.Booster, np.ndarray]:
    """A small booster over 5 features: continuous, one-hot (0/1) and a count, as the re-rankers' features are."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.normal(size=600), rng.random(600) < 0.3, rng.integers(0, 4, 600), rng.normal(size=600),
                         np.log(rng.random(600) + 1e-9)]).astype(np.float32)
    y = (X[:, 0] + X[:, 1] - 0.3 * X[:, 2] + 0.5 * rng.normal(size=600) > 0).astype(float)
    return lgb.train(PARAMS, lgb.Dataset(X, y), num_boost_round=rounds), X


def _at_thresholds(arrays: dict, X: np.ndarray) -> np.ndarray:
    """Rows of ``X`` with one feature set exactly at one split's threshold, for every split (and just above it)."""
    internal = arrays["trees.left"] != np.arange(arrays["trees.left"].shape[1])
    features, thresholds = arrays["trees.feature"][internal], arrays["trees.threshold"][internal]
    rows = np.repeat(X[:1].astype(np.float64), 2 * len(features), axis=0)
    rows[np.arange(len(features)), features] = thresholds
    rows[len(features) + np.arange(len(features)), features] = np.nextafter(thresholds, np.inf)
    return rows


def test_numpy_trees_give_lightgbms_raw_score(monkeypatch):
    booster, X = _booster()
    arrays = from_lightgbm_dump(booster.dump_model(), X.shape[1])
    ensemble = TreeEnsemble(arrays, X.shape[1])
    rng = np.random.default_rng(1)
    fresh = np.column_stack([rng.normal(size=300), rng.random(300) < 0.5, rng.integers(0, 4, 300), rng.normal(size=300),
                             rng.normal(size=300)]).astype(np.float32)
    edges = _at_thresholds(arrays, X)
    for rows in (X, fresh, edges, X[:1], X[:0]):
        want = booster.predict(rows, raw_score=True) if len(rows) else np.zeros(0)
        np.testing.assert_allclose(ensemble(rows), want, rtol=0, atol=1e-6)
        assert np.array_equal(ensemble(rows), want)  # (summed in LightGBM's order: bit for bit)
    monkeypatch.setattr(trees_mod, "BLOCK_SLOTS", 7 * ensemble.n_trees)  # a table walked 7 rows at a time
    assert np.array_equal(ensemble(X), booster.predict(X, raw_score=True))
    # LightGBM's initial score (boost_from_average) is in the first tree: a model that never splits is that constant
    y = np.r_[np.ones(20), np.zeros(80)]
    stump = lgb.train({**PARAMS, "min_child_samples": 80}, lgb.Dataset(X[:100], y), num_boost_round=3)
    one = from_lightgbm_dump(stump.dump_model(), X.shape[1])
    assert one["trees.value"].shape == (1, 1)
    np.testing.assert_array_equal(TreeEnsemble(one, X.shape[1])(X[:5]), stump.predict(X[:5], raw_score=True))
    # the published kind: calibration applied after the sum
    weights = {"mean": np.zeros(5, np.float32), "std": np.ones(5, np.float32), "calibration": np.array([0.7, -0.2]), **arrays}
    np.testing.assert_allclose(LogitScorer("trees", weights, 5)(fresh), booster.predict(fresh, raw_score=True) * 0.7 - 0.2,
                               rtol=0, atol=1e-12)
    assert LogitScorer("trees", weights, 5).feature_weights(list("abcde")) is None


def test_the_mlps_numpy_scorer_is_the_torch_model():
    """LogitScorer("mlp") against DomainReranker in float64 (tests/test_registry.py checks float32 to 1e-5)."""
    from test_registry import make_model

    model = make_model(3, "mlp")
    x = torch.randn(50, model.spec.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        want = model.double().eval()(x).numpy()
    got = LogitScorer("mlp", {k: v.astype(np.float64) for k, v in model.weights().items()}, model.spec.dim)(x.numpy())
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def _weights(dim: int = 5) -> dict:
    booster, _ = _booster(rounds=4)
    return {"mean": np.zeros(dim, np.float32), "std": np.ones(dim, np.float32), "calibration": np.array([1.0, 0.0]),
            **from_lightgbm_dump(booster.dump_model(), dim)}


def _changed(name: str, edit) -> dict:
    w = {k: v.copy() for k, v in _weights().items()}
    w[name] = edit(w[name])
    return w


def _inner(left: np.ndarray) -> int:
    """An internal node of tree 0 other than its root."""
    return int(next(i for i in range(1, left.shape[1]) if left[0, i] != i))


def _set(at, value):
    def edit(a):
        a[at] = value
        return a
    return edit


@pytest.mark.parametrize("name, edit, message", [
    ("trees.left", _set((0, 0), 99), "outside"),  # a child out of range
    ("trees.right", _set((1, 0), -1), "outside"),
    ("trees.left", lambda a: _set((0, _inner(a)), 0)(a), "reached twice"),  # back to the root: a cycle
    ("trees.right", _set((0, 0), 0), "its own child"),
    ("trees.threshold", _set((0, 0), np.nan), "finite"),
    ("trees.value", _set((2, 3), np.inf), "finite"),
    ("trees.feature", _set((0, 0), 5), "outside"),
    ("trees.value", lambda a: a[:, :-1], "shape"),
    ("trees.feature", lambda a: a.astype(np.float64), "integers"),
    ("mean", lambda a: a + 1, "raw features"),
    ("calibration", lambda a: np.r_[a, 0.0], "shape"),
])
def test_bad_trees_are_refused_naming_the_tensor(name, edit, message):
    w = _changed(name, edit)
    with pytest.raises(BadWeights, match=message) as err:
        LogitScorer("trees", w, 5)
    assert f"'{name}'" in str(err.value)


def test_a_missing_tensor_and_a_shared_child_are_refused():
    with pytest.raises(BadWeights, match="trees.value"):
        check_weights("trees", {k: v for k, v in _weights().items() if k != "trees.value"}, 5)
    # a shared child (two parents) is not a tree either
    w = _weights()
    left, right = w["trees.left"], w["trees.right"]
    t = int(np.argmax((left[:, 0] != 0)))
    left[t, 0] = right[t, 0]
    with pytest.raises(BadTrees, match="reached twice"):
        check_trees(w, 5)


def test_a_dump_the_scorer_does_not_follow_is_refused():
    booster, X = _booster(rounds=2)
    dump = booster.dump_model()
    root = dump["tree_info"][0]["tree_structure"]
    for key, value, message in (("decision_type", "==", "categorical"), ("missing_type", "NaN", "missing_type")):
        bad = json.loads(json.dumps(dump))
        bad["tree_info"][0]["tree_structure"][key] = value
        with pytest.raises(BadTrees, match=message):
            from_lightgbm_dump(bad, X.shape[1])
    assert root["decision_type"] == "<=" and root["missing_type"] == "None"
    with pytest.raises(BadTrees, match="features"):
        from_lightgbm_dump(dump, X.shape[1] + 1)
    with pytest.raises(BadTrees, match="classes"):
        from_lightgbm_dump({**dump, "num_class": 3}, X.shape[1])


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
    """``train(model=trees)`` of DOMAIN and linear models of LINEAR_DOMAINS (two: scored together), all live; the
    registry, the fitted TreeReranker and the trees' config."""
    from conftest import compose_config
    from rerank.training import trees as trees_mod
    from rerank.training.train import train

    work = tmp_path_factory.mktemp("trees")

    def config(domain: str, loss: str, *overrides: str) -> dict:
        return compose_config("train", [f"paths.output_dir={prepared.output_dir}", f"domain={domain}", f"loss={loss}",
                                        f"paths.registry_dir={work / 'registry'}", f"paths.log_dir={work / 'logs'}",
                                        "threads=1", "~logger", *overrides])

    fitted = []
    original = trees_mod.TreeReranker.fit

    def fit(self, *args, **kwargs):
        fitted.append(self)
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trees_mod.TreeReranker, "fit", fit)
        cfg = config(DOMAIN, "crossentropy", "model=trees")
        result = train(cfg)
    assert result["version"] == "v1" and result["epochs"] == fitted[0].trees["trees.value"].shape[0]
    with pytest.raises(ValueError, match="loss=crossentropy"):
        train(config(DOMAIN, "combined", "model=trees"))
    for d in LINEAR_DOMAINS:
        assert train(config(d, "crossentropy"))["version"] == "v1"
    registry = Registry(cfg["paths"]["registry_dir"])
    registry.release(CORPUS, {d: "v1" for d in (DOMAIN, *LINEAR_DOMAINS)}, {"action": "promote", "verdict": "test", "forced": True})
    return registry, fitted[0], cfg


def test_train_publishes_trees_that_rank_as_the_booster_among_linear_domains(trained, prepared):
    from rerank.serving import fast
    from rerank.serving.live import check_scorer

    registry, model, cfg = trained
    pub = registry.load(CORPUS, DOMAIN, "v1")  # rerank.model.published: JSON and safetensors only
    assert pub.kind == "trees" and pub.meta["kind"] == "trees" and pub.meta["hidden"] == 0
    assert pub.feature_weights() is None
    assert set(pub.tensors) == {"mean", "std", "calibration", "trees.feature", "trees.threshold", "trees.left", "trees.right",
                                "trees.value"}
    assert not (pub.path / "model.txt").exists() and all(p.suffix in (".json", ".safetensors") for p in pub.path.iterdir())
    tables = TableSet.open(prepared.data_dir)
    dev = {d: tables.read(d, "dev") for d in tables.domains}
    X = features_from_table(dev[DOMAIN], pub.spec)
    scale, shift = model.calibration
    assert (scale, shift) != (1.0, 0.0)  # Platt on dev ran
    want = sigmoid(model.booster.predict(X, raw_score=True, num_iteration=model.booster.best_iteration or None) * scale + shift)
    ranker = CrossDomainRanker.from_registry(registry, CORPUS, tables.domains).prepare()  # (the others: the baseline)
    assert ranker._linear_names() == set(LINEAR_DOMAINS) and ranker.scorers[DOMAIN].logit.kind == "trees"
    ranked = ranker.score_tables(dev)
    music = ranked.domain == ranked.domains.index(DOMAIN)
    np.testing.assert_allclose(ranked.score[music], want, rtol=0, atol=1e-9)
    # rank() of each utterance (the trees domain beside the linear one and the baseline domains) gives the tables' scores
    pool = utterances(type("World", (), {"output_dir": prepared.output_dir}), 60)
    for u, hyps in enumerate(pool):
        for j, h in enumerate(hyps):
            h["tag"] = j
        got = ranker.rank(hyps)
        utt = sorted(set(ranked.utt_index.tolist()))[u]
        expected = ranked.score[ranked.utt_index == utt]
        np.testing.assert_allclose([h["score"] for h in sorted(got, key=lambda h: h["tag"])], expected, rtol=0, atol=1e-12)
    # the service's fast path (score_columns) gives rank()'s numbers exactly
    codec = fast.Codec(("device",), 2000, 1000)

    class Snap:
        versions, generation = {d: s.version for d, s in ranker.scorers.items()}, 1
        confidence = staticmethod(float)

    Snap.ranker = ranker
    for hyps in pool[:20]:
        body = {"hypotheses": [{k: v for k, v in h.items() if k != "tag"} for h in hyps]}
        got = json.loads(codec.encode(codec.ranked(Snap, codec.decode_one(json.dumps(body).encode()), None, None)))
        want_ranked = ranker.rank([parse(h, None) for h in body["hypotheses"]], unknown="baseline")
        assert [(h["domain"], h["intent"], h["score"]) for h in got["hypotheses"]] == \
            [(h["domain"], h["intent"], h["score"]) for h in want_ranked]
    check_scorer(ranker.scorers[DOMAIN], pub.spec)  # the live watcher's probe takes it
    # the same seed fits the same trees
    from rerank.training.train import train

    again = train({**cfg, "publish": False})
    assert again["dev"] == registry.load(CORPUS, DOMAIN, "v1").metrics


def test_a_published_trees_file_that_is_not_trees_is_refused(trained, tmp_path):
    import shutil

    from safetensors.numpy import load_file, save_file

    registry = Registry(shutil.copytree(trained[0].root, tmp_path / "registry"))
    path = registry.domain_dir(CORPUS, DOMAIN) / "v1" / "weights.safetensors"
    w = load_file(str(path))
    w["trees.left"][0, 0] = 10**6
    save_file(w, str(path))
    with pytest.raises(RegistryError, match="trees.left"):
        registry.load(CORPUS, DOMAIN, "v1")


def test_the_service_ranks_a_trees_domain_among_linear_ones_as_offline(live_world, tmp_path):
    from conftest import compose_config
    from rerank.training.train import train

    registry = live_world.registry_copy(tmp_path / "registry")
    domain = live_world.manifest["domains"][1]
    result = train(compose_config("train", [f"paths.output_dir={live_world.output_dir}", f"paths.registry_dir={registry}",
                                            f"domain={domain}", "model=trees", "loss=crossentropy", "threads=1", "~logger",
                                            f"paths.log_dir={tmp_path / 'logs'}", "features=base"]))
    Registry(registry).release(CORPUS, {domain: result["version"]}, {"action": "promote", "verdict": "test", "forced": True})
    with service(live_world, registry) as url, httpx.Client(base_url=url) as client:
        versions = client.get("/versions").json()["versions"]
        assert versions[domain] == "v2" and Registry(registry).load(CORPUS, domain, "v2").kind == "trees"
        pool = [hyps for hyps in utterances(live_world, 60) if any(h["domain"] == domain for h in hyps)][:15]
        assert pool
        for hyps in pool:
            r = client.post("/rank", json={"utt_id": "u", "hypotheses": hyps})
            assert r.status_code == 200, r.text
            assert_same_ranking(served(r.json()), offline(registry, r.json()["versions"], hyps))
