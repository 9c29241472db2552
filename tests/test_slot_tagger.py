"""SlotTagger: crfsuite-trained CRF, exact k-best Viterbi and P(labelling | tokens)."""
from __future__ import annotations

import itertools
import pickle
import re

import numpy as np
import pytest

pycrfsuite = pytest.importorskip("pycrfsuite")

from rerank.recognizers.crfsuite_model import read_model_info  # noqa: E402
from rerank.recognizers.slot_tagger import SlotTagger  # noqa: E402

# ---------------------------------------------------------------------------
# A tiny music domain, written in the bracket notation.
# ---------------------------------------------------------------------------

_SONGS = ["thriller", "hey jude", "yellow", "let it be", "bad", "clocks"]
_ARTISTS = ["michael jackson", "the beatles", "coldplay", "adele", "john lennon"]
_PATTERNS = [
    "play [song_name : {s}] by [artist_name : {a}]",
    "play [song_name : {s}]",
    "put on some [artist_name : {a}]",
    "i want to hear [song_name : {s}] from [artist_name : {a}]",
    "play something by [artist_name : {a}]",
    "can you play [song_name : {s}] please",
]


def _parse(annotated: str) -> tuple[list[str], list[str]]:
    """``play [song_name : x y] now`` -> tokens and BIO tags."""
    tokens, tags = [], []
    for m in re.finditer(r"\[(\w+) : ([^\]]+)\]|(\S+)", annotated):
        if m.group(3):
            tokens.append(m.group(3))
            tags.append("O")
        else:
            words = m.group(2).split()
            tokens += words
            tags += ["B-" + m.group(1)] + ["I-" + m.group(1)] * (len(words) - 1)
    return tokens, tags


def _toy_corpus() -> tuple[list[list[str]], list[list[str]]]:
    X, Y = [], []
    for i in range(30):
        text = _PATTERNS[i % len(_PATTERNS)].format(s=_SONGS[i % len(_SONGS)], a=_ARTISTS[(i * 7) % len(_ARTISTS)])
        toks, tags = _parse(text)
        X.append(toks)
        Y.append(tags)
    return X, Y


TEST_SENTENCES = [
    ["play", "thriller", "by", "adele"],
    ["play", "hey", "jude"],
    ["put", "on", "some", "coldplay"],
    ["i", "want", "to", "hear", "yellow", "from", "the", "beatles"],
    ["play", "Zanzibar", "by", "Qwerty", "Uiop"],  # unseen words, upper case
    ["thriller"],  # a single token
    ["xyzzy"],  # a single unseen token
    ["Play", "Something", "By", "Michael", "Jackson", "please"],
    ["42", "play", "track", "7"],
]


@pytest.fixture(scope="module")
def corpus():
    return _toy_corpus()


@pytest.fixture(scope="module")
def tagger(corpus):
    return SlotTagger(c2=0.1, max_iterations=60).fit(*corpus)


def _crf_probability(crf, st, tokens, tags):
    crf.set(st.attributes(tokens))
    return crf.probability(tags)


def _brute_force(crf, st, tokens):
    """All labellings with crfsuite's own P(y|x), best first."""
    crf.set(st.attributes(tokens))
    out = [(list(y), crf.probability(list(y))) for y in itertools.product(st.labels, repeat=len(tokens))]
    out.sort(key=lambda yp: -yp[1])
    return out


# ---------------------------------------------------------------------------
# Agreement with crfsuite
# ---------------------------------------------------------------------------

def test_toy_corpus_is_bio(corpus):
    X, Y = corpus
    assert len(X) == 30
    assert all(len(x) == len(y) for x, y in zip(X, Y))
    assert {t for y in Y for t in y} == {"O", "B-song_name", "I-song_name", "B-artist_name", "I-artist_name"}


def test_labels(tagger):
    assert sorted(tagger.labels) == ["B-artist_name", "B-song_name", "I-artist_name", "I-song_name", "O"]
    assert tagger.labels == list(tagger.crfsuite_tagger().labels())


def test_learns_the_toy_domain(tagger):
    tags, _ = tagger.nbest(["play", "thriller", "by", "adele"], 1)[0]
    assert tags == ["O", "B-song_name", "O", "B-artist_name"]


@pytest.mark.parametrize("tokens", TEST_SENTENCES, ids=lambda t: "_".join(t))
def test_top1_equals_crfsuite_tag(tagger, tokens):
    crf = tagger.crfsuite_tagger()
    assert tagger.nbest(tokens, 1)[0][0] == crf.tag(tagger.attributes(tokens))
    assert tagger.nbest(tokens, 5)[0][0] == crf.tag(tagger.attributes(tokens))


