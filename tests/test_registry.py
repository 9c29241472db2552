"""The model registry: immutable numbered versions, stages and history, atomic and concurrent publish, data-only loading."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import rerank.model.registry as registry_mod
from conftest import REPO
from rerank.model.registry import Registry, RegistryError
from rerank.model.spec import FeatureSpec, FeatureSpecMismatch
from rerank.training.model import DomainReranker

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


def assert_same_weights(a, b) -> None:
    """``a``, ``b``: DomainReranker (torch) or PublishedModel (numpy weights)."""
    sa, sb = a.weights(), b.weights()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert np.array_equal(sa[k], sb[k]), k


def staging_dirs(reg: Registry) -> list[Path]:
    base = reg.domain_dir(CORPUS, DOMAIN)
    return [p for p in base.iterdir() if p.name.startswith(".staging")] if base.exists() else []


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_publish_load_round_trip(tmp_path, kind):
    reg = Registry(tmp_path)
    model = make_model(1, kind)
    assert publish(reg, model, loss="semer", tag="a") == "v1"
    got = reg.load(CORPUS, DOMAIN, "v1")
    assert got.version == "v1" and got.path == tmp_path / CORPUS / DOMAIN / "v1"
    assert_same_weights(model, got)
    assert got.spec == model.spec and got.kind == kind
    assert got.meta["loss"] == got.loss == "semer"
    assert got.meta["data_hash"] == "hash-a"
    assert got.meta["version"] == "v1" and got.meta["kind"] == kind
    assert got.metrics == {"semer": 0.25, "ece": 0.01}
    # the published numpy scorer gives the torch model's logits
    x = torch.randn(7, model.spec.dim)
    model.eval()
    with torch.no_grad():
        assert np.allclose(model(x).numpy(), got.scorer(x.numpy()), atol=1e-5)
    assert reg.domains(CORPUS) == [DOMAIN]
    # a new version is a candidate: nothing is live, so "live" resolves to nothing
    assert reg.live(CORPUS, DOMAIN) is None and reg.stage(CORPUS, DOMAIN, "v1") == "candidate"
    with pytest.raises(RegistryError, match="no live version"):
        reg.load(CORPUS, DOMAIN)


def test_versions_count_up_and_references_resolve(tmp_path):
    reg = Registry(tmp_path)
    m1, m2, m3 = make_model(1), make_model(2), make_model(3)
    assert publish(reg, m1, loss="crossentropy") == "v1"
    assert publish(reg, m2, loss="semer") == "v2"
    assert reg.versions(CORPUS, DOMAIN) == ["v1", "v2"]
    assert reg.resolve(CORPUS, DOMAIN, "latest") == "v2"
    assert_same_weights(reg.load(CORPUS, DOMAIN, "latest"), m2)
    pinned = reg.load(CORPUS, DOMAIN, version="v1")
    assert pinned.version == "v1"
    assert_same_weights(pinned, m1)
    assert reg.load(CORPUS, DOMAIN, loss="crossentropy").version == "v1"
    assert publish(reg, m3, loss="crossentropy") == "v3"
    assert reg.load(CORPUS, DOMAIN, "latest").version == "v3"
    assert reg.load(CORPUS, DOMAIN, loss="semer").version == "v2"
    # published versions are not overwritten
    assert_same_weights(reg.load(CORPUS, DOMAIN, version="v1"), m1)
    with pytest.raises(RegistryError, match="v9"):
        reg.load(CORPUS, DOMAIN, version="v9")
    with pytest.raises(RegistryError, match="combined"):
        reg.load(CORPUS, DOMAIN, loss="combined")
    with pytest.raises(RegistryError, match="Books"):
        reg.load(CORPUS, "Books", "latest")


def test_live_pointer_stages_and_history(tmp_path):
    reg = Registry(tmp_path)
    for seed in (1, 2, 3):
        publish(reg, make_model(seed), tag=str(seed))
    assert [reg.stage(CORPUS, DOMAIN, v) for v in ("v1", "v2", "v3")] == ["candidate"] * 3
    reg.set_live(CORPUS, DOMAIN, "v2", action="promote", verdict="accepted", report="r.md")
    assert reg.live(CORPUS, DOMAIN) == "v2" and reg.load(CORPUS, DOMAIN).version == "v2"
    state = json.loads((reg.root / CORPUS / "_releases" / "live.json").read_text())
    assert state["release"] == 1 and state["versions"] == {DOMAIN: "v2"}
    reg.record(CORPUS, DOMAIN, {"action": "refuse", "to": "v3", "verdict": "refused", "forced": False})
    assert reg.live(CORPUS, DOMAIN) == "v2"
    reg.set_live(CORPUS, DOMAIN, "v3", action="promote", verdict="refused", forced=True)
    assert [reg.stage(CORPUS, DOMAIN, v) for v in ("v1", "v2", "v3")] == ["candidate", "retired", "live"]
    reg.set_live(CORPUS, DOMAIN, "v2", action="rollback", verdict="accepted")
    hist = reg.history(CORPUS, DOMAIN)
    assert [(h["action"], h["from"], h["to"], h["forced"]) for h in hist] == [
        ("promote", None, "v2", False), ("refuse", "v2", "v3", False), ("promote", "v2", "v3", True), ("rollback", "v3", "v2", False)]
    assert all("time" in h and h["domain"] == DOMAIN for h in hist)
    # moves are releases (one record each); the domain's own file holds what moved nothing
    assert [r["moves"] for r in reg.releases(CORPUS).records()] == [
        [{"domain": DOMAIN, "from": None, "to": "v2"}], [{"domain": DOMAIN, "from": "v2", "to": "v3"}],
        [{"domain": DOMAIN, "from": "v3", "to": "v2"}]]
    lines = (reg.domain_dir(CORPUS, DOMAIN) / "history.jsonl").read_text().splitlines()
    assert [json.loads(x)["to"] for x in lines] == ["v3"]
    # a move that expects another live version is refused (someone promoted meanwhile)
    with pytest.raises(RegistryError, match="meanwhile"):
        reg.set_live(CORPUS, DOMAIN, "v1", action="promote", verdict="accepted", expect_from="v3")
    with pytest.raises(RegistryError, match="v7"):
        reg.set_live(CORPUS, DOMAIN, "v7", action="promote", verdict="accepted")
    rows = reg.listing(CORPUS)
    assert [(r["version"], r["stage"], r["loss"], r["dev_semer"]) for r in rows] == [
        ("v1", "candidate", "crossentropy", 0.25), ("v2", "live", "crossentropy", 0.25), ("v3", "retired", "crossentropy", 0.25)]


def test_a_live_pointer_to_nothing_is_an_error(tmp_path):
    reg = Registry(tmp_path)
    publish(reg, make_model(1))
    # a registry from before releases: one pointer file per domain, read until the first release takes it over
    (reg.domain_dir(CORPUS, DOMAIN) / "live").write_text("v5\n")
    with pytest.raises(RegistryError, match="v5"):
        reg.live(CORPUS, DOMAIN)
    (reg.domain_dir(CORPUS, DOMAIN) / "live").write_text("v1\n")
    assert reg.live(CORPUS, DOMAIN) == "v1" and reg.live_state(CORPUS).release == 0
    reg.set_live(CORPUS, DOMAIN, None, action="rollback", verdict="test")
    assert reg.live(CORPUS, DOMAIN) is None and not (reg.domain_dir(CORPUS, DOMAIN) / "live").exists()
    # a live state that names a version that is not there
    state = reg.root / CORPUS / "_releases" / "live.json"
    state.write_text(json.dumps({"release": 9, "versions": {DOMAIN: "v5"}}))
    with pytest.raises(RegistryError, match="v5"):
        reg.live(CORPUS, DOMAIN)
    state.write_text(json.dumps({"release": 9, "versions": {DOMAIN: "latest"}}))
    with pytest.raises(RegistryError, match="not version names"):
        reg.live(CORPUS, DOMAIN)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_weights_that_are_not_finite_are_refused_at_publish_and_at_load(tmp_path, bad):
    reg = Registry(tmp_path)
    model = make_model(1)
    with torch.no_grad():
        model.linear.weight[0, 2] = bad
    with pytest.raises(RegistryError, match="linear.weight"):
        publish(reg, model)
    assert reg.versions(CORPUS, DOMAIN) == []
    # a file that was changed after publishing is refused when loaded, naming it and the tensor
    publish(reg, make_model(2))
    from safetensors.numpy import load_file, save_file

    path = reg.domain_dir(CORPUS, DOMAIN) / "v1" / "weights.safetensors"
    weights = load_file(str(path))
    weights["std"][1] = bad
    save_file(weights, str(path))
    with pytest.raises(RegistryError) as err:
        reg.load(CORPUS, DOMAIN, "v1")
    assert str(path) in str(err.value) and "'std'" in str(err.value)


def test_mismatched_spec_is_refused_naming_what_differs(tmp_path):
    reg = Registry(tmp_path)
    publish(reg, make_model(1))
    assert reg.load(CORPUS, DOMAIN, "v1", expect_spec=make_spec()).version == "v1"
    data_spec = make_spec(intents=("music_pause", "music_play", "music_volume_up"))
    with pytest.raises(FeatureSpecMismatch) as err:
        reg.load(CORPUS, DOMAIN, "v1", expect_spec=data_spec)
    msg = str(err.value)
    assert "intents" in msg and "music_volume_up" in msg
    assert str(reg.domain_dir(CORPUS, DOMAIN) / "v1") in msg
    other_ranks = FeatureSpec(**{**make_spec().__dict__, "n_ranks": 5})
    with pytest.raises(FeatureSpecMismatch, match="n_ranks"):
        reg.load(CORPUS, DOMAIN, "v1", expect_spec=other_ranks)


def _publish_worker(root: str, seed: int, barrier, queue) -> None:
    model = make_model(seed)
    barrier.wait(timeout=60)
    queue.put((seed, publish(Registry(root), model, tag=str(seed))))


def publish_at_once(worker, root, n: int) -> dict[int, str]:
    """``n`` processes that publish together (released by a barrier); ``{seed: version}``."""
    ctx = mp.get_context("fork")
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(str(root), seed, barrier, queue)) for seed in range(n)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in range(n))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return results


def test_concurrent_publishers_get_distinct_versions(tmp_path):
    n = 6
    results = publish_at_once(_publish_worker, tmp_path, n)
    reg = Registry(tmp_path)
    assert sorted(results.values(), key=lambda v: int(v[1:])) == [f"v{i}" for i in range(1, n + 1)]
    assert reg.versions(CORPUS, DOMAIN) == [f"v{i}" for i in range(1, n + 1)]
    assert staging_dirs(reg) == []
    # each version holds what its publisher wrote
    for seed, version in results.items():
        got = reg.load(CORPUS, DOMAIN, version=version)
        assert got.meta["data_hash"] == f"hash-{seed}"
        assert_same_weights(got, make_model(seed))
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
    with pytest.raises(RegistryError):
        reg.load(CORPUS, DOMAIN, "latest")

    monkeypatch.undo()
    m1 = make_model(1)
    assert publish(reg, m1) == "v1"
    monkeypatch.setattr(registry_mod, "save_file", boom)
    with pytest.raises(OSError):
        publish(reg, make_model(2))
    assert reg.versions(CORPUS, DOMAIN) == ["v1"]
    assert staging_dirs(reg) == []
    assert reg.load(CORPUS, DOMAIN, "latest").version == "v1"


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
        reg.load(CORPUS, DOMAIN, "v1")
    assert str(weights) in str(err.value)


def test_weights_of_another_spec_raise_registry_error(tmp_path):
    reg = Registry(tmp_path)
    publish(reg, make_model(1))
    spec_path = reg.domain_dir(CORPUS, DOMAIN) / "v1" / "spec.json"
    spec_path.write_text(spec_path.read_text().replace('"music_pause",', '"music_pause", "music_skip",'))
    with pytest.raises(RegistryError) as err:
        reg.load(CORPUS, DOMAIN, "v1")
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
    got = reg.load(CORPUS, DOMAIN, "v1")
    monkeypatch.undo()
    assert_same_weights(got, model)


_KILLED_PUBLISHER = """
import sys, time
sys.path.insert(0, {tests!r})
import rerank.model.registry as r
from test_registry import make_model, publish, Registry
real = r.save_file
def slow(*a, **k):
    real(*a, **k)
    print("staged", flush=True)
    time.sleep(60)
