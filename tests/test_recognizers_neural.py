"""Neural recognizers (``recognizers=neural``) and the mixed assistant (``recognizers=mixed``).

Small models on the tiny synthetic corpus: the tables through ``prepare``, determinism (in a
process and across 1 and 2 worker processes), exact CRF probabilities against an exhaustive
enumeration, the k-best order, IC probabilities, and which family the mixed one gives a domain.
"""
from __future__ import annotations

import itertools
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from benchmarks.prepare_speed import same_tables
from conftest import compose_config, prepare_config
from rerank.corpus.annotation import tags_to_slots
from rerank.corpus.load import load_corpus
from rerank.hypotheses.prepare import prepare
from rerank.hypotheses.tables import TableSet, set_dir
from rerank.recognizers.mixed import MixedRecognizers
from rerank.recognizers.neural import NeuralRecognizers

# small and quick: the tests check the plumbing and the maths, not the accuracy
SMALL = {"encoder.hidden": 32, "encoder.word_dim": 32, "dc.epochs": 4, "dc.lr": 0.01, "dc.negatives_per_epoch": 200,
         "interpreter.epochs": 8}
NEURAL = ("recognizers=neural", *(f"recognizers.family.{k}={v}" for k, v in SMALL.items()))


@pytest.fixture(scope="module")
def fitted():
    """The tiny corpus, a set-up neural family, and Music's DC and interpreter fitted on all of train."""
    cfg = prepare_config("unused", *NEURAL)
    corpus = load_corpus(cfg["data"])
    family = instantiate(cfg["recognizers"]["family"], _convert_="all")
    family.setup(corpus.utterances)
    utts = corpus.utterances
    split = np.array([u.split for u in utts])
    train, dev = np.flatnonzero(split == "train"), np.flatnonzero(split == "dev")
    own = train[family.is_domain(train, "Music")]
    return SimpleNamespace(cfg=cfg, family=family, utts=utts, train=train, dev=dev, own=own,
                           dc=family.fit_domain_classifier("Music", train, 0),
                           interpreter=family.fit_interpreter("Music", own, 0))


# --------------------------------------------------------------------------- through prepare


def test_neural_tables_through_prepare_are_the_same_with_1_and_2_processes(tmp_path):
    built = {}
    for n_jobs in (1, 2):
        cfg = prepare_config(tmp_path / f"j{n_jobs}", *NEURAL, f"recognizers.n_jobs={n_jobs}")
        manifest = prepare(cfg)
        built[n_jobs] = set_dir(cfg)
    assert same_tables(built[1], built[2]) == []
    summary = json.loads((built[1] / "summary.json").read_text())
    per_domain = summary["recognizers_dev"]["per_domain"]
    assert per_domain and {v["profile"] for v in per_domain.values()} == {"neural-bilstm"}
    tables = TableSet.open(built[1])
    for d in manifest["domains"]:
        t = tables.read(d, "dev")
        assert t.num_rows > 0, d
        for c in ("dc", "ic", "ner"):
            v = t[c].to_numpy()
            assert np.all((v >= 0) & (v <= 1)), (d, c)
    # even these tiny models learn something: the gold domain has the highest dc for most of dev
    assert summary["recognizers_dev"]["overall"]["dc_accuracy"] > 0.5
    assert summary["splits"]["test"]["oracle"]["semer"] < summary["splits"]["test"]["baseline"]["semer"]


def test_a_fit_is_deterministic(fitted):
    f = fitted
    again_dc = f.family.fit_domain_classifier("Music", f.train, 0)
    np.testing.assert_array_equal(again_dc.scores(f.dev), f.dc.scores(f.dev))
    again = f.family.fit_interpreter("Music", f.own, 0)
    rows = f.dev[f.family.is_domain(f.dev, "Music")]
    assert again.labellings(rows, 5) == f.interpreter.labellings(rows, 5)
    np.testing.assert_array_equal(again.intents(rows, 3)[1], f.interpreter.intents(rows, 3)[1])
    # and the seed matters
    other = f.family.fit_domain_classifier("Music", f.train, 1)
    assert not np.array_equal(other.scores(f.dev), f.dc.scores(f.dev))


# --------------------------------------------------------------------------- IC and NER


def test_intent_probabilities_sum_to_one_best_first(fitted):
    it = fitted.interpreter
    n_intents = len(it.intent_names)
    assert n_intents > 1
    names, p = it.intents(fitted.dev, n_intents + 3)
    assert names.shape == p.shape == (len(fitted.dev), n_intents)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
    assert np.all(np.diff(p, axis=1) <= 0)
    assert all(set(row) == set(it.intent_names) for row in names)
    top, top_p = it.intents(fitted.dev, 2)
    np.testing.assert_array_equal(top, names[:, :2])
    np.testing.assert_array_equal(top_p, p[:, :2])


def test_kbest_labellings_are_best_first_and_sum_to_at_most_one(fitted):
    it = fitted.interpreter
    assert len(it.tag_names) > 2
    out = it.labellings(fitted.dev, 5)
    assert len(out) == len(fitted.dev)
    for lab in out:
        p = np.array([q for _, q in lab])
        assert 1 <= len(p) <= 5
        assert np.all(np.diff(p) <= 1e-12), p
        assert np.all(p >= 0) and p.sum() <= 1 + 1e-9


def _enumerate(model, emissions: torch.Tensor) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """Every tag sequence of one utterance and its probability, scored from the model's raw parameters."""
    E = emissions.double().numpy()
    T, start, end = (x.detach().double().numpy() for x in (model.transitions, model.start, model.end))
    n, L = E.shape
    seqs = list(itertools.product(range(L), repeat=n))
    scores = np.array([start[y[0]] + end[y[-1]] + sum(E[t, y[t]] for t in range(n))
                       + sum(T[y[t - 1], y[t]] for t in range(1, n)) for y in seqs])
    m = scores.max()
    return seqs, np.exp(scores - m) / np.exp(scores - m).sum()


