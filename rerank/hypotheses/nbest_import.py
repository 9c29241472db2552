"""``import_nbest(cfg)``: anyone's recognizers' n-best output -> a hypothesis table set.

Inputs (docs/DATA.md shows both with an example):

- ``nbest``: JSONL (one hypothesis per line) or Parquet (one per row) with the
  fields of :mod:`rerank.hypotheses.nbest` plus ``utt_id``;
- ``gold``: MASSIVE JSONL (what the corpus readers read): ``id`` matches
  ``utt_id``, ``partition`` gives the split.

Every hypothesis is labelled against its utterance's gold (SemER and IE, as
REFERENCE.md defines them) and the set is written under
``paths.data_dir/<name>/`` with ``origin: imported`` and the checksums of both
input files; nothing is written to or beside the inputs. Bad input is an error
that names the file, the line (or Parquet row) and the field; with
``on_error=skip`` such lines are skipped and counted instead. Gold utterances
with no hypothesis are counted and reported: they count as full errors.

An existing set of the same name (imported or prepared) is replaced only with
``overwrite=true``: a typo in ``name`` must not throw away another set's tables.
"""
from __future__ import annotations

import hashlib
import json
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from rerank.corpus.jsonl import MAX_LINE_BYTES, CorpusError, ReadReport, check_on_error, fail, iter_lines
from rerank.corpus.massive import MAX_TOKENS, read_massive
from rerank.corpus.utterance import SPLITS, Utterance, check_name
from rerank.hypotheses.evidence import fill_text_evidence, text_folds
from rerank.hypotheses.labels import label
from rerank.hypotheses.nbest import BadHypothesis, parse_hypothesis
from rerank.hypotheses.prepare import FEATURE_COLUMNS
from rerank.hypotheses.schema import EVIDENCE_COLUMNS, filled_evidence, hypothesis_schema, utterance_table
from rerank.hypotheses.summary import render_summary, split_figures
from rerank.hypotheses.tables import MANIFEST, TableSetWriter, build_lock, clean_leftovers, data_root
from rerank.io import read_json, sha256_file
from rerank.metrics.semer import normalize_value

HINT = "on_error=skip"
#: ``n_ranks: auto`` reads the deepest rank of the file, up to this (deeper ranks share the last one-hot)
MAX_AUTO_RANKS = 10


class TablesExist(FileExistsError):
    """``import`` would replace an existing table set (or folder) without ``overwrite=true``."""


def check_replace(root: Path, name: str, overwrite: bool) -> None:
    """Refuse to replace ``root/name`` unless ``overwrite``: the message says what is there and how to replace it."""
    existing = root / name
    if overwrite or not existing.exists():
        return
    try:
        manifest = read_json(existing / MANIFEST)
        what = f"the table set {name!r} ({manifest.get('origin', 'of unknown origin')}, built {manifest.get('built_at', '?')})"
    except (OSError, ValueError, AttributeError):
        what = "a folder that is not a complete table set"
    raise TablesExist(f"{existing} already holds {what}; import does not replace it unless told to: "
                      "add overwrite=true, or choose another name=")


@dataclass
class _Bucket:
    """One domain's hypotheses of one split, as compact columns (a million rows fit in little memory)."""

    context_fields: tuple[str, ...]
    utt_index: array = field(default_factory=lambda: array("l"))
    line: array = field(default_factory=lambda: array("l"))
    rank: array = field(default_factory=lambda: array("l"))
    scores: array = field(default_factory=lambda: array("d"))
    errors: array = field(default_factory=lambda: array("l"))
    ie: array = field(default_factory=lambda: array("b"))
    intent: list = field(default_factory=list)
    slots: list = field(default_factory=list)
    context: dict = field(default_factory=dict)
    evidence: dict = field(default_factory=lambda: {c: [] for c in EVIDENCE_COLUMNS})  # None where a record has none

    def add(self, index: int, line: int, h: dict, errors: int, ie: int) -> None:
        self.utt_index.append(index)
        self.line.append(line)
        self.rank.append(-1 if h["rank"] is None else h["rank"])
        self.scores.extend((h["dc"], h["ic"], h["ner"]))
        self.errors.append(errors)
        self.ie.append(ie)
        self.intent.append(h["intent"])
        self.slots.append(h["slots"])
        for c in self.context_fields:
            self.context.setdefault(c, []).append(h[c])
        for c, values in self.evidence.items():
            values.append(h.get(c))

    def __len__(self) -> int:
        return len(self.utt_index)


