"""Cross-fitting: a train-split hypothesis comes from recognizers that never saw its utterance."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

import rerank.hypotheses.prepare as prep
from conftest import prepare_config
from rerank.corpus.load import load_corpus
from rerank.corpus.utterance import SPLITS
from rerank.hypotheses.tables import set_dir
from rerank.recognizers.base import DomainClassifier, Interpreter
from rerank.recognizers.builtin import MaxentCrfRecognizers


class _SpyDC(DomainClassifier):
    def __init__(self, inner, domain, fit_ids, utts):
        self.inner, self.domain, self.fit_ids, self.utts = inner, domain, fit_ids, utts

    def scores(self, rows):
        SpyRecognizers.log.append({"what": "dc_scores", "domain": self.domain, "fit_ids": self.fit_ids,
                                   "ids": [self.utts[int(i)].id for i in rows]})
        return self.inner.scores(rows)


class _SpyInterpreter(Interpreter):
    def __init__(self, inner, domain, fit_ids, utts):
        self.inner, self.domain, self.fit_ids, self.utts = inner, domain, fit_ids, utts

    def intents(self, rows, k):
        SpyRecognizers.log.append({"what": "intents", "domain": self.domain, "fit_ids": self.fit_ids,
                                   "ids": [self.utts[int(i)].id for i in rows]})
        return self.inner.intents(rows, k)

    def labellings(self, rows, k):
        return self.inner.labellings(rows, k)

    def labellings_with_marginals(self, rows, k):
        return self.inner.labellings_with_marginals(rows, k)


class SpyRecognizers(MaxentCrfRecognizers):
    """The built-in recognizers, recording which utterances every fit saw and every prediction was for."""

    log: list[dict] = []

    def fit_domain_classifier(self, domain, rows, seed):
        ids = frozenset(self.utterances[int(i)].id for i in rows)
        self.log.append({"what": "dc_fit", "domain": domain, "ids": ids})
        return _SpyDC(super().fit_domain_classifier(domain, rows, seed), domain, ids, self.utterances)

    def fit_interpreter(self, domain, rows, seed):
        ids = frozenset(self.utterances[int(i)].id for i in rows)
        self.log.append({"what": "fit", "domain": domain, "ids": ids})
        return _SpyInterpreter(super().fit_interpreter(domain, rows, seed), domain, ids, self.utterances)


@pytest.fixture(scope="module")
def spied(tmp_path_factory):
    """A fresh prepare, in this process, through the spy recognizers; returns what they saw."""
    SpyRecognizers.log.clear()
    out = tmp_path_factory.mktemp("noleak")
    cfg = prepare_config(out, "recognizers.n_jobs=1", f"recognizers.family._target_={__name__}.SpyRecognizers")
    manifest = prep.prepare(cfg, force=True)
    corpus = load_corpus(cfg["data"])
    split_ids = {s: [u.id for u in corpus.utterances if u.split == s] for s in SPLITS}
    split_of = {u.id: u.split for u in corpus.utterances}
    domain_of = {u.id: u.domain for u in corpus.utterances}
    return {"log": list(SpyRecognizers.log), "manifest": manifest, "split_ids": split_ids, "split_of": split_of,
            "domain_of": domain_of, "data_dir": set_dir(cfg)}


def test_the_spies_saw_every_fit_and_prediction(spied):
    k = spied["manifest"]["folds"]
    n_domains = len(spied["manifest"]["domains"])
    log = spied["log"]
    assert sum(e["what"] == "dc_fit" for e in log) == (k + 1) * n_domains
    assert sum(e["what"] == "fit" for e in log) == (k + 1) * n_domains
    # every fit's DC scored its fold's utterances once (one call per split)
    assert sum(e["what"] == "dc_scores" for e in log) == (k + 2) * n_domains


def test_no_prediction_is_for_an_utterance_its_recognizers_saw(spied):
    """DC scores and IC/NER n-bests are only ever asked of utterances outside the fit."""
    predictions = [e for e in spied["log"] if e["what"] in ("dc_scores", "intents")]
    assert any(e["ids"] for e in predictions)
    for e in predictions:
        leak = set(e["ids"]) & e["fit_ids"]
        assert not leak, f"{e['what']} of {e['domain']} on utterances its fit saw: {sorted(leak)[:5]}"


def test_train_predictions_come_from_recognizers_fitted_on_the_rest_of_train(spied):
    train_ids = set(spied["split_ids"]["train"])
    dc_train = [e for e in spied["log"] if e["what"] == "dc_scores" and {spied["split_of"][i] for i in e["ids"]} == {"train"}]
    k = spied["manifest"]["folds"]
    assert len(dc_train) == k * len(spied["manifest"]["domains"])
    seen_folds = set()
    for e in dc_train:
        # the DC saw every domain's training utterances but the fold's (its negatives included)
        assert e["fit_ids"] == frozenset(train_ids - set(e["ids"])), e["domain"]
        seen_folds.add(frozenset(e["ids"]))
    assert len(seen_folds) == k
    # the folds partition train
    assert sorted(i for f in seen_folds for i in f) == sorted(train_ids)
    for e in spied["log"]:
        if e["what"] == "intents" and e["ids"] and spied["split_of"][e["ids"][0]] == "train":
            fold = next(f for f in seen_folds if set(e["ids"]) <= f)
            mine = {i for i in train_ids - fold if spied["domain_of"][i] == e["domain"]}
            assert e["fit_ids"] == frozenset(mine), e["domain"]


def test_dev_and_test_come_from_recognizers_trained_on_all_of_train(spied):
    train_ids = frozenset(spied["split_ids"]["train"])
    for e in spied["log"]:
        if e["what"] not in ("dc_scores", "intents") or not e["ids"]:
            continue
        splits = {spied["split_of"][i] for i in e["ids"]}
        if splits == {"train"}:
            continue
        assert len(splits) == 1 and splits <= {"dev", "test"}
        if e["what"] == "dc_scores":
            assert e["fit_ids"] == train_ids
            assert e["ids"] == spied["split_ids"][splits.pop()]
        else:
            assert e["fit_ids"] == frozenset(i for i in train_ids if spied["domain_of"][i] == e["domain"])


def test_fold_column(spied):
    k = spied["manifest"]["folds"]
    folds_of = {}
    for e in spied["log"]:
        if e["what"] == "dc_scores" and e["ids"] and spied["split_of"][e["ids"][0]] == "train":
            folds_of.setdefault(frozenset(e["ids"]), None)
    for d in spied["manifest"]["domains"]:
        t = pq.read_table(spied["data_dir"] / d / "train.parquet", columns=["utt_id", "fold"])
        folds = t["fold"].to_numpy()
        assert folds.min() >= 0 and folds.max() <= k - 1, d
        # rows of one fold value come from one held-out part of train
        for f in np.unique(folds):
            ids = set(np.array(t["utt_id"].to_pylist())[folds == f].tolist())
            assert any(ids <= part for part in folds_of), (d, f)
        for s in ("dev", "test"):
            f = pq.read_table(spied["data_dir"] / d / f"{s}.parquet", columns=["fold"])["fold"].to_numpy()
            assert len(f) and np.all(f == -1), (d, s)


def test_fold_column_of_the_shared_corpus(prepared):
    k = prepared.manifest["folds"]
    for d in prepared.manifest["domains"]:
        train = pq.read_table(prepared.data_dir / d / "train.parquet", columns=["fold"])["fold"].to_numpy()
        assert set(np.unique(train).tolist()) <= set(range(k))
        for s in ("dev", "test"):
            f = pq.read_table(prepared.data_dir / d / f"{s}.parquet", columns=["fold"])["fold"].to_numpy()
            assert np.all(f == -1)


def test_in_process_build_equals_the_worker_build(spied, prepared):
    """The spied build ran in this process; the shared one on ``recognizers.n_jobs`` workers: same tables."""
    # (the settings hashes differ: the spy is another recognizer class)
    assert spied["manifest"]["rows"] == prepared.manifest["rows"]
    for d in [*prepared.manifest["domains"], "_utterances"]:
        for s in SPLITS:
            a = pq.read_table(spied["data_dir"] / d / f"{s}.parquet")
            b = pq.read_table(prepared.data_dir / d / f"{s}.parquet")
            assert a.equals(b), (d, s)
