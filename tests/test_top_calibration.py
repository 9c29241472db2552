"""The merge's top calibration: a monotone map of the merged top score (Platt or isotonic, chosen by cross-fitted ECE),
fitted by the gate, read by merge and service."""
from __future__ import annotations

import json

import numpy as np
import pytest

from rerank.hypotheses.tables import TableSet
from rerank.merge.evaluate import evaluate, load_split, top_hypotheses
from rerank.merge.promote import promote_version, recalibrate
from rerank.merge.ranker import CrossDomainRanker
from rerank.merge.top_calibration import TopCalibration, cross_fitted, fit_top_calibration, read_top_calibration
from rerank.metrics.calibration import ece, nll, platt
from rerank.metrics.logistic import logit, sigmoid
from rerank.model.registry import Registry, RegistryError

CORPUS = "synthetic"


@pytest.mark.parametrize("seed,n,spread,a_true,b_true", [
    (0, 4000, 2.0, 0.6, -0.3),
    # scores of +-50 (an R1 model's logits): a full Newton step from (1, 0) overshoots there
    (3, 300, 20.0, 0.08, -2.5),
])
def test_platt_equals_a_reference_logistic_regression(seed, n, spread, a_true, b_true):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    s = rng.normal(0, spread, n)
    y = (rng.random(n) < sigmoid(a_true * s + b_true)).astype(float)
    a, b = platt(s, y)
    ref = LogisticRegression(C=1e8, tol=1e-12, max_iter=10000).fit(s[:, None], y)
    assert (a, b) != (1.0, 0.0)
    assert a == pytest.approx(float(ref.coef_[0, 0]), abs=1e-3) and b == pytest.approx(float(ref.intercept_[0]), abs=1e-3)


@pytest.mark.parametrize("s,y", [([], []), ([0.1, 0.2], [1, 1]), ([0.1, 0.2], [0, 0]),
                                 ([-1.0, 0.0, 1.0, 2.0], [1, 1, 0, 0])])  # the last: reversed order
def test_platt_keeps_the_scores_when_there_is_nothing_to_fit(s, y):
    assert platt(s, y) == (1.0, 0.0)


