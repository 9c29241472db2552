"""Evidence without burden: a version carries its domain's evidence resources and computes the text-derived
families from a request's text; the tables hold the same numbers; import computes them for an n-best without them."""
from __future__ import annotations

import json

import httpx
import numpy as np
import pyarrow as pa
import pytest

from conftest import REPO, compose_config
from rerank.corpus.utterance import Utterance
from rerank.hypotheses.evidence import TEXT_FIELDS, BadResources, DomainData
from rerank.hypotheses.export import export_nbest
from rerank.hypotheses.fields import FIELDS, NLU_FIELDS
from rerank.hypotheses.nbest_import import import_nbest
from rerank.hypotheses.schema import EVIDENCE_COLUMNS
from rerank.hypotheses.tables import TableSet
from rerank.model.registry import Registry, RegistryError
from rerank.model.text_evidence import TextIndex
from rerank.serving.process import running_service
from test_serve import _arrow

HWU64 = REPO.parent / "shared" / "data" / "hwu64"


def _utt(tokens: str, intent: str, slots=(), domain="m") -> Utterance:
    return Utterance("x", tuple(tokens.split()), ("O",) * len(tokens.split()), domain, intent, tuple(slots), "train")


def _data(domain: str = "m") -> DomainData:
    return DomainData([_utt("play some jazz", f"{domain}_play", [("genre", "jazz")], domain),
                       _utt("play abba now", f"{domain}_play", [("artist", "abba")], domain),
                       _utt("stop the music", f"{domain}_stop", (), domain), _utt("stop", f"{domain}_stop", (), domain)])


def test_resources_are_data_and_give_the_same_evidence():
    data = _data()
    back = DomainData.from_json(json.loads(json.dumps(data.to_json())))
    tokens = [("play", "jazz", "please"), ("stop", "stop"), ("zzz",), ()]
    np.testing.assert_array_equal(back.nearest_by_intent(tokens), data.nearest_by_intent(tokens))
    for t in tokens:
        assert back.utterance_evidence(t) == data.utterance_evidence(t)
        np.testing.assert_array_equal(data.nearest_one(t), data.nearest_by_intent([t])[0])  # bit for bit
    assert back.catalogue_miss([("genre", "Jazz "), ("genre", "rock")]) == 1  # one slot normalisation
    bad = data.to_json()
    bad["utterances"]["m_play"].append("unknown words")
    with pytest.raises(BadResources, match="'utterances'"):
        DomainData.from_json(bad)
    with pytest.raises(BadResources, match="'vocabulary'"):
        DomainData.from_json({**data.to_json(), "vocabulary": {"play": -1}})


def test_the_index_of_many_domains_gives_each_domains_numbers():
    a, b = _data("a"), DomainData([_utt("what is the weather", "b_ask", [("place", "paris")], "b")])
    index = TextIndex({"a": a, "b": b})
    tokens = ("play", "the", "weather", "weather")
    hyps = [("a", "a_play", [("genre", "jazz")]), ("b", "b_ask", [("place", "rome")]), ("a", "a_never", []), ("c", "c_x", [])]
    got = index.values(tokens, [h[0] for h in hyps], [h[1] for h in hyps], [h[2] for h in hyps])
    for row, (d, intent, slots) in zip(got, hyps):
        if d == "c":
            assert np.isnan(row).all()  # a domain without resources: not computed
            continue
        data = {"a": a, "b": b}[d]
        by_intent = data.nearest_one(tokens)
        want = {**data.utterance_evidence(tokens, by_intent), **data.hypothesis_evidence(intent, slots, by_intent)}
        np.testing.assert_allclose(row, [want[f] for f in TEXT_FIELDS], rtol=0, atol=1e-12)
    assert got[2, TEXT_FIELDS.index("neighbour_intent_jaccard")] == 0.0  # an intent the domain never had


