"""The model registry: immutable numbered versions, atomic and concurrent publish, data-only loading."""
from __future__ import annotations

import multiprocessing as mp
import pickle
from pathlib import Path

import pytest
import torch

import rerank.registry as registry_mod
from rerank.registry import Registry, RegistryError
from rerank.reranker.features import FeatureSpec, FeatureSpecMismatch
from rerank.reranker.model import DomainReranker

CORPUS, DOMAIN = "toy", "Music"
FILES = {"weights.safetensors", "spec.json", "config.json", "metrics.json", "meta.json"}


def make_spec(intents=("music_pause", "music_play")) -> FeatureSpec:
    return FeatureSpec(domain=DOMAIN, intents=tuple(intents), context=(("device", ("echo", "fire_tv")),),
                       slot_types=("artist", "song_name"), n_ranks=3)


def make_model(seed: int = 0, kind: str = "linear", spec: FeatureSpec | None = None) -> DomainReranker:
    model = DomainReranker(spec or make_spec(), kind=kind, hidden=4)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        model.mean.copy_(torch.randn(model.mean.shape, generator=g))
        model.std.copy_(torch.rand(model.std.shape, generator=g) + 0.5)
    return model


def publish(reg: Registry, model: DomainReranker, loss: str = "crossentropy", tag: str = "x") -> str:
    return reg.publish(CORPUS, DOMAIN, model, loss=loss, config={"tag": tag, "path": Path("/p")},
                       metrics={"semer": 0.25, "ece": 0.01}, data_hash=f"hash-{tag}")


def assert_same_weights(a: DomainReranker, b: DomainReranker) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def staging_dirs(reg: Registry) -> list[Path]:
    base = reg.domain_dir(CORPUS, DOMAIN)
    return [p for p in base.iterdir() if p.name.startswith(".staging")] if base.exists() else []


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_publish_load_round_trip(tmp_path, kind):
    reg = Registry(tmp_path)
    model = make_model(1, kind)
    assert publish(reg, model, loss="semer", tag="a") == "v1"
    got = reg.load(CORPUS, DOMAIN)
    assert got.version == "v1" and got.path == tmp_path / CORPUS / DOMAIN / "v1"
    assert_same_weights(model, got.model)
    assert got.spec == model.spec and got.model.kind == kind
    assert got.meta["loss"] == got.loss == "semer"
    assert got.meta["data_hash"] == "hash-a"
    assert got.meta["version"] == "v1" and got.meta["kind"] == kind
    assert not got.model.training
    x = torch.randn(7, model.spec.dim)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), got.model(x))
    assert reg.domains(CORPUS) == [DOMAIN]


def test_versions_count_up_latest_and_pinned(tmp_path):
    reg = Registry(tmp_path)
    m1, m2, m3 = make_model(1), make_model(2), make_model(3)
    assert publish(reg, m1, loss="crossentropy") == "v1"
    assert publish(reg, m2, loss="semer") == "v2"
    assert reg.versions(CORPUS, DOMAIN) == ["v1", "v2"]
    assert (reg.domain_dir(CORPUS, DOMAIN) / "latest").read_text().strip() == "v2"
    assert reg.load(CORPUS, DOMAIN).version == "v2"
    assert_same_weights(reg.load(CORPUS, DOMAIN).model, m2)
    pinned = reg.load(CORPUS, DOMAIN, version="v1")
    assert pinned.version == "v1"
    assert_same_weights(pinned.model, m1)
    assert reg.load(CORPUS, DOMAIN, loss="crossentropy").version == "v1"
    assert publish(reg, m3, loss="crossentropy") == "v3"
    assert reg.load(CORPUS, DOMAIN).version == "v3"
    assert reg.load(CORPUS, DOMAIN, loss="semer").version == "v2"
    # published versions are not overwritten
    assert_same_weights(reg.load(CORPUS, DOMAIN, version="v1").model, m1)
    with pytest.raises(RegistryError, match="v9"):
        reg.load(CORPUS, DOMAIN, version="v9")
    with pytest.raises(RegistryError, match="combined"):
        reg.load(CORPUS, DOMAIN, loss="combined")
    with pytest.raises(RegistryError, match="Books"):
        reg.load(CORPUS, "Books")


def test_mismatched_spec_is_refused_naming_what_differs(tmp_path):
    reg = Registry(tmp_path)
    publish(reg, make_model(1))
    assert reg.load(CORPUS, DOMAIN, expect_spec=make_spec()).version == "v1"
    data_spec = make_spec(intents=("music_pause", "music_play", "music_volume_up"))
    with pytest.raises(FeatureSpecMismatch) as err:
        reg.load(CORPUS, DOMAIN, expect_spec=data_spec)
    msg = str(err.value)
    assert "intents" in msg and "music_volume_up" in msg
    assert str(reg.domain_dir(CORPUS, DOMAIN) / "v1") in msg
    other_ranks = FeatureSpec(**{**make_spec().__dict__, "n_ranks": 5})
    with pytest.raises(FeatureSpecMismatch, match="n_ranks"):
        reg.load(CORPUS, DOMAIN, expect_spec=other_ranks)


