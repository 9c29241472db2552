"""Tests of rerank.metrics.semer: SemER / IE per REFERENCE.md s.2."""
import doctest
import random

import pytest

import rerank.metrics.semer as semer_mod
from rerank.metrics import interpretation_error, normalize_value, semantic_errors

MJ = [("song", "thriller"), ("artist", "michael jackson")]

# REFERENCE.md s.2 check vectors: (gold intent, gold slots, hyp intent, hyp slots, errors, total)
REFERENCE_VECTORS = [
    pytest.param("play_music", MJ, "play_music", MJ, 0, 3, id="same"),
    pytest.param("play_music", MJ, "play_music", [("song", "thriller")], 1, 3, id="one-deletion"),
    pytest.param("play_music", [("song", "thriller")], "play_music", [("album", "thriller")], 2, 2,
                 id="deletion+insertion"),
    pytest.param("play_music", [("song", "thriller")], "play_music", [("song", "triller")], 1, 2,
                 id="substitution"),
    pytest.param("play_music", [("song", "thriller")], "video_play", [("title", "thriller")], 3, 2,
                 id="intent+deletion+insertion"),
    pytest.param("weather_query", [], "weather_query", [("date", "today")], 1, 1, id="insertion"),
]


@pytest.mark.parametrize("gi,gs,hi,hs,errors,total", REFERENCE_VECTORS)
def test_reference_check_vectors(gi, gs, hi, hs, errors, total):
    assert semantic_errors(gi, gs, hi, hs) == (errors, total)


def test_normalize_value():
    assert normalize_value("Michael  Jackson") == "michael jackson"
    assert normalize_value("  a\tb\nC  ") == "a b c"
    assert normalize_value("\u00a0x\u2003y ") == "x y"  # unicode spaces collapse too
    assert normalize_value("") == ""
    assert normalize_value("   ") == ""


def test_semer_normalises_values_not_types():
    assert semantic_errors("i", [("song", "Thriller ")], "i", [("song", " thriller")]) == (0, 2)
    # slot types are compared exactly
    assert semantic_errors("i", [("song", "x")], "i", [("Song", "x")]) == (2, 2)


def test_semer_slot_order_irrelevant():
    assert semantic_errors("i", MJ, "i", MJ[::-1]) == (0, 3)


def test_semer_equal_values_pair_first():
    # gold song {a, b}, hyp song {b, c}: b is correct, a~c one substitution -> 1 error,
    # not 2 substitutions (which a positional pairing would give)
    gold = [("song", "a"), ("song", "b")]
    hyp = [("song", "b"), ("song", "c")]
    assert semantic_errors("i", gold, "i", hyp) == (1, 3)


def test_semer_duplicates_are_multisets():
    gold = [("item", "milk"), ("item", "milk")]
    assert semantic_errors("i", gold, "i", [("item", "milk")]) == (1, 3)  # one deletion
    assert semantic_errors("i", gold, "i", [("item", "milk")] * 3) == (1, 3)  # one insertion
    assert semantic_errors("i", gold, "i", [("item", "milk"), ("item", "eggs")]) == (1, 3)  # one substitution


def test_semer_can_exceed_one_with_insertions():
    hyp = [("date", "today"), ("time", "now"), ("place", "here"), ("place", "there")]
    errors, total = semantic_errors("weather_query", [], "weather_query", hyp)
    assert (errors, total) == (4, 1)
    assert errors / total == 4.0  # not clipped
    errors, total = semantic_errors("a_b", [("x", "1")], "c_d", hyp)  # intent + D + 4 I ... S pairs none (types differ)
    assert (errors, total) == (6, 2)


def test_semer_accepts_lists_and_generators():
    gold = [["song", "thriller"]]  # e.g. read back from Parquet as lists
    hyp = (s for s in [("song", "thriller")])
    assert semantic_errors("i", gold, "i", hyp) == (0, 2)


# --- IE ---------------------------------------------------------------------

def test_ie_exact_match():
    assert interpretation_error("music", "music_play", MJ, "music", "music_play", MJ) == 0


