"""Evidence a domain owns: CRF token marginals, IC margin and entropy, cross-fitted OOV share and catalogue
misses, and the features built from them (tables, records, many domains at once, import, training)."""
from __future__ import annotations

import doctest
import itertools
import json

import numpy as np
import pyarrow as pa
import pytest

import rerank.hypotheses.evidence as evidence_mod
import rerank.recognizers.kbest as kbest_mod
from rerank.corpus.load import load_corpus
from rerank.hypotheses.evidence import DomainData, intent_evidence
from rerank.hypotheses.nbest import EVIDENCE, BadHypothesis, parse_hypothesis
from rerank.hypotheses.nbest_table import check_nbest_table
from rerank.hypotheses.schema import EVIDENCE_COLUMNS
from rerank.hypotheses.tables import TableSet
from rerank.model.features import features_from_table
from rerank.model.records import features_from_records
from rerank.model.spec import EVIDENCE as FAMILIES, BadFeatures, FeatureSpec, FeatureSpecMismatch, evidence_fields, spec_from_manifest
from rerank.recognizers.kbest import kbest, path_marginals, tag_marginals

ALL = tuple(FAMILIES)


def test_docstring_examples_run():
    for mod in (kbest_mod, evidence_mod):
        assert doctest.testmod(mod).failed == 0


@pytest.mark.parametrize("seed", [0, 1])
def test_tag_marginals_equal_enumeration(seed):
    rng = np.random.default_rng(seed)
    B, n, L = 2, 4, 3
    E, T = rng.normal(0, 2, (B, n, L)), rng.normal(0, 2, (L, L))
    want = np.zeros((B, n, L))
    for b in range(B):
        for y in itertools.product(range(L), repeat=n):
            w = np.exp(E[b, np.arange(n), y].sum() + sum(T[y[t], y[t + 1]] for t in range(n - 1)))
            want[b, np.arange(n), y] += w
        want[b] /= want[b, 0].sum()
    got = tag_marginals(E, T)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    paths, _ = kbest(E, T, 4)
    stats = path_marginals(got, paths)
    for b in range(B):
        for j in range(paths.shape[1]):
            picked = want[b, np.arange(n), paths[b, j]]
            assert stats[b, j].tolist() == pytest.approx([picked.min(), picked.mean()], rel=1e-9)


def test_tag_marginals_of_a_one_token_sentence_are_a_softmax():
    E = np.array([[[0.0, np.log(3.0)]]])
    np.testing.assert_allclose(tag_marginals(E, np.zeros((2, 2)))[0, 0], [0.25, 0.75])


def test_intent_margin_and_entropy_by_hand():
    margin, entropy = intent_evidence(np.array([[0.7, 0.2, 0.1], [1.0, 0.0, 0.0]]))
    assert margin.tolist() == pytest.approx([0.5, 1.0])
    assert entropy.tolist() == pytest.approx([-(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1)), 0.0])
    one = intent_evidence(np.array([[1.0]]))
    assert one[0].tolist() == [1.0] and one[1].tolist() == [0.0]


def test_domain_data_counts_unseen_tokens_and_slot_values():
    class U:
        def __init__(self, tokens, slots, intent):
            self.tokens, self.slots, self.intent = tokens, slots, intent

    data = DomainData([U(("play", "jazz"), (("genre", "jazz"),), "m_play"), U(("play", "abba"), (("artist", "abba"),), "m_play"),
                       U(("stop",), (), "m_stop")])
    assert data.oov_share(("play", "some", "jazz", "now")) == 0.5
    # counts play 2, jazz 1, abba 1, stop 1: N = 5, V = 4, k = 1/2: denominator 5 + 0.5 * 5 = 7.5
    assert data.unigram_logp(("play", "zzz")) == pytest.approx((np.log(2.5 / 7.5) + np.log(0.5 / 7.5)) / 2)
    # nearest training utterance by Jaccard of the word sets: {play, jazz} vs {play, some, jazz}: 2/3; a repeat: 1
    assert data.nearest([("play", "some", "jazz"), ("abba", "play", "play"), ("zzz",), ()]).tolist() == pytest.approx(
        [2 / 3, 1.0, 0.0, 0.0])
    # per intent (m_play, m_stop): "stop jazz" is 1/3 from "play jazz" and 1/2 from "stop"
    assert data.intents == ["m_play", "m_stop"]
    assert data.nearest_by_intent([("stop", "jazz")]).tolist() == [pytest.approx([1 / 3, 1 / 2])]
    assert DomainData([]).nearest([("play",)]).tolist() == [0.0]
    assert data.oov_share(()) == 0.0
    # the type counts: "jazz" as an artist was never seen
    assert data.catalogue_miss([("genre", "jazz"), ("artist", "jazz"), ("artist", "abba")]) == 1