def _nbest_records(path: Path, on_error: str, report: ReadReport, max_line_bytes: int) -> Iterator[tuple[str, int, Any]]:
    """``(where, line or row number, record)`` of a JSONL or Parquet n-best file."""
    if path.suffix.lower() in (".parquet", ".pq"):
        yield from _parquet_records(path, report)
        return
    for where, text in iter_lines(path, on_error, report, max_line_bytes, HINT):
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            fail(f"{where}: bad JSON ({err.msg} at column {err.colno})", on_error, report, HINT)
            continue
        except RecursionError:  # (json has no depth limit of its own: Python's recursion limit stops it)
            fail(f"{where}: JSON nested too deep to read", on_error, report, HINT)
            continue
        if not isinstance(record, dict):
            fail(f"{where}: a line must hold a JSON object, not {type(record).__name__}", on_error, report, HINT)
            continue
        yield where, int(where.rsplit(":", 1)[1]), record


def _parquet_records(path: Path, report: ReadReport) -> Iterator[tuple[str, int, Any]]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise CorpusError(f"{path}: not a readable Parquet file ({err})") from None
    row = 0
    batches = pf.iter_batches(batch_size=65536)
    while True:
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as err:  # a damaged row group: the rows after it cannot be found
            raise CorpusError(f"{path}: row {row + 1} onwards cannot be read ({err})") from None
        if batch is None:
            return
        for record in batch.to_pylist():
            row += 1
            report.lines += 1
            yield f"{path}: row {row}", row, record


