"""CrossDomainRanker on hand-built models whose scores are known, and the per-utterance ranking helpers."""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from rerank.hypotheses.schema import hypothesis_schema
from rerank.merge.ranker import BASELINE, CrossDomainRanker, DomainScorer, UnknownDomainError, ranked_table
from rerank.model.features import features_from_table
from rerank.model.records import features_from_records
from rerank.model.spec import BadFeatures, FeatureSpec
from rerank.ranking import order_within_utterances, rank_within_utterances, top_per_utterance
from rerank.training.model import DomainReranker

CONTEXT = (("device", ("echo", "echo_show", "fire_tv")),)
MUSIC = FeatureSpec("Music", ("music_pause", "music_play"), CONTEXT, ("artist", "song"), n_ranks=3)
VIDEO = FeatureSpec("Video", ("video_play", "video_search"), CONTEXT, ("genre", "title"), n_ranks=3)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def linear_model(spec: FeatureSpec, weights: dict[str, float], bias: float) -> DomainReranker:
    """A linear re-ranker with the given raw weights (standardisation: mean 0, std 1)."""
    model = DomainReranker(spec)
    with torch.no_grad():
        for name, w in weights.items():
            model.linear.weight[0, spec.names.index(name)] = w
        model.linear.bias.fill_(bias)
    return model.eval()


def scorer(spec: FeatureSpec, weights: dict[str, float], bias: float, version: str) -> DomainScorer:
    model = linear_model(spec, weights, bias)
    return DomainScorer(spec.domain, version, spec, model.numpy_scorer(), "crossentropy", model)


# Music: s = 4 dc - 1.   Video: s = 2 dc + 1.5 [intent=video_play] + 0.5 #title - 0.5
MUSIC_W, MUSIC_B = {"dc": 4.0}, -1.0
VIDEO_W, VIDEO_B = {"dc": 2.0, "intent=video_play": 1.5, "slot=title": 0.5}, -0.5


def music_logit(h):
    return 4.0 * h["dc"] - 1.0


def video_logit(h):
    titles = sum(1 for s in h["slots"] if s["type"] == "title")
    return 2.0 * h["dc"] + 1.5 * (h["intent"] == "video_play") + 0.5 * titles - 0.5


@pytest.fixture
def ranker() -> CrossDomainRanker:
    return CrossDomainRanker({
        "Music": scorer(MUSIC, MUSIC_W, MUSIC_B, "v2"),
        "Video": scorer(VIDEO, VIDEO_W, VIDEO_B, "v7"),
        "Weather": DomainScorer("Weather", BASELINE),
    }, corpus="hand")


def hyp(domain, intent, dc, ic=0.5, ner=0.5, rank=0, slots=(), device="echo", **extra) -> dict:
    slots = [{"type": t, "value": v} for t, v in slots]
    return {"domain": domain, "intent": intent, "dc": dc, "ic": ic, "ner": ner, "rank": rank,
            "slots": slots, "n_slots": len(slots), "device": device, **extra}


def utterance() -> list[dict]:
    return [
        hyp("Music", "music_play", 0.9, 0.8, 0.7, rank=0, slots=[("song", "thriller")], tag="m0"),     # s = 2.6
        hyp("Music", "music_play", 0.1, 0.2, 0.6, rank=1, tag="m1"),                                    # s = -0.6
        hyp("Video", "video_play", 0.5, 0.9, 0.9, rank=0, slots=[("title", "thriller")], tag="v0"),     # s = 2.5
        hyp("Video", "video_search", 0.95, 0.5, 0.5, rank=1, tag="v1"),                                  # s = 1.4
        hyp("Weather", "weather_query", 0.9, 0.9, 0.5, rank=0, tag="w0"),                                # p = 0.405
    ]


def expected_score(h) -> float:
    if h["domain"] == "Music":
        return sigmoid(music_logit(h))
    if h["domain"] == "Video":
        return sigmoid(video_logit(h))
    return h["dc"] * h["ic"] * h["ner"]


