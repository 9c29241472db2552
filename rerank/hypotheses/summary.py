"""The figures prepare prints at the end: recognizers on dev, baseline and oracle on dev/test."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from rerank.hypotheses.figures import baseline_score, oracle_score, top_hypothesis_outcome
from rerank.metrics.corpus import corpus_semer, irer, slot_counts, slot_f1_from_counts
from rerank.recognizers.base import Interpreter


def domain_recognizer_figures(interpreter: Interpreter, utts, gold_rows: np.ndarray) -> dict:
    """A domain's IC accuracy and slot F1 (top-1) on its own gold utterances ``gold_rows``; with the counts."""
    if not len(gold_rows):
        return {"n": 0, "ic_hits": 0, "slot_counts": [[], [], []]}
    names, _ = interpreter.intents(gold_rows, 1)
    ic_ok = names[:, 0] == np.array([utts[i].intent for i in gold_rows])
    best = interpreter.labellings(gold_rows, 1)
    tp, nh, ng = slot_counts([utts[i].slots for i in gold_rows], [b[0][0] for b in best])
    return {"n": int(len(gold_rows)), "ic_hits": int(ic_ok.sum()), "slot_counts": [tp.tolist(), nh.tolist(), ng.tolist()]}


def recognizer_figures(dc_argmax: np.ndarray, gold_domain: np.ndarray, domains, per_domain: dict, profiles: dict) -> dict:
    """DC accuracy (the domain of the highest dc), IC accuracy and slot F1 of the gold domain's recognizers, on dev."""
    dc_pred = np.array(domains)[dc_argmax] if len(dc_argmax) else np.zeros(0, dtype=object)
    per: dict[str, dict] = {}
    counts = []
    ic_hits = 0
    for d in domains:
        f = per_domain[d]
        if not f["n"]:
            continue
        c = tuple(np.asarray(x, dtype=np.int64) for x in f["slot_counts"])
        counts.append(c)
        per[d] = {
            "n": f["n"],
            "dc_accuracy": float(np.mean(dc_pred[gold_domain == d] == d)),
            "ic_accuracy": f["ic_hits"] / f["n"],
            "slot_f1": slot_f1_from_counts(*c),
            "profile": profiles[d],
        }
        ic_hits += f["ic_hits"]
    overall = {"n": int(len(gold_domain)), "dc_accuracy": float(np.mean(dc_pred == gold_domain)) if len(gold_domain) else 0.0,
               "ic_accuracy": ic_hits / max(1, len(gold_domain)),
               "slot_f1": slot_f1_from_counts(*(np.concatenate(x) for x in zip(*counts))) if counts else 1.0}
    return {"overall": overall, "per_domain": per}


def split_figures(tables: dict[str, pa.Table], gold: pa.Table, domains) -> dict:
    """Baseline and oracle top-hypothesis SemER/IRER, overall and per gold domain."""
    cols = {c: np.concatenate([tables[d][c].to_numpy() for d in domains] + [np.zeros(0)]) for c in
            ("utt_index", "dc", "ic", "ner", "sem_errors", "ie", "semer")}
    cols["utt_index"] = cols["utt_index"].astype(np.int64)
    hyp_domain = np.concatenate([np.full(tables[d].num_rows, d, dtype=object) for d in domains] + [np.zeros(0, object)])
    totals = gold["sem_total"].to_numpy()
    gold_domain = np.array(gold["gold_domain"].to_pylist())
    n = len(totals)
    out: dict = {"utterances": n, "hypotheses": int(len(cols["utt_index"])),
                 "hypotheses_per_utterance": len(cols["utt_index"]) / max(1, n)}
    emitted_gold = np.zeros(n, dtype=bool)
    emitted_gold[cols["utt_index"][hyp_domain == gold_domain[cols["utt_index"]]]] = True
    out["gold_domain_emitted"] = float(emitted_gold.mean())
    out["no_hypothesis"] = int(n - len(np.unique(cols["utt_index"])))
    for name, score in (("baseline", baseline_score(cols["dc"], cols["ic"], cols["ner"])), ("oracle", oracle_score(cols["semer"]))):
        _, errors, ie = top_hypothesis_outcome(cols["utt_index"], score, cols["sem_errors"], cols["ie"], totals)
        fig = {"semer": corpus_semer(errors, totals), "irer": irer(ie), "per_domain": {}}
        for d in domains:
            m = gold_domain == d
            if m.any():
                fig["per_domain"][d] = {"semer": corpus_semer(errors[m], totals[m]), "irer": irer(ie[m])}
        out[name] = fig
    # the share of utterances whose gold interpretation is somewhere in the list
    out["coverage"] = 1.0 - out["oracle"]["irer"]
    return out


def render_summary(summary: dict) -> str:
    origin = summary.get("origin", "prepared")
    lines = [f"# {'import' if origin == 'imported' else 'prepare'} summary: {summary['corpus']}", ""]
    rec = summary.get("recognizers_dev")
    if rec:
        lines += ["## Recognizers on dev (each domain's own DC/IC/NER on its gold utterances)", "",
                  "| domain | profile | n | DC acc | IC acc | slot F1 |", "| --- | --- | ---: | ---: | ---: | ---: |"]
        for d, f in rec["per_domain"].items():
            lines.append(f"| {d} | {f['profile']} | {f['n']} | {f['dc_accuracy']:.3f} | {f['ic_accuracy']:.3f} | {f['slot_f1']:.3f} |")
        o = rec["overall"]
        lines.append(f"| **all** | | {o['n']} | {o['dc_accuracy']:.3f} | {o['ic_accuracy']:.3f} | {o['slot_f1']:.3f} |")
        lines.append("")
    lines += ["## Top hypothesis, unweighted baseline (dc*ic*ner) and oracle", "",
              "| split | utterances | hyps/utt | no hypothesis | gold domain emitted | coverage "
              "| baseline SemER | baseline IRER | oracle SemER | oracle IRER |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s, f in summary["splits"].items():
        lines.append(f"| {s} | {f['utterances']} | {f['hypotheses_per_utterance']:.1f} | {f['no_hypothesis']} | "
                     f"{f['gold_domain_emitted']:.4f} | {f['coverage']:.4f} | "
                     f"{f['baseline']['semer']:.4f} | {f['baseline']['irer']:.4f} | "
                     f"{f['oracle']['semer']:.4f} | {f['oracle']['irer']:.4f} |")
    lines += ["", "*coverage*: the share of utterances whose gold interpretation is in the list (1 - oracle IRER); "
              "an utterance with no hypothesis counts as a full error."]
    test = summary["splits"].get("test")
    if test:
        lines += ["", "## Test, per gold domain", "",
                  "| domain | baseline SemER | baseline IRER | oracle SemER |", "| --- | ---: | ---: | ---: |"]
        for d, f in test["baseline"]["per_domain"].items():
            lines.append(f"| {d} | {f['semer']:.4f} | {f['irer']:.4f} | {test['oracle']['per_domain'][d]['semer']:.4f} |")
    for note in summary.get("notes", []):
        lines += ["", note]
    if summary.get("skipped_lines"):
        lines += ["", f"{summary['skipped_lines']} malformed lines were skipped (on_error=skip); the manifest lists them."]
    return "\n".join(lines) + "\n"
