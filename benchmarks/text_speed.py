"""What evidence without burden costs: rank() latency and registry load with and without the evidence resources.

    python benchmarks/run.py bench=text bench.work=/tmp/text_bench [bench.sizes=[hwu64,100,1000]]

For every size (HWU64, or a synthetic assistant of that many domains; no recognizers are trained: the
corpus is read, not prepared) every domain gets a linear model with random weights over its own feature
spec with the default evidence families (text-derived and ``dc_logit``), published twice:

- **with resources**: the version carries its domain's :class:`DomainData` (fitted on its training
  utterances) and computes its text-derived evidence from a request's ``text``;
- **without**: the same model without them: the client sends the evidence fields.

Measured: the registry's load (every live model, :meth:`CrossDomainRanker.from_registry` and its
``prepare``, the text index included) and the resident memory of a fresh process holding it (median of
``loads`` processes), and ``rank()`` over test utterances (the gold domain and up to 17 others, five
hypotheses each), side by side in one process: with only ``dc, ic, ner`` and the text against the same
hypotheses with the evidence fields the first computed (the same scores, checked).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from benchmarks.measure import REPO, latency, machine
from benchmarks.scale import utterances_for
from rerank.io import read_json, write_json

EVIDENCE = ("dc_logit", "oov", "catalogue", "length", "unigram", "neighbour", "neighbour_intent")
PER_UTTERANCE = 18


class _Linear:
    """A linear model with random weights over ``spec`` (a :class:`Publishable`)."""

    kind = "linear"

    def __init__(self, spec, rng: np.random.Generator):
        self.spec = spec
        f = spec.dim
        self._w = {"mean": rng.normal(0, 0.1, f).astype(np.float32), "std": rng.uniform(0.5, 2.0, f).astype(np.float32),
                   "calibration": np.array([1.0, 0.0], np.float32),
                   "linear.weight": rng.normal(0, 0.5, (1, f)).astype(np.float32),
                   "linear.bias": np.array([rng.normal()], np.float32)}

    def weights(self) -> dict:
        return dict(self._w)


def _corpus(size, hwu64: str):
    from rerank.config import compose_config
    from rerank.corpus.load import load_corpus

    if size == "hwu64":
        cfg = compose_config("prepare", ["data=hwu64", f"data.path={hwu64}"], REPO / "configs")
    else:
        n = int(size)
        cfg = compose_config("prepare", ["data=synthetic", f"data.name=synthetic_{n}d", f"data.synthetic.n_domains={n}",
                                         f"data.synthetic.n_utterances={utterances_for(n)}"], REPO / "configs")
    return load_corpus(cfg["data"])


def build(size, work: Path, hwu64: str) -> dict:
    """Both registries of one size; returns what the probes need."""
    from rerank.hypotheses.evidence import DomainData
    from rerank.model.registry import Registry
    from rerank.model.spec import FeatureSpec

    t = time.perf_counter()
    corpus = _corpus(size, hwu64)
    train = [u for u in corpus.utterances if u.split == "train"]
    rng = np.random.default_rng(0)
    name = corpus.name
    for label in ("with", "without"):
        reg = Registry(work / label)
        for d in corpus.domains:
            own = [u for u in train if u.domain == d]
            spec = FeatureSpec(domain=d, intents=tuple(sorted({u.intent for u in own})), context=(("device", ("unknown",)),),
                               slot_types=tuple(sorted({s for u in own for s, _ in u.slots})), evidence=EVIDENCE)
            model = _Linear(spec, np.random.default_rng(hash(d) % 2**32))
            reg.publish(name, d, model, loss="bench", config={}, metrics={}, data_hash="bench",
                        resources=DomainData(own).to_json() if label == "with" else None)
        reg.release(name, {d: "v1" for d in corpus.domains}, {"action": "promote", "verdict": "bench", "forced": True})
    test = [u for u in corpus.utterances if u.split == "test"]
    pool = []
    for u in test[:2000]:
        others = [d for d in rng.permutation(corpus.domains).tolist() if d != u.domain][:PER_UTTERANCE - 1]
        pool.append({"text": u.text, "domains": [u.domain, *others], "seed": int(rng.integers(2**31))})
    write_json(work / "pool.json", pool)
    return {"name": name, "domains": len(corpus.domains), "train_utterances": len(train), "build_seconds": time.perf_counter() - t}


def probe(work: Path, name: str, label: str) -> dict:
    """In a fresh process: the load of every live model (and the text index) and the resident memory after it."""
    code = (
        "import json, time\n"
        "from rerank.merge.ranker import CrossDomainRanker\n"
        "def rss():\n"
        "    return int(next(x for x in open('/proc/self/status') if x.startswith('VmRSS')).split()[1]) / 1024\n"
        "before = rss(); t = time.perf_counter()\n"
        f"r = CrossDomainRanker.from_registry({str(work / label)!r}, {name!r}).prepare()\n"
        "print(json.dumps({'load_seconds': time.perf_counter() - t, 'models_mb': rss() - before, 'rss_mb': rss()}))\n")
    return json.loads(subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout)


def hypotheses(ranker, item: dict) -> list[dict]:
    rng = np.random.default_rng(item["seed"])
    hyps = []
    for d in item["domains"]:
        scorer = ranker.scorers[d]
        data = scorer.published.resources
        spec = scorer.spec
        catalogue = sorted(data.catalogue) if data is not None and data.catalogue else [("x", "y")]
        dc = float(rng.random())
        # as a domain emits (prepare, rerank.hypotheses.emit): a few labellings of the slots, each with its best intents
        labellings = [[dict(zip(("type", "value"), catalogue[int(rng.integers(len(catalogue)))]))
                       for _ in range(int(rng.integers(0, 3)))] for _ in range(2)]
        for r in range(5):
            hyps.append({"domain": d, "intent": spec.intents[int(rng.integers(len(spec.intents)))], "slots": list(labellings[r % 2]),
                         "rank": r, "dc": dc, "ic": float(rng.random()), "ner": float(rng.random())})
    return hyps


def rank_side_by_side(work: Path, name: str, calls: int, warmup: int) -> dict:
    from rerank.merge.ranker import CrossDomainRanker
    from rerank.model.text_evidence import request_tokens

    with_r = CrossDomainRanker.from_registry(work / "with", name).prepare()
    without = CrossDomainRanker.from_registry(work / "without", name).prepare()
    pool = read_json(work / "pool.json")
    bare = [(hypotheses(with_r, item), item["text"]) for item in pool]
    full = []
    for hyps, text in bare:  # the fields the first ranker computes, sent by the client to the second
        from rerank.hypotheses.evidence import TEXT_FIELDS

        T = with_r._text_index().values(request_tokens(text), [h["domain"] for h in hyps],
                                                          [h["intent"] for h in hyps],
                                                          [h["slots"] for h in hyps])
        full.append([{**h, **{f: (int(v) if f in ("n_tokens", "catalogue_miss") else float(v)) for f, v in zip(TEXT_FIELDS, row)}}
                     for h, row in zip(hyps, T.tolist())])
    worst = max(abs(a["score"] - b["score"]) for (h, t), f in zip(bare[:200], full[:200])
                for a, b in zip(sorted(with_r.rank(h, text=t), key=lambda x: (x["domain"], x["domain_rank"])),
                                sorted(without.rank(f), key=lambda x: (x["domain"], x["domain_rank"]))))
    a = latency(lambda x: with_r.rank(x[0], text=x[1]), bare, calls, warmup)
    b = latency(without.rank, full, calls, warmup)
    return {"with_text": a, "with_fields": b, "max_score_difference": worst,
            "hypotheses_per_call": float(np.mean([len(h) for h, _ in bare]))}


def run(work: str, hwu64: str = "../shared/data/hwu64", sizes: Sequence = ("hwu64", 100, 1000), calls: int = 3000,
        warmup: int = 300, loads: int = 3) -> int:
    root = Path(work).resolve()
    out_path = root / "text.json"
    results = read_json(out_path) if out_path.exists() else []
    print(f"# text-derived evidence benchmark, {time.strftime('%Y-%m-%d %H:%M %Z')}\n# machine: {machine()}", flush=True)
    for size in sizes:
        w = root / str(size)
        if w.exists():
            import shutil

            shutil.rmtree(w)
        w.mkdir(parents=True)
        row = {"size": str(size), **build(size, w, hwu64)}
        print(f"text bench {size}: built in {row['build_seconds']:.0f} s", flush=True)
        for label in ("with", "without"):
            probes = [probe(w, row["name"], label) for _ in range(loads)]
            row[label] = {k: float(np.median([p[k] for p in probes])) for k in probes[0]}
            row[label]["resources_mb"] = sum(p.stat().st_size for p in (w / label).rglob("evidence.json")) / 2**20
        row["rank"] = rank_side_by_side(w, row["name"], calls, warmup)
        results = [r for r in results if r["size"] != row["size"]] + [row]
        write_json(out_path, results)
        print(f"text bench {size}: {json.dumps(row)}", flush=True)
    print("\n| corpus | domains | training utterances | load s with / without resources | memory of the models MB with / "
          "without (process RSS) | resources on disk MB | rank() p50 / p99 ms, text | rank() p50 / p99 ms, fields | p99 ratio | "
          "hypotheses per call | largest score difference |")
    print("| --- | ---: | ---: | --- | --- | ---: | --- | --- | ---: | ---: | ---: |")
    for r in results:
        a, b = r["rank"]["with_text"], r["rank"]["with_fields"]
        print(f"| {r['size']} | {r['domains']} | {r['train_utterances']:,} | "
              f"{r['with']['load_seconds']:.2f} / {r['without']['load_seconds']:.2f} | "
              f"{r['with']['models_mb']:.0f} / {r['without']['models_mb']:.0f} "
              f"({r['with']['rss_mb']:.0f} / {r['without']['rss_mb']:.0f}) | "
              f"{r['with']['resources_mb']:.1f} | {a['p50_ms']:.3f} / {a['p99_ms']:.3f} | {b['p50_ms']:.3f} / {b['p99_ms']:.3f} | "
              f"{a['p99_ms'] / b['p99_ms']:.2f} | {r['rank']['hypotheses_per_call']:.0f} | {r['rank']['max_score_difference']:.1e} |")
    return 0
