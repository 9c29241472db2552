"""``prepare(cfg)``: corpus -> per-domain recognizers -> hypothesis tables.

Train-split hypotheses come from recognizers that never saw the utterance
(K-fold cross-fitting); dev and test hypotheses from recognizers trained on the
whole training split. Outputs (``outputs/data/<corpus>/``):
``<domain>/{train,dev,test}.parquet``, ``_utterances/{train,dev,test}.parquet``,
``manifest.json``, ``summary.json`` and ``summary.md``.

The K + 1 fits (K folds, then all of train) with their emission are
independent jobs; ``recognizers.n_jobs`` runs them on that many loky worker
processes (1: in this process). Every fit runs with BLAS/OpenMP limited to
one thread, in workers and in-process alike, so the tables do not depend on
``n_jobs`` (multi-threaded level-1 BLAS on these small problems was also much
slower on a busy 2-core machine).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import pickle
import tempfile
import time
from dataclasses import dataclass
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
from rerank.recognizers.bundle import domain_profile, train_domain
from rerank.recognizers.text_features import TextFeatures

log = logging.getLogger(__name__)

FEATURE_COLUMNS = ["dc", "ic", "ner", "rank", "n_slots"]


def data_dir(output_dir: str | Path, corpus: str) -> Path:
    return Path(output_dir) / "data" / corpus


# Settings that change how fast the tables are built, not what they hold.
NOT_HASHED = ("n_jobs",)


def settings_hash(cfg: Mapping[str, Any]) -> str:
    recognizers = {k: v for k, v in cfg["recognizers"].items() if k not in NOT_HASHED}
    settings = {"recognizers": recognizers, "hypotheses": cfg["hypotheses"],
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
    out.mkdir(parents=True, exist_ok=True)
    # Jobs of a sweep started on a corpus not yet prepared: one builds, the others wait and reuse.
    with open(out / ".prepare.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and (manifest := cached_manifest(out, corpus.content_hash, settings)):
            print(f"prepare: reusing {out} (corpus and settings unchanged; force=true rebuilds)")
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
    n_folds = int(rec_cfg["folds"])
    train_rows = split_rows["train"]
    if n_folds < 2:
        raise ValueError(f"recognizers.folds must be at least 2 for cross-fitting, not {n_folds}")
    fold_of = np.random.default_rng(seed).permutation(len(train_rows)) % n_folds
    train_domains = {utts[i].domain for i in train_rows}
    if missing := sorted(set(domains) - train_domains):
        raise ValueError(f"domains {missing} have no training utterance; a domain needs training data for its recognizers")
    # Everything the jobs share is computed once, here, and not again in each job.
    for d in domains:
        profile = domain_profile(d, rec_cfg)
        features.matrix(profile["dc"]["ngram_max"])
        features.matrix(profile["ic"]["ngram_max"])
    ctx = _Context(utts, domains, features, rec_cfg, hyp_cfg, seed, tuple(corpus.context_fields),
                   train_rows, fold_of, split_rows)

    results = run_jobs(ctx, n_folds, _n_jobs(rec_cfg), corpus.name)
    dev_stats = results[-1]["dev_stats"]

    counts: dict[str, dict[str, int]] = {}
    tables: dict[str, dict[str, pa.Table]] = {s: {} for s in SPLITS}
    schema = hypothesis_schema(corpus.context_fields)
    # train: the folds' tables in fold order; dev and test: the full fit's.
    order = [results[k] for k in range(n_folds)] + [results[-1]]
    for d in domains:
        counts[d] = {}
        for s in SPLITS:
            parts = [r["tables"][s][d] for r in order if s in r["tables"]]
            table = pa.concat_tables(parts) if parts else _columns_table({}, schema)
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


# ----------------------------------------------------------------------------- the K + 1 fit/emit jobs
#
# Job k < K fits every domain on the training utterances outside fold k and
# emits the fold's hypotheses (split "train"); job -1 fits on all of train and
# emits dev and test. The jobs share nothing but read-only inputs, so they run
# in any order, in this process (``recognizers.n_jobs: 1``) or in loky worker
# processes, and each returns its Arrow tables. Every fit is single-threaded
# (BLAS/OpenMP limited to one thread) in both cases, so the tables do not
# depend on ``n_jobs``.


@dataclass
class _Context:
    """The read-only inputs of every job (sent to each worker process once)."""

    utts: list
    domains: list[str]
    features: TextFeatures
    rec_cfg: Mapping[str, Any]
    hyp_cfg: Mapping[str, Any]
    seed: int
    context_fields: tuple[str, ...]
    train_rows: np.ndarray
    fold_of: np.ndarray
    split_rows: dict[str, np.ndarray]


def _n_jobs(rec_cfg: Mapping[str, Any]) -> int:
    n = rec_cfg.get("n_jobs", 1)
    n = 1 if n is None else int(n)
    if n < 0:  # joblib's convention: -1 is every core
        n = max(1, (os.cpu_count() or 1) + 1 + n)
    return max(1, n)


def _columns_table(cols: Mapping[str, list], schema: pa.Schema) -> pa.Table:
    return pa.table({f.name: cols.get(f.name, []) for f in schema}, schema=schema)


def _fit_and_emit(ctx: _Context, fold: int, bars: bool = True) -> dict:
    """Job ``fold`` (``-1``: all of train, emitting dev and test); returns its tables and timings."""
    from threadpoolctl import threadpool_limits

    utts, domains = ctx.utts, ctx.domains
    t0 = time.perf_counter()
    with threadpool_limits(limits=1):
        if fold >= 0:
            fit_rows = ctx.train_rows[ctx.fold_of != fold]
            desc = f"fold {fold + 1}/{int(ctx.rec_cfg['folds'])}"
        else:
            fit_rows, desc = ctx.train_rows, "all of train"
        # train_domain and emit are looked up here, at run time, so that a
        # replacement of them in this module (a test's spy) is what runs.
        recs = {d: train_domain(d, utts, fit_rows, ctx.features, ctx.rec_cfg, ctx.seed)
                for d in tqdm(domains, desc=desc, leave=False, disable=not bars)}
        t_fit = time.perf_counter() - t0
        if fold >= 0:
            held = np.flatnonzero(ctx.fold_of == fold)  # positions in the train split
            emits = {"train": (ctx.train_rows[held], held)}
        else:
            emits = {s: (ctx.split_rows[s], np.arange(len(ctx.split_rows[s]))) for s in ("dev", "test")}
        sinks = {s: {d: HypothesisColumns(ctx.context_fields) for d in domains} for s in emits}
        dev_stats = None
        for s, (rows, index) in emits.items():
            dc = emit(recs, domains, utts, rows, index, ctx.features, ctx.hyp_cfg, sinks[s], fold=fold)
            if s == "dev":
                dev_stats = recognizer_figures(recs, domains, utts, rows, dc, ctx.features)
    schema = hypothesis_schema(ctx.context_fields)
    tables = {s: {d: _columns_table(sinks[s][d].cols, schema) for d in domains} for s in sinks}
    t_all = time.perf_counter() - t0
    return {"fold": fold, "tables": tables, "dev_stats": dev_stats,
            "seconds": {"fit": t_fit, "emit": t_all - t_fit}, "pid": os.getpid()}


_WORKER_CTX: _Context | None = None


def _init_worker(ctx_path: str) -> None:
    global _WORKER_CTX
    with open(ctx_path, "rb") as fh:
        _WORKER_CTX = pickle.load(fh)


def _worker_job(fold: int) -> dict:
    return _fit_and_emit(_WORKER_CTX, fold, bars=False)


_ORIGINALS = (train_domain, emit)


def run_jobs(ctx: _Context, n_folds: int, n_jobs: int, name: str) -> dict[int, dict]:
    """Run the ``n_folds + 1`` jobs, on ``n_jobs`` processes; ``{fold: result}`` (``-1``: the full fit)."""
    # The full fit first: it is the longest job (most training rows, and it emits dev and test).
    folds = [-1, *range(n_folds)]
    n_jobs = min(n_jobs, len(folds))
    if train_domain is not _ORIGINALS[0] or emit is not _ORIGINALS[1]:
        # Replaced in this process (e.g. a test's spy): a worker process would not see it.
        log.info("prepare: train_domain/emit are replaced in this process; running the jobs in-process")
        n_jobs = 1
    t0 = time.perf_counter()
    results: dict[int, dict] = {}
    with tqdm(total=len(folds), desc=f"prepare {name}", unit="fit") as bar:
        if n_jobs == 1:
            for k in folds:
                results[k] = _fit_and_emit(ctx, k)
                bar.update()
        else:
            from joblib.externals.loky import ProcessPoolExecutor, as_completed

            one_thread = {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
            with tempfile.TemporaryDirectory(prefix="rerank_prepare_") as tmp:
                ctx_path = os.path.join(tmp, "context.pkl")
                with open(ctx_path, "wb") as fh:
                    pickle.dump(ctx, fh, protocol=pickle.HIGHEST_PROTOCOL)
                pool = ProcessPoolExecutor(max_workers=n_jobs, initializer=_init_worker, initargs=(ctx_path,),
                                           env=one_thread)
                try:
                    futures = {pool.submit(_worker_job, k): k for k in folds}
                    for fut in as_completed(futures):
                        results[futures[fut]] = fut.result()
                        bar.update()
                except BaseException:
                    # a job failed (or Ctrl-C): do not wait for the others
                    pool.shutdown(wait=False, kill_workers=True)
                    raise
                pool.shutdown(wait=True)
    wall = time.perf_counter() - t0
    fit = sum(r["seconds"]["fit"] for r in results.values())
    em = sum(r["seconds"]["emit"] for r in results.values())
    print(f"prepare: {len(folds)} fit/emit jobs on {n_jobs} process{'es' if n_jobs > 1 else ''} in {wall:.1f} s "
          f"(summed over jobs: fits {fit:.1f} s, emission {em:.1f} s)")
    return results


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