def test_prepared_tables_fill_every_evidence_column(prepared):
    m = prepared.manifest
    assert m["evidence"] == {d: list(EVIDENCE_COLUMNS) for d in m["domains"]}
    tables = TableSet.open(prepared.data_dir)
    for d in m["domains"]:
        t = tables.read(d, "dev")
        if not t.num_rows:
            continue
        cols = {c: t[c].to_numpy() for c in EVIDENCE_COLUMNS}
        assert ((cols["ic_margin"] >= 0) & (cols["ic_margin"] <= 1)).all()
        assert (cols["ic_entropy"] >= 0).all()
        assert ((0 <= cols["ner_min"]) & (cols["ner_min"] <= cols["ner_mean"] + 1e-12) & (cols["ner_mean"] <= 1 + 1e-12)).all()
        assert (cols["catalogue_miss"] <= t["n_slots"].to_numpy()).all()


def test_oov_share_and_catalogue_are_cross_fitted(prepared):
    """A train row's vocabulary and catalogue are those of the fold that did not hold it (as its recognizers')."""
    cfg = prepared.cfg
    corpus = load_corpus(cfg["data"])
    train = [u for u in corpus.utterances if u.split == "train"]
    folds = int(cfg["recognizers"]["folds"])
    fold_of = np.random.default_rng(int(cfg["recognizers"].get("seed", 0))).permutation(len(train)) % folds
    tables = TableSet.open(prepared.data_dir)
    differs = 0
    for d in prepared.manifest["domains"][:3]:
        data = {k: DomainData(u for u, f in zip(train, fold_of) if u.domain == d and f != k) for k in range(folds)}
        everything = DomainData(u for u in train if u.domain == d)
        for row in tables.read(d, "train").to_pylist():
            u = train[row["utt_index"]]
            assert row["fold"] == fold_of[row["utt_index"]]
            slots = [(s["type"], s["value"]) for s in row["slots"]]
            assert row["oov_share"] == pytest.approx(data[row["fold"]].oov_share(u.tokens))
            assert row["catalogue_miss"] == data[row["fold"]].catalogue_miss(slots)
            assert row["n_tokens"] == len(u.tokens)
            assert row["unigram_logp"] == pytest.approx(data[row["fold"]].unigram_logp(u.tokens))
            assert row["neighbour_jaccard"] == pytest.approx(data[row["fold"]].nearest([u.tokens])[0])
            by_intent = data[row["fold"]].nearest_by_intent([u.tokens])[0]
            k = data[row["fold"]].intent_index.get(row["intent"])
            assert row["neighbour_intent_jaccard"] == pytest.approx(by_intent[k] if k is not None else 0.0)
            assert row["neighbour_intent_jaccard"] <= row["neighbour_jaccard"] + 1e-12
            differs += row["oov_share"] != everything.oov_share(u.tokens)
    assert differs > 0  # with the row's own utterance in the vocabulary, some values would be different


def _records(table: pa.Table) -> list[dict]:
    return [{**r, "slots": [(s["type"], s["value"]) for s in r["slots"]]} for r in table.to_pylist()]


def test_table_and_record_features_agree_with_every_family(prepared):
    m = prepared.manifest
    tables = TableSet.open(prepared.data_dir)
    d = next(x for x in m["domains"] if tables.read(x, "dev").num_rows > 5)
    spec = spec_from_manifest(m, d, list(ALL))
    assert spec.evidence == ALL
    assert spec.names[-11:] == ["dc_logit", "ic_margin", "ic_entropy", "ner_min", "ner_mean", "oov_share", "catalogue_miss",
                                "log_tokens", "unigram_logp", "neighbour_jaccard", "neighbour_intent_jaccard"]
    t = tables.read(d, "dev")
    X = features_from_table(t, spec)
    np.testing.assert_array_equal(X, features_from_records(_records(t), spec))
    dc, n_tokens = t["dc"].to_numpy(), t["n_tokens"].to_numpy()
    col = spec.names.index
    np.testing.assert_allclose(X[:, col("dc_logit")], np.log(np.clip(dc, 1e-6, 1 - 1e-6) / (1 - np.clip(dc, 1e-6, 1 - 1e-6))), rtol=1e-5)
    np.testing.assert_allclose(X[:, col("log_tokens")], np.log1p(n_tokens), rtol=1e-6)
    np.testing.assert_allclose(X[:, col("ner_min")], t["ner_min"].to_numpy(), rtol=1e-6)
    # the spec without evidence: the same leading columns
    np.testing.assert_array_equal(features_from_table(t, spec_from_manifest(m, d)), X[:, :spec.evidence_col])


