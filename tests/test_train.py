"""train(): Hydra-composed runs on the tiny prepared corpus, refusals, reproducibility, R2 calibration."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import edit_table
from rerank.hypotheses.tables import TablesCorrupt, TablesMissing
from rerank.io import read_json
from rerank.model.registry import Registry
from rerank.model.spec import BadFeatures, FeatureSpec, spec_from_manifest
from rerank.training.data import SlateTensors
from rerank.training.datamodule import SlateDataModule
from rerank.training.model import DomainReranker
from rerank.training.module import RerankerModule
from rerank.training.train import NoPositives, UnknownDomain, train

SHORT = ("optimizer=lbfgs", "trainer.max_epochs=3")
#: configs/loss/crossentropy.yaml, composed
CROSSENTROPY = {"name": "crossentropy"}


@pytest.fixture(scope="module")
def domains(prepared) -> list[str]:
    return prepared.manifest["domains"]


def registry_of(cfg: dict) -> Registry:
    return Registry(cfg["paths"]["registry_dir"])


def weights_of(cfg: dict, domain: str, version: str) -> dict[str, torch.Tensor]:
    corpus = cfg["data"]["name"]
    return load_file(str(registry_of(cfg).domain_dir(corpus, domain) / version / "weights.safetensors"))


def test_fast_dev_run_publishes_nothing(train_config, domains, tmp_path, monkeypatch):
    cfg = train_config(domains[0], "crossentropy", "trainer=fast_dev_run")
    assert cfg["trainer"]["fast_dev_run"] is True
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    result = train(cfg)
    assert "version" not in result
    assert list((tmp_path / "cwd").iterdir()) == []  # nothing written outside paths.*
    assert registry_of(cfg).versions("synthetic", domains[0]) == []
    assert registry_of(cfg).domains("synthetic") == []


def test_short_train_publishes_v1_with_spec_metrics_and_a_safe_checkpoint(train_config, prepared, domains):
    domain = domains[2]
    cfg = train_config(domain, "crossentropy", *SHORT)
    assert cfg["optimizer"]["torch"]["_target_"] == "torch.optim.LBFGS" and cfg["loss"] == CROSSENTROPY
    result = train(cfg)
    assert result["version"] == "v1" and result["loss"] == "crossentropy" and result["domain"] == domain
    assert 1 <= result["epochs"] <= 3
    reg = registry_of(cfg)
    assert reg.versions("synthetic", domain) == ["v1"]
    spec = spec_from_manifest(prepared.manifest, domain, list(cfg["features"]["evidence"]))
    assert spec.evidence == tuple(cfg["features"]["evidence"]) and spec.evidence  # the default: every family
    published = reg.load("synthetic", domain, "v1", expect_spec=spec)
    assert published.spec == spec
    vdir = published.path
    assert FeatureSpec.from_dict(read_json(vdir / "spec.json")) == spec
    metrics = read_json(vdir / "metrics.json")
    assert metrics == pytest.approx(result["dev"])
    assert {"semer", "irer", "ece_top", "ece_all", "brier_all", "nll_all"} <= set(metrics)
    meta = read_json(vdir / "meta.json")
    assert meta["loss"] == "crossentropy" and meta["kind"] == "linear" and meta["version"] == "v1"
    assert meta["data_hash"] == f"{prepared.manifest['corpus_hash']}:{prepared.manifest['settings_hash']}"
    assert read_json(vdir / "config.json")["domain"] == domain

    ckpts = sorted(Path(cfg["paths"]["log_dir"]).rglob("*.ckpt"))
    assert ckpts, "ModelCheckpoint wrote no checkpoint"
    state = torch.load(ckpts[0], map_location="cpu", weights_only=True)
    assert state["hyper_parameters"]["loss"] == CROSSENTROPY
    # the published weights are those of the best dev checkpoint
    for k, v in published.tensors.items():
        assert np.array_equal(state["state_dict"][f"model.{k}"].numpy(), v), k
    # the trained model is not the zero initialisation
    assert np.abs(published.tensors["linear.weight"]).sum() > 0
    # training publishes a candidate; it goes live only through promotion
    assert reg.live("synthetic", domain) is None


@pytest.mark.parametrize("extra", [
    ("slates=utterance",),
    ("slates=domain", "loss.temperature=0.5"),
])
def test_semer_loss_runs(train_config, domains, extra):
    cfg = train_config(domains[1], "semer", *SHORT, *extra)
    result = train(cfg)
    assert result["version"] == "v1" and result["loss"] == "semer"
    assert np.isfinite(result["dev"]["semer"])
    w = weights_of(cfg, domains[1], "v1")
    assert all(torch.isfinite(t).all() for t in w.values())


def test_live_competitors_are_the_other_domains_live_models(train_config, prepared, domains):
    from rerank.hypotheses.tables import TableSet
    from rerank.model.features import features_from_table
    from rerank.training.competitors import baseline_logit, other_domains

    competitor, domain = domains[0], domains[1]
    first = train_config(competitor, "crossentropy", *SHORT)
    assert train(first)["version"] == "v1"
    reg = registry_of(first)
    tables = TableSet.open(prepared.data_dir)
    # a candidate does not compete: only live versions do
    _, cand_logits, _ = other_domains(tables, domain, "dev", "live", reg)
    _, base_logits, _ = other_domains(tables, domain, "dev", "baseline", reg)
    np.testing.assert_array_equal(cand_logits, base_logits)
    reg.set_live("synthetic", competitor, "v1", action="promote", verdict="accepted")
    utt, logits, semer = other_domains(tables, domain, "dev", "live", reg)
    others = [d for d in domains if d != domain]
    sizes = [tables.read(d, "dev").num_rows for d in others]
    start = sum(sizes[:others.index(competitor)])
    table = tables.read(competitor, "dev")
    pub = reg.load("synthetic", competitor)
    np.testing.assert_array_equal(logits[start:start + len(table)], pub.scorer(features_from_table(table, pub.spec)))
    rest = np.r_[0:start, start + len(table):len(logits)]
    np.testing.assert_array_equal(logits[rest], base_logits[rest])
    np.testing.assert_array_equal(base_logits[start:start + len(table)],
                                  baseline_logit(table["dc"].to_numpy(), table["ic"].to_numpy(), table["ner"].to_numpy()))
    cfg = train_config(domain, "semer", *SHORT, "slates=utterance_live")
    assert cfg["paths"]["registry_dir"] == first["paths"]["registry_dir"]
    assert train(cfg)["version"] == "v1"


def test_combined_loss_runs(train_config, domains):
    result = train(train_config(domains[3], "combined", *SHORT, "loss.alpha=0.3"))
    assert result["version"] == "v1" and result["loss"] == "combined"


def test_mlp_runs(train_config, domains):
    cfg = train_config(domains[1], "crossentropy", *SHORT, "model=mlp", "model.hidden=8")
    result = train(cfg)
    got = registry_of(cfg).load("synthetic", domains[1], "v1")
    assert result["version"] == "v1" and got.kind == "mlp" and got.meta["hidden"] == 8


def test_unknown_domain_lists_the_corpus_domains(train_config, domains):
    with pytest.raises(UnknownDomain) as err:
        train(train_config("Astrology", "crossentropy", *SHORT))
    msg = str(err.value)
    assert "Astrology" in msg
    for d in domains:
        assert d in msg


def test_without_a_logger_nothing_is_written_outside_the_output_dir(train_config, domains, tmp_path, monkeypatch):
    """``train()`` supports running without a logger (``~logger``); its checkpoints must still go under ``paths``.

    Fails today: with no logger, Lightning's ModelCheckpoint falls back to
    ``Trainer.default_root_dir`` = the current directory, and writes
    ``./checkpoints/best.ckpt`` there (configs/trainer/default.yaml sets no
    ``default_root_dir``). In a sweep (``hydra.job.chdir=false``) all jobs share
    that folder.
    """
    cfg = train_config(domains[0], "crossentropy", *SHORT, "~logger")
    assert "logger" not in cfg
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert train(cfg)["version"] == "v1"
    written = sorted(str(p.relative_to(tmp_path / "cwd")) for p in (tmp_path / "cwd").rglob("*"))
    assert written == [], f"train() wrote {written} into the current directory, outside paths.output_dir"


def test_nan_features_are_refused_with_their_count(train_config, prepared, domains, tmp_path):
    copy = prepared.copy_to(tmp_path / "corrupt")
    domain = domains[2]

    def nans(dc):
        dc[[3, 10, 50]] = np.nan
        return dc

    edit_table(copy.data_dir, f"{domain}/train.parquet", "dc", nans)
    cfg = train_config(domain, "crossentropy", *SHORT, output_dir=copy.output_dir)
    with pytest.raises(BadFeatures) as err:
        train(cfg)
    assert "3 rows" in str(err.value) and "NaN" in str(err.value)
    assert registry_of(cfg).versions("synthetic", domain) == []


def test_nan_labels_are_refused_naming_the_table(train_config, prepared, domains, tmp_path):
    copy = prepared.copy_to(tmp_path / "nanlabel")
    domain = domains[2]

    def nans(semer):
        semer[5] = np.nan
        return semer

    edit_table(copy.data_dir, f"{domain}/dev.parquet", "semer", nans)
    cfg = train_config(domain, "crossentropy", *SHORT, output_dir=copy.output_dir)
    with pytest.raises(TablesCorrupt) as err:
        train(cfg)
    assert str(copy.data_dir / domain / "dev.parquet") in str(err.value) and "semer" in str(err.value)
    assert registry_of(cfg).versions("synthetic", domain) == []


def test_a_changed_table_is_refused_naming_the_file(train_config, prepared, domains, tmp_path):
    copy = prepared.copy_to(tmp_path / "changed")
    domain = domains[2]
    edit_table(copy.data_dir, f"{domain}/train.parquet", "dc", lambda dc: dc * 0.5, reseal=False)
    with pytest.raises(TablesCorrupt) as err:
        train(train_config(domain, "crossentropy", *SHORT, output_dir=copy.output_dir))
    assert str(copy.data_dir / domain / "train.parquet") in str(err.value) and "checksum" in str(err.value)


def test_domain_without_correct_hypotheses_raises_no_positives(train_config, prepared, domains, tmp_path):
    copy = prepared.copy_to(tmp_path / "nopos")
    domain = domains[2]
    edit_table(copy.data_dir, f"{domain}/train.parquet", "semer", lambda s: np.full_like(s, 0.5))
    cfg = train_config(domain, "crossentropy", *SHORT, output_dir=copy.output_dir)
    with pytest.raises(NoPositives) as err:
        train(cfg)
    assert domain in str(err.value)
    assert registry_of(cfg).versions("synthetic", domain) == []


def test_missing_tables_name_the_command_that_builds_them(train_config, domains, tmp_path):
    cfg = train_config(domains[0], "crossentropy", output_dir=tmp_path / "empty")
    with pytest.raises(TablesMissing, match="scripts/prepare.py data=synthetic"):
        train(cfg)
    assert not (tmp_path / "empty" / "data").exists()  # train never builds tables
    cfg = train_config(domains[0], "crossentropy", "data=tables", "data.name=acme", output_dir=tmp_path / "empty")
    with pytest.raises(TablesMissing, match="scripts/import.py name=acme"):
        train(cfg)


def test_same_seed_gives_identical_published_weights(train_config, domains):
    # MLP (random init) with shuffled Adam mini-batches: randomness the seed must pin down.
    args = ("model=mlp", "model.hidden=8", "optimizer=adam", "optimizer.batch_size=64", "trainer.max_epochs=2")
    cfg = train_config(domains[4], "combined", *args)
    assert train(cfg)["version"] == "v1"
    assert train(cfg)["version"] == "v2"
    a, b = weights_of(cfg, domains[4], "v1"), weights_of(cfg, domains[4], "v2")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    other = train_config(domains[4], "combined", *args, "seed=1")
    assert train(other)["version"] == "v3"
    c = weights_of(cfg, domains[4], "v3")
    assert any(not torch.equal(a[k], c[k]) for k in a), "the seed changes nothing: the test proves nothing"


# --------------------------------------------------------------------------- R2 calibration on a toy problem


def toy_slates(n_utt: int, slate: int, spec: FeatureSpec, rng: np.random.Generator, a: float, b: float) -> SlateTensors:
    """Feature 0 (``dc``) is u ~ U(-1, 1); a hypothesis is correct with probability sigmoid(a + b u)."""
    u = rng.uniform(-1, 1, size=(n_utt, slate))
    p = 1 / (1 + np.exp(-(a + b * u)))
    correct = rng.random((n_utt, slate)) < p
    x = np.zeros((n_utt, slate, spec.dim), dtype=np.float32)
    x[:, :, 0] = u
    x[:, :, 7] = 1.0  # rank_0
    semer = np.where(correct, 0.0, 1.0).astype(np.float32)
    # a few padded entries, which the loss must ignore
    semer[::7, -1] = -1.0
    row_of = np.arange(n_utt * slate).reshape(n_utt, slate)
    return SlateTensors(torch.from_numpy(x), torch.from_numpy(semer), np.arange(n_utt), row_of,
                        (1 - correct).astype(np.float64), np.ones(n_utt))


@pytest.fixture
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_R2_recovers_a_known_calibration_on_a_toy_problem(one_thread):
    L.seed_everything(0, verbose=False)
    a, b = 0.3, 2.5
    spec = FeatureSpec(domain="toy", intents=(), context=(), slot_types=(), n_ranks=1)
    rng = np.random.default_rng(0)
    train_s, dev_s = toy_slates(6000, 4, spec, rng, a, b), toy_slates(500, 4, spec, rng, a, b)
    model = DomainReranker(spec)
    model.fit_standardisation(train_s.x[train_s.semer != -1])
    lbfgs = {"_target_": "torch.optim.LBFGS", "_partial_": True, "lr": 1.0, "max_iter": 100, "history_size": 20,
             "line_search_fn": "strong_wolfe"}
    module = RerankerModule(model, CROSSENTROPY, {"torch": lbfgs, "batch_size": None, "l2": 0.0})
    trainer = L.Trainer(max_epochs=5, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=SlateDataModule(train_s, dev_s, batch_size=None))
    model.eval()
    grid = np.linspace(-1, 1, 41)
    x = np.zeros((len(grid), spec.dim), dtype=np.float32)
    x[:, 0], x[:, 7] = grid, 1.0
    with torch.no_grad():
        p_hat = torch.sigmoid(model(torch.from_numpy(x))).numpy()
    p_true = 1 / (1 + np.exp(-(a + b * grid)))
    assert np.max(np.abs(p_hat - p_true)) < 0.03, np.max(np.abs(p_hat - p_true))
    # the numpy scorer gives the same logits
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    assert np.allclose(model.numpy_scorer()(x), logits, atol=1e-4)
    # and the dev figures say it is calibrated
    assert module.dev_metrics["ece_all"] < 0.05


def test_platt_calibration_on_dev_lowers_dev_log_loss_and_survives_publishing(train_config, prepared, domains):
    from rerank.hypotheses.tables import TableSet
    from rerank.training.data import to_slates

    domain = domains[1]
    plain = train(train_config(domain, "semer", *SHORT))
    cfg = train_config(domain, "semer", *SHORT, "calibration=platt")
    result = train(cfg)
    published = registry_of(cfg).load("synthetic", domain, "latest")
    scale, shift = published.tensors["calibration"].tolist()
    assert (scale, shift) != (1.0, 0.0) and scale > 0
    # R1 alone leaves the logits uncalibrated; Platt scaling on dev fixes the scale.
    assert result["dev"]["nll_all"] < plain["dev"]["nll_all"]
    dev = to_slates(TableSet.open(prepared.data_dir).read(domain, "dev"), published.spec)
    valid = dev.semer != -1
    torch_model = DomainReranker.from_weights(published.spec, published.kind, published.tensors)
    with torch.no_grad():
        torch_logits = torch_model(dev.x[valid]).numpy()
    numpy_logits = published.scorer(dev.x[valid].numpy())
    np.testing.assert_allclose(numpy_logits, torch_logits, rtol=1e-4, atol=1e-4)