def test_the_winners_curse_is_corrected_and_the_order_kept():
    """The largest of many calibrated scores is too high: the fitted calibration brings its ECE down."""
    rng = np.random.default_rng(1)
    n, k = 6000, 20
    p = rng.beta(0.5, 4, (n, k))  # every hypothesis' true probability of being right, and its calibrated score
    correct = rng.random((n, k)) < p
    noisy = sigmoid(logit(p) + rng.normal(0, 1.0, (n, k)))  # scores with noise: the maximum picks the lucky ones
    top = noisy.argmax(1)
    top_score, top_right = noisy[np.arange(n), top], correct[np.arange(n), top].astype(float)
    fit, held = slice(0, n // 2), slice(n // 2, n)
    cal = fit_top_calibration(top_score[fit], top_right[fit], {"A": "v1"})
    before, after = ece(top_score[held], top_right[held]), ece(cal(top_score[held]), top_right[held])
    assert before > 0.05 and after < before / 2, (before, after)
    order = np.argsort(top_score)
    assert np.all(np.diff(cal(top_score[order])) >= 0)  # monotone: the ranking cannot change
    assert cal.ece_before == pytest.approx(ece(top_score[fit], top_right[fit]))


def test_it_is_stored_as_data_and_a_bad_one_is_refused(tmp_path):
    reg = Registry(tmp_path / "registry")
    assert read_top_calibration(reg, CORPUS) is None
    cal = TopCalibration(1.2, -0.3, {"A": "v1", "B": "baseline"}, "dev", 10, 0.1, 0.02, "now")
    reg.release(CORPUS, {}, {"action": "recalibrate", "verdict": "test"}, top_calibration=cal.to_dict())
    path = reg.releases(CORPUS).state_path
    assert path.name == "live.json" and path.parent.name == "_releases"
    assert read_top_calibration(reg, CORPUS) == cal
    assert reg.domains(CORPUS) == []  # "_releases" is no domain
    assert cal.stale({"A": "v1", "B": "v2"}) == ["B"] and cal.stale({"A": "v1", "B": "baseline"}) == []
    state = json.loads(path.read_text())
    path.write_text(json.dumps({**state, "top_calibration": {**cal.to_dict(), "scale": -1.0}}))
    with pytest.raises(ValueError, match="live.json top_calibration.*scale"):
        read_top_calibration(reg, CORPUS)
    path.write_text("{not json")
    with pytest.raises(RegistryError, match="live.json"):
        read_top_calibration(reg, CORPUS)


def test_the_gate_stores_it_when_a_version_goes_live_and_not_when_refused(live_world, tmp_path):
    from test_gate import biggest, gate_cfg, publish_biased

    reg = Registry(live_world.registry_copy(tmp_path / "registry"))
    tables = TableSet.open(live_world.output_dir / "data" / CORPUS)
    domain = biggest(live_world)
    reg.set_live(CORPUS, domain, None, action="rollback", verdict="test: back to the baseline", forced=True,
                 top_calibration=None)
    path = reg.releases(CORPUS).state_path
    decision = promote_version(tables, reg, domain, "v1", gate_cfg())
    assert decision["accepted"]
    cal = read_top_calibration(reg, CORPUS)
    live = {d: reg.live(CORPUS, d) or "baseline" for d in live_world.manifest["domains"]}
    assert cal is not None and cal.fitted_for == live and cal.stale(live) == []
    # the same fit as the merge of the live set on dev
    data = load_split(tables, "dev")
    tops = top_hypotheses(data, CrossDomainRanker.from_registry(reg, CORPUS, tables.domains).score_tables(data.tables).score)
    refit = fit_top_calibration(tops.conf, tops.correct, live, "dev")
    assert TopCalibration.from_dict({**refit.to_dict(), "fitted_at": cal.fitted_at}) == cal
    if cal.method == "platt":
        assert (cal.scale, cal.shift) == pytest.approx(platt(logit(tops.conf), tops.correct))
    # a maximum-likelihood fit: on the lists it was fitted on, its log loss is at most the raw one's
    # (its ECE need not fall: with a few hundred utterances, binning noise can go either way)
    assert nll(cal(tops.conf), tops.correct) <= nll(tops.conf, tops.correct) + 1e-12
    # a refused version leaves it as it was
    stamp = path.stat().st_mtime_ns
    bad = publish_biased(reg, domain, 8.0)
    assert not promote_version(tables, reg, domain, bad, gate_cfg())["accepted"]
    assert path.stat().st_mtime_ns == stamp and read_top_calibration(reg, CORPUS) == cal
    # the merge's evaluation reports the calibrated confidence of the top hypothesis
    score = CrossDomainRanker.from_registry(reg, CORPUS, tables.domains).score_tables(data.tables).score
    raw, calibrated = evaluate(data, score, n_boot=0)["overall"], evaluate(data, score, n_boot=0, top_calibration=cal)["overall"]
    assert calibrated["semer"] == raw["semer"] and calibrated["ece_all"] == raw["ece_all"]
    assert calibrated["ece_top"] == pytest.approx(ece(cal(tops.conf), tops.correct)) and calibrated["ece_top"] != raw["ece_top"]
    # what it reports (and the gate weighs) is its cross-fitted ECE: each fold's confidence from the other folds' fit
    assert cal.ece_after == pytest.approx(ece(cross_fitted(cal.method, tops.conf, tops.correct), tops.correct))
    # recalibrate refits for the live set as it is (after a forced promotion, say)
    reg.set_live(CORPUS, domain, bad, action="promote", verdict="test: forced", forced=True)
    assert read_top_calibration(reg, CORPUS).stale({**live, domain: bad}) == [domain]
    again = recalibrate(tables, reg, gate_cfg())
    assert again.fitted_for[domain] == bad and read_top_calibration(reg, CORPUS) == again


def _curse(seed: int, n: int = 4000, k: int = 20):
    rng = np.random.default_rng(seed)
    p = rng.beta(0.5, 4, (n, k))
    correct = rng.random((n, k)) < p
    noisy = sigmoid(logit(p) + rng.normal(0, 1.0, (n, k)))
    top = noisy.argmax(1)
    return noisy[np.arange(n), top], correct[np.arange(n), top].astype(float)


def test_auto_takes_the_method_of_the_lower_cross_fitted_ece_and_the_isotonic_map_is_monotone_data(tmp_path):
    top, right = _curse(5)
    # a step in the truth that no sigmoid of the logit follows: isotonic can, Platt cannot
    right = np.where(top > 0.5, (np.random.default_rng(6).random(len(top)) < 0.9), right).astype(float)
    auto = fit_top_calibration(top, right, {"A": "v1"})
    assert set(auto.chosen_by) == {"platt", "isotonic"}
    assert auto.method == min(auto.chosen_by, key=auto.chosen_by.get) and auto.ece_after == min(auto.chosen_by.values())
    for method in ("platt", "isotonic"):
        one = fit_top_calibration(top, right, {"A": "v1"}, method=method)
        assert one.method == method and one.chosen_by == {}
        assert one.ece_after == pytest.approx(auto.chosen_by[method])
    iso = fit_top_calibration(top, right, {"A": "v1"}, method="isotonic")
    grid = np.linspace(-0.5, 1.5, 2001)  # beyond the knots: the end values (no extrapolation)
    out = iso(grid)
    assert np.all(np.diff(out) >= 0) and out.min() >= 1e-3 and out.max() <= 1 - 1e-3
    # an isotonic fit is the monotone least-squares fit: in-sample it beats any other monotone map, Platt's included
    platt_map = fit_top_calibration(top, right, {}, method="platt")
    assert np.mean((iso(top) - right) ** 2) <= np.mean((platt_map(top) - right) ** 2)
    # stored and read back as data, bit for bit
    reg = Registry(tmp_path / "registry")
    reg.release(CORPUS, {}, {"action": "recalibrate", "verdict": "test"}, top_calibration=iso.to_dict())
    back = read_top_calibration(reg, CORPUS)
    assert back == iso and np.array_equal(back(top), iso(top))


@pytest.mark.parametrize("bad,match", [
    ({"method": "spline"}, "method"),
    ({"method": "isotonic", "knots_x": [0.2, 0.1], "knots_y": [0.1, 0.2]}, "non-decreasing"),
    ({"method": "isotonic", "knots_x": [0.1, 0.2], "knots_y": [0.3, 0.2]}, "non-decreasing"),
    ({"method": "isotonic", "knots_x": [0.1, 0.2], "knots_y": [0.3, 1.5]}, "within"),
    ({"method": "isotonic", "knots_x": [0.1], "knots_y": [0.3, 0.4]}, "as many"),
    ({"method": "isotonic", "knots_x": [], "knots_y": []}, "as many"),
    ({"method": "isotonic", "knots_x": [0.1, float("nan")], "knots_y": [0.3, 0.4]}, "finite"),
])
def test_a_bad_map_is_refused_naming_what(bad, match):
    with pytest.raises(ValueError, match=match):
        TopCalibration.from_dict({**TopCalibration().to_dict(), **bad}, "live.json top_calibration")


def test_the_gate_refuses_an_unknown_method():
    from rerank.merge.gate import GateLimits

    with pytest.raises(ValueError, match="gate.top_calibration"):
        GateLimits.from_config({"top_calibration": "spline"})
    with pytest.raises(ValueError, match="method"):
        fit_top_calibration(np.array([0.5]), np.array([1.0]), {}, method="spline")
