"""prepare(): the tables' schema, the manifest, the SemER labels, the cache, the summary, MASSIVE input."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import compose_config, prepare_config
from rerank.corpus.massive import CorpusError
from rerank.corpus.utterance import SPLITS
from rerank.hypotheses.prepare import FEATURE_COLUMNS, prepare
from rerank.hypotheses.schema import SCHEMA_VERSION, hypothesis_schema, utterance_schema
from rerank.io import read_json
from rerank.metrics.semer import interpretation_error, semantic_errors


def table_files(data_dir: Path, domains) -> list[Path]:
    files = [data_dir / d / f"{s}.parquet" for d in domains for s in SPLITS]
    return files + [data_dir / "_utterances" / f"{s}.parquet" for s in SPLITS]


def assert_schema(actual, expected, path):
    # Parquet names a list's child "element" where Arrow says "item", so the
    # comparison is of names, types and the schema's own metadata.
    assert actual.names == expected.names, path
    assert actual.equals(expected, check_metadata=False), f"{path}:\n{actual}\n!=\n{expected}"
    assert actual.metadata == expected.metadata, path
    assert actual.metadata[b"rerank_schema_version"] == str(SCHEMA_VERSION).encode()


# --------------------------------------------------------------------------- schema and manifest


def test_every_table_has_the_documented_schema(prepared):
    ctx = prepared.manifest["context_fields"]
    assert ctx == ["device"]
    for d in prepared.manifest["domains"]:
        for s in SPLITS:
            path = prepared.data_dir / d / f"{s}.parquet"
            assert_schema(pq.read_schema(path), hypothesis_schema(ctx), path)
    for s in SPLITS:
        path = prepared.data_dir / "_utterances" / f"{s}.parquet"
        assert_schema(pq.read_schema(path), utterance_schema(ctx), path)


def test_manifest_fields(prepared):
    m = prepared.manifest
    assert m == read_json(prepared.data_dir / "manifest.json")
    assert m["schema_version"] == SCHEMA_VERSION
    assert m["corpus"] == "synthetic" == prepared.data_dir.name
    assert len(m["domains"]) >= 2 and m["domains"] == sorted(m["domains"])
    assert m["feature_columns"] == FEATURE_COLUMNS + ["device"]
    assert m["n_best"] == prepared.cfg["hypotheses"]["n_best"]
    assert m["folds"] == 2
    for key in ("corpus_hash", "settings_hash"):
        assert isinstance(m[key], str) and len(m[key]) == 64 and int(m[key], 16) >= 0
    assert m["skipped_lines"] == []
    assert sum(m["splits"].values()) == 400
    assert set(m["rows"]) == set(m["domains"])
    for d in m["domains"]:
        assert set(m["intents"][d]) and all(i.lower().startswith(d.lower() + "_") for i in m["intents"][d]), d
        for s in SPLITS:
            assert m["rows"][d][s] == pq.read_metadata(prepared.data_dir / d / f"{s}.parquet").num_rows, (d, s)
    for s in SPLITS:
        assert m["splits"][s] == pq.read_metadata(prepared.data_dir / "_utterances" / f"{s}.parquet").num_rows
    assert set(m["context_values"]["device"]) <= {"echo", "echo_show", "fire_tv", "unknown"}


def test_labels_match_semer_and_ie_recomputed_from_the_gold(prepared):
    m = prepared.manifest
    checked = 0
    for s in SPLITS:
        gold = pq.read_table(prepared.data_dir / "_utterances" / f"{s}.parquet").to_pylist()
        assert [g["utt_index"] for g in gold] == list(range(len(gold)))
        for d in m["domains"]:
            for h in pq.read_table(prepared.data_dir / d / f"{s}.parquet").to_pylist():
                g = gold[h["utt_index"]]
                g_slots = [(x["type"], x["value"]) for x in g["gold_slots"]]
                h_slots = [(x["type"], x["value"]) for x in h["slots"]]
                errors, total = semantic_errors(g["gold_intent"], g_slots, h["intent"], h_slots)
                ie = interpretation_error(g["gold_domain"], g["gold_intent"], g_slots, h["domain"], h["intent"], h_slots)
                where = (s, d, h["utt_id"], h["rank"])
                assert h["utt_id"] == g["utt_id"], where
                assert h["domain"] == d, where
                assert (h["gold_domain"], h["gold_intent"]) == (g["gold_domain"], g["gold_intent"]), where
                assert h["sem_errors"] == errors, where
                assert h["sem_total"] == total == g["sem_total"], where
                assert h["semer"] == pytest.approx(errors / total, abs=0, rel=1e-12), where
                assert h["ie"] == ie, where
                assert h["n_slots"] == len(h_slots), where
                assert h["device"] == g["device"], where
                for f in ("dc", "ic", "ner"):
                    assert 0.0 <= h[f] <= 1.0 + 1e-9, (where, f, h[f])
                checked += 1
    assert checked == sum(sum(r.values()) for r in m["rows"].values())


def test_at_most_n_best_per_domain_and_utterance_with_ranks_from_zero(prepared):
    n_best = prepared.manifest["n_best"]
    for d in prepared.manifest["domains"]:
        for s in SPLITS:
            t = pq.read_table(prepared.data_dir / d / f"{s}.parquet", columns=["utt_index", "rank", "ic", "ner"])
            utt, rank = t["utt_index"].to_numpy(), t["rank"].to_numpy()
            assert np.all(np.diff(utt) >= 0), "tables are sorted by utt_index"
            score = t["ic"].to_numpy() * t["ner"].to_numpy()
            for u in np.unique(utt):
                sel = utt == u
                k = int(sel.sum())
                assert 1 <= k <= n_best, (d, s, u, k)
                assert rank[sel].tolist() == list(range(k)), (d, s, u, rank[sel])
                # ranked by ic*ner inside the domain
                assert np.all(np.diff(score[sel]) <= 1e-12), (d, s, u, score[sel])


def test_summary_has_baseline_and_oracle_and_oracle_is_a_floor(prepared):
    summary = read_json(prepared.data_dir / "summary.json")
    assert (prepared.data_dir / "summary.md").exists()
    assert summary["domains"] == prepared.manifest["domains"]
    assert set(summary["splits"]) == {"dev", "test"}
    for s, fig in summary["splits"].items():
        assert fig["utterances"] == prepared.manifest["splits"][s]
        assert fig["hypotheses"] == sum(r[s] for r in prepared.manifest["rows"].values())
        for name in ("baseline", "oracle"):
            assert 0.0 <= fig[name]["irer"] <= 1.0
            assert fig[name]["semer"] >= 0.0
        assert fig["oracle"]["semer"] <= fig["baseline"]["semer"], s
        assert fig["oracle"]["irer"] <= fig["baseline"]["irer"], s
        for d, f in fig["oracle"]["per_domain"].items():
            assert f["semer"] <= fig["baseline"]["per_domain"][d]["semer"] + 1e-12, (s, d)


def test_summary_oracle_semer_recomputed(prepared):
    """The oracle figure of summary.json is the micro SemER of each utterance's lowest-SemER hypothesis."""
    summary = read_json(prepared.data_dir / "summary.json")
    for s in ("dev", "test"):
        gold = pq.read_table(prepared.data_dir / "_utterances" / f"{s}.parquet")
        totals = gold["sem_total"].to_numpy()
        best = totals.astype(float).copy()  # no hypothesis: errors = total
        for d in prepared.manifest["domains"]:
            t = pq.read_table(prepared.data_dir / d / f"{s}.parquet", columns=["utt_index", "sem_errors"])
            np.minimum.at(best, t["utt_index"].to_numpy(), t["sem_errors"].to_numpy().astype(float))
        assert summary["splits"][s]["oracle"]["semer"] == pytest.approx(best.sum() / totals.sum())


