"""``merge(cfg)`` end to end: a tiny prepared corpus, two trained domains, the report and the refusals."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rerank.merge.evaluate import FIGURES
from rerank.merge.ranker import UnknownDomainError
from rerank.model.registry import Registry, RegistryError
from rerank.model.spec import FeatureSpecMismatch
from rerank.training.model import DomainReranker

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = ["data.synthetic.n_utterances=400", "recognizers.folds=2"]
TRAINED = ("Books", "Music")


def _compose(name: str, overrides: list[str]) -> dict:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A prepared tiny corpus and a registry with a crossentropy model for Books and Music."""
    from rerank.hypotheses.prepare import prepare
    from rerank.training.train import train

    out = tmp_path_factory.mktemp("merge_e2e")
    manifest = prepare(_compose("prepare", [f"paths.output_dir={out}", *TINY]))
    registry = Registry(out / "registry")
    for domain in TRAINED:
        result = train(_compose("train", [f"paths.output_dir={out}", f"domain={domain}", "loss=crossentropy",
                                          "trainer.max_epochs=3", f"paths.log_dir={out / 'train_logs'}"]))
        assert result["version"] == "v1"
        registry.set_live(manifest["corpus"], domain, "v1", action="promote", verdict="accepted", forced=True)
    return out, manifest


def merge_config(trained, tmp_path: Path, *overrides: str, registry: Path | None = None) -> dict:
    out, _ = trained
    return _compose("merge", [f"paths.output_dir={out}", f"paths.registry_dir={registry or out / 'registry'}",
                              f"paths.report_dir={tmp_path / 'reports'}", f"paths.log_dir={tmp_path / 'logs'}",
                              "merge.bootstrap=50", *overrides])


def own_registry(trained, tmp_path: Path) -> Path:
    """A copy of the trained registry that this test may change."""
    dest = tmp_path / "registry"
    shutil.copytree(trained[0] / "registry", dest)
    return dest


def ranked_versions(result: dict) -> dict[str, str]:
    """Model version of every domain with a model in ranked.parquet (the latest or pinned models)."""
    ranked = pq.read_table(Path(result["report_dir"]) / "ranked.parquet").select(["domain", "version"]).to_pylist()
    return {r["domain"]: r["version"] for r in ranked if r["version"] != "baseline"}


def test_merge_report(trained, tmp_path):
    from rerank.merge.run import merge

    _, manifest = trained
    result = merge(merge_config(trained, tmp_path))
    report_dir = Path(result["report_dir"])
    assert report_dir == tmp_path / "reports" / manifest["corpus"] / "test"
    for name in ("report.md", "metrics.json", "reliability.png", "reliability_per_domain.png", "ranked.parquet"):
        assert (report_dir / name).is_file() and (report_dir / name).stat().st_size > 0, name

    metrics = json.loads((report_dir / "metrics.json").read_text())
    assert list(result["metrics"])[:2] == ["live", "baseline"]  # what serves traffic first
    assert {"live", "baseline", "oracle", "newest crossentropy"} <= set(metrics)
    metrics["crossentropy"] = metrics["newest crossentropy"]
    for system in ("baseline", "oracle", "crossentropy", "live"):
        m = metrics[system]
        assert set(FIGURES) <= set(m), system
        assert isinstance(m["per_domain"], dict) and set(m["per_domain"]) <= set(manifest["domains"])
        assert 0 <= m["irer"] <= 1 and m["semer"] >= 0
    assert metrics["oracle"]["semer"] <= min(metrics["baseline"]["semer"], metrics["crossentropy"]["semer"])
    assert metrics["oracle"]["ece_top"] is None
    for system in ("baseline", "crossentropy"):
        assert 0 <= metrics[system]["ece_top"] <= 1 and 0 <= metrics[system]["brier_top"] <= 1
        assert metrics[system]["semer_ci"][0] <= metrics[system]["semer"] <= metrics[system]["semer_ci"][1]

    meta = metrics["_meta"]
    untrained = sorted(set(manifest["domains"]) - set(TRAINED))
    for system in ("newest crossentropy", "live"):
        assert meta["fallback_domains"][system] == untrained
        assert meta["versions"][system] == {d: ("v1" if d in TRAINED else "baseline") for d in manifest["domains"]}
    assert metrics["live"]["semer"] == metrics["crossentropy"]["semer"]
    assert meta["utterances"] == manifest["splits"]["test"]

    report = (report_dir / "report.md").read_text()
    assert "unweighted baseline" in report
    flagged = next(line for line in report.splitlines() if line.startswith("- **live**"))
    assert all(d in flagged for d in untrained) and not any(d in flagged for d in TRAINED)
    assert "reliability.png" in report and "| newest crossentropy |" in report

    ranked = pq.read_table(report_dir / "ranked.parquet")
    assert {"utt_id", "rank", "domain", "intent", "slots", "score", "version"} <= set(ranked.column_names)
    assert ranked.num_rows == meta["hypotheses"]
    utt, rank, score = (ranked[c].to_numpy() for c in ("utt_index", "rank", "score"))
    assert np.all(np.diff(utt) >= 0)  # grouped by utterance, best first
    starts = np.flatnonzero(np.r_[True, utt[1:] != utt[:-1]])
    np.testing.assert_array_equal(rank, np.arange(len(utt)) - np.repeat(starts, np.diff(np.r_[starts, len(utt)])))
    assert np.all((np.diff(score) <= 0) | (np.diff(utt) > 0))
    versions = dict(zip(ranked["domain"].to_pylist(), ranked["version"].to_pylist()))
    assert versions and all(versions[d] == ("v1" if d in TRAINED else "baseline") for d in versions)
    assert np.all((score >= 0) & (score <= 1))


