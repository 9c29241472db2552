"""Import speed (``python benchmarks/run.py bench=import``): ``scripts/import.py`` on a large n-best file, timed, its peak memory sampled.

The n-best file is either given (``nbest``, ``gold``: e.g. HWU64's tables
exported by ``scripts/export_nbest.py``) or generated here from the synthetic
corpus: every domain proposes hypotheses for every utterance, with random scores
and intents and slots that are sometimes right, sometimes perturbed, so that
labelling does real work. Target (issue 8): 1 M hypotheses from JSONL in under
60 s on 2 cores, peak memory under 2 GB.
"""
from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path

from benchmarks.measure import REPO, machine, run_measured, script


def write_synthetic_nbest(folder: Path, hypotheses: int, per_domain: int = 5, seed: int = 0) -> tuple[Path, Path, int]:
    """``(nbest.jsonl, gold.jsonl, hypotheses written)``: about ``hypotheses`` rows over synthetic gold utterances."""
    from rerank.corpus.annotation import parse_annotation
    from rerank.corpus.synthetic import DOMAINS, INTENTS, iter_records

    per_utt = per_domain * len(DOMAINS) * 0.9  # a few lists come out shorter (no interpretation repeats)
    n_utts = max(10, int(hypotheses / per_utt))
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    nbest, gold = folder / "nbest.jsonl", folder / "gold.jsonl"
    written = 0
    with open(nbest, "w") as fn, open(gold, "w") as fg:
        for rec in iter_records(n_utts, seed=seed):
            fg.write(json.dumps(rec) + "\n")
            slots = [{"type": t, "value": v} for t, v in parse_annotation(rec["annot_utt"]).slots]
            for d in DOMAINS:
                dc, seen, r = rng.random(), set(), 0
                for attempt in range(4 * per_domain):
                    if r == per_domain:
                        break
                    intent = rec["intent"] if d == rec["scenario"] and attempt == 0 else rng.choice(INTENTS[d])
                    hs = [dict(s) for s in slots if rng.random() < 0.8]
                    if hs and rng.random() < 0.3:
                        hs[0]["type"] = "other_" + hs[0]["type"]
                    key = (intent, tuple(sorted((s["type"], s["value"]) for s in hs)))
                    if key in seen:  # an n-best lists each interpretation once
                        continue
                    seen.add(key)
                    fn.write(json.dumps({"utt_id": rec["id"], "domain": d, "intent": intent, "slots": hs, "dc": dc,
                                         "ic": rng.random(), "ner": rng.random(), "rank": r, "device": rec["device"]}) + "\n")
                    r += 1
                    written += 1
    return nbest, gold, written


def run(hypotheses: int = 1_000_000, nbest: str | None = None, gold: str | None = None, work: str | None = None) -> int:
    """Import ``nbest`` + ``gold``, or a generated file of about ``hypotheses`` rows; print the figures."""
    work = Path(work or tempfile.mkdtemp(prefix="bench_import_"))
    work.mkdir(parents=True, exist_ok=True)
    if nbest:
        if not gold:
            raise ValueError("bench.nbest needs bench.gold: the gold file of the n-best's utterances")
        nbest, gold = Path(nbest), Path(gold)
        rows = sum(1 for _ in open(nbest))
        source = f"{nbest}"
    else:
        t = time.perf_counter()
        nbest, gold, rows = write_synthetic_nbest(work / "inputs", hypotheses)
        source = f"generated from the synthetic corpus in {time.perf_counter() - t:.0f} s"
    # (overwrite=true: a rerun in the same bench.work replaces its own scratch set)
    cmd = script("import", "name=bench_import", f"nbest={nbest}", f"gold={gold}", f"paths.output_dir={work / 'out'}",
                 "overwrite=true")
    m = run_measured(cmd, work / "import.log", cwd=REPO)
    size = nbest.stat().st_size / 2**20
    print(f"# import benchmark, {time.strftime('%Y-%m-%d %H:%M %Z')}\n# machine: {machine()}\n")
    print("| n-best file | hypotheses | MiB | wall s | CPU s | peak RSS MiB | hypotheses/s | targets |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    ok = m["wall"] < 60 and m["rss_tree_mib"] < 2048
    print(f"| {source} | {rows:,} | {size:.0f} | {m['wall']:.1f} | {m['cpu']:.1f} | {m['rss_tree_mib']:.0f} | "
          f"{rows / m['wall']:,.0f} | < 60 s, < 2 GB: {'met' if ok else 'NOT met'} |")
    print(f"\ncommand: {' '.join(cmd[1:])}")
    return 0