@pytest.mark.parametrize("few, dense", [(0.0, 10**9), (1.0, 10**9), (0.0, 0), (1.0, 0)])
def test_every_path_of_the_index_gives_the_domains_numbers(few, dense, monkeypatch):
    """The all-domains and few-domains neighbour paths, the dense and sparse count tables: DomainData's numbers."""
    monkeypatch.setattr(TextIndex, "FEW", few)
    monkeypatch.setattr(TextIndex, "DENSE_MAX", dense)
    rng = np.random.default_rng(7)
    words = [f"w{i}" for i in range(30)]
    domains = {}
    for d in ("a", "b", "c", "d"):
        utts = [_utt(" ".join(rng.choice(words, int(rng.integers(1, 6)))), f"{d}_i{int(rng.integers(3))}",
                     [("t", str(rng.choice(words)))], d) for _ in range(int(rng.integers(5, 15)))]
        domains[d] = DomainData(utts)
    domains["empty"] = DomainData([])
    index = TextIndex(domains)
    for _ in range(30):
        tokens = tuple(rng.choice(words + ["zzz"], int(rng.integers(0, 8))))
        hyps = [(d, f"{d}_i{int(rng.integers(4))}", [{"type": "t", "value": str(rng.choice(words)).upper()}])
                for d in rng.choice([*domains, "other"], int(rng.integers(1, 6)))]
        got = index.values(tokens, [h[0] for h in hyps], [h[1] for h in hyps], [h[2] for h in hyps])
        for row, (d, intent, slots) in zip(got, hyps):
            if d not in domains:
                assert np.isnan(row).all()
                continue
            data = domains[d]
            by_intent = data.nearest_one(tokens)
            pairs = [(s["type"], s["value"]) for s in slots]
            want = {**data.utterance_evidence(tokens, by_intent), **data.hypothesis_evidence(intent, pairs, by_intent)}
            np.testing.assert_allclose(row, [want[f] for f in TEXT_FIELDS], rtol=0, atol=1e-12)


def test_a_version_carries_its_resources_and_refuses_changed_ones(live_world, tmp_path):
    registry = live_world.registry_copy(tmp_path / "registry")
    reg = Registry(registry)
    pub = reg.load("synthetic", live_world.evidence_domain, "v1")
    assert pub.resources is not None and pub.request_fields == ["domain", "intent", "slots", "dc", "ic", "ner", "text"]
    tables = TableSet.open(live_world.output_dir / "data" / "synthetic")
    assert pub.resources.to_json() == tables.resources(live_world.evidence_domain)
    from rerank.merge.ranker import CrossDomainRanker

    # a ranker of the same resources (a release that moved no domain's resources) reuses the text index
    first, again = (CrossDomainRanker.from_registry(reg, "synthetic").prepare() for _ in range(2))
    assert first._index is again._index and live_world.evidence_domain in first._index
    other = next(d for d in live_world.manifest["domains"] if d != live_world.evidence_domain)
    assert reg.load("synthetic", other, "v1").resources is None  # features=base: nothing to compute
    path = pub.path / "evidence.json"
    path.chmod(0o644)
    path.write_text(path.read_text().replace('"format":1', '"format":1 '))
    with pytest.raises(RegistryError, match="checksum"):
        reg.load("synthetic", live_world.evidence_domain, "v1")


@pytest.fixture(scope="module")
def hwu64_world(tmp_path_factory):
    """HWU64 prepared, every domain's default model trained and live (the text-derived families)."""
    from rerank.hypotheses.prepare import prepare
    from rerank.training.train import train

    out = tmp_path_factory.mktemp("hwu64_text")
    cfg = compose_config("prepare", [f"paths.output_dir={out}", "data=hwu64", f"data.path={HWU64}"])
    manifest = prepare(cfg)
    for d in manifest["domains"]:
        train(compose_config("train", [f"paths.output_dir={out}", "data=hwu64", f"data.path={HWU64}", f"domain={d}",
                                       "loss=crossentropy", "threads=1", "~logger", f"paths.log_dir={out / 'logs'}"]))
    Registry(out / "registry").release("hwu64", {d: "v1" for d in manifest["domains"]},
                                       {"action": "promote", "verdict": "test fixture", "forced": True})
    return out, manifest