def test_crf_probabilities_equal_an_exhaustive_enumeration(fitted):
    it, utts = fitted.interpreter, fitted.utts
    L = len(it.tag_names)
    # a short utterance with slots, so that L**n stays small
    row = next(i for i in fitted.dev if 2 <= len(utts[i].tokens) <= 3 and L ** len(utts[i].tokens) <= 2000)
    n = len(utts[row].tokens)
    with torch.inference_mode():
        _, em = it.model(it.table.batch(np.array([row]), it.vocab))
    seqs, probs = _enumerate(it.model, em[0, :n])
    assert abs(probs.sum() - 1) < 1e-12
    # all L**n labellings from the exact k-best: the same probabilities, best first, summing to 1
    lab = it.labellings(np.array([row]), L ** n)[0]
    got = np.array([q for _, q in lab])
    np.testing.assert_allclose(got, np.sort(probs)[::-1], atol=1e-6)
    assert abs(got.sum() - 1) < 1e-5
    best = seqs[int(np.argmax(probs))]
    assert lab[0][0] == tags_to_slots(utts[row].tokens, [str(it.tag_names[j]) for j in best])
    # and the training loss is the exact -log P of the gold labelling
    gold = [list(it.tag_names).index(t) for t in utts[row].tags]
    with torch.no_grad():
        nll = it.model.crf_nll(em[:, :n].clone(), torch.tensor([gold]), torch.ones(1, n, dtype=torch.bool))
    assert abs(float(nll[0]) + np.log(probs[seqs.index(tuple(gold))])) < 1e-4


def test_settings_hold_every_hyper_parameter():
    fam = NeuralRecognizers(encoder={"hidden": 48}, dc={"epochs": 3}, dc_max_negatives=500)
    s = fam.settings()
    assert s["encoder"]["hidden"] == 48 and s["encoder"]["kind"] == "bilstm"
    assert s["dc"] == {"epochs": 3, "batch_size": 64, "lr": 0.003, "negatives_per_epoch": None}
    assert s["dc_max_negatives"] == 500 and set(s["interpreter"]) == {"epochs", "batch_size", "lr"}
    assert fam.describe("Music") == "neural-bilstm"
    with pytest.raises(ValueError, match="unknown settings"):
        NeuralRecognizers(dc={"epoch": 3})
    with pytest.raises(ValueError, match="encoder.kind"):
        NeuralRecognizers(encoder={"kind": "transformer"})


# --------------------------------------------------------------------------- the mixed assistant


def test_mixed_gives_pinned_domains_neural_and_the_others_maxent(tmp_path):
    small = [f"recognizers.family.families.neural.{k}={v}" for k, v in SMALL.items()]
    cfg = prepare_config(tmp_path, "recognizers=mixed", "recognizers.family.shares.neural=0",
                         "++recognizers.family.domains.Music=neural", "++recognizers.family.domains.Video=neural", *small)
    manifest = prepare(cfg)
    per_domain = json.loads((set_dir(cfg) / "summary.json").read_text())["recognizers_dev"]["per_domain"]
    assert {"Music", "Video"} <= set(per_domain) and len(per_domain) >= 4
    for d, fig in per_domain.items():
        if d in ("Music", "Video"):
            assert fig["profile"] == "neural:neural-bilstm", d
        else:
            assert fig["profile"].startswith("maxent:") and fig["profile"] != "maxent:neural-bilstm", (d, fig["profile"])
    assert set(manifest["domains"]) >= {"Music", "Video", "Books"}


def test_mixed_shares_are_a_stable_hash_of_the_name():
    fams = {"maxent": NeuralRecognizers(), "neural": NeuralRecognizers(encoder={"kind": "cnn"})}
    names = [f"domain{i}" for i in range(200)]
    half = MixedRecognizers(fams, default="maxent", shares={"neural": 0.5})
    picks = [half.family_of(d) for d in names]
    assert 70 < picks.count("neural") < 130
    assert picks == [MixedRecognizers(fams, default="maxent", shares={"neural": 0.5}).family_of(d) for d in names]
    assert {MixedRecognizers(fams, default="maxent", shares={"neural": 1.0}).family_of(d) for d in names} == {"neural"}
    pinned = MixedRecognizers(fams, default="maxent", shares={"neural": 1.0}, domains={"domain3": "maxent"})
    assert pinned.family_of("domain3") == "maxent" and pinned.family_of("domain4") == "neural"
    assert pinned.describe("domain4") == "neural:neural-cnn"
    with pytest.raises(ValueError, match="families"):
        MixedRecognizers(fams, default="rules")


def test_mixed_sets_up_every_family_with_the_same_domain_numbering(fitted):
    fams = {"a": NeuralRecognizers(), "b": NeuralRecognizers(encoder={"kind": "cnn"})}
    mixed = MixedRecognizers(fams, default="a", domains={"Music": "b"})
    mixed.setup(fitted.utts)
    for fam in fams.values():
        assert fam.domain_names == mixed.domain_names == fitted.family.domain_names
        np.testing.assert_array_equal(fam.domain_codes, mixed.domain_codes)
        assert fam.table is not None


def test_mixed_config_holds_the_default_and_neural_families():
    mixed = compose_config("prepare", ["recognizers=mixed"])["recognizers"]["family"]["families"]
    assert mixed["maxent"] == compose_config("prepare", [])["recognizers"]["family"]
    assert mixed["neural"] == compose_config("prepare", ["recognizers=neural"])["recognizers"]["family"]