def _publish_worker(root: str, seed: int, barrier, queue) -> None:
    model = make_model(seed)
    barrier.wait(timeout=60)
    queue.put((seed, publish(Registry(root), model, tag=str(seed))))


def test_concurrent_publishers_get_distinct_versions(tmp_path):
    n = 6
    ctx = mp.get_context("fork")
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_publish_worker, args=(str(tmp_path), seed, barrier, queue)) for seed in range(n)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in range(n))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    reg = Registry(tmp_path)
    assert sorted(results.values(), key=lambda v: int(v[1:])) == [f"v{i}" for i in range(1, n + 1)]
    assert reg.versions(CORPUS, DOMAIN) == [f"v{i}" for i in range(1, n + 1)]
    assert staging_dirs(reg) == []
    assert (reg.domain_dir(CORPUS, DOMAIN) / "latest").read_text().strip() in results.values()
    # each version holds what its publisher wrote
    for seed, version in results.items():
        got = reg.load(CORPUS, DOMAIN, version=version)
        assert got.meta["data_hash"] == f"hash-{seed}"
        assert_same_weights(got.model, make_model(seed))
        assert {p.name for p in got.path.iterdir()} == FILES


def test_crash_during_publish_leaves_nothing_visible(tmp_path, monkeypatch):
    reg = Registry(tmp_path)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(registry_mod, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        publish(reg, make_model(1))
    assert reg.versions(CORPUS, DOMAIN) == []
    assert staging_dirs(reg) == []
    assert not (reg.domain_dir(CORPUS, DOMAIN) / "latest").exists()
    with pytest.raises(RegistryError):
        reg.load(CORPUS, DOMAIN)

    monkeypatch.undo()
    m1 = make_model(1)
    assert publish(reg, m1) == "v1"
    monkeypatch.setattr(registry_mod, "save_file", boom)
    with pytest.raises(OSError):
        publish(reg, make_model(2))
    assert reg.versions(CORPUS, DOMAIN) == ["v1"]
    assert staging_dirs(reg) == []
    assert reg.load(CORPUS, DOMAIN).version == "v1"


def test_crash_after_weights_leaves_nothing_visible(tmp_path, monkeypatch):
    """A failure later in the staging (here: writing the metrics) cleans up too."""
    reg = Registry(tmp_path)
    with pytest.raises(TypeError):
        reg.publish(CORPUS, DOMAIN, make_model(1), loss="semer", config={}, metrics={"bad": object()}, data_hash="h")
    assert reg.versions(CORPUS, DOMAIN) == []
    assert staging_dirs(reg) == []


@pytest.mark.parametrize("keep", [0.5, 10])
def test_truncated_weights_raise_registry_error_naming_the_file(tmp_path, keep):
    reg = Registry(tmp_path)
    publish(reg, make_model(1))
    weights = reg.domain_dir(CORPUS, DOMAIN) / "v1" / "weights.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: int(len(data) * keep) if keep < 1 else keep])
    with pytest.raises(RegistryError) as err:
        reg.load(CORPUS, DOMAIN)
    assert str(weights) in str(err.value)


def test_weights_of_another_spec_raise_registry_error(tmp_path):
    reg = Registry(tmp_path)
    publish(reg, make_model(1))
    spec_path = reg.domain_dir(CORPUS, DOMAIN) / "v1" / "spec.json"
    spec_path.write_text(spec_path.read_text().replace('"music_pause",', '"music_pause", "music_skip",'))
    with pytest.raises(RegistryError) as err:
        reg.load(CORPUS, DOMAIN)
    assert "weights.safetensors" in str(err.value) and "spec.json" in str(err.value)


def test_loading_reads_data_never_code(tmp_path, monkeypatch):
    reg = Registry(tmp_path)
    model = make_model(1, "mlp")
    publish(reg, model)
    vdir = reg.domain_dir(CORPUS, DOMAIN) / "v1"
    assert (vdir / "weights.safetensors").is_file()
    assert {p.name for p in vdir.iterdir()} == FILES
    pickled = [p for p in tmp_path.rglob("*") if p.suffix in (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")]
    assert pickled == []
    # the weights file is safetensors: an 8-byte header length, then a JSON header
    head = (vdir / "weights.safetensors").read_bytes()
    n = int.from_bytes(head[:8], "little")
    assert head[8:9] == b"{" and head[8 + n - 1: 8 + n].strip() in (b"}", b"")

    def no_unpickling(*args, **kwargs):
        raise AssertionError("the registry must not unpickle")

    monkeypatch.setattr(torch, "load", no_unpickling)
    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(pickle, "Unpickler", no_unpickling)
    got = reg.load(CORPUS, DOMAIN)
    monkeypatch.undo()
    assert_same_weights(got.model, model)
