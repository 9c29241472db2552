"""Releases: the planner decides on the joint world, whatever the order of publishing; one atomic write; rollback;
kill -9 and two releases at once; co-adaptation retrains the harmed domains; the report and its picture."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import REPO, compose_config
from rerank.hypotheses.tables import TableSet
from rerank.merge.gate import GateLimits, judge
from rerank.merge.release import release
from rerank.model.registry import Registry, RegistryError
from test_gate import CORPUS, biggest, publish_biased


def release_cfg(world, registry, *overrides: str) -> dict:
    return compose_config("release", [f"paths.output_dir={world.output_dir}", f"paths.registry_dir={registry}",
                                      f"paths.log_dir={registry.parent / 'logs'}", "gate.bootstrap=200", *overrides])


def quiet(*_):
    pass


def test_the_plan_is_decided_on_the_joint_world_whatever_the_order_of_publishing(live_world, tmp_path):
    """Every domain's v1 pending, plus an over-confident version of the biggest domain and a copy of another's:
    five random orders of publishing give the same plan, and the harmful version is refused."""
    domains = list(live_world.manifest["domains"])
    big = biggest(live_world)
    plans = []
    for trial in range(5):
        reg = Registry(live_world.registry_copy(tmp_path / f"registry{trial}", live=False))
        extra = [(big, 8.0), (domains[1] if domains[1] != big else domains[2], 0.0)]
        random.Random(trial).shuffle(extra)
        for d, bias in extra:
            time.sleep(random.Random(trial).random() * 0.01)
            publish_biased(reg, d, bias)
        out = release(release_cfg(live_world, reg.root, "release.dry_run=true"), log=quiet)
        plans.append((out["plan"]["moves"], round(out["plan"]["checks"][0]["after"], 12), sorted(out["refused"])))
        assert reg.live_state(CORPUS).release == 0  # a dry run writes no release
    assert all(p == plans[0] for p in plans), plans
    moves, _, refused = plans[0]
    assert f"{big} v2" in refused and moves.get(big) != "v2"
    assert len(moves) >= 3  # the other domains' first versions go live together


def test_a_release_is_one_atomic_write_and_one_command_rolls_it_back(live_world, tmp_path):
    reg = Registry(live_world.registry_copy(tmp_path / "registry", live=False))
    out = release(release_cfg(live_world, reg.root), log=quiet)
    state = reg.live_state(CORPUS)
    assert out["release"] == state.release == 1 and len(state.versions) == len(out["plan"]["moves"]) >= 3
    assert state.top_calibration["fitted_for"] == {d: state.versions.get(d, "baseline") for d in live_world.manifest["domains"]}
    [record] = reg.releases(CORPUS).records()
    assert {m["domain"] for m in record["moves"]} == set(state.versions) and record["report"].endswith(".md")
    for ext in ("md", "json", "png"):
        assert os.path.getsize(record["report"][:-2] + ext) > 0
    # nothing pending now: a second plan moves nothing and writes no release
    assert release(release_cfg(live_world, reg.root), log=quiet)["release"] is None
    again = release(release_cfg(live_world, reg.root, "release.rollback=true"), log=quiet)
    after = reg.live_state(CORPUS)
    assert again["release"] == after.release == 2 and dict(after.versions) == {} and after.top_calibration is None
    assert [h["action"] for h in reg.history(CORPUS, next(iter(state.versions)))] == ["release", "rollback"]
    # back to the state after release 1: the same versions and calibration
    release(release_cfg(live_world, reg.root, "release.rollback=1"), log=quiet)
    assert dict(reg.live_state(CORPUS).versions) == dict(state.versions)
    assert reg.live_state(CORPUS).top_calibration == state.top_calibration


def test_a_release_naming_a_missing_or_broken_version_stops_and_changes_nothing(live_world, tmp_path):
    reg = Registry(live_world.registry_copy(tmp_path / "registry"))
    before = reg.live_state(CORPUS)
    d = live_world.manifest["domains"][0]
    with pytest.raises(RegistryError, match="v9"):
        release(release_cfg(live_world, reg.root, f"+release.versions={{{d}: v9}}"), log=quiet)
    bad = publish_biased(reg, d, 0.5)
    weights = reg.domain_dir(CORPUS, d) / bad / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])
    with pytest.raises(RegistryError, match="weights"):
        release(release_cfg(live_world, reg.root), log=quiet)
    assert reg.live_state(CORPUS) == before and len(reg.releases(CORPUS).records()) == before.release == 1
    with pytest.raises(RegistryError, match="v9"):
        reg.release(CORPUS, {d: "v9"}, {"action": "test"})
    assert reg.live_state(CORPUS) == before


_RELEASER = """
import sys
from rerank.model.registry import Registry
reg = Registry(sys.argv[1])
print("ready", flush=True)
i = 0
while True:
    i += 1
    v = "v1" if i % 2 else "v2"
    reg.release("toy", {d: v for d in ("A", "B", "C", "D", "E")}, {"action": "test", "i": i},
                top_calibration={"scale": float(i), "shift": 0.0})
