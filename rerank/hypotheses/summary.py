"""The figures prepare prints at the end: recognizers on dev, baseline and oracle on dev/test."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from rerank.corpus.annotation import tags_to_slots
from rerank.hypotheses.figures import baseline_score, oracle_score, top_hypothesis_outcome
from rerank.metrics.corpus import slot_counts, slot_f1_from_counts


def recognizer_figures(recs, domains, utts, rows, dc, features) -> dict:
    """DC accuracy (argmax over domains), IC accuracy and slot F1 of the gold domain's recognizers."""
    gold = np.array([utts[i].domain for i in rows])
    dc_pred = np.array(domains)[dc.argmax(axis=1)]
    per: dict[str, dict] = {}
    counts = []
    ic_hits = 0
    for d in domains:
        sel = rows[gold == d]
        if not len(sel):
            continue
        rec = recs[d]
        idx, _ = rec.ic.top_k(features.matrix(rec.ic_ngram)[sel], 1)
        ic_ok = rec.ic.intents[idx[:, 0]] == np.array([utts[i].intent for i in sel])
        best = rec.ner.nbest_many([list(utts[i].tokens) for i in sel], 1)
        c = slot_counts([utts[i].slots for i in sel], [tags_to_slots(utts[i].tokens, b[0][0]) for i, b in zip(sel, best)])
        counts.append(c)
        per[d] = {
            "n": int(len(sel)),
            "dc_accuracy": float(np.mean(dc_pred[gold == d] == d)),
            "ic_accuracy": float(ic_ok.mean()),
            "slot_f1": slot_f1_from_counts(*c),
            "profile": rec.profile,
        }
        ic_hits += int(ic_ok.sum())
    overall = {"n": int(len(rows)), "dc_accuracy": float(np.mean(dc_pred == gold)),
               "ic_accuracy": ic_hits / max(1, len(rows)),
               "slot_f1": slot_f1_from_counts(*(np.concatenate(x) for x in zip(*counts))) if counts else 1.0}
    return {"overall": overall, "per_domain": per}


def split_figures(tables: dict[str, pa.Table], gold: pa.Table, domains) -> dict:
    """Baseline and oracle top-hypothesis SemER/IRER, overall and per gold domain."""
    cols = {c: np.concatenate([tables[d][c].to_numpy() for d in domains]) for c in
            ("utt_index", "dc", "ic", "ner", "sem_errors", "ie", "semer")}
    hyp_domain = np.concatenate([np.full(tables[d].num_rows, d, dtype=object) for d in domains])
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
        fig = {"semer": float(errors.sum() / totals.sum()), "irer": float(ie.mean()), "per_domain": {}}
        for d in domains:
            m = gold_domain == d
            if m.any():
                fig["per_domain"][d] = {"semer": float(errors[m].sum() / totals[m].sum()), "irer": float(ie[m].mean())}
        out[name] = fig
    return out


def render_summary(summary: dict) -> str:
    lines = [f"# prepare summary: {summary['corpus']}", ""]
    rec = summary["recognizers_dev"]
    lines += ["## Recognizers on dev (each domain's own DC/IC/NER on its gold utterances)", "",
              "| domain | profile | n | DC acc | IC acc | slot F1 |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for d, f in rec["per_domain"].items():
        lines.append(f"| {d} | {f['profile']} | {f['n']} | {f['dc_accuracy']:.3f} | {f['ic_accuracy']:.3f} | {f['slot_f1']:.3f} |")
    o = rec["overall"]
    lines.append(f"| **all** | | {o['n']} | {o['dc_accuracy']:.3f} | {o['ic_accuracy']:.3f} | {o['slot_f1']:.3f} |")
    lines += ["", "## Top hypothesis, unweighted baseline (dc*ic*ner) and oracle", "",
              "| split | utterances | hyps/utt | gold domain emitted | baseline SemER | baseline IRER | oracle SemER | oracle IRER |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s, f in summary["splits"].items():
        lines.append(f"| {s} | {f['utterances']} | {f['hypotheses_per_utterance']:.1f} | {f['gold_domain_emitted']:.4f} | "
                     f"{f['baseline']['semer']:.4f} | {f['baseline']['irer']:.4f} | {f['oracle']['semer']:.4f} | {f['oracle']['irer']:.4f} |")
    test = summary["splits"].get("test")
    if test:
        lines += ["", "## Test, per gold domain", "", "| domain | baseline SemER | baseline IRER | oracle SemER |", "| --- | ---: | ---: | ---: |"]
        for d, f in test["baseline"]["per_domain"].items():
            lines.append(f"| {d} | {f['semer']:.4f} | {f['irer']:.4f} | {test['oracle']['per_domain'][d]['semer']:.4f} |")
    if summary.get("skipped_lines"):
        lines += ["", f"{summary['skipped_lines']} malformed lines were skipped (data.on_error=skip); the manifest lists them."]
    return "\n".join(lines) + "\n"
