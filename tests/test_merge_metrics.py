"""Merge evaluation figures (REFERENCE.md s.2-4) on a hand-computed two-domain example.

Five utterances, two domains A and B (scores given by hand, not by a model):

| utt | gold | total | top hypothesis (score) | errors | IE |
| --- | --- | --- | --- | --- | --- |
| 0 | A a_x {s: foo} | 2 | A a_x {s: foo} (0.9) | 0 | 0 |
| 1 | B b_y {t: 1, t: 2, r: 3} | 4 | A a_x {} (0.7) | 4 | 1 |
| 2 | A a_x {} | 1 | A a_x {} (0.72) | 0 | 0 |
| 3 | B b_y {t: z} | 2 | none | 2 | 1 |
| 4 | A a_x {s: bar} | 2 | A a_z {s: bar} (0.05) | 1 | 1 |

SemER (micro) = 7 / 11; the macro mean of per-utterance SemER would be 2.5 / 5.
"""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from rerank.hypotheses.figures import oracle_score
from rerank.hypotheses.schema import hypothesis_schema, utterance_schema
from rerank.hypotheses.tables import TableSet, TableSetWriter
from rerank.merge.evaluate import FIGURES, evaluate, load_split, top_hypotheses
from rerank.metrics.semer import interpretation_error, semantic_errors

GOLD = [
    ("A", "a_x", [("s", "foo")]),
    ("B", "b_y", [("t", "1"), ("t", "2"), ("r", "3")]),
    ("A", "a_x", []),
    ("B", "b_y", [("t", "z")]),
    ("A", "a_x", [("s", "bar")]),
]
# (utt, domain, intent, slots, score, hand-computed errors)
HYPS = [
    (0, "A", "a_x", [("s", "foo")], 0.9, 0),
    (1, "A", "a_x", [], 0.7, 4),
    (2, "A", "a_x", [], 0.72, 0),
    (4, "A", "a_z", [("s", "bar")], 0.05, 1),
    (4, "A", "a_x", [("s", "baz")], 0.04, 1),
    (0, "B", "b_y", [("t", "foo")], 0.5, 3),
    (1, "B", "b_y", [("t", "1"), ("t", "9")], 0.6, 2),
    (2, "B", "b_q", [("t", "x")], 0.1, 2),
]


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge_metrics")
    hyp_schema = hypothesis_schema(["device"])
    writer = TableSetWriter(root, "hand")
    for domain in ("A", "B"):
        rows = []
        for u, d, intent, slots, _, errors in HYPS:
            if d != domain:
                continue
            gd, gi, gs = GOLD[u]
            e, total = semantic_errors(gi, gs, intent, slots)
            assert e == errors  # the hand-computed figure agrees with REFERENCE.md s.2
            rows.append({
                "utt_id": f"u{u}", "utt_index": u, "domain": d, "rank": 0, "intent": intent,
                "slots": [{"type": t, "value": v} for t, v in slots], "n_slots": len(slots), "device": "echo",
                "dc": 0.5, "ic": 0.5, "ner": 0.5, "sem_errors": e, "sem_total": total, "semer": e / total,
                "ie": interpretation_error(gd, gi, gs, d, intent, slots), "gold_domain": gd, "gold_intent": gi, "fold": -1,
            })
        writer.write_table(f"{domain}/test.parquet", pa.Table.from_pylist(rows, schema=hyp_schema))
        for empty in ("train", "dev"):
            writer.write_table(f"{domain}/{empty}.parquet", hyp_schema.empty_table())
    gold = [{"utt_id": f"u{u}", "utt_index": u, "text": "x", "gold_domain": d, "gold_intent": i,
             "gold_slots": [{"type": t, "value": v} for t, v in s], "sem_total": 1 + len(s), "device": "echo"}
            for u, (d, i, s) in enumerate(GOLD)]
    writer.write_table("_utterances/test.parquet", pa.Table.from_pylist(gold, schema=utterance_schema(["device"])))
    for empty in ("train", "dev"):
        writer.write_table(f"_utterances/{empty}.parquet", utterance_schema(["device"]).empty_table())
    writer.commit({"domains": ["A", "B"]})
    data = load_split(TableSet.open(root / "hand"), "test", ["B", "A"])
    # rows are concatenated in sorted-domain order: A's rows, then B's
    score = np.array([h[4] for h in HYPS if h[1] == "A"] + [h[4] for h in HYPS if h[1] == "B"])
    return data, score


def test_load_split(split):
    data, _ = split
    assert data.domains == ["A", "B"]
    assert data.n_utterances == 5
    assert data.totals.tolist() == [2, 4, 1, 2, 2]
    assert data.domain_code.tolist() == [0] * 5 + [1] * 3
    assert data.utt_index.tolist() == [0, 1, 2, 4, 4, 0, 1, 2]
    assert data.sem_errors.tolist() == [0, 4, 0, 1, 1, 3, 2, 2]
    assert data.ie.tolist() == [0, 1, 0, 1, 1, 1, 1, 1]
    assert data.slots_of(np.array([0, 6])) == [[("s", "foo")], [("t", "1"), ("t", "9")]]