@pytest.mark.parametrize("tokens", TEST_SENTENCES, ids=lambda t: "_".join(t))
def test_probabilities_equal_crfsuite(tagger, tokens):
    crf = tagger.crfsuite_tagger()
    nb = tagger.nbest(tokens, 8)
    assert nb
    for tags, p in nb:
        assert p == pytest.approx(_crf_probability(crf, tagger, tokens, tags), abs=1e-9)
        # score() gives the same log-probability
        assert tagger.score(tokens, tags)[1] == pytest.approx(np.log(p), abs=1e-9)


@pytest.mark.parametrize(
    "params",
    [dict(window=0, affixes=False), dict(window=1), dict(window=3, c1=0.05, c2=0.01)],
    ids=["w0_noaffix", "w1", "w3_l1"],
)
def test_other_settings_equal_crfsuite(corpus, params):
    st = SlotTagger(max_iterations=40, **params).fit(*corpus)
    crf = st.crfsuite_tagger()
    for tokens in TEST_SENTENCES:
        nb = st.nbest(tokens, 4)
        assert nb[0][0] == crf.tag(st.attributes(tokens))
        for tags, p in nb:
            assert p == pytest.approx(_crf_probability(crf, st, tokens, tags), abs=1e-9)


def test_weights_equal_crfsuite_dump(tagger):
    # The binary model file holds the exact weights; crfsuite's text dump rounds them to 1e-6.
    labels, attrs, T, W = read_model_info(tagger.crfsuite_tagger())
    assert labels == tagger.labels
    assert np.abs(T - tagger.transitions).max() <= 5.1e-7
    assert np.abs(W - tagger._W[: len(attrs)]).max() <= 5.1e-7
    assert not tagger._W[-1].any()  # the row of unknown attributes


# ---------------------------------------------------------------------------
# Exact k-best against brute force
# ---------------------------------------------------------------------------

BRUTE_SENTENCES = [
    ["play", "bad", "by", "adele"],
    ["play", "hey", "jude"],
    ["put", "on", "coldplay"],
    ["play", "unknownword", "by", "nobody"],
    ["thriller", "by", "the"],
]


@pytest.mark.parametrize("tokens", BRUTE_SENTENCES, ids=lambda t: "_".join(t))
def test_kbest_equals_brute_force(tagger, tokens):
    crf = tagger.crfsuite_tagger()
    brute = _brute_force(crf, tagger, tokens)
    n_all = len(tagger.labels) ** len(tokens)
    assert len(brute) == n_all
    probs = np.array([p for _, p in brute])
    for k in (1, 2, 3, 4, 5, 7, 10, 25, n_all, n_all + 10):
        nb = tagger.nbest(tokens, k)
        kk = min(k, n_all)
        assert len(nb) == kk
        # the comparison of the order is meaningful only without ties at these ranks
        assert np.all(-np.diff(probs[: kk + 1]) > 1e-12)
        assert [t for t, _ in nb] == [t for t, _ in brute[:kk]]
        np.testing.assert_allclose([p for _, p in nb], probs[:kk], rtol=0, atol=1e-9)


@pytest.mark.parametrize("tokens", BRUTE_SENTENCES + [["adele"], ["qqq"]], ids=lambda t: "_".join(t))
def test_probabilities_of_all_labellings_sum_to_one(tagger, tokens):
    n_all = len(tagger.labels) ** len(tokens)
    nb = tagger.nbest(tokens, n_all)
    assert len(nb) == n_all
    assert len({tuple(t) for t, _ in nb}) == n_all  # distinct
    assert sum(p for _, p in nb) == pytest.approx(1.0, abs=1e-9)
    ps = [p for _, p in nb]
    assert all(a >= b for a, b in zip(ps, ps[1:]))  # descending
    crf = tagger.crfsuite_tagger()
    assert sum(p for _, p in _brute_force(crf, tagger, tokens)) == pytest.approx(1.0, abs=1e-9)


def test_k_larger_than_labellings_returns_all(tagger):
    nb = tagger.nbest(["hello"], 100)
    assert sorted(t[0] for t, _ in nb) == sorted(tagger.labels)
    assert sum(p for _, p in nb) == pytest.approx(1.0, abs=1e-12)


def test_unseen_words_give_valid_probabilities(tagger):
    tokens = ["zzz", "qqq", "www", "vvv"]
    nb = tagger.nbest(tokens, 5)
    assert len(nb) == 5
    assert all(0.0 < p <= 1.0 for _, p in nb)
    assert sum(p for _, p in nb) <= 1.0 + 1e-12
    assert len({tuple(t) for t, _ in nb}) == 5


def test_nbest_many_equals_nbest(tagger):
    sents = TEST_SENTENCES + BRUTE_SENTENCES + TEST_SENTENCES[:3]
    many = tagger.nbest_many(sents, 5)
    assert len(many) == len(sents)
    for toks, got in zip(sents, many):
        assert got == tagger.nbest(toks, 5)
    assert tagger.nbest_many([], 5) == []


