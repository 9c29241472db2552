"""Speed of the merge (BENCHMARKS.md, Merge): ``python benchmarks/run.py bench=merge``.

(a) Throughput: ``CrossDomainRanker.score_tables`` (features, logits, sigmoid and the
    per-utterance ranking) over the tables of a prepared corpus, replicated (utterance
    indices shifted) to about ``hypotheses`` rows; hypotheses per second, one process.
    Target: >= 5 M/s. Models: the published ones of ``registry``, else linear models with
    random weights on the corpus' own feature specs (the same code path).
(b) Latency: ``CrossDomainRanker.rank`` on one utterance of 18 domains x 5 hypotheses,
    linear models with HWU64-sized feature specs (30-60 features); p50/p99 over ``calls``
    calls after ``warmup`` calls. Target: p99 < 1 ms.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa

from benchmarks.measure import latency, machine_info, throughput
from rerank.config import compose_config

HWU64_DOMAINS = ["alarm", "audio", "calendar", "cooking", "datetime", "email", "general", "iot", "lists", "music",
                 "news", "play", "qa", "recommendation", "social", "takeaway", "transport", "weather"]
DEVICES = ("echo", "echo_show", "fire_tv")


def linear_scorer(spec, rng: np.random.Generator, version: str = "v1"):
    """A published-like linear model of ``spec`` with random weights."""
    import torch

    from rerank.merge.ranker import DomainScorer
    from rerank.training.model import DomainReranker

    model = DomainReranker(spec)
    with torch.no_grad():
        model.linear.weight.copy_(torch.from_numpy(rng.normal(0, 0.5, (1, spec.dim)).astype(np.float32)))
        model.linear.bias.fill_(float(rng.normal()))
        model.mean.copy_(torch.from_numpy(rng.normal(0, 0.1, spec.dim).astype(np.float32)))
        model.std.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, spec.dim).astype(np.float32)))
    model.eval()
    return DomainScorer(spec.domain, version, spec, model.numpy_scorer(), "bench")


def replicate(tables: dict[str, pa.Table], n_utts: int, target: int) -> tuple[dict[str, pa.Table], int]:
    """The tables repeated ``k`` times (utterance indices shifted) to about ``target`` rows; and ``k``."""
    rows = sum(t.num_rows for t in tables.values())
    k = max(1, round(target / max(rows, 1)))
    out = {}
    for d, t in tables.items():
        parts = [t.set_column(t.schema.get_field_index("utt_index"), "utt_index",
                              pa.array(t["utt_index"].to_numpy() + r * n_utts, pa.int32())) for r in range(k)]
        out[d] = pa.concat_tables(parts).combine_chunks()
    return out, k


def batch_throughput(cfg: dict, split: str, target: int, registry: str | None, repeats: int,
                     evidence: Sequence[str] = ()) -> dict:
    from rerank.hypotheses.prepare import prepare
    from rerank.hypotheses.tables import open_tables
    from rerank.merge.ranker import CrossDomainRanker
    from rerank.model.spec import spec_from_manifest
    from rerank.ranking import rank_within_utterances

    prepare(cfg)
    ts = open_tables(cfg)
    tables, manifest = {d: ts.read(d, split) for d in ts.domains}, ts.manifest
    n_utts = manifest["splits"][split]
    big, k = replicate(tables, n_utts, target)
    n = sum(t.num_rows for t in big.values())
    specs = {d: spec_from_manifest(manifest, d, evidence) for d in manifest["domains"]}
    if registry:
        ranker = CrossDomainRanker.from_registry(registry, manifest["corpus"], manifest["domains"], specs=specs)
        models = f"published ({len(ranker.domains) - len(ranker.fallbacks)} of {len(ranker.domains)} domains; others baseline)"
    else:
        rng = np.random.default_rng(0)
        ranker = CrossDomainRanker({d: linear_scorer(specs[d], rng) for d in manifest["domains"]}, manifest["corpus"])
        models = "linear, random weights"
    rate = throughput(lambda: ranker.score_tables(big), n, min_repeats=repeats, min_seconds=0)
    # where the time goes (one pass each): features and logits, then the per-utterance ranking
    score = throughput(lambda: [ranker.scorers[d].score_table(big[d]) for d in sorted(big)], n, 1, 0)
    scores = np.concatenate([ranker.scorers[d].score_table(big[d]) for d in sorted(big)])
    utt = np.concatenate([big[d]["utt_index"].to_numpy() for d in sorted(big)])
    ranking = throughput(lambda: rank_within_utterances(utt, scores), n, 1, 0)
    dims = [s.dim for s in specs.values()]
    return {**rate, "models": models, "score_seconds": score["best_seconds"], "rank_seconds": ranking["best_seconds"],
            "corpus": f"{manifest['corpus']} {split}: {sum(t.num_rows for t in tables.values()):,} hypotheses x {k} "
                      f"= {n:,} ({len(big)} domains, {min(dims)}-{max(dims)} features, {n_utts * k:,} utterances)"}


def hwu64_specs(rng: np.random.Generator, evidence: Sequence[str] = ()):
    from rerank.model.spec import FeatureSpec

    specs = []
    for d in HWU64_DOMAINS:
        n_int, n_slot = int(rng.integers(2, 11)), int(rng.integers(10, 36))
        specs.append(FeatureSpec(
            domain=d, intents=tuple(f"{d}_intent{i}" for i in range(n_int)), context=(("device", DEVICES),),
            slot_types=tuple(f"{d}_slot{i}" for i in range(n_slot)), n_ranks=5, evidence=tuple(evidence)))
    return specs


def random_evidence(rng: np.random.Generator) -> dict:
    """Every evidence field of the n-best format (as a client sends them, whether the models read them or not),
    at random within its range (unbounded ends: +-10; whole numbers up to 12)."""
    from rerank.hypotheses.nbest import EVIDENCE

    out = {}
    for name, (low, high, whole) in EVIDENCE.items():
        lo, hi = max(low, -10.0), min(high, 12 if whole else 10.0)
        out[name] = int(rng.integers(lo, hi + 1)) if whole else float(rng.uniform(lo, hi))
    return out


def random_utterance(specs, rng: np.random.Generator, per_domain: int = 5) -> list[dict]:
    device = DEVICES[int(rng.integers(len(DEVICES)))]
    hyps = []
    for spec in specs:
        dc = float(rng.random())
        for r in range(per_domain):
            n_slots = int(rng.integers(0, 4))
            slots = [{"type": spec.slot_types[int(rng.integers(len(spec.slot_types)))], "value": f"v{j}"} for j in range(n_slots)]
            hyps.append({"utt_id": "u", "domain": spec.domain, "rank": r,
                         "intent": spec.intents[int(rng.integers(len(spec.intents)))], "slots": slots,
                         "device": device, "dc": dc, "ic": float(rng.random()), "ner": float(rng.random()),
                         **random_evidence(rng)})
    return hyps


def rank_latency(calls: int, warmup: int, evidence: Sequence[str] = ()) -> dict:
    from rerank.merge.ranker import CrossDomainRanker

    rng = np.random.default_rng(1)
    specs = hwu64_specs(rng, evidence)
    ranker = CrossDomainRanker({s.domain: linear_scorer(s, rng) for s in specs}, "bench")
    pool = [random_utterance(specs, rng) for _ in range(64)]
    dims = [s.dim for s in specs]
    return {**latency(ranker.rank, pool, calls, warmup),
            "setting": f"{len(specs)} domains x 5 hypotheses ({len(pool[0])} per call), {min(dims)}-{max(dims)} features, "
                       f"{calls:,} calls after {warmup:,} warm-up"}


def run(output_dir: str, data: str = "synthetic", data_path: str | None = None, n_utterances: int = 4000, folds: int = 2,
        split: str = "test", registry: str | None = None, hypotheses: int = 1_500_000, repeats: int = 5, calls: int = 5000,
        warmup: int = 500, evidence: Sequence[str] = ()) -> int:
    overrides = [f"paths.output_dir={output_dir}", f"data={data}"]
    if data == "synthetic":
        overrides += [f"data.synthetic.n_utterances={n_utterances}", f"recognizers.folds={folds}"]
    elif data_path:
        overrides.append(f"data.path={data_path}")
    info = machine_info()
    tp = batch_throughput(compose_config("prepare", overrides), split, hypotheses, registry, repeats, evidence)
    lat = rank_latency(calls, warmup, evidence)
    ok_tp, ok_lat = tp["best_per_second"] >= 5e6, lat["p99_ms"] < 1.0
    lines = ["# Merge benchmark", "", "| machine | |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in info.items()),
             "", "| measure | setting | result | target | met |", "| --- | --- | --- | --- | --- |",
             f"| batch ranking throughput (`score_tables`, 1 process) | {tp['corpus']}; models: {tp['models']}; "
             f"best / median of {tp['repeats']} | {tp['best_per_second'] / 1e6:.2f} M/s / {tp['median_per_second'] / 1e6:.2f} M/s "
             f"({tp['best_seconds'] * 1e3:.0f} ms / {tp['median_seconds'] * 1e3:.0f} ms; CPU time {tp['cpu_seconds'] * 1e3:.0f} ms) "
             f"| >= 5 M/s | {'yes' if ok_tp else 'no'} |",
             f"| single-utterance latency (`rank`) | {lat['setting']} | "
             f"p50 {lat['p50_ms'] * 1e3:.0f} µs, p90 {lat['p90_ms'] * 1e3:.0f} µs, "
             f"p99 {lat['p99_ms'] * 1e3:.0f} µs (mean {lat['mean_ms'] * 1e3:.0f}, max {lat['max_ms'] * 1e3:.0f}); thread CPU time "
             f"p50 {lat['cpu_p50_ms'] * 1e3:.0f} µs, p99 {lat['cpu_p99_ms'] * 1e3:.0f} µs | p99 < 1 ms | {'yes' if ok_lat else 'no'} |",
             "", "Wall-clock figures include time the process waited for a CPU; thread CPU time does not "
             "(on a shared machine, compare the two: a p99 far above the CPU-time p99 is preemption, not the code).",
             "", f"Throughput breakdown (one pass): features, logits and sigmoid {tp['score_seconds'] * 1e3:.0f} ms, "
             f"per-utterance ranking {tp['rank_seconds'] * 1e3:.0f} ms (median of the whole: {tp['median_seconds'] * 1e3:.0f} ms)."]
    print("\n".join(lines))
    return 0