r.save_file = slow
publish(Registry({root!r}), make_model(1))
"""


def test_staging_left_by_killed_publishers_is_cleaned_by_the_next_publish(tmp_path):
    """kill -9 in the middle of a publish, five times: the leftovers go at the next publish, no version appears."""
    reg = Registry(tmp_path)
    code = _KILLED_PUBLISHER.format(tests=str(REPO / "tests"), root=str(tmp_path))
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
        assert proc.stdout.readline().strip() == "staged"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        # each publisher removed the leftovers of the one killed before it: only its own stays
        assert len(staging_dirs(reg)) == 1
    assert reg.versions(CORPUS, DOMAIN) == []
    assert publish(reg, make_model(2)) == "v1"
    assert staging_dirs(reg) == []
    # a live publisher's staging folder is left alone
    alive = reg.domain_dir(CORPUS, DOMAIN) / f".staging-{registry_mod.host_name()}-{os.getpid()}-abc"
    alive.mkdir()
    assert reg.clean_staging(CORPUS, DOMAIN) == []
    alive.rmdir()


def _publish_from_node(root: str, seed: int, barrier, queue) -> None:
    # another "node": its own host name, the same shared registry folder
    registry_mod.host_name = lambda: f"node{seed % 2}"
    barrier.wait(timeout=60)
    queue.put((seed, publish(Registry(root), make_model(seed), tag=str(seed))))


def test_two_nodes_publishing_the_same_domain_at_once(tmp_path):
    n = 4
    results = publish_at_once(_publish_from_node, tmp_path, n)
    reg = Registry(tmp_path)
    assert sorted(results.values()) == [f"v{i}" for i in range(1, n + 1)]
    for seed, v in results.items():
        assert reg.meta(CORPUS, DOMAIN, v)["host"] == f"node{seed % 2}"
        assert_same_weights(reg.load(CORPUS, DOMAIN, v), make_model(seed))


def test_a_staging_folder_is_owned_by_its_lock_not_by_a_host_name_and_pid(tmp_path):
    """Containers that share a host name see each other's PIDs as dead: the owner's lock, not the PID, keeps a
    publisher's staging folder alive."""
    reg = Registry(tmp_path)
    publish(reg, make_model(1))
    folder = reg.domain_dir(CORPUS, DOMAIN) / f".staging-{registry_mod.host_name()}-4194303-abc"  # a PID not alive here
    folder.mkdir()
    (folder / ".owner").touch()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1]); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
                               str(folder / ".owner")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert reg.clean_staging(CORPUS, DOMAIN) == [] and folder.exists()
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert reg.clean_staging(CORPUS, DOMAIN) == [folder.name] and not folder.exists()