def test_rank_orders_by_calibrated_score(ranker):
    hyps = utterance()
    out = ranker.rank(hyps)
    assert [h["tag"] for h in out] == ["m0", "v0", "v1", "w0", "m1"]
    for h in out:
        assert h["score"] == pytest.approx(expected_score(h), rel=1e-6, abs=1e-9)
    assert out[0]["score"] == pytest.approx(sigmoid(2.6), rel=1e-6)
    assert out[1]["score"] == pytest.approx(sigmoid(2.5), rel=1e-6)
    assert out[3]["score"] == pytest.approx(0.9 * 0.9 * 0.5)
    assert [h["rank"] for h in out] == [0, 1, 2, 3, 4]
    assert [h["domain_rank"] for h in out] == [0, 0, 1, 0, 1]
    assert [h["version"] for h in out] == ["v2", "v7", "v7", BASELINE, "v2"]
    # inputs are not modified
    assert hyps == utterance()
    assert ranker.fallbacks == ["Weather"]


def test_rank_ties_keep_input_order(ranker):
    a = hyp("Weather", "weather_query", 0.5, 0.5, 0.5, tag="a")
    b = hyp("Weather", "weather_query", 0.5, 0.5, 0.5, tag="b")
    c = hyp("Music", "music_play", 0.25, tag="c")  # s = 0 -> p = 0.5 > 0.125
    assert [h["tag"] for h in ranker.rank([a, b, c])] == ["c", "a", "b"]
    assert [h["tag"] for h in ranker.rank([b, a, c])] == ["c", "b", "a"]
    assert ranker.rank([]) == []


def test_baseline_ranker_scores_dc_ic_ner():
    hyps = utterance()
    out = CrossDomainRanker.baseline(["Music", "Video", "Weather"]).rank(hyps)
    scores = [h["dc"] * h["ic"] * h["ner"] for h in hyps]
    assert [h["score"] for h in out] == pytest.approx(sorted(scores, reverse=True))
    assert {h["version"] for h in out} == {BASELINE}


def test_unknown_domain_is_refused(ranker):
    with pytest.raises(UnknownDomainError, match="Books"):
        ranker.rank([*utterance(), hyp("Books", "books_read", 0.5)])
    with pytest.raises(UnknownDomainError, match="Books"):
        ranker.score_tables({"Books": hypothesis_table([hyp("Books", "books_read", 0.5)], [0])})


@pytest.mark.parametrize("domain", ["Music", "Weather"])
def test_nan_or_missing_features_are_refused(ranker, domain):
    bad = hyp(domain, "x", float("nan"))
    with pytest.raises(BadFeatures, match="NaN"):
        ranker.rank([*utterance(), bad])
    missing = hyp(domain, "x", 0.5)
    del missing["ic"]
    with pytest.raises(BadFeatures, match="ic"):
        ranker.rank([missing])
    with pytest.raises(BadFeatures, match="domain"):
        ranker.rank([{"dc": 0.5, "ic": 0.5, "ner": 0.5}])
    with pytest.raises(BadFeatures, match="NaN"):
        ranker.score_tables({domain: hypothesis_table([hyp(domain, "x", 0.5), bad], [0, 0])})


# ---- Arrow tables --------------------------------------------------------------------------

SCHEMA = hypothesis_schema(["device"])


def hypothesis_table(hyps: list[dict], utt_index: list[int]) -> pa.Table:
    rows = []
    for h, u in zip(hyps, utt_index):
        row = {"utt_id": f"u{u}", "utt_index": u, "sem_errors": 0, "sem_total": 1, "semer": 0.0, "ie": 0,
               "gold_domain": "Music", "gold_intent": "music_play", "fold": -1}
        row.update({k: v for k, v in h.items() if k in SCHEMA.names})
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def two_utterances() -> tuple[dict[str, pa.Table], list[list[dict]]]:
    u0 = utterance()
    u1 = [
        hyp("Music", "music_pause", 0.6, rank=0, device="fire_tv"),
        hyp("Video", "video_play", 0.1, rank=0, slots=[("title", "a"), ("title", "b"), ("genre", "c")]),
        hyp("Video", "video_search", 0.7, rank=1, device=None),
        hyp("Weather", "weather_query", 0.99, 0.99, 0.99),
    ]
    tables = {}
    for d in ("Music", "Video", "Weather"):
        rows = [(h, u) for u, hs in enumerate((u0, u1)) for h in hs if h["domain"] == d]
        tables[d] = hypothesis_table([h for h, _ in rows], [u for _, u in rows])
    return tables, [u0, u1]