def test_ie_slot_order_irrelevant():
    assert interpretation_error("music", "music_play", MJ, "music", "music_play", MJ[::-1]) == 0


def test_ie_case_and_whitespace_normalisation():
    hyp = [("artist", " Michael\t JACKSON"), ("song", "THRILLER")]
    assert interpretation_error("music", "music_play", MJ, "music", "music_play", hyp) == 0


def test_ie_wrong_domain():
    assert interpretation_error("music", "music_play", MJ, "video", "music_play", MJ) == 1


def test_ie_wrong_intent():
    assert interpretation_error("music", "music_play", MJ, "music", "music_pause", MJ) == 1


def test_ie_wrong_or_missing_or_extra_slot():
    assert interpretation_error("m", "m_p", MJ, "m", "m_p", MJ[:1]) == 1
    assert interpretation_error("m", "m_p", MJ, "m", "m_p", MJ + [("album", "bad")]) == 1
    assert interpretation_error("m", "m_p", MJ, "m", "m_p", [("song", "thriller"), ("artist", "prince")]) == 1
    assert interpretation_error("m", "m_p", MJ, "m", "m_p", [("song", "thriller"), ("album", "michael jackson")]) == 1


def test_ie_duplicates_in_multisets():
    gold = [("item", "milk"), ("item", "milk")]
    assert interpretation_error("s", "s_add", gold, "s", "s_add", [("item", "milk")]) == 1
    assert interpretation_error("s", "s_add", gold, "s", "s_add", [("item", "Milk"), ("item", "milk ")]) == 0
    assert interpretation_error("s", "s_add", [("item", "milk")], "s", "s_add", gold) == 1


def test_ie_empty_slots():
    assert interpretation_error("w", "w_q", [], "w", "w_q", []) == 0
    assert interpretation_error("w", "w_q", [], "w", "w_q", [("date", "today")]) == 1


# --- agreement with a brute-force alignment, and IE == 0 <=> errors == 0 ------

def _brute_force_errors(gi, gs, hi, hs):
    """Literal REFERENCE s.2 alignment with explicit lists (O(n^2), for checking only)."""
    errors = int(gi != hi)
    types = {t for t, _ in gs} | {t for t, _ in hs}
    for t in types:
        g = [normalize_value(v) for tt, v in gs if tt == t]
        h = [normalize_value(v) for tt, v in hs if tt == t]
        for v in list(g):  # pair equal values first
            if v in h:
                g.remove(v)
                h.remove(v)
        s = min(len(g), len(h))
        errors += s + (len(g) - s) + (len(h) - s)
    return errors, 1 + len(gs)


def _random_interp(rng):
    domain = rng.choice(["music", "video", "weather"])
    intent = f"{domain}_{rng.choice(['play', 'query'])}"
    slots = [(rng.choice(["song", "artist", "date"]), rng.choice(["a", "A ", "b", "c c", "C  c"]))
             for _ in range(rng.randint(0, 4))]
    return domain, intent, slots


def test_matches_brute_force_and_ie_consistency():
    rng = random.Random(1234)
    n_zero = 0
    for _ in range(5000):
        gd, gi, gs = _random_interp(rng)
        if rng.random() < 0.3:
            hd, hi, hs = gd, gi, list(gs)
            rng.shuffle(hs)
        else:
            hd, hi, hs = _random_interp(rng)
        got = semantic_errors(gi, gs, hi, hs)
        assert got == _brute_force_errors(gi, gs, hi, hs), (gi, gs, hi, hs)
        ie = interpretation_error(gd, gi, gs, hd, hi, hs)
        # intents are domain-qualified, so IE == 0 exactly when errors == 0 (docs/DESIGN.md)
        assert (ie == 0) == (got[0] == 0)
        n_zero += ie == 0
    assert 0 < n_zero < 5000


def test_doctests():
    result = doctest.testmod(semer_mod, verbose=False)
    assert result.attempted > 0 and result.failed == 0
