"""Bring your own NLU: import of any recognizers' n-best (JSONL or Parquet), its labels, its refusals, the round trip."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import compose_config
from rerank.corpus.jsonl import CorpusError
from rerank.corpus.utterance import SPLITS
from rerank.hypotheses.evidence import TEXT_FIELDS
from rerank.hypotheses.export import annotate, export_nbest
from rerank.hypotheses.nbest_import import import_nbest
from rerank.hypotheses.schema import EVIDENCE_COLUMNS
from rerank.hypotheses.tables import TableSet
from rerank.metrics.semer import semantic_errors

GOLD = [
    {"id": "a1", "partition": "train", "scenario": "music", "intent": "music_play", "annot_utt": "play [song_name : thriller] now",
     "device": "echo"},
    {"id": "a2", "partition": "train", "scenario": "weather", "intent": "weather_query", "annot_utt": "weather in [place_name : paris]"},
    {"id": "a3", "partition": "dev", "scenario": "music", "intent": "music_pause", "annot_utt": "pause"},
    {"id": "a4", "partition": "test", "scenario": "weather", "intent": "query", "annot_utt": "is it cold in [place_name : oslo]"},
    {"id": "a5", "partition": "test", "scenario": "music", "intent": "music_play", "annot_utt": "play [song_name : halo]"},
]


def hyp(utt_id, domain, intent, slots=(), dc=0.9, ic=0.8, ner=0.7, **extra):
    return {"utt_id": utt_id, "domain": domain, "intent": intent, "slots": [{"type": t, "value": v} for t, v in slots],
            "dc": dc, "ic": ic, "ner": ner, **extra}


NBEST = [
    hyp("a1", "music", "music_play", [("song_name", "Thriller")], ic=0.6, ner=0.9),    # right (case is normalised)
    hyp("a1", "music", "music_pause", ic=0.4, ner=0.9),                                # wrong intent, a deletion
    hyp("a1", "weather", "weather_query", [("place_name", "thriller")], dc=0.2),       # wrong domain
    hyp("a2", "weather", "query", [("place_name", "paris")], device="fire_tv"),        # intent "query" reads weather_query
    hyp("a3", "music", "music_pause"),
    hyp("a4", "weather", "weather_query", [("place_name", "oslo")], rank=1, ic=0.9),
    hyp("a4", "weather", "weather_query", [("place_name", "cold"), ("place_name", "oslo")], rank=0, ic=0.1),
]
# a5 has no hypothesis at all: counted and reported, a full error


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def files(tmp_path, nbest=NBEST, gold=GOLD) -> tuple[Path, Path]:
    inputs = tmp_path / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    return write_jsonl(inputs / "nbest.jsonl", nbest), write_jsonl(inputs / "gold.jsonl", gold)


def import_config(tmp_path, nbest, gold, *overrides, name="acme") -> dict:
    return compose_config("import", [f"name={name}", f"nbest={nbest}", f"gold={gold}",
                                     f"paths.output_dir={tmp_path / 'out'}", *overrides])


def run_import(tmp_path, nbest=NBEST, gold=GOLD, *overrides, name="acme") -> dict:
    n, g = files(tmp_path, nbest, gold)
    return import_nbest(import_config(tmp_path, n, g, *overrides, name=name))


# --------------------------------------------------------------------------- a good import


def test_import_labels_every_hypothesis_and_writes_a_checked_set(tmp_path, capsys):
    manifest = run_import(tmp_path)
    out = capsys.readouterr().out
    tables = TableSet.open(tmp_path / "out" / "data" / "acme")
    assert tables.manifest == manifest and manifest["origin"] == "imported"
    assert manifest["domains"] == ["music", "weather"]
    assert manifest["splits"] == {"train": 2, "dev": 1, "test": 2}
    for what in ("nbest", "gold"):
        info = manifest["inputs"][what]
        assert len(info["sha256"]) == 64 and info["bytes"] == Path(info["path"]).stat().st_size
    # the inputs' folder holds only the inputs: nothing written to or beside them
    assert sorted(p.name for p in (tmp_path / "inputs").iterdir()) == ["gold.jsonl", "nbest.jsonl"]

    music = tables.read("music", "train").to_pylist()
    assert [(h["intent"], h["rank"], h["sem_errors"], h["sem_total"], h["ie"]) for h in music] == [
        ("music_play", 0, 0, 2, 0), ("music_pause", 1, 2, 2, 1)]  # ranks from ic*ner: 0.54 > 0.36
    assert music[0]["device"] == "echo"  # from the gold where the hypothesis has no context
    weather = tables.read("weather", "train").to_pylist()
    assert [h["utt_id"] for h in weather] == ["a1", "a2"]
    by_utt = {h["utt_id"]: h for h in weather}
    assert by_utt["a1"]["sem_errors"] == 3 and by_utt["a1"]["ie"] == 1 and by_utt["a1"]["gold_domain"] == "music"
    assert by_utt["a2"]["intent"] == "weather_query" and by_utt["a2"]["ie"] == 0 and by_utt["a2"]["device"] == "fire_tv"
    # given ranks are kept, and rows are sorted by utterance then rank
    test = tables.read("weather", "test").to_pylist()
    assert [h["rank"] for h in test] == [0, 1] and test[0]["n_slots"] == 2
    errors, total = semantic_errors("weather_query", [("place_name", "oslo")],
                                    "weather_query", [("place_name", "cold"), ("place_name", "oslo")])
    assert (test[0]["sem_errors"], test[0]["sem_total"]) == (errors, total) == (1, 2)
    assert test[0]["semer"] == 0.5
    # the gold utterance without any hypothesis is counted, and reported
    assert manifest["no_hypothesis"]["test"] == 1
    summary = tables.summary()
    assert summary["splits"]["test"]["no_hypothesis"] == 1
    assert summary["splits"]["test"]["coverage"] == 0.5  # a4's gold is in the list, a5's is not
    assert "Gold utterances with no hypothesis" in out and "coverage" in out and "baseline SemER" in out
    # what the re-rankers of each domain will know
    assert manifest["intents"]["weather"] == ["weather_query"]
    assert manifest["context_values"] == {"device": ["echo", "fire_tv", "unknown"]}
    assert manifest["n_best"] == 2


def test_parquet_input_gives_the_same_tables(tmp_path):
    run_import(tmp_path / "j")
    nbest, gold = files(tmp_path / "p")
    rows = [{**h, "rank": h.get("rank"), "device": h.get("device")} for h in NBEST]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p" / "inputs" / "nbest.parquet")
    import_nbest(import_config(tmp_path / "p", tmp_path / "p" / "inputs" / "nbest.parquet", gold))
    a, b = TableSet.open(tmp_path / "j" / "out" / "data" / "acme"), TableSet.open(tmp_path / "p" / "out" / "data" / "acme")
    for d in a.domains:
        for s in SPLITS:
            assert a.read(d, s).equals(b.read(d, s)), (d, s)


# --------------------------------------------------------------------------- bad input: file, line, field


def assert_refused(tmp_path, nbest, gold, where: str, *what: str):
    """The import fails naming ``where`` and ``what``; nothing is written (no set, no staging)."""
    with pytest.raises((CorpusError, ValueError)) as err:
        run_import(tmp_path, nbest, gold)
    msg = str(err.value)
    assert where in msg, msg
    for w in what:
        assert w in msg, msg
    data = tmp_path / "out" / "data"
    assert not data.exists() or [p.name for p in data.iterdir() if not p.name.endswith(".lock")] == []
    return msg


def test_an_utt_id_not_in_the_gold(tmp_path):
    nbest = [*NBEST[:3], hyp("zz9", "music", "music_play"), *NBEST[3:]]
    assert_refused(tmp_path, nbest, GOLD, "nbest.jsonl:4", "field 'utt_id'", "'zz9'", "gold.jsonl")


@pytest.mark.parametrize("value, what", [(1.5, "outside [0, 1]"), (-0.1, "outside [0, 1]"), ("NaN", "NaN"),
                                         ("Infinity", "infinite"), ('"0.5"', "must be a number"), ("true", "must be a number")])
def test_a_score_that_is_not_a_probability(tmp_path, value, what):
    line = json.dumps(hyp("a1", "music", "music_stop")).replace('"ic": 0.8', f'"ic": {value}')
    assert_refused(tmp_path, [*NBEST[:2], line, *NBEST[2:]], GOLD, "nbest.jsonl:3", "field 'ic'", what)


def test_an_unknown_split_in_the_gold(tmp_path):
    gold = [*GOLD[:2], {**GOLD[2], "partition": "holdout"}, *GOLD[3:]]
    assert_refused(tmp_path, NBEST, gold, "gold.jsonl:3", "field 'partition'", "'holdout'")


@pytest.mark.parametrize("domain", ["../../etc", ".hidden", "a/b", "", "_x"])
def test_a_domain_name_unsafe_as_a_folder_name(tmp_path, domain):
    assert_refused(tmp_path, [*NBEST[:4], hyp("a2", domain, "x"), *NBEST[4:]], GOLD, "nbest.jsonl:5", "field 'domain'")


def test_duplicate_hypotheses(tmp_path):
    dup = hyp("a1", "music", "music_play", [("song_name", "thriller ")], ic=0.3)  # the same slots once normalised
    assert_refused(tmp_path, [*NBEST, dup], GOLD, "nbest.jsonl:8", "duplicate hypothesis", "'a1'", "line 1")


def test_a_list_ranked_only_in_part(tmp_path):
    nbest = [*NBEST[:5], {**NBEST[5], "rank": None}, NBEST[6]]
    assert_refused(tmp_path, nbest, GOLD, "nbest.jsonl:", "field 'rank'", "'a4'", "some of its hypotheses have a 'rank'")


@pytest.mark.parametrize("record, what", [({"utt_id": "a1"}, "missing field 'domain'"),
                                          (hyp("a1", "music", "x", slots=[("song name", "y")]), "slots[0].type"),
                                          ({**hyp("a1", "music", "x"), "slots": "thriller"}, "field 'slots'"),
                                          ({**hyp("a1", "music", "x"), "rank": -1}, "field 'rank'")])
def test_other_malformed_records(tmp_path, record, what):
    assert_refused(tmp_path, [NBEST[0], record], GOLD, "nbest.jsonl:2", what)


def test_a_byte_that_is_not_utf8(tmp_path):
    nbest, gold = files(tmp_path)
    nbest.write_bytes(nbest.read_bytes().replace(b'"music_pause"', b'"music_p\xffuse"', 1))
    with pytest.raises(CorpusError) as err:
        import_nbest(import_config(tmp_path, nbest, gold))
    assert f"{nbest}:2" in str(err.value) and "0xff" in str(err.value) and "UTF-8" in str(err.value)
    # skipped and counted with on_error=skip
    manifest = import_nbest(import_config(tmp_path, nbest, gold, "on_error=skip"))
    assert len(manifest["skipped_lines"]) == 1 and f"{nbest}:2" in manifest["skipped_lines"][0]
    assert sum(n for rows in manifest["rows"].values() for n in rows.values()) == len(NBEST) - 1


def test_an_oversized_line_and_too_many_tokens(tmp_path):
    big = hyp("a1", "music", "music_play", [("song_name", "la " * 400_000)])  # 1.2 MB > max_line_bytes
    assert_refused(tmp_path, [NBEST[0], big], GOLD, "nbest.jsonl:2", "longer than")
    gold = [*GOLD, {"id": "a6", "partition": "dev", "scenario": "music", "intent": "music_play",
                    "annot_utt": "play " + "la " * 600}]
    assert_refused(tmp_path / "tokens", NBEST, gold, "gold.jsonl:6", "601 tokens", "max_tokens=512")


def test_on_error_skip_counts_every_bad_line(tmp_path):
    nbest = [NBEST[0], hyp("zz9", "music", "x"), hyp("a1", "music", "x", dc=2.0), *NBEST[1:]]
    manifest = run_import(tmp_path, nbest, GOLD, "on_error=skip")
    assert len(manifest["skipped_lines"]) == 2
    assert "nbest.jsonl:2" in manifest["skipped_lines"][0] and "nbest.jsonl:3" in manifest["skipped_lines"][1]
    assert sum(n for rows in manifest["rows"].values() for n in rows.values()) == len(NBEST)


def test_an_unsafe_set_name_is_refused(tmp_path):
    nbest, gold = files(tmp_path)
    for name in ("../../x", ".x", "a/b"):
        with pytest.raises(ValueError, match="name"):
            import_nbest(import_config(tmp_path, nbest, gold, name=name))
    assert not (tmp_path / "x").exists() and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- round trip


def test_annotate_inverts_the_parser():
    from rerank.corpus.annotation import parse_annotation

    for annot in ("play [song_name : mary poppins] by [artist_name : julie andrews]", "pause", "[a : b] x [c : d e]",
                  "wake me at [time : 5:30] [date : today]"):
        p = parse_annotation(annot)
        assert parse_annotation(annotate(p.text, p.slots)).slots == p.slots


def test_exported_tables_imported_again_train_and_merge_bit_identically(prepared, tmp_path):
    """Prepare -> export -> import under another name: the same tables, so the same models and the same merge."""
    from rerank.merge.run import merge
    from rerank.model.registry import Registry
    from rerank.training.train import train

    work = prepared.copy_to(tmp_path / "work")
    exported = export_nbest(TableSet.open(work.data_dir), tmp_path / "export")
    cfg = compose_config("import", ["name=copy", f"nbest={exported['nbest']}", f"gold={exported['gold']}",
                                    f"paths.output_dir={work.output_dir}"])
    manifest = import_nbest(cfg)
    a, b = TableSet.open(work.data_dir), TableSet.open(work.output_dir / "data" / "copy")
    for key in ("domains", "intents", "slot_types", "context_fields", "context_values", "n_best", "splits", "rows"):
        assert a.manifest[key] == b.manifest[key], key
    for d in a.domains:
        for s in SPLITS:
            ta, tb = a.read(d, s), b.read(d, s)
            # the cross-fitting fold is the built-in recognizers' own bookkeeping: not in the n-best format
            assert ta.drop(["fold"]).equals(tb.drop(["fold"])), (d, s)

    domain = a.domains[0]
    common = [f"paths.output_dir={work.output_dir}", f"domain={domain}", "loss=combined", "trainer.max_epochs=3",
              f"paths.log_dir={tmp_path / 'logs'}", "threads=1", "~logger"]
    results = {}
    for data in (["data=synthetic"], ["data=tables", "data.name=copy"]):
        cfg = compose_config("train", [*common, *data])
        results[data[-1]] = train(cfg)
        corpus = cfg["data"]["name"]
        Registry(cfg["paths"]["registry_dir"]).set_live(corpus, domain, "v1", action="promote", verdict="test", forced=True)
    ra, rb = results.values()
    assert ra["dev"] == rb["dev"]
    reg = Registry(work.output_dir / "registry")
    wa, wb = reg.load("synthetic", domain).tensors, reg.load("copy", domain).tensors
    assert wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)

    metrics = {}
    for data in (["data=synthetic"], ["data=tables", "data.name=copy"]):
        m = merge(compose_config("merge", [f"paths.output_dir={work.output_dir}", *data, "merge.bootstrap=20",
                                           f"paths.report_dir={tmp_path / 'reports'}", "paths.log_dir=null"]))
        metrics[data[-1]] = m["metrics"]
    ma, mb = metrics.values()
    assert ma == mb
    assert manifest["origin"] == "imported"
    shutil.rmtree(tmp_path / "export")


def test_evidence_fields_are_imported_and_the_manifest_says_which_a_domain_fills(tmp_path, capsys):
    """music gives ic_margin in every hypothesis and oov_share in some; weather gives none. The text-derived fields
    that a domain's n-best leaves empty in every hypothesis are computed from the gold's text (oov_share, given in
    part, is left as it came)."""
    nbest = [dict(h) for h in NBEST]
    for i, h in enumerate(nbest):
        if h["domain"] == "music":
            h["ic_margin"] = 0.1 * (i + 1)
            if i == 0:
                h["oov_share"] = 0.5
    manifest = run_import(tmp_path, nbest)
    text = [f for f in EVIDENCE_COLUMNS if f in TEXT_FIELDS]
    assert manifest["evidence"] == {"music": ["ic_margin", *(f for f in text if f != "oov_share")], "weather": text}
    music = TableSet.open(tmp_path / "out" / "data" / "acme").read("music", "train").to_pylist()
    assert [h["ic_margin"] for h in music] == pytest.approx([0.1, 0.2]) and [h["oov_share"] for h in music] == [0.5, None]
    assert "Domain music gives the evidence oov_share in some hypotheses but not in all" in capsys.readouterr().out


def test_an_evidence_value_out_of_range_names_file_line_and_field(tmp_path):
    nbest = [dict(NBEST[0], ner_min=1.5), *NBEST[1:]]
    assert_refused(tmp_path, nbest, GOLD, "nbest.jsonl:1", "ner_min")


def test_an_evaluation_only_import_without_train_computes_no_text_evidence(tmp_path):
    """A gold of dev and test only: no training utterance to compute the text-derived evidence from, so none is."""
    gold = [g for g in GOLD if g["partition"] != "train"]
    nbest = [h for h in NBEST if h["utt_id"] not in ("a1", "a2")]
    manifest = run_import(tmp_path, nbest, gold)
    assert manifest["evidence"] == {"music": [], "weather": []}
    assert manifest["computed_evidence"] == {"music": [], "weather": []}


def test_text_evidence_an_nbest_gives_is_kept_and_not_computed(tmp_path):
    """Fields an n-best gives in every hypothesis come from the file; the manifest says rerank computed none of them."""
    given = {f: -0.5 if f == "unigram_logp" else 0.5 if f not in ("n_tokens", "catalogue_miss") else 1 for f in TEXT_FIELDS}
    manifest = run_import(tmp_path, [dict(h, **given) for h in NBEST])
    assert manifest["computed_evidence"] == {"music": [], "weather": []}
    table = TableSet.open(tmp_path / "out" / "data" / "acme").read("music", "train")
    assert table["unigram_logp"].to_pylist() == [-0.5, -0.5]