def test_score_tables_matches_rank(ranker):
    tables, utts = two_utterances()
    ranked = ranker.score_tables(tables)
    assert ranked.domains == ["Music", "Video", "Weather"]
    assert ranked.version == ["v2", "v7", BASELINE]
    for u, hyps in enumerate(utts):
        expected = ranker.rank(hyps)
        rows = np.flatnonzero(ranked.utt_index == u)
        order = rows[np.argsort(ranked.rank[rows])]
        assert sorted(ranked.rank[rows].tolist()) == list(range(len(hyps)))
        got = [(ranked.domains[ranked.domain[r]], int(ranked.source_row[r])) for r in order]
        assert [g[0] for g in got] == [h["domain"] for h in expected]
        np.testing.assert_allclose(ranked.score[order], [h["score"] for h in expected], rtol=1e-12)
        # every score is what the hand-written model gives
        for (d, src), h in zip(got, expected):
            assert tables[d].slice(src, 1).to_pylist()[0]["intent"] == h["intent"]
            assert h["score"] == pytest.approx(expected_score(h), rel=1e-6)

    out = ranked_table(ranked, tables)
    assert {"utt_id", "rank", "domain", "intent", "slots", "score", "version"} <= set(out.column_names)
    assert out["utt_id"].to_pylist() == ["u0"] * 5 + ["u1"] * 4
    assert out["rank"].to_pylist() == [0, 1, 2, 3, 4, 0, 1, 2, 3]
    assert out["domain"].to_pylist()[:5] == ["Music", "Video", "Video", "Weather", "Music"]
    assert out["intent"].to_pylist()[:5] == [h["intent"] for h in ranker.rank(utts[0])]
    assert out["version"].to_pylist()[:5] == ["v2", "v7", "v7", BASELINE, "v2"]
    assert out["score"].to_pylist()[:5] == [h["score"] for h in ranker.rank(utts[0])]
    assert out["slots"].to_pylist()[0] == [{"type": "song", "value": "thriller"}]


def test_score_tables_on_chunked_and_sliced_tables(ranker):
    tables, _ = two_utterances()
    ref = ranker.score_tables(tables)
    chunked = {d: pa.concat_tables([t.slice(0, 1), t.slice(1)]) for d, t in tables.items()}
    got = ranker.score_tables(chunked)
    np.testing.assert_array_equal(got.score, ref.score)
    np.testing.assert_array_equal(got.rank, ref.rank)


def test_features_from_table_equals_features_from_records():
    rows = [
        hyp("Video", "video_play", 0.5, 0.9, 0.8, rank=0, slots=[("title", "a"), ("title", "b"), ("genre", "c")]),
        hyp("Video", "video_search", 1.0, 0.0, 1e-9, rank=2, device="fire_tv"),
        hyp("Video", "video_unseen", 0.3, 0.2, 0.1, rank=7, slots=[("unknown_type", "x")], device="echo_show"),
        hyp("Video", "video_play", 0.7, 0.6, 0.5, rank=1, slots=[("genre", "x")], device="a_new_device"),
        hyp("Video", "video_play", 0.2, 0.3, 0.4, rank=1, device=None),
    ]
    table = hypothesis_table(rows, [0, 0, 0, 1, 2])
    X = features_from_table(table, VIDEO)
    assert X.shape == (5, VIDEO.dim) and X.dtype == np.float32
    np.testing.assert_array_equal(X, features_from_records(rows, VIDEO))
    np.testing.assert_array_equal(X, features_from_records(table.to_pylist(), VIDEO))
    # tuples as slots give the same counts
    as_tuples = [{**r, "slots": [(s["type"], s["value"]) for s in r["slots"]]} for r in rows]
    np.testing.assert_array_equal(X, features_from_records(as_tuples, VIDEO))
    col = {n: i for i, n in enumerate(VIDEO.names)}
    assert X[0, col["slot=title"]] == 2 and X[0, col["slot=genre"]] == 1 and X[0, col["n_slots"]] == 3
    assert X[0, col["intent=video_play"]] == 1 and X[0, col["device=echo"]] == 1 and X[0, col["rank_0"]] == 1
    assert X[1, col["log_ner"]] == pytest.approx(math.log(1e-6), rel=1e-6)
    assert X[1, col["device=fire_tv"]] == 1
    # deeper ranks share the last one-hot; unseen intent, device and slot type get none
    assert X[2, col["rank_2"]] == 1
    assert X[2, [col["intent=video_play"], col["intent=video_search"]]].sum() == 0
    assert X[2, [col["slot=genre"], col["slot=title"]]].sum() == 0
    assert X[3, [col[f"device={v}"] for v in CONTEXT[0][1]]].sum() == 0
    assert X[4, [col[f"device={v}"] for v in CONTEXT[0][1]]].sum() == 0
    # a sliced table gives the rows of the slice
    np.testing.assert_array_equal(features_from_table(table.slice(1, 3), VIDEO), X[1:4])
    np.testing.assert_array_equal(features_from_records([], VIDEO), np.zeros((0, VIDEO.dim), np.float32))
    np.testing.assert_array_equal(features_from_table(table.slice(0, 0), VIDEO), np.zeros((0, VIDEO.dim), np.float32))


