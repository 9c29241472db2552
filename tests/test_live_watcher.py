"""The live watcher follows whole releases: a version it cannot read yet is retried, one whose content is bad refuses
the release, the old snapshot serves meanwhile and health says degraded, naming the domain."""
from __future__ import annotations

import json

from rerank.model.registry import Registry
from rerank.serving.live import LiveModels
from test_gate import CORPUS, publish_biased


def test_an_unreadable_version_is_retried_and_the_whole_release_swaps_once_it_reads(live_world, tmp_path):
    reg = Registry(live_world.registry_copy(tmp_path / "registry"))
    a, b = sorted(live_world.manifest["domains"])[:2]
    va, vb = publish_biased(reg, a, 0.2), publish_biased(reg, b, 0.2)
    live = LiveModels(reg, CORPUS, poll_seconds=0.001, max_read_attempts=50)
    assert live.snapshot.versions[a] == "v1" and live.release == 1
    weights = reg.domain_dir(CORPUS, b) / vb / "weights.safetensors"
    hidden = weights.with_name("hidden")
    weights.rename(hidden)  # a shared disk that does not show the file yet
    reg.release(CORPUS, {a: va, b: vb}, {"action": "release", "verdict": "test"})
    for _ in range(4):
        live._behind and live._behind.update(next=0)  # (the backoff, without waiting for it)
        assert live.refresh() == []
    # neither domain moved: no request is scored by half a release
    assert (live.snapshot.versions[a], live.snapshot.versions[b]) == ("v1", "v1")
    health = live.health()
    assert health["status"] == "degraded" and health["domain"] == b and not health["refused"]
    hidden.rename(weights)
    live._behind.update(next=0)
    assert sorted(live.refresh()) == [a, b] and live.release == 2 and live.health()["status"] == "ok"


def test_a_version_with_bad_content_refuses_the_release_and_a_later_one_is_served(live_world, tmp_path):
    reg = Registry(live_world.registry_copy(tmp_path / "registry"))
    a, b = sorted(live_world.manifest["domains"])[:2]
    bad, good = publish_biased(reg, a, 0.2), publish_biased(reg, b, 0.2)
    (reg.domain_dir(CORPUS, a) / bad / "spec.json").write_text("[]")
    events = []
    reg.release(CORPUS, {a: bad, b: good}, {"action": "release", "verdict": "test"})
    # the service starts on a live state it cannot serve whole: on the state it can (the baseline), and says so
    live = LiveModels(reg, CORPUS, poll_seconds=0.001, on_event=lambda *e: events.append(e))
    assert live.snapshot.versions.get(b, "baseline") != good
    assert live.health()["status"] == "degraded" and live.health()["domain"] == a and live.health()["refused"]
    assert any(kind == "refused" and d == a for kind, d, _ in events)
    assert live.refresh() == []  # refused for its content: not read again until the live state changes
    reg.release(CORPUS, {a: "v1"}, {"action": "release", "verdict": "test: the owner takes the bad version back"})
    live.refresh()
    assert live.snapshot.versions[a] == "v1" and live.snapshot.versions[b] == good and live.health()["status"] == "ok"


def test_an_unreadable_live_state_keeps_the_old_snapshot(live_world, tmp_path):
    reg = Registry(live_world.registry_copy(tmp_path / "registry"))
    live = LiveModels(reg, CORPUS, poll_seconds=0.001)
    before = dict(live.snapshot.versions)
    state = reg.releases(CORPUS).state_path
    good = state.read_text()
    state.write_text(json.dumps({"release": 5, "versions": {"Music": 3}}))
    assert live.refresh() == [] and dict(live.snapshot.versions) == before
    assert live.health()["status"] == "ok"  # one poll behind is no fault yet: more than two are
    for _ in range(3):
        live._behind.update(next=0)
        live.refresh()
    assert live.health()["status"] == "degraded" and live.health()["domain"] == "_releases"
    state.write_text(good)
    live._behind.update(next=0)
    live.refresh()
    assert live.health()["status"] == "ok" and dict(live.snapshot.versions) == before
