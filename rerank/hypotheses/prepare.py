"""``prepare(cfg)``: corpus -> per-domain recognizers -> hypothesis tables (the built-in way in).

Train-split hypotheses come from recognizers that never saw the utterance
(K-fold cross-fitting); dev and test hypotheses from recognizers trained on the
whole training split. The unit of work is one domain's recognizers on one fold,
as in production, where each domain is trained by its own team:

1. (domain, fold) jobs fit the domain's DC on the fold's training utterances of
   every domain and score the fold's utterances to emit for;
2. from every domain's ``dc``, the emission rule decides which domains emit
   where (``hypotheses.emit``);
3. (domain, fold) jobs fit the domain's IC and NER on its own training
   utterances and emit its n-best, labelled against the gold.

Jobs run on ``recognizers.n_jobs`` local processes (1: in this process) or on
Ray (:mod:`rerank.hypotheses.jobs`). The recognizers (with whatever they share,
e.g. the text features) are built once and loaded once per worker process, never
pickled per job; the tables do not depend on the number of processes. The set
is written through :class:`~rerank.hypotheses.tables.TableSetWriter`: complete
or absent.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from rerank.corpus.load import Corpus, load_corpus
from rerank.corpus.utterance import SPLITS, Utterance
from rerank.hypotheses.emit import HypothesisColumns, emit_domain, emit_mask
from rerank.hypotheses.evidence import RESOURCES_FORMAT, TEXT_FIELDS, DomainData
from rerank.hypotheses.jobs import JobRunner, one_thread, worker_count
from rerank.hypotheses.schema import HYPOTHESIS_COLUMNS, SCHEMA_VERSION, filled_evidence, hypothesis_schema, utterance_table
from rerank.hypotheses.summary import domain_recognizer_figures, recognizer_figures, render_summary, split_figures
from rerank.hypotheses.tables import TablesCorrupt, TableSet, TableSetWriter, build_lock, clean_leftovers, data_root, set_dir
from rerank.recognizers.base import Recognizers

log = logging.getLogger(__name__)

FEATURE_COLUMNS = ["dc", "ic", "ner", "rank", "n_slots"]
# Settings that change how fast the tables are built, not what they hold.
NOT_HASHED = ("n_jobs", "backend", "ray_address")


def build_recognizers(rec_cfg: Mapping[str, Any]) -> Recognizers:
    """The recognizer family ``recognizers.family`` names by ``_target_``."""
    from hydra.utils import instantiate

    family = instantiate(rec_cfg["family"], _convert_="all")
    if not isinstance(family, Recognizers):
        raise TypeError(f"recognizers.family._target_ must build a rerank.recognizers.base.Recognizers, "
                        f"not {type(family).__name__}")
    return family


def settings_hash(cfg: Mapping[str, Any], family: Recognizers | None = None) -> str:
    recognizers = {k: v for k, v in cfg["recognizers"].items() if k not in NOT_HASHED}
    settings = {"recognizers": recognizers, "family": family.settings() if family is not None else None,
                "hypotheses": cfg["hypotheses"], "schema_version": SCHEMA_VERSION,
                # the columns themselves: tables built by a rerank that wrote other columns are rebuilt
                "columns": [name for name, _, _ in HYPOTHESIS_COLUMNS],
                "resources": RESOURCES_FORMAT,  # (sets built before the evidence resources are rebuilt)
                "context_fields": list(cfg["data"].get("context_fields") or []),
                # what the reader keeps of the corpus files (their own hash is the corpus hash)
                "reader": {k: cfg["data"].get(k) for k in ("on_error", "max_tokens", "max_line_bytes")}}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def cached_manifest(path: Path, corpus_hash: str, settings: str) -> dict | None:
    """The manifest of a finished, intact build of the same corpus and settings; None otherwise."""
    try:
        tables = TableSet.open(path)
    except (FileNotFoundError, TablesCorrupt):
        return None
    m = tables.manifest
    if (m.get("origin"), m.get("corpus_hash"), m.get("settings_hash")) != ("prepared", corpus_hash, settings):
        return None
    try:
        tables.verify()
    except TablesCorrupt as err:
        print(f"prepare: not reusing {path}: {err}")
        return None
    return m


def prepare(cfg: Mapping[str, Any], force: bool = False) -> dict:
    """Build (or reuse) the hypothesis tables of ``cfg.data`` under ``paths.data_dir``; returns the manifest."""
    t0 = time.perf_counter()
    corpus = load_corpus(cfg["data"])
    root, out = data_root(cfg), set_dir(cfg)
    family = build_recognizers(cfg["recognizers"])
    settings = settings_hash(cfg, family)
    # Jobs of a sweep started on a corpus not yet prepared: one builds, the others wait and reuse.
    with build_lock(root, corpus.name):
        if removed := clean_leftovers(root, corpus.name):
            print(f"prepare: removed leftovers of interrupted builds: {', '.join(removed)}")
        if not force and (manifest := cached_manifest(out, corpus.content_hash, settings)):
            print(f"prepare: reusing {out} (corpus and settings unchanged, files checked; force=true rebuilds)")
            return manifest
        print(f"prepare: {corpus.name}: {corpus.report.summary()}")
        with TableSetWriter(root, corpus.name) as writer:
            manifest, summary = build(corpus, family, cfg, writer, settings)
            manifest["seconds"] = round(time.perf_counter() - t0, 1)
            manifest = writer.commit(manifest)
    print(render_summary(summary))
    print(f"prepare: wrote {out} in {manifest['seconds']} s")
    return manifest


# ----------------------------------------------------------------------------- the jobs


@dataclass
class _Context:
    """What every job reads: built once in the parent, loaded once per worker process."""

    utts: Sequence[Utterance]
    domains: list[str]
    family: Recognizers
    hyp_cfg: Mapping[str, Any]
    seed: int
    context_fields: tuple[str, ...]
    train_rows: np.ndarray
    fold_of: np.ndarray
    split_rows: dict[str, np.ndarray]

    def fit_rows(self, fold: int) -> np.ndarray:
        return self.train_rows if fold < 0 else self.train_rows[self.fold_of != fold]

    def emit_rows(self, fold: int) -> dict[str, np.ndarray]:
        """Rows each fold emits for, per split: its held-out train rows, or dev and test for the full fit."""
        if fold >= 0:
            return {"train": self.train_rows[self.fold_of == fold]}
        return {s: self.split_rows[s] for s in ("dev", "test")}

    def utt_index(self, fold: int) -> dict[str, np.ndarray]:
        """The positions of :meth:`emit_rows` in their split (the tables' ``utt_index``)."""
        if fold >= 0:
            return {"train": np.flatnonzero(self.fold_of == fold)}
        return {s: np.arange(len(self.split_rows[s])) for s in ("dev", "test")}


def dc_job(ctx: _Context, domain: str, fold: int) -> dict:
    """Fit ``domain``'s DC on the fold's training rows; its ``dc`` on the rows the fold emits for."""
    t0 = time.perf_counter()
    with one_thread():
        dc = ctx.family.fit_domain_classifier(domain, ctx.fit_rows(fold), ctx.seed)
        rows = ctx.emit_rows(fold)
        scores = {s: np.asarray(dc.scores(r), dtype=np.float64) for s, r in rows.items()}
    for s, v in scores.items():
        if v.shape != rows[s].shape or not np.all((v >= 0) & (v <= 1)):
            raise ValueError(f"the DC of {domain} gave {v.shape[0]} scores for {len(rows[s])} utterances, "
                             "or scores outside [0, 1]")
    return {"scores": scores, "seconds": time.perf_counter() - t0}


def emit_job(ctx: _Context, domain: str, fold: int, chosen: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """Fit ``domain``'s IC and NER on its own training rows of the fold; emit for the ``chosen`` rows.

    ``chosen[split]``: positions in the fold's emit rows where the domain emits, and its ``dc`` there.
    """
    t0 = time.perf_counter()
    utts = ctx.utts
    schema = hypothesis_schema(ctx.context_fields)
    with one_thread():
        fit = ctx.fit_rows(fold)
        own = fit[ctx.family.is_domain(fit, domain)]
        if not len(own):
            raise ValueError(f"domain {domain!r} has no training utterance in fold {fold}")
        interpreter = ctx.family.fit_interpreter(domain, own, ctx.seed)
        data = DomainData(utts[i] for i in own)
        t_fit = time.perf_counter() - t0
        tables, figures = {}, None
        index = ctx.utt_index(fold)
        for s, rows in ctx.emit_rows(fold).items():
            sel, dc = chosen[s]
            sink = HypothesisColumns(ctx.context_fields)
            emit_domain(interpreter, domain, utts, rows[sel], index[s][sel], dc, ctx.hyp_cfg, sink, fold, data)
            tables[s] = pa.table({f.name: sink.cols.get(f.name, []) for f in schema}, schema=schema)
            if s == "dev":
                gold = rows[ctx.family.is_domain(rows, domain)]
                figures = domain_recognizer_figures(interpreter, utts, gold)
    out = {"tables": tables, "figures": figures, "seconds": {"fit": t_fit, "emit": time.perf_counter() - t0 - t_fit}}
    if fold == -1:  # the whole training split's: what a published version carries and dev and test were computed with
        out["resources"] = data.to_json()
    return out


def build(corpus: Corpus, family: Recognizers, cfg: Mapping[str, Any], writer: TableSetWriter, settings: str) -> tuple[dict, dict]:
    """Fit, emit and write every table of the set into ``writer``; returns ``(manifest, summary)``."""
    utts = corpus.utterances
    domains = corpus.domains
    rec_cfg, hyp_cfg = cfg["recognizers"], cfg["hypotheses"]
    seed = int(rec_cfg.get("seed", 0))
    split_rows = {s: np.array([i for i, u in enumerate(utts) if u.split == s], dtype=np.int64) for s in SPLITS}
    n_folds = int(rec_cfg["folds"])
    train_rows = split_rows["train"]
    if n_folds < 2:
        raise ValueError(f"recognizers.folds must be at least 2 for cross-fitting, not {n_folds}")
    fold_of = np.random.default_rng(seed).permutation(len(train_rows)) % n_folds
    if missing := sorted(set(domains) - {utts[i].domain for i in train_rows}):
        raise ValueError(f"domains {missing} have no training utterance; a domain needs training data for its recognizers")
    family.setup(utts)
    ctx = _Context(utts, domains, family, hyp_cfg, seed, tuple(corpus.context_fields), train_rows, fold_of, split_rows)
    folds = [-1, *range(n_folds)]
    # Fold by fold (a worker keeps the rows of its fold at hand), the full fit first; the largest
    # domains first within a fold, so that the last jobs are short.
    size = dict(zip(family.domain_names, np.bincount(family.domain_codes, minlength=len(family.domain_names)).tolist()))
    jobs = sorted(((d, k) for k in folds for d in domains), key=lambda j: (j[1] != -1, j[1], -size[j[0]], j[0]))
    n_jobs = min(worker_count(rec_cfg), len(jobs))
    backend = rec_cfg.get("backend") or "local"
    t0 = time.perf_counter()
    chosen: dict[tuple, dict] = {}
    dev_choice = None
    seconds = {"dc": 0.0, "fit": 0.0, "emit": 0.0}
    counts: dict[str, dict[str, int]] = {d: {} for d in domains}
    evidence: dict[str, list[str]] = {}
    slim: dict[str, dict[str, pa.Table]] = {s: {} for s in ("dev", "test")}
    pieces: dict[str, dict[int, dict]] = {d: {} for d in domains}

    def write_domain(key: tuple, result: dict) -> None:
        """Once all of a domain's folds are in: its tables, written; only what the summary reads is kept."""
        d, k = key
        pieces[d][k] = result["tables"]
        seconds["fit"] += result["seconds"]["fit"]
        seconds["emit"] += result["seconds"]["emit"]
        if k == -1:
            figures[d] = result["figures"]
            writer.write_resources(d, result["resources"])
        if len(pieces[d]) < len(folds):
            return
        tables = {}
        for s in SPLITS:
            # train: the folds' tables in fold order; dev and test: the full fit's.
            parts = [pieces[d][f][s] for f in folds if s in pieces[d][f]]
            tables[s] = table = pa.concat_tables(parts).sort_by([("utt_index", "ascending"), ("rank", "ascending")])
            writer.write_table(f"{d}/{s}.parquet", table)
            counts[d][s] = table.num_rows
            if s in slim:
                slim[s][d] = table.select(["utt_index", "dc", "ic", "ner", "sem_errors", "ie", "semer"])
        evidence[d] = filled_evidence(tables.values())
        del pieces[d]

    figures: dict[str, dict] = {}
    with JobRunner(ctx, n_jobs, backend, rec_cfg.get("ray_address")) as runner:
        # One fold's dc of every domain is kept until the fold is complete; then what the emission
        # rule keeps of it (a few domains per utterance) stays, while the workers go on with the next folds.
        arrived: dict[int, dict[str, Any]] = {k: {} for k in folds}

        def take_dc(key: tuple, result: dict) -> None:
            nonlocal dev_choice
            d, k = key
            arrived[k][d] = result["scores"]
            seconds["dc"] += result["seconds"]
            if len(arrived[k]) < len(domains):
                return
            for s in ctx.emit_rows(k):
                m = np.stack([arrived[k][d][s] for d in domains], axis=1)
                mask = emit_mask(m, hyp_cfg["emit"])
                if (k, s) == (-1, "dev"):
                    dev_choice = m.argmax(axis=1)
                for j, dom in enumerate(domains):
                    sel = np.flatnonzero(mask[:, j]).astype(np.int32)
                    chosen.setdefault((dom, k), {})[s] = (sel, m[sel, j].copy())
            del arrived[k]

        with tqdm(total=len(jobs), desc=f"prepare {corpus.name}: DC", unit="job") as bar:
            runner.map(dc_job, jobs, bar, take=take_dc)
        t_dc = time.perf_counter()
        with tqdm(total=len(jobs), desc=f"prepare {corpus.name}: IC+NER", unit="job") as bar:
            # domain by domain now: a domain's tables are written, and freed, as soon as its folds are in
            by_domain = sorted(jobs, key=lambda j: (-size[j[0]], j[0], folds.index(j[1])))
            runner.map(emit_job, [(d, k, chosen.pop((d, k))) for d, k in by_domain], bar, take=write_domain)
    wall = time.perf_counter() - t0
    where = "Ray" if backend == "ray" else f"{n_jobs} process{'es' if n_jobs > 1 else ''}"
    print(f"prepare: {len(jobs)} (domain, fold) jobs x 2 phases on {where} in "
          f"{wall:.1f} s (DC {t_dc - t0:.1f} s; summed over jobs: DC fits {seconds['dc']:.1f} s, "
          f"IC+NER fits {seconds['fit']:.1f} s, emission {seconds['emit']:.1f} s)")

    gold = {}
    for s in SPLITS:
        gold[s] = utterance_table([utts[i] for i in split_rows[s]], corpus.context_fields)
        writer.write_table(f"_utterances/{s}.parquet", gold[s])

    dev_gold = np.array([utts[i].domain for i in split_rows["dev"]])
    summary = {
        "corpus": corpus.name,
        "origin": "prepared",
        "domains": domains,
        "recognizers_dev": recognizer_figures(dev_choice, dev_gold, domains, figures, {d: family.describe(d) for d in domains}),
        "splits": {s: split_figures(slim[s], gold[s], domains) for s in ("dev", "test")},
        "skipped_lines": len(corpus.report.skipped),
    }
    writer.write_json("summary.json", summary)
    writer.write_text("summary.md", render_summary(summary))
    context_values = {c: sorted({u.context.get(c, "unknown") for u in utts}) for c in corpus.context_fields}
    manifest = {
        "origin": "prepared",
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
        "evidence": {d: evidence[d] for d in domains},
        # the text-derived fields rerank computed from the domain's resources (all of them: prepare computes them)
        "computed_evidence": {d: [f for f in TEXT_FIELDS if f in evidence[d]] for d in domains},
        "folds": n_folds,
        "skipped_lines": corpus.report.skipped,
    }
    return manifest, summary