def test_missing_evidence_is_refused_with_the_field_named(prepared):
    m = prepared.manifest
    tables = TableSet.open(prepared.data_dir)
    d = next(x for x in m["domains"] if tables.read(x, "dev").num_rows)
    spec = spec_from_manifest(m, d, ["ic", "oov"])
    t = tables.read(d, "dev")
    records = _records(t)
    del records[1]["oov_share"]
    with pytest.raises(BadFeatures, match=r"hypothesis 1 lacks the field 'oov_share'"):
        features_from_records(records, spec)
    records = _records(t)
    records[0]["ic_margin"] = float("nan")
    with pytest.raises(BadFeatures, match="ic_margin"):
        features_from_records(records, spec)
    nulls = t.set_column(t.column_names.index("ic_entropy"), "ic_entropy", pa.nulls(t.num_rows, pa.float64()))
    with pytest.raises(BadFeatures, match="ic_entropy"):
        features_from_table(nulls, spec)
    with pytest.raises(BadFeatures, match="oov_share"):
        features_from_table(t.drop_columns(["oov_share"]), spec)


def test_a_family_the_tables_do_not_fill_raises_or_is_skipped(prepared):
    m = json.loads(json.dumps(prepared.manifest))
    d = m["domains"][0]
    m["evidence"][d] = ["ic_margin", "ic_entropy"]
    with pytest.raises(FeatureSpecMismatch, match=r"'ner' needs the columns \['ner_min', 'ner_mean'\]"):
        spec_from_manifest(m, d, ["ic", "ner"])
    assert spec_from_manifest(m, d, ["ic", "ner", "dc_logit"], on_missing="skip").evidence == ("ic", "dc_logit")
    with pytest.raises(FeatureSpecMismatch, match="unknown evidence families"):
        evidence_fields(["nope"])


def test_a_spec_published_before_evidence_reads_as_none():
    spec = FeatureSpec("Music", ("music_play",), (("device", ("echo",)),), ("artist",), n_ranks=3, evidence=("ic", "length"))
    d = spec.to_dict()
    assert FeatureSpec.from_dict(d) == spec
    del d["evidence"]
    old = FeatureSpec.from_dict(d)
    assert old.evidence == () and old.dim == spec.dim - 3


def test_many_domains_with_evidence_score_as_one_by_one(monkeypatch):
    import rerank.merge.ranker as ranker_mod
    from benchmarks.merge_speed import linear_scorer
    from rerank.hypotheses.schema import hypothesis_schema
    from rerank.merge.ranker import CrossDomainRanker

    schema = hypothesis_schema(["device"])
    rng = np.random.default_rng(3)
    scorers, tables = {}, {}
    for k in range(36):
        d = f"D{k:02d}"
        families = tuple(f for f in ALL if rng.random() < 0.5)
        spec = FeatureSpec(d, (f"{d.lower()}_a", f"{d.lower()}_b"), (("device", ("echo", "car")),), ("t",), n_ranks=3,
                           evidence=families)
        scorers[d] = linear_scorer(spec, rng)
        rows = []
        for u in range(20):
            for r in range(int(rng.integers(1, 4))):
                n_slots = int(rng.integers(0, 3))
                rows.append({"utt_id": f"u{u}", "utt_index": u, "domain": d, "rank": r, "intent": f"{d.lower()}_a",
                             "slots": [{"type": "t", "value": "x"}] * n_slots, "n_slots": n_slots, "device": "echo",
                             "dc": float(rng.random()), "ic": float(rng.random()), "ner": float(rng.random()),
                             "ic_margin": float(rng.random()), "ic_entropy": float(rng.random() * 2),
                             "ner_min": float(rng.random()), "ner_mean": float(rng.random()),
                             "oov_share": float(rng.random()), "catalogue_miss": n_slots, "n_tokens": int(rng.integers(1, 9)),
                             "unigram_logp": -5 * float(rng.random()), "neighbour_jaccard": float(rng.random()),
                             "neighbour_intent_jaccard": float(rng.random()),
                             "sem_errors": 0, "sem_total": 1, "semer": 0.0, "ie": 0, "gold_domain": d,
                             "gold_intent": f"{d.lower()}_a", "fold": -1})
        tables[d] = pa.Table.from_pylist(rows, schema=schema)
    ranker = CrossDomainRanker(scorers)
    together = ranker.score_tables(tables)
    assert ranker._many is not None and ranker._many.evidence  # the path under test ran, with evidence
    monkeypatch.setattr(ranker_mod, "MANY_DOMAINS", 10**9)
    one_by_one = CrossDomainRanker(scorers).score_tables(tables)
    np.testing.assert_allclose(together.score, one_by_one.score, rtol=1e-12, atol=1e-15)


