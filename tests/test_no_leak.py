"""Cross-fitting: a train-split hypothesis comes from recognizers that never saw its utterance."""
from __future__ import annotations

import inspect
from collections import defaultdict

import numpy as np
import pyarrow.parquet as pq
import pytest

import rerank.hypotheses.prepare as prep
from conftest import prepare_config
from rerank.corpus.load import load_corpus
from rerank.corpus.utterance import SPLITS


@pytest.fixture(scope="module")
def spied(tmp_path_factory):
    """Run a fresh prepare with ``train_domain`` and ``emit`` wrapped; returns what they saw."""
    real_train, real_emit = prep.train_domain, prep.emit
    train_sig, emit_sig = inspect.signature(real_train), inspect.signature(real_emit)
    fits: list[dict] = []
    emits: list[dict] = []

    def train_domain(*args, **kwargs):
        a = train_sig.bind(*args, **kwargs).arguments
        ids = frozenset(a["utts"][int(i)].id for i in a["rows"])
        rec = real_train(*args, **kwargs)
        rec._test_train_ids = ids  # which utterances this fit saw
        fits.append({"domain": a["domain"], "ids": ids})
        return rec

    def emit(*args, **kwargs):
        a = emit_sig.bind(*args, **kwargs).arguments
        utts, rows, recs = a["utts"], a["rows"], a["recognizers"]
        emits.append({
            "fold": a["fold"],
            "splits": {utts[int(i)].split for i in rows},
            "ids": [utts[int(i)].id for i in rows],
            "utt_index": [int(x) for x in a["utt_index"]],
            "train_ids": {d: recs[d]._test_train_ids for d in a["domains"]},
        })
        return real_emit(*args, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(prep, "train_domain", train_domain)
    mp.setattr(prep, "emit", emit)
    try:
        out = tmp_path_factory.mktemp("noleak")
        cfg = prepare_config(out)
        manifest = prep.prepare(cfg, force=True)
    finally:
        mp.undo()
    corpus = load_corpus(cfg["data"])
    split_ids = {s: [u.id for u in corpus.utterances if u.split == s] for s in SPLITS}
    return {"fits": fits, "emits": emits, "manifest": manifest, "split_ids": split_ids,
            "data_dir": prep.data_dir(out, manifest["corpus"])}


def test_the_spies_saw_every_fit_and_emit(spied):
    k = spied["manifest"]["folds"]
    n_domains = len(spied["manifest"]["domains"])
    assert len(spied["fits"]) == (k + 1) * n_domains
    assert len(spied["emits"]) == k + 2  # one per fold, then dev and test


def test_train_hypotheses_come_from_recognizers_that_never_saw_the_utterance(spied):
    train_emits = [e for e in spied["emits"] if e["splits"] == {"train"}]
    k = spied["manifest"]["folds"]
    assert sorted(e["fold"] for e in train_emits) == list(range(k))
    train_ids = set(spied["split_ids"]["train"])
    for e in train_emits:
        emitted = set(e["ids"])
        assert emitted, e["fold"]
        for d, seen in e["train_ids"].items():
            assert not (emitted & seen), f"fold {e['fold']}: {d}'s recognizers saw {sorted(emitted & seen)[:5]}"
            # the fold's recognizers saw exactly the rest of train
            assert seen == train_ids - emitted, (e["fold"], d)


def test_every_train_utterance_is_emitted_for_by_exactly_one_fold(spied):
    train_emits = [e for e in spied["emits"] if e["splits"] == {"train"}]
    count: dict[str, int] = defaultdict(int)
    for e in train_emits:
        for i in e["ids"]:
            count[i] += 1
    assert set(count) == set(spied["split_ids"]["train"])
    assert set(count.values()) == {1}
    # utt_index is the position in the train split (the _utterances join key)
    position = {u: i for i, u in enumerate(spied["split_ids"]["train"])}
    for e in train_emits:
        assert e["utt_index"] == [position[i] for i in e["ids"]]


def test_dev_and_test_come_from_recognizers_trained_on_all_of_train(spied):
    train_ids = frozenset(spied["split_ids"]["train"])
    for s in ("dev", "test"):
        [e] = [e for e in spied["emits"] if e["splits"] == {s}]
        assert e["fold"] == -1
        assert sorted(e["ids"]) == sorted(spied["split_ids"][s])
        assert e["utt_index"] == list(range(len(e["ids"])))
        for d, seen in e["train_ids"].items():
            assert seen == train_ids, (s, d)


def test_fold_column(spied):
    k = spied["manifest"]["folds"]
    fold_of = {i: e["fold"] for e in spied["emits"] if e["splits"] == {"train"} for i in e["ids"]}
    for d in spied["manifest"]["domains"]:
        t = pq.read_table(spied["data_dir"] / d / "train.parquet", columns=["utt_id", "fold"])
        folds = t["fold"].to_numpy()
        assert folds.min() >= 0 and folds.max() <= k - 1, d
        # the fold of each row is that of the recognizers which emitted it
        assert [fold_of[u] for u in t["utt_id"].to_pylist()] == folds.tolist(), d
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
    assert spied["manifest"]["settings_hash"] == prepared.manifest["settings_hash"]
    assert spied["manifest"]["rows"] == prepared.manifest["rows"]
    for d in [*prepared.manifest["domains"], "_utterances"]:
        for s in SPLITS:
            a = pq.read_table(spied["data_dir"] / d / f"{s}.parquet")
            b = pq.read_table(prepared.data_dir / d / f"{s}.parquet")
            assert a.equals(b), (d, s)