def test_figures_by_hand(split):
    data, score = split
    r = evaluate(data, score, calibrated=True, n_boot=0)
    o = r["overall"]
    assert o["n"] == 5
    assert o["semer"] == pytest.approx(7 / 11)
    assert o["semer"] != pytest.approx(np.mean([0, 4 / 4, 0, 2 / 2, 1 / 2]))  # micro, not macro
    assert o["irer"] == pytest.approx(3 / 5)
    assert o["domain_error"] == pytest.approx(2 / 5)  # utt 1 (A for B) and utt 3 (none)
    assert o["intent_error"] == pytest.approx(3 / 5)  # + utt 4 (a_z for a_x)
    # slot F1 of the top hypotheses: TP = 2 (foo, bar), 2 hypothesis slots, 6 gold slots
    assert o["slot_f1"] == pytest.approx(2 * 2 / (2 + 6))
    # calibration: utterance 3 has no hypothesis, hence no confidence: 4 pairs
    tops = top_hypotheses(data, score)
    conf, correct = tops.conf, tops.correct
    assert conf.tolist() == [0.9, 0.7, 0.72, 0.05]
    assert correct.tolist() == [1, 0, 1, 0]
    # bins of 1/15: 0.9 -> 13; 0.7 and 0.72 -> 10 (acc 0.5, conf 0.71); 0.05 -> 0
    assert o["ece_top"] == pytest.approx((0.1 + 2 * abs(0.5 - 0.71) + 0.05) / 4)
    assert o["mce_top"] == pytest.approx(0.21)
    assert o["brier_top"] == pytest.approx((0.1**2 + 0.7**2 + 0.28**2 + 0.05**2) / 4)
    assert o["nll_top"] == pytest.approx(-(math.log(0.9) + math.log(0.3) + math.log(0.72) + math.log(0.95)) / 4)
    # every hypothesis' score read as P(IE = 0)
    y_all = 1 - data.ie
    assert o["brier_all"] == pytest.approx(np.mean((score - y_all) ** 2))


def test_per_gold_domain(split):
    data, score = split
    per = evaluate(data, score, calibrated=True, n_boot=0)["per_domain"]
    assert sorted(per) == ["A", "B"]
    a, b = per["A"], per["B"]
    assert (a["n"], b["n"]) == (3, 2)
    assert a["semer"] == pytest.approx(1 / 5) and b["semer"] == pytest.approx(6 / 6)
    assert a["irer"] == pytest.approx(1 / 3) and b["irer"] == pytest.approx(1.0)
    assert a["domain_error"] == 0 and b["domain_error"] == 1
    assert a["intent_error"] == pytest.approx(1 / 3) and b["intent_error"] == 1
    assert a["ece_top"] == pytest.approx((0.1 + 0.28 + 0.05) / 3)
    assert b["ece_top"] == pytest.approx(0.7) and b["mce_top"] == pytest.approx(0.7)  # only utt 1 has a hypothesis
    assert a["slot_f1"] == pytest.approx(2 * 2 / (2 + 2)) and b["slot_f1"] == 0.0


def test_oracle_and_uncalibrated(split):
    data, _ = split
    r = evaluate(data, oracle_score(data.semer), calibrated=False, n_boot=0)
    o = r["overall"]
    # lowest SemER per utterance: 0, 2/4 (B), 0, none (2), 1/2
    assert o["semer"] == pytest.approx((0 + 2 + 0 + 2 + 1) / 11)
    assert o["domain_error"] == pytest.approx(1 / 5)  # only the utterance without a hypothesis
    assert all(o[k] is None for k in ("ece_top", "mce_top", "brier_top", "nll_top"))
    assert "ece_all" not in o  # nor over every hypothesis


def test_no_hypothesis_at_all(split, tmp_path):
    data, score = split
    # the same split with B's rows only: utterances 3 and 4 have none
    from dataclasses import replace

    keep = data.domain_code == 1
    only_b = replace(data, domains=["B"], tables={"B": data.tables["B"]}, utt_index=data.utt_index[keep],
                     sem_errors=data.sem_errors[keep], ie=data.ie[keep], semer=data.semer[keep],
                     domain_code=np.zeros(keep.sum(), np.int32), intent=data.intent[keep])
    o = evaluate(only_b, score[keep], calibrated=True, n_boot=0)["overall"]
    # tops: utt 0 B (3 errors), utt 1 B (2), utt 2 B (2), utt 3 none (2), utt 4 none (2)
    assert o["semer"] == pytest.approx(11 / 11)
    assert o["irer"] == 1.0 and o["domain_error"] == pytest.approx(4 / 5)
    assert o["brier_top"] == pytest.approx((0.5**2 + 0.6**2 + 0.1**2) / 3)


def test_bootstrap_intervals(split):
    data, score = split
    r = evaluate(data, score, calibrated=True, n_boot=300, seed=1)
    o = r["overall"]
    assert set(FIGURES) <= set(o)
    for key in ("semer", "irer", "ece_top"):
        lo, hi = o[f"{key}_ci"]
        assert lo <= hi
    for key in ("semer", "irer"):
        lo, hi = o[f"{key}_ci"]
        assert lo <= o[key] <= hi
    assert o["ece_top_ci"][0] >= 0
    for d in ("A", "B"):
        assert "semer_ci" in r["per_domain"][d] and "irer_ci" in r["per_domain"][d]
        lo, hi = r["per_domain"][d]["semer_ci"]
        assert lo <= r["per_domain"][d]["semer"] <= hi
    # the same seed gives the same intervals
    assert evaluate(data, score, calibrated=True, n_boot=300, seed=1)["overall"]["semer_ci"] == o["semer_ci"]
    # no resampling, no interval
    assert "semer_ci" not in evaluate(data, score, calibrated=True, n_boot=0)["overall"]


def test_bootstrap_ece_matches_the_metric(split):
    """The vectorised ECE of the bootstrap equals ``ece`` on each resample."""
    from rerank.metrics.calibration import bin_index, ece, ece_rows

    rng = np.random.default_rng(3)
    c = rng.random((6, 40))
    c[0, :3] = [0.0, 1.0, 2 / 15]
    y = (rng.random((6, 40)) < c).astype(float)
    got = ece_rows(c, y, bin_index(c))
    np.testing.assert_allclose(got, [ece(c[i], y[i]) for i in range(6)], rtol=1e-12)