# ---- rerank.ranking ------------------------------------------------------------------------


def test_top_and_rank_within_utterances_by_hand():
    #            row: 0    1    2    3    4    5    6
    utt = np.array([2, 0, 2, 0, 3, 2, 0])
    score = np.array([0.5, 0.1, 0.9, 0.7, 0.3, 0.5, 0.7])
    # utterance 0: rows 3 and 6 tie (0.7): input order -> 3 first; utterance 1: no rows
    assert top_per_utterance(utt, score, 5).tolist() == [3, -1, 2, 4, -1]
    assert rank_within_utterances(utt, score).tolist() == [1, 2, 0, 0, 0, 2, 1]
    assert order_within_utterances(utt, score).tolist() == [3, 6, 1, 2, 0, 5, 4]
    # ties among all rows of an utterance keep the input order
    assert rank_within_utterances(np.zeros(4, int), np.ones(4)).tolist() == [0, 1, 2, 3]
    assert top_per_utterance(np.zeros(4, int), np.ones(4), 1).tolist() == [0]
    # empty input
    assert top_per_utterance(np.zeros(0, int), np.zeros(0), 3).tolist() == [-1, -1, -1]
    assert rank_within_utterances(np.zeros(0, int), np.zeros(0)).tolist() == []


def test_rank_within_utterances_matches_a_python_loop():
    rng = np.random.default_rng(0)
    utt = rng.integers(0, 50, 600)
    score = rng.integers(0, 5, 600) / 4.0  # many ties
    ranks = rank_within_utterances(utt, score)
    top = top_per_utterance(utt, score, 55)
    for u in range(55):
        rows = [i for i in range(600) if utt[i] == u]
        expected = sorted(rows, key=lambda i: (-score[i], i))
        assert [int(ranks[i]) for i in expected] == list(range(len(rows)))
        assert top[u] == (expected[0] if rows else -1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grouped_sort_of_many_rows_equals_lexsort(seed):
    """Above a few thousand rows the ranking sorts utterances in a padded matrix: same order as lexsort."""
    rng = np.random.default_rng(seed)
    n = 20_000
    utt = np.concatenate([np.sort(rng.integers(0, 3000, n // 4)) for _ in range(4)])  # sorted runs, as from 4 domains
    if seed == 1:
        utt = rng.permutation(utt)
    score = rng.integers(0, 8, n) / 7.0  # many ties
    if seed == 2:
        score[rng.integers(0, n, 50)] = np.nan
        score[rng.integers(0, n, 50)] = -np.inf
        score[rng.integers(0, n, 50)] = -0.0
    ref = np.lexsort((-score, utt))
    np.testing.assert_array_equal(order_within_utterances(utt, score), ref)
    ranks = rank_within_utterances(utt, score)
    sorted_utt = utt[ref]
    starts = np.flatnonzero(np.r_[True, sorted_utt[1:] != sorted_utt[:-1]])
    expected = np.empty(n, np.int64)
    expected[ref] = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    np.testing.assert_array_equal(ranks, expected)
    top = top_per_utterance(utt, score, 3005)
    np.testing.assert_array_equal(top[sorted_utt[starts]], ref[starts])
    assert (top[np.setdiff1d(np.arange(3005), utt)] == -1).all()
    # one very long utterance (the padded matrix would be mostly padding): the lexsort path, same result
    utt[: n // 2] = 7
    np.testing.assert_array_equal(order_within_utterances(utt, score), np.lexsort((-score, utt)))


def test_negative_rank_is_refused():
    bad = hyp("Video", "video_play", 0.5, rank=-1)
    with pytest.raises(BadFeatures, match="negative rank"):
        features_from_records([bad], VIDEO)
    with pytest.raises(BadFeatures, match="negative rank"):
        features_from_table(hypothesis_table([bad], [0]), VIDEO)


def test_feature_blocks_equal_the_matrix():
    from rerank.model.features import feature_blocks

    rng = np.random.default_rng(0)
    rows = [hyp("Video", rng.choice(["video_play", "video_search", "video_new"]), float(rng.random()), float(rng.random()),
                float(rng.random()), rank=int(rng.integers(0, 6)), device=rng.choice(["echo", "fire_tv", "other"]),
                slots=[(rng.choice(["title", "genre", "x"]), "v") for _ in range(int(rng.integers(0, 4)))]) for _ in range(1000)]
    table = hypothesis_table(rows, sorted(rng.integers(0, 300, 1000).tolist()))
    X = features_from_table(table, VIDEO)
    np.testing.assert_array_equal(X, features_from_records(rows, VIDEO))
    blocks = list(feature_blocks(table, VIDEO, rows=128))
    assert [lo for lo, _ in blocks] == list(range(0, 1000, 128))
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), X)


def test_rank_takes_the_import_format_unqualified_intents_and_no_ranks():
    """The n-best format of import and the service: intents as in the gold, ranks from ic*ner when absent."""
    spec = FeatureSpec("video", ("video_play", "video_search"), CONTEXT, ("title",), n_ranks=3)
    ranker = CrossDomainRanker({"video": scorer(spec, {"intent=video_play": 1.5, "rank_0": 1.0, "rank_1": 0.5}, 0.0, "v1")})
    bare = [hyp("video", "search", 0.5, 0.2, 0.5), hyp("video", "play", 0.5, 0.9, 0.9), hyp("video", "play", 0.5, 0.3, 0.1)]
    for h in bare:
        del h["rank"]
    full = [dict(h, intent="video_" + h["intent"], rank=r) for h, r in zip(bare, (1, 0, 2))]
    got, want = ranker.rank(bare), ranker.rank(full)
    assert [h["score"] for h in got] == [h["score"] for h in want]
    assert [h["domain_rank"] for h in got] == [h["domain_rank"] for h in want] == [0, 2, 1]
    assert got[0]["score"] == pytest.approx(sigmoid(1.5 + 1.0), rel=1e-6)
    mixed = [dict(bare[0], rank=0), bare[1]]
    with pytest.raises(BadFeatures, match="rank"):
        ranker.rank(mixed)


def test_many_linear_domains_scored_together_equal_one_by_one(monkeypatch):
    """With many domains, score_tables scores the linear models by lookups over one table: the same scores."""
    import rerank.merge.ranker as ranker_mod
    from benchmarks.merge_speed import linear_scorer

    rng = np.random.default_rng(5)
    scorers, tables = {}, {}
    for k in range(40):
        d = f"D{k:02d}"
        spec = FeatureSpec(d, tuple(f"{d.lower()}_i{j}" for j in range(3)), CONTEXT, ("a", "b", f"{d}_t"), n_ranks=int(rng.integers(1, 5)))
        scorers[d] = linear_scorer(spec, rng)
        hyps, utt = [], []
        for u in range(30):
            for r in range(int(rng.integers(1, 7))):
                slots = [(t, "x") for t in rng.choice(["a", "b", f"{d}_t", "zz"], int(rng.integers(0, 4)))]
                intent = f"{d.lower()}_i{int(rng.integers(0, 4))}"  # i3: unseen in training, no one-hot
                hyps.append(hyp(d, intent, float(rng.random()), float(rng.random()), float(rng.random()), rank=r, slots=slots,
                                device=str(rng.choice(["echo", "fire_tv", "car"]))))
                utt.append(u)
        tables[d] = hypothesis_table(hyps, utt)
    scorers["Weather"] = DomainScorer("Weather", BASELINE)
    tables["Weather"] = hypothesis_table([hyp("Weather", "weather_query", 0.5)], [0])
    ranker = CrossDomainRanker(scorers)
    together = ranker.score_tables(tables)
    assert ranker._many is not None  # the path under test ran
    monkeypatch.setattr(ranker_mod, "MANY_DOMAINS", 10**9)
    one_by_one = CrossDomainRanker(scorers).score_tables(tables)
    np.testing.assert_allclose(together.score, one_by_one.score, rtol=1e-12, atol=1e-15)
    assert np.array_equal(together.rank, one_by_one.rank)