def test_missing_error_refuses_domains_without_model(trained, tmp_path):
    from rerank.merge.run import merge

    with pytest.raises(RegistryError, match="Knowledge"):
        merge(merge_config(trained, tmp_path, "merge.missing=error"))
    with pytest.raises(ValueError, match="merge.missing"):
        merge(merge_config(trained, tmp_path, "merge.missing=ignore"))


def test_pinned_versions(trained, tmp_path):
    from rerank.merge.run import merge

    registry = own_registry(trained, tmp_path)
    out, manifest = trained
    # a second Books version: the pin must keep v1
    Registry(registry).publish(manifest["corpus"], "Books", Registry(registry).load(manifest["corpus"], "Books"),
                               loss="semer", config={}, metrics={}, data_hash="test")
    result = merge(merge_config(trained, tmp_path, "+versions.Books=v1", "merge.bootstrap=0", "paths.log_dir=null",
                                registry=registry))
    # the ranking written (latest or pinned models) uses the pinned Books v1
    assert ranked_versions(result) == {"Books": "v1", "Music": "v1"}
    # each loss' system: its newest version, unless a pinned version was trained with that loss
    assert result["meta"]["versions"]["newest crossentropy"]["Books"] == "v1"
    assert result["meta"]["versions"]["newest semer"]["Books"] == "v2"

    with pytest.raises(RegistryError, match="v9"):
        merge(merge_config(trained, tmp_path, "+versions.Books=v9", registry=registry))
    with pytest.raises(RegistryError, match="no version 'v1'"):
        merge(merge_config(trained, tmp_path, "+versions.Weather=v1", registry=registry))
    with pytest.raises(UnknownDomainError, match="Nope"):
        merge(merge_config(trained, tmp_path, "+versions.Nope=v1", registry=registry))


def test_feature_spec_mismatch_is_refused(trained, tmp_path):
    from rerank.merge.run import merge

    registry = own_registry(trained, tmp_path)
    _, manifest = trained
    reg = Registry(registry)
    spec = reg.load(manifest["corpus"], "Music").spec
    other = dataclasses.replace(spec, intents=(*spec.intents, "music_extra_intent"))
    version = reg.publish(manifest["corpus"], "Music", DomainReranker(other), loss="crossentropy",
                          config={}, metrics={}, data_hash="test")
    assert version == "v2"
    reg.set_live(manifest["corpus"], "Music", "v2", action="promote", verdict="forced", forced=True)
    with pytest.raises(FeatureSpecMismatch, match="music_extra_intent"):
        merge(merge_config(trained, tmp_path, registry=registry))
    # pinned to the good version, it merges; the crossentropy system honours the pin too
    result = merge(merge_config(trained, tmp_path, "+versions.Music=v1", "merge.bootstrap=0", "paths.log_dir=null",
                                registry=registry))
    assert ranked_versions(result)["Music"] == "v1"
    assert result["meta"]["versions"]["newest crossentropy"]["Music"] == "v1"


def test_truncated_weights_are_an_error_naming_the_file(trained, tmp_path):
    from rerank.merge.run import merge

    registry = own_registry(trained, tmp_path)
    _, manifest = trained
    weights = registry / manifest["corpus"] / "Books" / "v1" / "weights.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    # with missing=baseline too: a corrupted model is not a missing one
    with pytest.raises(RegistryError) as err:
        merge(merge_config(trained, tmp_path, registry=registry))
    assert str(weights) in str(err.value)
