"""Tests of rerank.metrics.corpus: corpus SemER / IRER / slot F1 and the bootstrap."""
import doctest

import numpy as np
import pytest

import rerank.metrics.corpus as corpus_mod
from rerank.metrics import (
    bootstrap_ci,
    corpus_semer,
    interpretation_error,
    irer,
    semantic_errors,
    slot_counts,
    slot_f1,
    slot_f1_from_counts,
)


def test_corpus_semer_is_micro_not_macro():
    errors, totals = [0, 4], [1, 9]
    micro = corpus_semer(errors, totals)
    macro = np.mean(np.array(errors) / np.array(totals))
    assert micro == pytest.approx(0.4)  # 4 / 10
    assert macro == pytest.approx(2 / 9)  # (0 + 4/9) / 2
    assert micro != pytest.approx(macro)


def test_corpus_semer_not_clipped():
    assert corpus_semer([5], [2]) == 2.5


def test_irer():
    assert irer([0, 0, 1, 1, 1]) == pytest.approx(0.6)
    assert irer(np.array([True, False])) == 0.5


def test_utterance_without_hypothesis():
    """The caller counts an utterance without hypotheses as errors = total, IE = 1."""
    golds = [
        ("music_play", [("song", "thriller"), ("artist", "michael jackson")]),
        ("weather_query", [("date", "today")]),  # no domain emitted anything for this one
    ]
    tops = [("music_play", [("artist", "Michael Jackson"), ("song", "thriller")]), None]
    errors, totals, ie = [], [], []
    for (gi, gs), top in zip(golds, tops):
        if top is None:
            t = 1 + len(gs)
            e = t  # errors = total(g)
            ie.append(1)  # IE = 1
        else:
            e, t = semantic_errors(gi, gs, *top)
            ie.append(interpretation_error(gi.split("_")[0], gi, gs, top[0].split("_")[0], *top))
        errors.append(e)
        totals.append(t)
    assert (errors, totals, ie) == ([0, 2], [3, 2], [0, 1])
    assert corpus_semer(errors, totals) == pytest.approx(2 / 5)
    assert irer(ie) == 0.5
    # slot F1: the missing utterance's gold slot is a miss: TP=2, FP=0, FN=1 -> 4/5
    assert slot_f1([gs for _, gs in golds], [t[1] if t else None for t in tops]) == pytest.approx(0.8)


def test_slot_f1_hand_value():
    gold = [
        [("song", "thriller"), ("artist", "michael jackson")],
        [("item", "milk"), ("item", "milk")],
        [],
        [("date", "today")],
    ]
    hyp = [
        [("song", "Thriller"), ("artist", "prince")],  # TP 1, FP 1, FN 1
        [("item", "milk"), ("item", "milk"), ("item", "milk")],  # TP 2, FP 1 (multiset)
        [("date", "now")],  # FP 1
        None,  # no hypothesis: FN 1
    ]
    # TP = 3, FP = 3, FN = 2; P = 3/6, R = 3/5, F1 = 2PR/(P+R) = 6/11
    p, r = 3 / 6, 3 / 5
    assert slot_f1(gold, hyp) == pytest.approx(2 * p * r / (p + r))
    assert slot_f1(gold, hyp) == pytest.approx(6 / 11)
    tp, nh, ng = slot_counts(gold, hyp)
    assert tp.tolist() == [1, 2, 0, 0] and nh.tolist() == [2, 3, 1, 0] and ng.tolist() == [2, 2, 0, 1]
    assert slot_f1_from_counts(tp, nh, ng) == pytest.approx(6 / 11)


def test_slot_f1_perfect_and_no_slots():
    gold = [[("a", "x")], [("b", "y y")]]
    assert slot_f1(gold, [[("a", "X")], [("b", " y  y")]]) == 1.0
    assert slot_f1([[], []], [[], []]) == 1.0  # zero_division default
    assert slot_f1([[], []], [[], None], zero_division=0.0) == 0.0
    assert slot_f1(gold, [None, None]) == 0.0


def test_input_errors():
    with pytest.raises(ValueError, match="empty"):
        corpus_semer([], [])
    with pytest.raises(ValueError, match="differ in length"):
        corpus_semer([1, 2], [3])
    with pytest.raises(ValueError, match="positive"):
        corpus_semer([0], [0])
    with pytest.raises(ValueError, match="empty"):
        irer([])
    with pytest.raises(ValueError, match="hypothesis slot lists"):
        slot_f1([[]], [])


# --- bootstrap -------------------------------------------------------------------

def _irer_data(n, rate=0.2, seed=0):
    return (np.random.default_rng(seed).random(n) < rate).astype(int)