def test_the_n_best_format_takes_evidence_and_checks_its_range():
    base = {"domain": "Music", "intent": "play", "slots": [], "dc": 0.5, "ic": 0.5, "ner": 0.5}
    h = parse_hypothesis({**base, "ic_margin": 0.25, "n_tokens": 3}, [])
    assert h["ic_margin"] == 0.25 and h["n_tokens"] == 3 and "ner_min" not in h
    for field, bad in (("ic_margin", 1.5), ("ner_min", "high"), ("n_tokens", 2.5), ("catalogue_miss", -1), ("oov_share", float("nan"))):
        with pytest.raises(BadHypothesis, match=field) as err:
            parse_hypothesis({**base, field: bad}, [])
        assert err.value.field == field
    assert tuple(EVIDENCE) == EVIDENCE_COLUMNS  # one list of evidence columns in the format and in the tables
    table = pa.table({"utt": [0, 0], "domain": ["Music"] * 2, "intent": ["play"] * 2, "slots": [[], []],
                      "dc": [0.5, 0.4], "ic": [0.5, 0.5], "ner": [0.5, 0.5], "ner_mean": [0.9, 1.2]})
    with pytest.raises(BadHypothesis, match=r"column 'ner_mean': row 1"):
        check_nbest_table(table, [])


def test_the_service_checks_a_version_with_evidence_on_a_probe_of_every_field():
    """A version with evidence passes the service's check (its spec against the tables', which have none)."""
    import dataclasses

    from benchmarks.merge_speed import linear_scorer
    from rerank.serving.live import PROBE_EVIDENCE, check_scorer, probe_records

    assert all(set(p) == set(EVIDENCE_COLUMNS) for p in PROBE_EVIDENCE)
    for p in PROBE_EVIDENCE:
        parse_hypothesis({"domain": "d", "intent": "i", "slots": [], "dc": 0.5, "ic": 0.5, "ner": 0.5, **p}, [])  # in range
    tables_spec = FeatureSpec("Music", ("music_play", "music_stop"), (("device", ("echo",)),), ("artist",), n_ranks=3)
    scorer = linear_scorer(dataclasses.replace(tables_spec, evidence=ALL), np.random.default_rng(0))
    check_scorer(scorer, tables_spec)
    assert len(probe_records(scorer.spec)) > 0
    with pytest.raises(Exception, match="intents"):
        check_scorer(scorer, dataclasses.replace(tables_spec, intents=("music_play",)))


