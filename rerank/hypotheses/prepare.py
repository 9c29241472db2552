"""``prepare(cfg)``: corpus -> per-domain recognizers -> hypothesis tables.

Train-split hypotheses come from recognizers that never saw the utterance
(K-fold cross-fitting); dev and test hypotheses from recognizers trained on the
whole training split. Outputs (``outputs/data/<corpus>/``):
``<domain>/{train,dev,test}.parquet``, ``_utterances/{train,dev,test}.parquet``,
``manifest.json``, ``summary.json`` and ``summary.md``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from rerank.corpus.load import Corpus, load_corpus
from rerank.corpus.utterance import SPLITS
from rerank.hypotheses.emit import HypothesisColumns, emit
from rerank.hypotheses.schema import SCHEMA_VERSION, hypothesis_schema, utterance_schema
from rerank.hypotheses.summary import recognizer_figures, render_summary, split_figures
from rerank.io import atomic_path, read_json, write_json, write_text
from rerank.recognizers.bundle import train_domain
from rerank.recognizers.text_features import TextFeatures

log = logging.getLogger(__name__)

FEATURE_COLUMNS = ["dc", "ic", "ner", "rank", "n_slots"]


def data_dir(output_dir: str | Path, corpus: str) -> Path:
    return Path(output_dir) / "data" / corpus


def settings_hash(cfg: Mapping[str, Any]) -> str:
    settings = {"recognizers": cfg["recognizers"], "hypotheses": cfg["hypotheses"],
                "schema_version": SCHEMA_VERSION, "context_fields": list(cfg["data"].get("context_fields") or [])}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def cached_manifest(out: Path, corpus_hash: str, settings: str) -> dict | None:
    """The manifest of a finished build of the same corpus and settings, if all its files are there."""
    path = out / "manifest.json"
    if not path.exists():
        return None
    try:
        manifest = read_json(path)
    except (OSError, json.JSONDecodeError):
        return None
    if (manifest.get("schema_version"), manifest.get("corpus_hash"), manifest.get("settings_hash")) != (SCHEMA_VERSION, corpus_hash, settings):
        return None
    files = [out / d / f"{s}.parquet" for d in manifest["domains"] for s in SPLITS]
    files += [out / "_utterances" / f"{s}.parquet" for s in SPLITS]
    return manifest if all(f.exists() for f in files) else None


def prepare(cfg: Mapping[str, Any], force: bool = False) -> dict:
    """Build (or reuse) the hypothesis tables of ``cfg.data``; returns the manifest."""
    t0 = time.perf_counter()
    corpus = load_corpus(cfg["data"])
    out = data_dir(cfg["paths"]["output_dir"], corpus.name)
    settings = settings_hash(cfg)
    if not force and (manifest := cached_manifest(out, corpus.content_hash, settings)):
        log.info("Reusing the hypothesis tables in %s (same corpus and settings)", out)
        print(f"prepare: reusing {out} (corpus and settings unchanged; prepare.force=true rebuilds)")
        return manifest
    print(f"prepare: {corpus.name}: {corpus.report.summary()}")
    manifest = build(corpus, cfg, out, settings)
    manifest["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(out / "manifest.json", manifest)
    print(render_summary(read_json(out / "summary.json")))
    print(f"prepare: wrote {out} in {manifest['seconds']} s")
    return manifest


def build(corpus: Corpus, cfg: Mapping[str, Any], out: Path, settings: str) -> dict:
    utts = corpus.utterances
    domains = corpus.domains
    rec_cfg, hyp_cfg = cfg["recognizers"], cfg["hypotheses"]
    seed = int(rec_cfg.get("seed", 0))
    features = TextFeatures([u.text for u in utts])
    split_rows = {s: np.array([i for i, u in enumerate(utts) if u.split == s], dtype=np.int64) for s in SPLITS}
    sinks = {s: {d: HypothesisColumns(corpus.context_fields) for d in domains} for s in SPLITS}
    n_folds = int(rec_cfg["folds"])
    train_rows = split_rows["train"]
    if n_folds < 2:
        raise ValueError(f"recognizers.folds must be at least 2 for cross-fitting, not {n_folds}")
    fold_of = np.random.default_rng(seed).permutation(len(train_rows)) % n_folds
    train_domains = {utts[i].domain for i in train_rows}
    if missing := sorted(set(domains) - train_domains):
        raise ValueError(f"domains {missing} have no training utterance; a domain needs training data for its recognizers")

    def fit_all(rows: np.ndarray, desc: str):
        return {d: train_domain(d, utts, rows, features, rec_cfg, seed) for d in tqdm(domains, desc=desc, leave=False)}

    dev_stats = None
    with tqdm(total=n_folds + 1, desc=f"prepare {corpus.name}", unit="fit") as bar:
        for k in range(n_folds):
            recs = fit_all(train_rows[fold_of != k], f"fold {k + 1}/{n_folds}")
            held = np.flatnonzero(fold_of == k)
            emit(recs, domains, utts, train_rows[held], held, features, hyp_cfg, sinks["train"], fold=k)
            bar.update()
        recs = fit_all(train_rows, "all of train")
        for s in ("dev", "test"):
            rows = split_rows[s]
            dc = emit(recs, domains, utts, rows, np.arange(len(rows)), features, hyp_cfg, sinks[s], fold=-1)
            if s == "dev":
                dev_stats = recognizer_figures(recs, domains, utts, rows, dc, features)
        bar.update()

    counts: dict[str, dict[str, int]] = {}
    tables: dict[str, dict[str, pa.Table]] = {s: {} for s in SPLITS}
    schema = hypothesis_schema(corpus.context_fields)
    for d in domains:
        counts[d] = {}
        for s in SPLITS:
            table = pa.table({f.name: sinks[s][d].cols.get(f.name, []) for f in schema}, schema=schema)
            table = table.sort_by([("utt_index", "ascending"), ("rank", "ascending")])
            write_parquet(table, out / d / f"{s}.parquet")
            tables[s][d] = table
            counts[d][s] = table.num_rows
    gold = {}
    for s in SPLITS:
        gold[s] = utterance_table([utts[i] for i in split_rows[s]], corpus.context_fields)
        write_parquet(gold[s], out / "_utterances" / f"{s}.parquet")

    summary = {
        "corpus": corpus.name,
        "domains": domains,
        "recognizers_dev": dev_stats,
        "splits": {s: split_figures(tables[s], gold[s], domains) for s in ("dev", "test")},
        "skipped_lines": len(corpus.report.skipped),
    }
    write_json(out / "summary.json", summary)
    write_text(out / "summary.md", render_summary(summary))
    context_values = {c: sorted({u.context.get(c, "unknown") for u in utts}) for c in corpus.context_fields}
    return {
        "schema_version": SCHEMA_VERSION,
        "corpus": corpus.name,
        "corpus_hash": corpus.content_hash,
        "settings_hash": settings,
        "domains": domains,
        "intents": {d: sorted({u.intent for u in utts if u.domain == d and u.split == "train"}) for d in domains},
        "slot_types": {d: sorted({t for u in utts if u.domain == d and u.split == "train" for t, _ in u.slots}) for d in domains},
        "n_best": int(hyp_cfg["n_best"]),
        "feature_columns": FEATURE_COLUMNS + list(corpus.context_fields),
        "context_fields": list(corpus.context_fields),
        "context_values": context_values,
        "splits": {s: int(len(split_rows[s])) for s in SPLITS},
        "rows": counts,
        "folds": n_folds,
        "skipped_lines": corpus.report.skipped,
    }


def utterance_table(utts, context_fields) -> pa.Table:
    cols: dict[str, list] = {
        "utt_id": [u.id for u in utts],
        "utt_index": list(range(len(utts))),
        "text": [u.text for u in utts],
        "gold_domain": [u.domain for u in utts],
        "gold_intent": [u.intent for u in utts],
        "gold_slots": [[{"type": t, "value": v} for t, v in u.slots] for u in utts],
        "sem_total": [1 + len(u.slots) for u in utts],
    }
    for c in context_fields:
        cols[c] = [u.context.get(c, "unknown") for u in utts]
    return pa.table(cols, schema=utterance_schema(context_fields))


def write_parquet(table: pa.Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