"""


def _toy_registry(root) -> Registry:
    for d in "ABCDE":
        for v in ("v1", "v2"):
            (root / "toy" / d / v).mkdir(parents=True)
            (root / "toy" / d / v / "meta.json").write_text("{}")
    return Registry(root)


def test_kill_9_during_releases_leaves_the_old_state_or_the_new_never_a_mix(tmp_path):
    reg = _toy_registry(tmp_path)
    rng = random.Random(0)
    for trial in range(24):
        proc = subprocess.Popen([sys.executable, "-c", _RELEASER, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=REPO)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.05))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        reg = Registry(tmp_path)  # a new reader, as after a crash
        state = reg.live_state("toy")
        assert set(state.versions) <= set("ABCDE")
        assert len(set(state.versions.values())) <= 1, state.versions  # one release's versions, never a mix
        records = reg.releases("toy").records()
        assert len(records) == state.release and [r["release"] for r in records] == list(range(1, state.release + 1))
        if records:
            assert dict(state.versions) == records[-1]["state"]["versions"]
            assert state.top_calibration == records[-1]["state"]["top_calibration"]
    assert reg.live_state("toy").release > 24  # the kills landed mid-stream, after some releases


_SERIAL = """
import sys
from rerank.model.registry import Registry
reg = Registry(sys.argv[1])
for i in range(15):
    with reg.promotion_lock("toy"):
        state = reg.live_state("toy")
        v = "v2" if state.version("A") == "v1" else "v1"
        reg.release("toy", {"A": v}, {"action": "test", "who": sys.argv[2]}, expect_release=state.release)