def test_bootstrap_contains_point_estimate():
    ie = _irer_data(500)
    lo, hi = bootstrap_ci(irer, ie)
    assert lo < irer(ie) < hi
    rng = np.random.default_rng(1)
    totals = rng.integers(1, 5, 500)
    errors = rng.binomial(totals, 0.15)
    lo, hi = bootstrap_ci(corpus_semer, errors, totals, n_resamples=300)
    assert lo < corpus_semer(errors, totals) < hi


def test_bias_corrected_interval_of_an_ece_contains_it():
    """A calibrated sample: the resampled ECEs all lie above the estimate; the corrected interval does not."""
    from rerank.metrics.calibration import bin_index, ece, ece_rows

    # exactly calibrated: in each bin, the share of correct ones equals the confidence (ECE 0)
    conf = np.repeat([0.1, 0.3, 0.5, 0.7, 0.9], 100)
    correct = np.concatenate([np.arange(100) < 100 * p for p in (0.1, 0.3, 0.5, 0.7, 0.9)]).astype(float)
    args = (conf, correct, bin_index(conf))
    lo, hi = bootstrap_ci(ece_rows, *args, n_resamples=300, vectorized=True)
    blo, bhi = bootstrap_ci(ece_rows, *args, n_resamples=300, vectorized=True, bias_corrected=True)
    assert ece(conf, correct) == pytest.approx(0.0, abs=1e-12)
    assert ece(conf, correct) < lo  # the plain percentile interval misses its own estimate
    assert blo < ece(conf, correct) < bhi
    assert bhi - blo == pytest.approx(hi - lo)
    # a statistic without bias (a mean) moves by about nothing
    ie = _irer_data(500)
    assert bootstrap_ci(irer, ie, bias_corrected=True) == pytest.approx(bootstrap_ci(irer, ie), abs=2e-3)


def test_bootstrap_narrows_with_n():
    widths = []
    for n in (100, 1000, 10000):
        lo, hi = bootstrap_ci(irer, _irer_data(n), n_resamples=300)
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    # roughly 1/sqrt(n): 2 * 1.96 * sqrt(.2 * .8 / n)
    assert widths[2] == pytest.approx(2 * 1.96 * np.sqrt(0.16 / 10000), rel=0.25)


def test_bootstrap_deterministic_for_seed():
    ie = _irer_data(300)
    a = bootstrap_ci(irer, ie, n_resamples=200, seed=5)
    assert a == bootstrap_ci(irer, ie, n_resamples=200, seed=5)
    assert a != bootstrap_ci(irer, ie, n_resamples=200, seed=6)


def test_bootstrap_confidence_level():
    ie = _irer_data(400)
    lo90, hi90 = bootstrap_ci(irer, ie, confidence=0.90)
    lo99, hi99 = bootstrap_ci(irer, ie, confidence=0.99)
    assert lo99 <= lo90 < hi90 <= hi99


def test_bootstrap_resamples_rows_jointly():
    x = np.arange(50)

    def same_rows(a, b):
        assert np.array_equal(a, b - 1000)
        return float(a.mean())

    bootstrap_ci(same_rows, x, x + 1000, n_resamples=50)


def test_bootstrap_block_size_does_not_change_result(monkeypatch):
    ie = _irer_data(97)
    full = bootstrap_ci(irer, ie, n_resamples=101, seed=3)
    monkeypatch.setattr(corpus_mod, "_CHUNK_ELEMS", 97 * 7)  # 7 rows per block
    assert bootstrap_ci(irer, ie, n_resamples=101, seed=3) == full


def test_bootstrap_vectorized_equals_loop():
    rng = np.random.default_rng(2)
    totals = rng.integers(1, 5, 200)
    errors = rng.binomial(totals, 0.3)
    loop = bootstrap_ci(corpus_semer, errors, totals, n_resamples=150, seed=1)
    vec = bootstrap_ci(lambda e, t: e.sum(1) / t.sum(1), errors, totals, n_resamples=150, seed=1, vectorized=True)
    assert vec == pytest.approx(loop, abs=1e-12)


def test_bootstrap_slot_f1_via_counts():
    gold = [[("a", "x")], [("b", "y")], [("c", "z")], []] * 25
    hyp = [[("a", "x")], [("b", "w")], None, [("d", "q")]] * 25
    counts = slot_counts(gold, hyp)
    point = slot_f1(gold, hyp)
    lo, hi = bootstrap_ci(slot_f1_from_counts, *counts, n_resamples=300)
    assert lo <= point <= hi


def test_bootstrap_errors():
    with pytest.raises(ValueError, match="same length"):
        bootstrap_ci(corpus_semer, [1, 2], [3])
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci(irer, [])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(irer, [0, 1], confidence=1.0)
    with pytest.raises(ValueError, match="at least one array"):
        bootstrap_ci(irer)


def test_doctests():
    result = doctest.testmod(corpus_mod, verbose=False)
    assert result.attempted > 0 and result.failed == 0