def test_every_hwu64_test_utterance_scores_the_same_with_the_tables_evidence_or_with_only_the_text(hwu64_world):
    out, manifest = hwu64_world
    tables = TableSet.open(out / "data" / "hwu64")
    gold = tables.read_utterances("test").to_pylist()
    by_utt: dict[int, list[dict]] = {}
    for d in manifest["domains"]:
        for row in tables.read(d, "test").to_pylist():
            row["slots"] = [{"type": s["type"], "value": s["value"]} for s in row["slots"]]
            by_utt.setdefault(row["utt_index"], []).append(row)
    base = ("domain", "intent", "slots", "dc", "ic", "ner", "rank")
    with running_service([f"paths.output_dir={out}", f"paths.registry_dir={out / 'registry'}", "data=hwu64",
                          f"data.path={HWU64}", f"paths.log_dir={out / 'logs'}"], out / "serve.log") as (port, _, _):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            worst, n = 0.0, 0
            for u, rows in sorted(by_utt.items()):
                full = [{k: r[k] for k in (*base, *EVIDENCE_COLUMNS)} for r in rows]
                bare = [{k: r[k] for k in base} for r in rows]
                a = client.post("/rank", json={"utt_id": u, "hypotheses": full})
                b = client.post("/rank", json={"utt_id": u, "text": gold[u]["text"], "hypotheses": bare})
                assert a.status_code == 200 and b.status_code == 200, (a.text, b.text)
                key = lambda h: (h["domain"], h["intent"], json.dumps(h["slots"]), h["domain_rank"])  # noqa: E731
                sa = {key(h): h["score"] for h in a.json()["hypotheses"]}
                sb = {key(h): h["score"] for h in b.json()["hypotheses"]}
                assert sa.keys() == sb.keys()
                worst = max(worst, max(abs(sa[k] - sb[k]) for k in sa))
                n += 1
            assert n == len(by_utt) > 2000 and worst <= 1e-9, worst
            # the Arrow stream of /rank/batch: the text on every row of an utterance, or the tables' evidence
            first = sorted(by_utt)[:400]
            full = pa.Table.from_pylist([{"utt": u, **{k: r[k] for k in (*base, *EVIDENCE_COLUMNS)}} for u in first for r in by_utt[u]])
            bare = pa.Table.from_pylist([{"utt": u, "text": gold[u]["text"], **{k: r[k] for k in base}}
                                         for u in first for r in by_utt[u]])
            answers = []
            for table in (full, bare):
                r = client.post("/rank/batch", content=_arrow(table), headers={"content-type": "application/vnd.apache.arrow.stream"})
                assert r.status_code == 200, r.text
                answers.append(pa.ipc.open_stream(r.content).read_all())
            np.testing.assert_allclose(answers[1]["score"].to_numpy(), answers[0]["score"].to_numpy(), rtol=0, atol=1e-9)
            assert answers[1]["rank"].to_pylist() == answers[0]["rank"].to_pylist()
            # the default models need no NLU-side field: dc, ic, ner and the text are the whole request
            versions = client.get("/versions").json()["versions"]
            assert set(versions.values()) == {"v1"}
            reg = Registry(out / "registry")
            for d in manifest["domains"]:
                assert not set(reg.load("hwu64", d, "v1").request_fields) & set(NLU_FIELDS)
            # bad text: a clean answer or a clean 4xx naming the field
            bare = [{k: r[k] for k in base} for r in by_utt[0]]
            for text in ("", "zzzq qqqz", "   "):
                r = client.post("/rank", json={"text": text, "hypotheses": bare})
                assert r.status_code == 200 and np.isfinite([h["score"] for h in r.json()["hypotheses"]]).all()
            r = client.post("/rank", json={"text": "play " * 10_000, "hypotheses": bare})
            assert r.status_code == 422 and r.json()["field"] == "text" and "10000 tokens" in r.json()["error"]
            r = client.post("/rank", json={"text": 42, "hypotheses": bare})
            assert r.status_code == 422 and r.json()["field"] == "text"
            r = client.post("/rank", content=b'{"text": "caf\xe9", "hypotheses": []}', headers={"content-type": "application/json"})
            assert r.status_code == 400
            # /docs shows the request body, generated from the one table of fields
            body = client.get("/openapi.json").json()["paths"]["/rank"]["post"]["requestBody"]["content"]["application/json"]
            hyp = body["schema"]["properties"]["hypotheses"]["items"]
            assert {f.name for f in FIELDS if f.record and f.name != "utt_id"} <= set(hyp["properties"])
            assert hyp["properties"]["oov_share"]["maximum"] == 1.0 and "text" in body["schema"]["properties"]
            assert set(hyp["required"]) == {"domain", "intent", "slots", "dc", "ic", "ner"}