def test_publish_and_release_sync_their_files_and_folders_before_and_after_the_renames(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def record(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", record)
    reg = Registry(tmp_path)
    v = publish(reg, make_model(1))
    base = str(reg.domain_dir(CORPUS, DOMAIN))
    assert base in synced  # the folder that holds the renamed version
    # the weights (and the JSON files) before their rename inside the staging folder, and that folder
    assert any(s.startswith(base + "/.staging-") and "/.weights.safetensors." in s for s in synced)
    assert any(s.startswith(base + "/.staging-") and s.count("/") == base.count("/") + 1 for s in synced)
    synced.clear()
    reg.release(CORPUS, {DOMAIN: v}, {"action": "test"})
    releases = str(reg.releases(CORPUS).folder)
    assert releases in synced and sum(s.startswith(releases + "/") for s in synced) >= 2  # the record and the state


def test_a_publisher_killed_between_making_its_folder_and_owning_it_leaves_nothing_for_long(tmp_path):
    reg = Registry(tmp_path)
    publish(reg, make_model(1))
    empty = reg.domain_dir(CORPUS, DOMAIN) / f".staging-{registry_mod.host_name()}-1-abc"
    empty.mkdir()  # what a kill right after the mkdir leaves (the owner file not made yet)
    assert publish(reg, make_model(2)) == "v2" and not empty.exists()
