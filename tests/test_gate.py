"""The promotion gate: an improving version goes live, a harmful one is refused; force, rollback, the report."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, compose_config
from rerank.hypotheses.tables import TableSet
from rerank.merge.gate import GateLimits, evaluate_candidate
from rerank.merge.promote import Refused, promote, promote_version
from rerank.merge.top_calibration import TopCalibration
from rerank.model.registry import Registry

CORPUS = "synthetic"


def gate_cfg(**limits) -> dict:
    return {**compose_config("promote", ["domain=x"])["gate"], "bootstrap": 300, **limits}


def biggest(world) -> str:
    """The domain with the most dev utterances."""
    gold = TableSet.open(world.output_dir / "data" / CORPUS).read_utterances("dev")["gold_domain"].to_pylist()
    return max(world.manifest["domains"], key=gold.count)


def publish_biased(reg: Registry, domain: str, bias: float) -> str:
    """The domain's v1 with its logits shifted by ``bias``: over-confident, it steals the other domains' utterances."""
    pub = reg.load(CORPUS, domain, "v1")

    class Shifted:
        spec, kind = pub.spec, pub.kind

        def weights(self):
            w = pub.weights()
            w["linear.bias"] = w["linear.bias"] + np.float32(bias)
            return w

    return reg.publish(CORPUS, domain, Shifted(), loss="crossentropy", config={}, metrics={}, data_hash="test")


def test_an_improving_version_is_accepted_and_goes_live(live_world, tmp_path):
    reg = Registry(live_world.registry_copy(tmp_path / "registry"))
    tables = TableSet.open(live_world.output_dir / "data" / CORPUS)
    domain = biggest(live_world)
    reg.set_live(CORPUS, domain, None, action="rollback", verdict="test: back to the baseline", forced=True)
    decision = promote_version(tables, reg, domain, "v1", gate_cfg())
    assert decision["accepted"] and decision["live"] == "v1" and decision["action"] == "promote"
    assert reg.live(CORPUS, domain) == "v1"
    report = json.loads(Path(decision["report"]).with_suffix(".json").read_text())
    semer = report["checks"][0]
    assert semer["check"] == "overall SemER" and semer["after"] < semer["before"] and semer["ci"][1] < 0
    assert report["current"] == "baseline" and report["candidate"] == "v1"
    assert set(report["per_domain"]) == set(live_world.manifest["domains"])
    for p in report["per_domain"].values():
        assert p["ci"][0] <= p["delta"] <= p["ci"][1]
    assert "accepted" in Path(decision["report"]).read_text()
    last = reg.history(CORPUS, domain)[-1]
    assert (last["action"], last["from"], last["to"], last["forced"]) == ("promote", None, "v1", False)
    assert last["verdict"] == "accepted" and last["report"] == decision["report"]


def test_an_over_confident_version_is_refused_and_the_live_one_stays(live_world, tmp_path):
    reg = Registry(live_world.registry_copy(tmp_path / "registry"))
    tables = TableSet.open(live_world.output_dir / "data" / CORPUS)
    domain = biggest(live_world)
    bad = publish_biased(reg, domain, 8.0)
    decision = promote_version(tables, reg, domain, bad, gate_cfg())
    assert not decision["accepted"] and decision["live"] == "v1" and reg.live(CORPUS, domain) == "v1"
    # it took the other domains' utterances: their SemER is the check that fails
    assert "overall SemER" in decision["failed"]
    assert any(f.startswith("SemER of ") and domain not in f for f in decision["failed"])
    report = json.loads(Path(decision["report"]).with_suffix(".json").read_text())
    stolen = [c for c in report["checks"] if c["check"].startswith("SemER of ") and not c["passed"]]
    assert stolen and all(c["delta"] > 0.01 and c["ci"][0] > 0 for c in stolen)
    last = reg.history(CORPUS, domain)[-1]
    assert (last["action"], last["to"], last["forced"]) == ("promote", bad, False) and last["verdict"].startswith("refused")
    assert reg.stage(CORPUS, domain, bad) == "candidate"

    # the command line: exit code 2, the live version stays
    proc = subprocess.run([sys.executable, "scripts/promote.py", f"paths.output_dir={live_world.output_dir}",
                           f"paths.registry_dir={reg.root}", f"domain={domain}", f"version={bad}", "gate.bootstrap=200"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "refused" in proc.stderr and reg.live(CORPUS, domain) == "v1"

    # force=true overrides the gate, and the history says so; a rollback is the same command with an older version
    forced = promote_version(tables, reg, domain, bad, gate_cfg(), force=True)
    assert forced["live"] == bad and forced["forced"] and reg.live(CORPUS, domain) == bad
    assert reg.history(CORPUS, domain)[-1]["forced"] is True
    back = promote_version(tables, reg, domain, "v1", gate_cfg())
    assert back["accepted"] and back["action"] == "rollback" and reg.live(CORPUS, domain) == "v1"
    assert [h["action"] for h in reg.history(CORPUS, domain)[-2:]] == ["promote", "rollback"]
    assert reg.stage(CORPUS, domain, bad) == "retired"


def test_the_gate_compares_only_what_changes(live_world, tmp_path):
    """Gating the live version itself: nothing changes, every delta is 0, and it passes."""
    from rerank.merge.promote import recalibrate

    reg = Registry(live_world.registry_copy(tmp_path / "registry"))
    tables = TableSet.open(live_world.output_dir / "data" / CORPUS)
    domain = biggest(live_world)
    recalibrate(tables, reg, {"bootstrap": 0})  # the live set's top calibration, as a promotion stores it
    report = evaluate_candidate(tables, reg, domain, "v1", GateLimits(bootstrap=100))
    assert report["accepted"] and report["changed_top"] == 0
    assert all(c["delta"] == pytest.approx(0.0, abs=1e-12) for c in report["checks"])


def test_the_ece_check_is_of_the_served_confidence(live_world, tmp_path):
    """Without a stored top calibration the service reports the raw top score: the check compares it
    with the candidate's confidence through the calibration that its promotion would store."""
    reg = Registry(live_world.registry_copy(tmp_path / "registry"))
    tables = TableSet.open(live_world.output_dir / "data" / CORPUS)
    domain = biggest(live_world)
    report = evaluate_candidate(tables, reg, domain, "v1", GateLimits(bootstrap=100))
    check = next(c for c in report["checks"] if c["check"].startswith("top-hypothesis ECE"))
    assert report["served_top_calibration"]["scale"] == 1.0 and report["served_top_calibration"]["shift"] == 0.0
    assert check["before"] == pytest.approx(report["top_calibration"]["ece_before"])  # the same world, raw
    assert check["after"] == pytest.approx(report["top_calibration"]["ece_after"])  # the same world, calibrated
    # so the two differ: the candidate's is through a real fit (of either method), not the identity
    grid = np.linspace(0.01, 0.99, 99)
    assert not np.allclose(TopCalibration.from_dict(report["top_calibration"])(grid), grid)