"""


def test_two_releases_at_once_serialise(tmp_path):
    reg = _toy_registry(tmp_path)
    procs = [subprocess.Popen([sys.executable, "-c", _SERIAL, str(tmp_path), who], cwd=REPO) for who in "xy"]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    records = reg.releases("toy").records()
    assert len(records) == 30 and {r["who"] for r in records} == {"x", "y"}
    for a, b in zip(records, records[1:]):  # each planned on the state the one before it left
        assert b["moves"][0]["from"] == a["moves"][0]["to"]


def test_promote_force_takes_the_promotion_lock(live_world, tmp_path):
    from rerank.merge.promote import promote_trained

    reg = Registry(live_world.registry_copy(tmp_path / "registry"))
    d = live_world.manifest["domains"][0]
    v = publish_biased(reg, d, 0.3)
    cfg = compose_config("train", [f"paths.output_dir={live_world.output_dir}", f"paths.registry_dir={reg.root}",
                                   f"domain={d}", "promote=force", "gate.bootstrap=50"])
    done = threading.Event()
    with reg.promotion_lock(CORPUS):
        worker = threading.Thread(target=lambda: (promote_trained(cfg, {"domain": d, "version": v}), done.set()))
        worker.start()
        time.sleep(1.5)
        assert not done.is_set() and reg.live(CORPUS, d) == "v1"  # waits for the lock, writes nothing before it
    worker.join(timeout=120)
    assert done.is_set() and reg.live(CORPUS, d) == v
    state = reg.live_state(CORPUS)
    assert state.top_calibration["fitted_for"][d] == v  # the calibration and the move in one release


def _figures(before, after, ci):
    return {"before": before, "after": after, "ci": list(ci)}


def test_the_policy_weighs_harm_openly():
    """Hand figures: overall SemER falls, one other domain is harmed."""
    overall = _figures(0.0655, 0.0536, (-0.02, -0.004))
    per = lambda harm: {"Video": {**_figures(0.30, 0.19, (-0.15, -0.07)), "n": 399, "changed": 29, "delta": -0.11},  # noqa: E731
                        "Music": {**_figures(0.048, 0.048 + harm, (0.002, harm + 0.01)), "n": 668, "changed": 5, "delta": harm}}
    no_harm = GateLimits(policy="no_harm")
    r = judge(no_harm, overall, None, per(0.012), moved={"Video"}, added=8, removed=45)
    assert not r["accepted"] and r["failed"] == ["SemER of Music"] and r["harmed"] == ["Music"] and r["refused_for_harm_only"]
    bounded = GateLimits(policy="bounded_harm", harm_max_delta=0.02, harm_max_share=0.34)
    r = judge(bounded, overall, None, per(0.012), added=8, removed=45)
    assert r["accepted"] and r["harmed"] == ["Music"] and r["added_share"] == pytest.approx(8 / 45)
    assert not judge(bounded, overall, None, per(0.03), added=8, removed=45)["accepted"]  # over the cap
    assert judge(bounded, overall, None, per(0.012), added=20, removed=45)["failed"] == [
        "errors added / errors removed"]
    unsure = _figures(0.0655, 0.0600, (-0.01, 0.001))  # an overall gain whose interval reaches 0 trades no harm
    assert "overall SemER improves (harm is traded)" in judge(bounded, unsure, None, per(0.012),
                                                              added=8, removed=45)["failed"]
    with pytest.raises(ValueError, match="policy"):
        GateLimits.from_config({"policy": "anything_goes"})


def test_the_forest_plot_stays_readable_at_1000_domains(tmp_path):
    from PIL import Image

    from rerank.merge.release_report import MAX_ROWS, forest_plot, forest_rows
    from rerank.plots import save

    rng = np.random.default_rng(0)
    per = {f"d{i:04d}": {"n": 50, "before": 0.1, "after": 0.1, "delta": float(d), "ci": [float(d) - 0.01, float(d) + 0.01],
                         "changed": int(d != 0), "harmed": bool(d > 0.015)}
           for i, d in enumerate(np.where(rng.random(1000) < 0.3, rng.normal(0, 0.01, 1000), 0.0))}
    per["d0001"].update(delta=-0.001, ci=[-0.01, 0.008], changed=3)
    report = {"per_domain": per, "moves": {"d0001": "v2"}, "split": "dev", "limits": {"confidence": 0.95}}
    rows, left_out = forest_rows(report)
    assert len(rows) == MAX_ROWS and left_out == sum(p["changed"] > 0 or p["delta"] != 0 for p in per.values()) - MAX_ROWS
    assert rows[0][0] == "d0001"  # the moved domain first, then the harmed ones
    save(forest_plot(report, "test"), tmp_path / "f.png")
    assert max(Image.open(tmp_path / "f.png").size) <= 4000


def test_co_adaptation_retrains_the_harmed_domains_against_the_releases_world(live_world, tmp_path):
    """An over-confident version takes other domains' utterances: with no_harm and co-adaptation, each harmed
    domain retrains against the world where it is live, is published with that world, and the plan is made again.
    (The overall check is opened wide so that the version is refused for the harm alone.)"""
    reg = Registry(live_world.registry_copy(tmp_path / "registry"))
    big = biggest(live_world)
    bad = publish_biased(reg, big, 3.0)
    cfg = release_cfg(live_world, reg.root, "gate.policy=no_harm", "gate.semer_max_delta=1", "gate.semer_max_upper=1",
                      "gate.ece_max_delta=1", "release.coadapt=true", "release.coadapt_rounds=1")
    overrides = [f"paths.output_dir={live_world.output_dir}", f"paths.registry_dir={reg.root}",
                 f"paths.log_dir={tmp_path / 'logs'}", "loss=combined", "features=base", "threads=1", "hydra.launcher.n_jobs=2",
                 "trainer.max_epochs=3", "~logger"]
    out = release(cfg, overrides=overrides, log=quiet)
    first = json.loads(open(out["paths"]["json"]).read())
    [round_] = first["rounds"]
    assert round_["retrained"] and big not in round_["retrained"]
    for d, v in round_["new"].items():
        config = json.loads((reg.domain_dir(CORPUS, d) / v / "config.json").read_text())
        assert config["slates"]["world"][big] == bad and config["slates"]["competitors"] == "live"
        assert reg.live(CORPUS, d) in ("v1", v)
    assert "## Co-adaptation" in open(out["paths"]["md"]).read()


def test_a_world_is_evaluated_as_a_full_merge_would_be(live_world, tmp_path):
    """The world's incremental tops and one-pass intervals equal a full ranking and bootstrap_ci's intervals."""
    from rerank.hypotheses.figures import top_hypothesis_outcome
    from rerank.merge.world import World
    from rerank.metrics.corpus import bootstrap_ci

    reg = Registry(live_world.registry_copy(tmp_path / "registry"))
    tables = TableSet.open(live_world.output_dir / "data" / CORPUS)
    domains = sorted(live_world.manifest["domains"])
    moves = {domains[0]: publish_biased(reg, domains[0], 1.5), domains[2]: None, domains[3]: publish_biased(reg, domains[3], -1.0)}
    world = World(tables, reg, GateLimits(bootstrap=300))
    report = world.evaluate(moves)
    data = world.data
    score = world.world_scores(moves)
    _, e_c, _ = top_hypothesis_outcome(data.utt_index, score, data.sem_errors, data.ie, data.totals)
    _, e_n, _ = top_hypothesis_outcome(data.utt_index, world.base, data.sem_errors, data.ie, data.totals)
    assert report["checks"][0]["after"] == pytest.approx(e_c.sum() / data.totals.sum(), abs=1e-12)
    diff = e_c - e_n
    lo, hi = bootstrap_ci(lambda d, t: d.sum(1) / t.sum(1), diff, data.totals, n_resamples=300, seed=0, vectorized=True)
    assert report["checks"][0]["ci"] == pytest.approx([lo, hi], abs=1e-12)
    assert report["changed_top"] > 0
    for d, row in report["per_domain"].items():
        m = data.gold_domain == d
        assert row["after"] == pytest.approx(e_c[m].sum() / data.totals[m].sum(), abs=1e-12)
        if np.any(diff[m]):
            want = bootstrap_ci(lambda d_, t: d_.sum(1) / t.sum(1), np.where(m, diff, 0.0), np.where(m, data.totals, 0.0),
                                n_resamples=300, seed=0, vectorized=True)
            assert row["ci"] == pytest.approx(list(want), abs=1e-12), d