def _file_info(path: Path) -> dict:
    return {"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def import_nbest(cfg: Mapping[str, Any]) -> dict:
    """Read, check and label ``cfg.nbest`` against ``cfg.gold``; write the table set ``cfg.name``; returns its manifest."""
    t0 = time.perf_counter()
    name = check_name(cfg["name"], "name")
    on_error = check_on_error(cfg.get("on_error", "raise"))
    context_fields = tuple(cfg.get("context_fields") or ())
    max_line_bytes = int(cfg.get("max_line_bytes") or MAX_LINE_BYTES)
    nbest_path, gold_path = Path(cfg["nbest"]), Path(cfg["gold"])
    for what, p in (("nbest", nbest_path), ("gold", gold_path)):
        if not p.is_file():
            raise FileNotFoundError(f"{what}={p}: no such file")
    root = data_root(cfg)
    overwrite = bool(cfg.get("overwrite", False))
    check_replace(root, name, overwrite)  # before the reading and labelling; again under the lock before writing

    gold_report, nbest_report = ReadReport(), ReadReport()
    gold = read_massive(gold_path, on_error=on_error, context_fields=context_fields, report=gold_report,
                        max_tokens=int(cfg.get("max_tokens") or MAX_TOKENS), max_line_bytes=max_line_bytes)
    if not gold:
        raise CorpusError(f"{gold_path}: holds no utterance")
    by_split: dict[str, list[Utterance]] = {s: [] for s in SPLITS}
    where_of: dict[str, tuple[str, int]] = {}
    for u in gold:
        where_of[u.id] = (u.split, len(by_split[u.split]))
        by_split[u.split].append(u)

    buckets: dict[tuple[str, str], _Bucket] = {}
    inputs = {"nbest": _file_info(nbest_path), "gold": _file_info(gold_path)}
    with tqdm(desc=f"import {name}", unit=" hyp", unit_scale=True, mininterval=1.0) as bar:
        for n, (where, line, record) in enumerate(_nbest_records(nbest_path, on_error, nbest_report, max_line_bytes), 1):
            if not n & 8191:
                bar.update(8192)
            try:
                utt_id = record.get("utt_id") if isinstance(record, dict) else None
                loc = where_of.get(str(utt_id)) if utt_id is not None else None
                h = parse_hypothesis(record, context_fields, by_split[loc[0]][loc[1]].context if loc else None,
                                     need_utt_id=True)
                if loc is None:
                    raise BadHypothesis(f"field 'utt_id': {h['utt_id']!r} is not an id of the gold file {gold_path}", "utt_id")
            except BadHypothesis as err:
                fail(f"{where}: {err}", on_error, nbest_report, HINT)
                continue
            split, index = loc
            g = by_split[split][index]
            errors, _, ie = label(g.domain, g.intent, g.slots, h["domain"], h["intent"], h["slots"])
            key = (h["domain"], split)
            bucket = buckets.get(key)
            if bucket is None:
                bucket = buckets[key] = _Bucket(context_fields)
            bucket.add(index, line, h, errors, ie)
        bar.update(nbest_report.lines - bar.n)
    if not buckets:
        raise CorpusError(f"{nbest_path}: no usable hypothesis"
                          + (f" ({len(nbest_report.skipped)} lines skipped)" if nbest_report.skipped else ""))

    domains = sorted({d for d, _ in buckets})
    n_ranks = cfg.get("n_ranks", "auto")
    with build_lock(root, name):
        check_replace(root, name, overwrite)  # (another import may have built it meanwhile)
        clean_leftovers(root, name)
        with TableSetWriter(root, name) as writer:
            tables, max_rank = {}, -1
            schema = hypothesis_schema(context_fields)
            computed: dict[str, list[str]] = {}
            folds = text_folds(by_split["train"], int(cfg.get("evidence_folds", 5)), int(cfg.get("seed", 0)))
            for d in tqdm(domains, desc=f"import {name}: tables and text-derived evidence", unit=" domain", mininterval=1.0):
                for s in SPLITS:
                    b = buckets.get((d, s))
                    table = _bucket_table(b, d, s, by_split[s], schema, nbest_path, on_error, nbest_report) if b else schema.empty_table()
                    if table.num_rows:
                        max_rank = max(max_rank, int(pc.max(table["rank"]).as_py()))
                    tables[(d, s)] = table
                resources, computed[d] = fill_text_evidence(tables, d, by_split, folds)
                writer.write_resources(d, resources)
                for s in SPLITS:
                    writer.write_table(f"{d}/{s}.parquet", tables[(d, s)])
            gold_tables = {}
            for s in SPLITS:
                gold_tables[s] = utterance_table(by_split[s], context_fields)
                writer.write_table(f"_utterances/{s}.parquet", gold_tables[s])
            if n_ranks in (None, "auto"):
                n_ranks = max(1, min(max_rank + 1, MAX_AUTO_RANKS))
            manifest, summary = _manifest(name, domains, tables, gold_tables, by_split, context_fields, int(n_ranks),
                                          inputs, gold_report, nbest_report, cfg, computed)
            summary_text = render_summary(summary)
            writer.write_json("summary.json", summary)
            writer.write_text("summary.md", summary_text)
            manifest["seconds"] = round(time.perf_counter() - t0, 1)
            manifest = writer.commit(manifest)
    print(summary_text)
    print(f"import: wrote {root / name} in {manifest['seconds']} s ({sum(t.num_rows for t in tables.values())} hypotheses)")
    return manifest


def _bucket_table(b: _Bucket, domain: str, split: str, utts: list[Utterance], schema: pa.Schema, path: Path,
                  on_error: str, report: ReadReport) -> pa.Table:
    """Sort a bucket by (utterance, rank), fill missing ranks, refuse duplicates; the Arrow table."""
    n = len(b)
    idx = np.asarray(b.utt_index, dtype=np.int64)
    rank = np.asarray(b.rank, dtype=np.int64)
    scores = np.asarray(b.scores, dtype=np.float64).reshape(n, 3)
    lines = np.asarray(b.line, dtype=np.int64)
    order = np.argsort(idx, kind="stable")
    keep = np.ones(n, dtype=bool)
    starts = np.flatnonzero(np.r_[True, idx[order][1:] != idx[order][:-1]])
    ends = np.r_[starts[1:], n]
    for a, z in zip(starts.tolist(), ends.tolist()):
        run = order[a:z].tolist()
        utt = utts[int(idx[run[0]])]
        seen: dict[tuple, int] = {}
        for i in run:
            key = (b.intent[i], tuple(sorted((t, normalize_value(v)) for t, v in b.slots[i])))
            if key in seen:
                fail(f"{path}:{lines[i]}: duplicate hypothesis of utterance {utt.id!r}, domain {domain!r} "
                     f"(same intent and slots as line {seen[key]})", on_error, report, HINT)
                keep[i] = False
                continue
            seen[key] = int(lines[i])
        run = [i for i in run if keep[i]]
        given = rank[run]
        if (given < 0).all():
            # No ranks given: the domain's own order, by ic * ner (ties keep the file's order).
            by = sorted(run, key=lambda i: -scores[i, 1] * scores[i, 2])
            rank[by] = np.arange(len(by))
        elif (given < 0).any() or len(set(given.tolist())) != len(given):
            problem = "some of its hypotheses have a 'rank' and some have not" if (given < 0).any() else "a rank repeats"
            fail(f"{path}:{lines[run[0]]}: field 'rank': utterance {utt.id!r}, domain {domain!r}: {problem}",
                 on_error, report, HINT)
            keep[run] = False
    sel = np.flatnonzero(keep)
    sel = sel[np.lexsort((rank[sel], idx[sel]))]
    totals = np.array([1 + len(u.slots) for u in utts], dtype=np.int64)
    tot = totals[idx[sel]]
    err = np.asarray(b.errors, dtype=np.int64)[sel]
    slots = [b.slots[i] for i in sel.tolist()]
    cols: dict[str, Any] = {
        "utt_id": pa.array([utts[i].id for i in idx[sel].tolist()], pa.string()),
        "utt_index": pa.array(idx[sel], pa.int32()),
        "domain": pa.array(np.full(len(sel), domain, dtype=object), pa.string()),
        "rank": pa.array(rank[sel], pa.int16()),
        "intent": pa.array([b.intent[i] for i in sel.tolist()], pa.string()),
        "slots": pa.array([[{"type": t, "value": v} for t, v in s] for s in slots], schema.field("slots").type),
        "n_slots": pa.array([len(s) for s in slots], pa.int16()),
        "dc": pa.array(scores[sel, 0]), "ic": pa.array(scores[sel, 1]), "ner": pa.array(scores[sel, 2]),
        "sem_errors": pa.array(err, pa.int32()),
        "sem_total": pa.array(tot, pa.int32()),
        "semer": pa.array(err / tot),
        "ie": pa.array(np.asarray(b.ie, dtype=np.int8)[sel], pa.int8()),
        "gold_domain": pa.array([utts[i].domain for i in idx[sel].tolist()], pa.string()),
        "gold_intent": pa.array([utts[i].intent for i in idx[sel].tolist()], pa.string()),
        "fold": pa.array(np.full(len(sel), -1, dtype=np.int8), pa.int8()),
    }
    for c in b.context_fields:
        values = b.context[c]
        cols[c] = pa.array([values[i] for i in sel.tolist()], pa.string())
    for c, values in b.evidence.items():
        cols[c] = pa.array([values[i] for i in sel.tolist()], schema.field(c).type)
    return pa.table([cols[f.name] for f in schema], schema=schema)


def _manifest(name, domains, tables, gold_tables, by_split, context_fields, n_ranks, inputs, gold_report, nbest_report, cfg,
              computed):
    train_gold = by_split["train"]
    intents, slot_types = {}, {}
    for d in domains:
        own = [u for u in train_gold if u.domain == d]
        t = tables[(d, "train")]
        intents[d] = sorted({u.intent for u in own} | set(t["intent"].to_pylist()))
        hyp_types = set(pc.struct_field(pc.list_flatten(t["slots"]), "type").to_pylist()) if t.num_rows else set()
        slot_types[d] = sorted({s for u in own for s, _ in u.slots} | hyp_types)
    context_values = {}
    for c in context_fields:
        values = {u.context.get(c, "unknown") for s in SPLITS for u in by_split[s]}
        for t in tables.values():
            values |= set(t[c].unique().to_pylist())
        context_values[c] = sorted(values)
    gold_domains = sorted({u.domain for s in SPLITS for u in by_split[s]})
    per_split = {s: {d: tables[(d, s)] for d in domains} for s in SPLITS}
    summary = {"corpus": name, "origin": "imported", "domains": domains,
               "splits": {s: split_figures(per_split[s], gold_tables[s], domains) for s in SPLITS if by_split[s]},
               "skipped_lines": len(gold_report.skipped) + len(nbest_report.skipped), "notes": []}
    if foreign := sorted(set(domains) - set(gold_domains)):
        summary["notes"].append(f"Domains with hypotheses but no gold utterance: {', '.join(foreign)} "
                                "(every hypothesis of theirs is wrong).")
    if silent := sorted(set(gold_domains) - set(domains)):
        summary["notes"].append(f"Gold domains that emitted no hypothesis: {', '.join(silent)} "
                                "(their utterances are full errors unless another domain gets them right).")
    none = {s: f["no_hypothesis"] for s, f in summary["splits"].items() if f["no_hypothesis"]}
    if none:
        summary["notes"].append("Gold utterances with no hypothesis at all (full errors): "
                                + ", ".join(f"{s} {n}" for s, n in none.items()) + ".")
    for d in domains:
        partial = [c for c in EVIDENCE_COLUMNS
                   if 0 < sum(tables[(d, s)][c].null_count for s in SPLITS) < sum(tables[(d, s)].num_rows for s in SPLITS)]
        if partial:
            summary["notes"].append(f"Domain {d} gives the evidence {', '.join(partial)} in some hypotheses but not in all: "
                                    "a model cannot use it (features.evidence needs it in every hypothesis).")
    summary["evidence"] = {d: {"computed": computed[d],
                               "from_file": [c for c in EVIDENCE_COLUMNS if c not in computed[d]
                                             and all(tables[(d, s)][c].null_count == 0 for s in SPLITS)]} for d in domains}
    by_origin: dict[tuple, list[str]] = {}
    for d in domains:
        by_origin.setdefault((tuple(summary["evidence"][d]["computed"]), tuple(summary["evidence"][d]["from_file"])), []).append(d)
    for (made, given), ds in sorted(by_origin.items()):
        summary["notes"].append(f"Evidence of {', '.join(ds) if len(ds) < 6 else f'{len(ds)} domains'}: computed from the "
                                f"gold's text: {', '.join(made) or 'none'}; from the file: {', '.join(given) or 'none'}.")
    empty_train = [d for d in domains if not tables[(d, "train")].num_rows]
    if empty_train:
        summary["notes"].append(f"Domains with no training hypothesis (cannot train a re-ranker): {', '.join(empty_train)}.")
    settings = {k: cfg.get(k) for k in ("context_fields", "on_error", "max_tokens", "max_line_bytes", "evidence_folds", "seed")}
    settings["n_ranks"] = n_ranks
    manifest = {
        "origin": "imported",
        "inputs": inputs,
        "corpus_hash": hashlib.sha256((inputs["nbest"]["sha256"] + inputs["gold"]["sha256"]).encode()).hexdigest(),
        "settings_hash": hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest(),
        "domains": domains,
        "gold_domains": gold_domains,
        "intents": intents,
        "slot_types": slot_types,
        "n_best": n_ranks,
        "feature_columns": FEATURE_COLUMNS + list(context_fields),
        "context_fields": list(context_fields),
        "context_values": context_values,
        "splits": {s: len(by_split[s]) for s in SPLITS},
        "rows": {d: {s: tables[(d, s)].num_rows for s in SPLITS} for d in domains},
        # the evidence columns every hypothesis of the domain gives (features.evidence can use only those)
        "evidence": {d: filled_evidence(tables[(d, s)] for s in SPLITS) for d in domains},
        # the text-derived fields rerank computed from the domain's resources (the others came from the file)
        "computed_evidence": {d: computed[d] for d in domains},
        "folds": None,
        "skipped_lines": gold_report.skipped + nbest_report.skipped,
        "no_hypothesis": {s: f["no_hypothesis"] for s, f in summary["splits"].items()},
    }
    return manifest, summary