@pytest.mark.parametrize("with_mlp", [False, True])
def test_rank_scores_linear_domains_together_as_one_by_one(monkeypatch, with_mlp):
    """rank() scores the linear models of an utterance's domains by lookups: the same scores as one matrix per domain."""
    import torch

    import rerank.merge.ranker as ranker_mod
    from benchmarks.merge_speed import hwu64_specs, linear_scorer, random_utterance
    from rerank.merge.ranker import CrossDomainRanker, DomainScorer
    from rerank.training.model import DomainReranker

    rng = np.random.default_rng(11)
    specs = hwu64_specs(rng)
    # families differ between domains (and some have none); intents named as in the gold file in some dicts
    specs = [FeatureSpec(s.domain, s.intents, s.context, s.slot_types, n_ranks=int(rng.integers(1, 6)),
                         evidence=tuple(f for f in ALL if rng.random() < 0.6)) for s in specs]
    scorers = {s.domain: linear_scorer(s, rng) for s in specs}
    if with_mlp:
        s = specs[0]
        model = DomainReranker(s, kind="mlp", hidden=4)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.from_numpy(rng.normal(0, 0.3, tuple(p.shape)).astype(np.float32)))
        scorers[s.domain] = DomainScorer(s.domain, "v9", s, model.numpy_scorer(), "bench")
    together = CrossDomainRanker(scorers, "bench")
    utterances = []
    for _ in range(30):
        hyps = random_utterance(specs, rng, per_domain=int(rng.integers(1, 4)))
        for h in hyps[::4]:
            h["intent"] = h["intent"].split("_", 1)[1]  # named as in the gold file: read as domain-qualified
        if rng.random() < 0.5:
            for h in hyps:
                del h["rank"]  # ranked by ic * ner
        utterances.append(hyps)
    got = [together.rank(h) for h in utterances]
    assert getattr(together, "_many", None) is not None  # the path under test ran
    monkeypatch.setattr(ranker_mod, "RANK_TOGETHER", 10**9)
    one_by_one = CrossDomainRanker(scorers, "bench")
    for g, hyps in zip(got, utterances):
        want = one_by_one.rank(hyps)
        assert [(h["domain"], h["intent"], h["domain_rank"]) for h in g] == [(h["domain"], h["intent"], h["domain_rank"]) for h in want]
        np.testing.assert_allclose([h["score"] for h in g], [h["score"] for h in want], rtol=1e-12, atol=1e-14)
    monkeypatch.setattr(ranker_mod, "RANK_TOGETHER", 2)
    bad = [dict(h) for h in utterances[0]]
    victim = next(h for h in bad if together.scorers[h["domain"]].spec.evidence and h["domain"] != specs[0].domain)
    field = evidence_fields(together.scorers[victim["domain"]].spec.evidence)[0]
    del victim[field]
    with pytest.raises(BadFeatures, match=rf"{victim['domain']}: hypothesis \d+ lacks the field '{field}'"):
        together.rank(bad)


def test_a_spec_refuses_repeated_families_and_pickles_to_an_equal_spec():
    import pickle

    with pytest.raises(FeatureSpecMismatch, match="repeat"):
        FeatureSpec("Music", ("music_play",), (), (), evidence=("ic", "ic"))
    spec = FeatureSpec("Music", ("music_play",), (), (), evidence=["ic", "oov"])  # a list (from a config) is kept as a tuple
    assert spec.evidence == ("ic", "oov") and hash(spec) == hash(spec)
    assert "_hash" not in pickle.loads(pickle.dumps(spec)).__dict__ and pickle.loads(pickle.dumps(spec)) == spec
    assert FeatureSpec.from_dict({**spec.to_dict(), "version": 1}) == spec  # a version 1 spec is read
    with pytest.raises(FeatureSpecMismatch, match="version 3"):
        FeatureSpec.from_dict({**spec.to_dict(), "version": 3})


@pytest.mark.parametrize("field, value", [("n_tokens", 40000), ("n_tokens", 10**400), ("ic_entropy", float("inf")),
                                          ("unigram_logp", float("-inf")), ("dc", 10**400)])
def test_out_of_range_and_huge_values_are_refused_naming_the_field(field, value):
    base = {"domain": "Music", "intent": "play", "slots": [], "dc": 0.5, "ic": 0.5, "ner": 0.5}
    with pytest.raises(BadHypothesis) as err:
        parse_hypothesis({**base, field: value}, [])
    assert err.value.field == field


def test_rank_names_the_hypothesis_of_the_request_that_lacks_evidence():
    from benchmarks.merge_speed import hwu64_specs, linear_scorer, random_utterance
    from rerank.merge.ranker import CrossDomainRanker

    rng = np.random.default_rng(2)
    specs = hwu64_specs(rng, ALL)[:3]
    ranker = CrossDomainRanker({s.domain: linear_scorer(s, rng) for s in specs}, "bench").prepare()
    hyps = random_utterance(specs, rng, per_domain=2)
    del hyps[3]["ner_min"]
    with pytest.raises(BadFeatures, match=rf"{hyps[3]['domain']}: hypothesis 3 lacks the field 'ner_min'") as err:
        ranker.rank(hyps)
    assert err.value.field == "ner_min"
    hyps = random_utterance(specs, rng, per_domain=2)
    hyps[4]["oov_share"] = [0.5]  # not a number
    with pytest.raises(BadFeatures, match="oov_share"):
        ranker.rank(hyps)


def test_tables_built_with_other_columns_are_not_reused(prepared, monkeypatch):
    """prepare's cache key holds the table columns: a rerank that writes another column rebuilds."""
    import rerank.hypotheses.prepare as prep

    before = prep.settings_hash(prepared.cfg)
    monkeypatch.setattr(prep, "HYPOTHESIS_COLUMNS", prep.HYPOTHESIS_COLUMNS[:-1])
    assert prep.settings_hash(prepared.cfg) != before
