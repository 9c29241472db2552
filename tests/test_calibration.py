"""Tests of rerank.metrics.calibration (REFERENCE.md s.4), incl. agreement with torchmetrics.

torchmetrics facts checked here (torchmetrics 1.9, functional/classification/calibration_error.py):
``_binning_bucketize`` uses ``torch.bucketize(c, torch.linspace(0, 1, n_bins + 1, dtype=c.dtype),
right=True) - 1`` -> lower-edge rule like REFERENCE, BUT
  * c == 1.0 gets index n_bins, i.e. a bin of its own (REFERENCE: the last bin);
  * torch.linspace edges are not the correctly rounded k/15: float64 edge 11 is one ulp above
    11/15; float32 edges 3, 6, 7 are above float32(k/15). Those exact-edge values drop one bin.
We follow REFERENCE; on data off the edges (random data) the figures are equal.
"""
import doctest
import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import binary_calibration_error

import rerank.metrics.calibration as cal_mod
from rerank.metrics import N_BINS, brier, ece, mce, nll, reliability_bins


def tm(conf, correct, norm, n_bins=15, dtype=torch.float64):
    return binary_calibration_error(
        torch.as_tensor(np.asarray(conf), dtype=dtype), torch.as_tensor(np.asarray(correct, dtype=np.int64)),
        n_bins=n_bins, norm=norm,
    ).item()


def naive_ece_mce(conf, correct, assign):
    """ECE / MCE from an explicit list of bin assignments (plain Python)."""
    bins = {}
    for c, y, b in zip(conf, correct, assign):
        bins.setdefault(b, []).append((c, y))
    n = len(conf)
    gaps = {b: abs(sum(y for _, y in v) / len(v) - sum(c for c, _ in v) / len(v)) for b, v in bins.items()}
    return sum(len(bins[b]) / n * g for b, g in gaps.items()), max(gaps.values())


# --- hand-computed example ------------------------------------------------------
# conf = [0.2, 0.3, 0.6, 0.9, 0.95], correct = [0, 1, 1, 1, 0]
# n_bins = 4 (edges 0, .25, .5, .75, 1):
#   bin0 {0.2 | 0}: conf .2,  acc 0   gap .2
#   bin1 {0.3 | 1}: conf .3,  acc 1   gap .7
#   bin2 {0.6 | 1}: conf .6,  acc 1   gap .4
#   bin3 {0.9 | 1, 0.95 | 0}: conf .925, acc .5, gap .425
#   ECE = (.2 + .7 + .4 + 2 * .425) / 5 = 2.15 / 5 = 0.43 ; MCE = 0.7
# n_bins = 15: 0.2 = 3/15 (on an edge -> bin 3), 0.3 -> bin 4, 0.6 = 9/15 (edge -> bin 9),
#   0.9 -> bin 13, 0.95 -> bin 14: all alone, so ECE = mean |y - c| = (.2+.7+.4+.1+.95)/5 = 0.47,
#   MCE = 0.95
# Brier = (.04 + .49 + .16 + .01 + .9025) / 5 = 1.6025 / 5 = 0.3205
# NLL = -(log .8 + log .3 + log .6 + log .9 + log .05) / 5 = 5.039036.. / 5 = 1.0078072..
CONF = [0.2, 0.3, 0.6, 0.9, 0.95]
CORR = [0, 1, 1, 1, 0]