def test_import_computes_the_text_evidence_an_nbest_lacks_as_prepare_does(prepared, tmp_path):
    """An n-best exported without evidence fields gets the text-derived families computed: dev and test with the
    whole training split's data, train cross-fitted over the same folds as prepare's: the same numbers."""
    tables = TableSet.open(prepared.data_dir)
    paths = export_nbest(tables, tmp_path / "export")
    lines = [json.loads(x) for x in paths["nbest"].read_text().splitlines()]
    paths["nbest"].write_text("".join(json.dumps({k: v for k, v in r.items() if k not in EVIDENCE_COLUMNS}) + "\n" for r in lines))
    cfg = compose_config("import", [f"paths.output_dir={tmp_path}", "name=bare", f"nbest={paths['nbest']}",
                                    f"gold={paths['gold']}", f"evidence_folds={prepared.cfg['recognizers']['folds']}",
                                    f"seed={prepared.cfg['recognizers'].get('seed', 0)}"])
    manifest = import_nbest(cfg)
    imported = TableSet.open(tmp_path / "data" / "bare")
    summary = imported.summary()
    for d in manifest["domains"]:
        assert sorted(manifest["evidence"][d]) == sorted(TEXT_FIELDS)
        assert summary["evidence"][d] == {"computed": list(TEXT_FIELDS), "from_file": []}
        assert imported.resources(d) == tables.resources(d)
        for s in ("train", "dev", "test"):
            a, b = imported.read(d, s), tables.read(d, s)
            assert a["utt_id"].to_pylist() == b["utt_id"].to_pylist()
            for f in TEXT_FIELDS:
                np.testing.assert_allclose(a[f].to_numpy(), b[f].to_numpy(), rtol=0, atol=1e-12, err_msg=f"{d} {s} {f}")
            assert a["ic_margin"].null_count == a.num_rows  # NLU-side evidence only comes from the NLU
    assert any("computed from the gold's text" in n for n in summary["notes"])


def test_a_model_trained_on_an_nbests_own_text_evidence_does_not_compute_it(prepared, tmp_path):
    """The fields came from the n-best: a version trained on them carries no resources (it would compute other
    numbers than it was trained on), and its requests must send the fields."""
    from rerank.training.train import train

    paths = export_nbest(TableSet.open(prepared.data_dir), tmp_path / "export")
    manifest = import_nbest(compose_config("import", [f"paths.output_dir={tmp_path}", "name=given", f"nbest={paths['nbest']}",
                                                      f"gold={paths['gold']}"]))
    d = manifest["domains"][0]
    assert manifest["computed_evidence"][d] == [] and set(TEXT_FIELDS) <= set(manifest["evidence"][d])
    result = train(compose_config("train", [f"paths.output_dir={tmp_path}", "data=tables", "data.name=given", f"domain={d}",
                                            "loss=crossentropy", "threads=1", "~logger", f"paths.log_dir={tmp_path / 'logs'}"]))
    pub = Registry(tmp_path / "registry").load("given", d, result["version"])
    assert pub.resources is None and "text" not in pub.request_fields and "oov_share" in pub.request_fields