# --------------------------------------------------------------------------- cache


def test_cache_is_reused_and_a_changed_setting_rebuilds(prepared, tmp_path, capsys):
    copy = prepared.copy_to(tmp_path / "out")
    files = table_files(copy.data_dir, prepared.manifest["domains"]) + [copy.data_dir / "manifest.json"]
    before = {f: f.stat().st_mtime_ns for f in files}

    # recognizers.n_jobs only changes how fast the tables are built: still a cache hit
    again = prepare(prepare_config(copy.output_dir, "recognizers.n_jobs=1"))
    assert "reusing" in capsys.readouterr().out
    assert {f: f.stat().st_mtime_ns for f in files} == before
    assert again["settings_hash"] == prepared.manifest["settings_hash"]

    rebuilt = prepare(prepare_config(copy.output_dir, "hypotheses.n_best=3", "recognizers.n_jobs=1"))
    assert "reusing" not in capsys.readouterr().out
    assert rebuilt["n_best"] == 3
    assert rebuilt["settings_hash"] != prepared.manifest["settings_hash"]
    assert rebuilt["corpus_hash"] == prepared.manifest["corpus_hash"]
    after = {f: f.stat().st_mtime_ns for f in files}
    assert all(after[f] != before[f] for f in files), [f for f in files if after[f] == before[f]]
    assert read_json(copy.data_dir / "manifest.json")["n_best"] == 3
    for d in rebuilt["domains"]:
        utt = pq.read_table(copy.data_dir / d / "train.parquet", columns=["utt_index"])["utt_index"].to_numpy()
        assert max(Counter(utt.tolist()).values()) <= 3