def test_promote_refuses_with_a_message_naming_the_report(live_world, tmp_path):
    reg = Registry(live_world.registry_copy(tmp_path / "registry"))
    domain = biggest(live_world)
    bad = publish_biased(reg, domain, 8.0)
    cfg = compose_config("promote", [f"paths.output_dir={live_world.output_dir}", f"paths.registry_dir={reg.root}",
                                     f"domain={domain}", f"version={bad}", "gate.bootstrap=100"])
    with pytest.raises(Refused, match="report"):
        promote(cfg)
    with pytest.raises(ValueError, match="unknown gate settings"):
        GateLimits.from_config({"semer_margin": 0.1})


def test_a_version_refused_once_is_planned_again_on_the_world_of_now(live_world, tmp_path):
    """A refused version stays pending: the next release plan decides it again on the world of its moment;
    a harmful one stays refused, and its history says so each time."""
    from rerank.merge.plan import pending
    from rerank.merge.release import release

    reg = Registry(live_world.registry_copy(tmp_path / "registry", live=False))
    tables = TableSet.open(live_world.output_dir / "data" / CORPUS)
    domain = biggest(live_world)
    reg.record(CORPUS, domain, {"action": "promote", "to": "v1", "verdict": "refused: overall SemER", "forced": False})
    assert pending(reg, CORPUS, tables.domains)[domain] == "v1"
    cfg = compose_config("release", [f"paths.output_dir={live_world.output_dir}", f"paths.registry_dir={reg.root}",
                                     "gate.bootstrap=300"])
    release(cfg, log=lambda *_: None)
    assert reg.live(CORPUS, domain) == "v1" and domain not in pending(reg, CORPUS, tables.domains)

    bad = publish_biased(reg, domain, 8.0)
    for _ in range(2):
        out = release(cfg, log=lambda *_: None)
        assert out["release"] is None and f"{domain} {bad}" in out["refused"] and reg.live(CORPUS, domain) == "v1"
        assert pending(reg, CORPUS, tables.domains) == {domain: bad}
    refused = [h for h in reg.history(CORPUS, domain) if h.get("to") == bad]
    assert [h["verdict"].startswith("refused") for h in refused] == [True, True]
    # two plans within a second: two reports, each still where its history entry points
    assert refused[0]["report"] != refused[1]["report"] and all(Path(h["report"]).exists() for h in refused)