# ---------------------------------------------------------------------------
# Edge cases
# ---------------------------------------------------------------------------

def test_all_O_domain_does_not_call_crfsuite(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("crfsuite must not be called for an all-O domain")

    monkeypatch.setattr(pycrfsuite, "Trainer", boom)
    X = [["what", "time", "is", "it"], ["hello"], ["tell", "me", "a", "joke"]]
    st = SlotTagger().fit(X, [["O"] * len(x) for x in X])
    assert st.labels == ["O"]
    assert st.nbest(["anything", "at", "all"], 5) == [(["O", "O", "O"], 1.0)]
    assert st.nbest(["x"], 1) == [(["O"], 1.0)]
    assert st.nbest_many([["a", "b"], ["c"]], 3) == [[(["O", "O"], 1.0)], [(["O"], 1.0)]]
    assert st.crfsuite_tagger() is None
    st2 = pickle.loads(pickle.dumps(st))
    assert st2.nbest(["x", "y"], 2) == [(["O", "O"], 1.0)]
    with pytest.raises(ValueError):
        st.nbest([], 1)


def test_pickle_round_trip(tagger):
    blob = pickle.dumps(tagger)
    st2 = pickle.loads(blob)
    for tokens in TEST_SENTENCES:
        assert st2.nbest(tokens, 5) == tagger.nbest(tokens, 5)
    assert st2.nbest_many(TEST_SENTENCES, 3) == tagger.nbest_many(TEST_SENTENCES, 3)
    assert st2.labels == tagger.labels


def test_length_mismatch_names_the_sentence(corpus):
    X, Y = corpus
    Y = [list(y) for y in Y]
    Y[2] = Y[2][:-1]
    with pytest.raises(ValueError, match=r"sentence 2\b"):
        SlotTagger().fit(X, Y)
    with pytest.raises(ValueError, match="sentences"):
        SlotTagger().fit(X, Y[:-1])


def test_empty_token_list_raises(tagger):
    with pytest.raises(ValueError, match="empty"):
        tagger.nbest([], 5)
    with pytest.raises(ValueError, match=r"sentence 1: empty"):
        tagger.nbest_many([["play"], []], 5)


def test_bad_k_raises(tagger):
    for k in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            tagger.nbest(["play"], k)


def test_unfitted_raises():
    with pytest.raises(RuntimeError):
        SlotTagger().nbest(["play"], 1)
    with pytest.raises(RuntimeError):
        SlotTagger().labels


def test_no_dependency_on_temp_files(corpus, tmp_path, monkeypatch):
    # fit trains in a temporary directory that is gone afterwards; decoding needs no file
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    st = SlotTagger(max_iterations=20).fit(*corpus)
    assert list(tmp_path.iterdir()) == []
    assert st.nbest(["play", "bad"], 2)


def test_log_partition_with_extreme_weights():
    # Weights spanning thousands of nats underflow the scaled forward pass: the
    # log-space fallback must give the exact log Z.
    from rerank.recognizers.kbest import kbest, log_partition

    rng = np.random.default_rng(0)
    E = rng.normal(scale=800.0, size=(3, 4, 3))
    T = rng.normal(scale=800.0, size=(3, 3))
    for b in range(3):
        scores = [
            E[b, np.arange(4), y].sum() + T[list(y[:-1]), list(y[1:])].sum()
            for y in itertools.product(range(3), repeat=4)
        ]
        m = max(scores)
        expected = m + np.log(np.sum(np.exp(np.array(scores) - m)))
        assert log_partition(E[b:b + 1], T)[0] == pytest.approx(expected, rel=1e-12)
        paths, best = kbest(E[b:b + 1], T, 4)
        assert list(best[0]) == pytest.approx(sorted(scores, reverse=True)[:4], rel=1e-12)


def test_falls_back_to_info_when_the_model_file_is_unreadable(corpus, monkeypatch):
    import rerank.recognizers.crfsuite_model as mod

    def unreadable(data):
        raise mod.ModelFormatError("simulated")

    monkeypatch.setattr(mod, "read_model_binary", unreadable)
    with pytest.warns(RuntimeWarning, match="rounded"):
        st = SlotTagger(c2=0.1, max_iterations=60).fit(*corpus)
    crf = st.crfsuite_tagger()
    for tokens in TEST_SENTENCES[:4]:
        for tags, p in st.nbest(tokens, 3):
            assert p == pytest.approx(_crf_probability(crf, st, tokens, tags), abs=1e-5)


def test_read_model_binary_rejects_garbage():
    from rerank.recognizers.crfsuite_model import ModelFormatError, read_model_binary

    with pytest.raises(ModelFormatError):
        read_model_binary(b"not a model")
    with pytest.raises(ModelFormatError):
        read_model_binary(b"XXXX" + bytes(60))