# --------------------------------------------------------------------------- MASSIVE input


def massive_corpus(path: Path, bad_line: str | None) -> int:
    """A tiny MASSIVE JSONL file with two scenarios; the bad line (if any) goes at a known line; returns its number."""
    rng = np.random.default_rng(0)
    records = []
    songs = ["thriller", "hello", "yesterday", "let it be", "imagine", "halo"]
    cities = ["paris", "london", "berlin", "new york", "rome", "oslo"]
    for i in range(60):
        part = "train" if i < 40 else ("dev" if i < 50 else "test")
        if i % 2:
            song = songs[rng.integers(len(songs))]
            if i % 3:
                rec = {"scenario": "music", "intent": "music_play", "annot_utt": f"play [song_name : {song}]"}
            else:
                rec = {"scenario": "music", "intent": "music_pause", "annot_utt": "pause the music please"}
        else:
            city = cities[rng.integers(len(cities))]
            if i % 3:
                rec = {"scenario": "weather", "intent": "weather_query", "annot_utt": f"what is the weather in [place_name : {city}]"}
            else:
                rec = {"scenario": "weather", "intent": "weather_rain", "annot_utt": f"will it rain in [place_name : {city}] today"}
        rec.update(id=str(i), partition=part, locale="en-US")
        rec["utt"] = rec["annot_utt"].replace("[", "").replace("]", "")
        records.append(json.dumps(rec))
    bad_at = 7
    if bad_line is not None:
        records.insert(bad_at - 1, bad_line)
    path.write_text("\n".join(records) + "\n")
    return bad_at


def massive_cfg(tmp_path: Path, path: Path, *overrides: str) -> dict:
    return compose_config("prepare", [f"paths.output_dir={tmp_path / 'out'}", "data=massive", f"data.path={path}",
                                      "data.name=tiny_massive", "recognizers.folds=2", "recognizers.n_jobs=1", *overrides])


def test_massive_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "tiny.jsonl"
    line = massive_corpus(path, '{"id": "bad", "scenario": "music", oops')
    with pytest.raises(CorpusError) as err:
        prepare(massive_cfg(tmp_path, path))
    assert f"{path}:{line}" in str(err.value)
    assert not (tmp_path / "out" / "data" / "tiny_massive" / "manifest.json").exists()


def test_massive_on_error_skip_builds_and_lists_the_line(tmp_path):
    path = tmp_path / "tiny.jsonl"
    line = massive_corpus(path, '{"id": "bad", "scenario": "music", oops')
    m = prepare(massive_cfg(tmp_path, path, "data.on_error=skip"))
    assert m["corpus"] == "tiny_massive"
    assert m["domains"] == ["music", "weather"]
    assert m["splits"] == {"train": 40, "dev": 10, "test": 10}
    assert len(m["skipped_lines"]) == 1 and f"{path}:{line}" in m["skipped_lines"][0]
    # absent context: the constant "unknown"
    assert m["context_values"] == {"device": ["unknown"]}
    data = tmp_path / "out" / "data" / "tiny_massive"
    assert read_json(data / "manifest.json")["skipped_lines"] == m["skipped_lines"]
    assert read_json(data / "summary.json")["skipped_lines"] == 1
    for d in m["domains"]:
        for s in SPLITS:
            assert_schema(pq.read_schema(data / d / f"{s}.parquet"), hypothesis_schema(["device"]), d)