def test_hand_example_4_bins():
    assert ece(CONF, CORR, n_bins=4) == pytest.approx(0.43, abs=1e-12)
    assert mce(CONF, CORR, n_bins=4) == pytest.approx(0.7, abs=1e-12)
    b = reliability_bins(CONF, CORR, n_bins=4)
    assert b["count"].tolist() == [1, 1, 1, 2]
    np.testing.assert_allclose(b["conf"], [0.2, 0.3, 0.6, 0.925])
    np.testing.assert_allclose(b["acc"], [0.0, 1.0, 1.0, 0.5])
    np.testing.assert_allclose(b["lower"], [0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(b["upper"], [0.25, 0.5, 0.75, 1.0])


def test_hand_example_15_bins():
    assert N_BINS == 15
    assert ece(CONF, CORR) == pytest.approx(0.47, abs=1e-12)
    assert mce(CONF, CORR) == pytest.approx(0.95, abs=1e-12)
    counts = reliability_bins(CONF, CORR)["count"]
    assert np.flatnonzero(counts).tolist() == [3, 4, 9, 13, 14]


def test_hand_brier_nll():
    assert brier(CONF, CORR) == pytest.approx(0.3205, abs=1e-12)
    expected = -(math.log(0.8) + math.log(0.3) + math.log(0.6) + math.log(0.9) + math.log(0.05)) / 5
    assert nll(CONF, CORR) == pytest.approx(expected, rel=1e-12)
    assert nll(CONF, CORR) == pytest.approx(1.0078072, abs=1e-6)


def test_hand_example_matches_torchmetrics():
    # 0.2 and 0.6 are edges where torch.linspace(float64) is exact, so torchmetrics agrees here
    assert ece(CONF, CORR, n_bins=4) == pytest.approx(tm(CONF, CORR, "l1", n_bins=4), abs=1e-12)
    assert ece(CONF, CORR) == pytest.approx(tm(CONF, CORR, "l1"), abs=1e-12)
    assert mce(CONF, CORR) == pytest.approx(tm(CONF, CORR, "max"), abs=1e-12)


# --- torchmetrics on random data -------------------------------------------------

@pytest.mark.parametrize("n", [1, 7, 100, 5000])
@pytest.mark.parametrize("n_bins", [15, 10, 1])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_torchmetrics_random_float64(n, n_bins, seed):
    rng = np.random.default_rng(seed)
    conf = rng.random(n)
    correct = (rng.random(n) < conf ** 0.7).astype(int)  # somewhat miscalibrated
    assert ece(conf, correct, n_bins) == pytest.approx(tm(conf, correct, "l1", n_bins), abs=1e-12)
    assert mce(conf, correct, n_bins) == pytest.approx(tm(conf, correct, "max", n_bins), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_torchmetrics_random_float32(seed):
    rng = np.random.default_rng(seed)
    conf = rng.random(3000).astype(np.float32)
    correct = rng.random(3000) < 0.6
    assert ece(conf, correct) == pytest.approx(tm(conf, correct, "l1", dtype=torch.float32), abs=1e-5)
    assert mce(conf, correct) == pytest.approx(tm(conf, correct, "max", dtype=torch.float32), abs=1e-5)


def test_equals_torchmetrics_with_correct_ones_at_1():
    # c == 1.0 in torchmetrics' extra bin does not change anything when those answers are right
    rng = np.random.default_rng(3)
    conf = np.concatenate([rng.random(500), np.ones(50)])
    correct = np.concatenate([rng.random(500) < 0.5, np.ones(50, bool)])
    assert ece(conf, correct) == pytest.approx(tm(conf, correct, "l1"), abs=1e-12)


# --- bin edges -------------------------------------------------------------------

EDGES = [k / 15 for k in range(16)]  # 0, 1/15, ..., 14/15, 1.0
OUR_BINS = list(range(15)) + [14]  # lower-edge rule, 1.0 in the last bin
TM_BINS_F64 = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10, 12, 13, 14, 15]  # linspace[11] > 11/15; 1.0 -> extra bin
TM_BINS_F32 = [0, 1, 2, 2, 4, 5, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15]  # linspace f32 edges 3, 6, 7 too high


def test_exact_edges_binning():
    counts = reliability_bins(EDGES, [1] * 16)["count"]
    assert counts.tolist() == [1] * 14 + [2]
    for k in range(15):
        c = reliability_bins([k / 15], [1])["count"]
        assert c[k] == 1, k
    assert reliability_bins([1.0], [1])["count"][14] == 1
    assert reliability_bins([0.0], [1])["count"][0] == 1
    # just below an edge stays in the lower bin
    below = [np.nextafter(k / 15, 0.0) for k in range(1, 16)]
    assert np.flatnonzero(reliability_bins(below, [1] * 15)["count"]).tolist() == list(range(15))
    assert reliability_bins(below, [1] * 15)["count"].tolist() == [1] * 15


def test_exact_edges_float32_inputs():
    # float32(k/15) >= k/15 (double) for every k, so float32 edge values stay in bin k
    e32 = np.array(EDGES, dtype=np.float32)
    assert np.all(e32.astype(np.float64) >= np.array(EDGES))
    assert reliability_bins(e32, [1] * 16)["count"].tolist() == [1] * 14 + [2]


def test_torchmetrics_binning_on_edges_is_documented():
    """Pin torchmetrics' (different) edge assignments, so a change in torchmetrics shows up here."""
    for dtype, expected in [(torch.float64, TM_BINS_F64), (torch.float32, TM_BINS_F32)]:
        e = torch.tensor(EDGES, dtype=dtype)
        got = torch.bucketize(e, torch.linspace(0, 1, 16, dtype=dtype), right=True) - 1
        assert got.tolist() == expected, dtype


@pytest.mark.parametrize("pattern_seed", range(5))
def test_edges_ece_hand_vs_torchmetrics(pattern_seed):
    rng = np.random.default_rng(pattern_seed)
    correct = rng.integers(0, 2, 16)
    correct[15] = 0  # a wrong answer at c == 1.0 makes the last-bin difference visible
    correct[14] = 1  # ... when 14/15 is under-confident
    ours_ece, ours_mce = naive_ece_mce(EDGES, correct, OUR_BINS)
    assert ece(EDGES, correct) == pytest.approx(ours_ece, abs=1e-12)
    assert mce(EDGES, correct) == pytest.approx(ours_mce, abs=1e-12)
    # torchmetrics follows its own assignments exactly ...
    tm_ece, tm_mce = naive_ece_mce(EDGES, correct, TM_BINS_F64)
    assert tm(EDGES, correct, "l1") == pytest.approx(tm_ece, abs=1e-12)
    assert tm(EDGES, correct, "max") == pytest.approx(tm_mce, abs=1e-12)
    e32 = np.array(EDGES, dtype=np.float32).astype(np.float64).tolist()
    tm32_ece, _ = naive_ece_mce(e32, correct, TM_BINS_F32)
    assert tm(np.array(EDGES, np.float32), correct, "l1", dtype=torch.float32) == pytest.approx(tm32_ece, abs=1e-6)
    # ... which is not REFERENCE's
    assert ece(EDGES, correct) != pytest.approx(tm(EDGES, correct, "l1"), abs=1e-9)


def test_one_in_last_bin_vs_torchmetrics():
    # REFERENCE: {0.95 | 1, 1.0 | 0} share the last bin: conf .975, acc .5 -> ECE = MCE = .475
    assert ece([0.95, 1.0], [1, 0]) == pytest.approx(0.475, abs=1e-12)
    assert mce([0.95, 1.0], [1, 0]) == pytest.approx(0.475, abs=1e-12)
    # torchmetrics: 1.0 alone in an extra bin: (.05 + 1) / 2 = .525, MCE 1
    assert tm([0.95, 1.0], [1, 0], "l1") == pytest.approx(0.525, abs=1e-12)
    assert tm([0.95, 1.0], [1, 0], "max") == pytest.approx(1.0, abs=1e-12)
    b = reliability_bins([0.95, 1.0], [1, 0])
    assert b["count"][14] == 2 and b["count"].sum() == 2 and b["count"].size == 15


# --- other edge cases --------------------------------------------------------------

def test_one_sample():
    assert ece([0.7], [1]) == pytest.approx(0.3)
    assert mce([0.7], [1]) == pytest.approx(0.3)
    assert brier([0.7], [1]) == pytest.approx(0.09)
    assert nll([0.7], [1]) == pytest.approx(-math.log(0.7))
    assert nll([0.7], [0]) == pytest.approx(-math.log(0.3))


def test_all_in_one_bin():
    conf, correct = [0.41, 0.42, 0.45], [1, 0, 1]  # all in bin 6 = [0.4, 0.4667)
    b = reliability_bins(conf, correct)
    assert b["count"].tolist() == [0] * 6 + [3] + [0] * 8
    gap = abs(2 / 3 - (0.41 + 0.42 + 0.45) / 3)
    assert ece(conf, correct) == pytest.approx(gap, abs=1e-12)
    assert mce(conf, correct) == pytest.approx(gap, abs=1e-12)


def test_empty_bins_are_nan():
    b = reliability_bins([0.1, 0.9], [0, 1])
    assert set(b) >= {"count", "conf", "acc", "lower", "upper"}
    empty = b["count"] == 0
    assert empty.sum() == 13
    assert np.isnan(b["conf"][empty]).all() and np.isnan(b["acc"][empty]).all()
    assert not np.isnan(b["conf"][~empty]).any()
    np.testing.assert_allclose(b["upper"] - b["lower"], 1 / 15)
    assert b["lower"][0] == 0.0 and b["upper"][-1] == 1.0


def test_ece_consistent_with_bins_and_mce():
    rng = np.random.default_rng(7)
    conf = rng.random(1000)
    correct = rng.random(1000) < 0.5
    b = reliability_bins(conf, correct)
    nz = b["count"] > 0
    manual = np.sum(b["count"][nz] / 1000 * np.abs(b["acc"][nz] - b["conf"][nz]))
    assert ece(conf, correct) == pytest.approx(manual, abs=1e-12)
    assert mce(conf, correct) == pytest.approx(np.max(np.abs(b["acc"][nz] - b["conf"][nz])), abs=1e-12)
    assert mce(conf, correct) >= ece(conf, correct)


def test_perfect_and_worst():
    assert ece([1.0, 0.0], [1, 0]) == 0.0
    assert brier([1.0, 0.0], [1, 0]) == 0.0
    assert ece([1.0, 0.0], [0, 1]) == 1.0
    assert nll([0.0], [1]) == pytest.approx(-math.log(1e-7))  # clipped, finite
    assert nll([0.0], [1], eps=1e-3) == pytest.approx(-math.log(1e-3))


def test_input_types():
    assert ece(np.array([0.2, 0.8]), np.array([False, True])) == ece([0.2, 0.8], [0.0, 1.0])
    assert brier((0.5,), (True,)) == 0.25


@pytest.mark.parametrize("fn", [ece, mce, brier, nll, reliability_bins])
def test_errors(fn):
    with pytest.raises(ValueError, match="empty"):
        fn([], [])
    with pytest.raises(ValueError, match="same length.*3 confidences and 2 labels"):
        fn([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match=r"\[0, 1\]: 2 of 4 are out of range \(first at index 1: 1.5"):
        fn([0.1, 1.5, 0.3, -0.1], [0, 1, 0, 1])
    with pytest.raises(ValueError, match="1 of 2 are out of range.*index 0: nan"):
        fn([float("nan"), 0.5], [0, 1])
    with pytest.raises(ValueError, match="correct must be 0/1.*first at index 1"):
        fn([0.1, 0.2], [0, 2])


def test_bad_n_bins():
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="n_bins"):
            ece([0.5], [1], n_bins=bad)


def test_doctests():
    result = doctest.testmod(cal_mod, verbose=False)
    assert result.attempted > 0 and result.failed == 0
