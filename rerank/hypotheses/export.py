"""``export_nbest``: a table set back to the two files ``import`` reads (n-best JSONL and gold MASSIVE JSONL).

Importing the export under another name gives the same tables, hence the same
training and merge results (a test shows it): the way to hand a prepared corpus
to another team, or to check that an n-best file of one's own is read as meant.
"""
from __future__ import annotations

import json
from pathlib import Path

from rerank.corpus.utterance import SPLITS
from rerank.hypotheses.tables import TableSet
from rerank.io import atomic_path


def annotate(text: str, slots) -> str:
    """The bracket annotation of ``text`` with ``slots`` (in utterance order): the inverse of the parser.

    >>> annotate("play mary poppins now", [("song_name", "mary poppins")])
    'play [song_name : mary poppins] now'
    """
    tokens = text.split(" ")
    out, cursor = [], 0
    for slot_type, value in slots:
        words = value.split()
        at = next((i for i in range(cursor, len(tokens) - len(words) + 1) if tokens[i:i + len(words)] == words), None)
        if at is None:
            raise ValueError(f"slot value {value!r} is not in {text!r} after token {cursor}")
        out.extend(tokens[cursor:at])
        out.append(f"[{slot_type} : {' '.join(words)}]")
        cursor = at + len(words)
    out.extend(tokens[cursor:])
    return " ".join(out)


def export_nbest(tables: TableSet, out_dir: str | Path) -> dict[str, Path]:
    """Write ``nbest.jsonl`` and ``gold.jsonl`` of ``tables`` into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    if out_dir.resolve().is_relative_to(tables.path.resolve()):
        raise ValueError(f"export into {out_dir} would write inside the table set {tables.path}; choose another folder")
    context = list(tables.manifest["context_fields"])
    paths = {"nbest": out_dir / "nbest.jsonl", "gold": out_dir / "gold.jsonl"}
    with atomic_path(paths["gold"]) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for s in SPLITS:
            for row in tables.read_utterances(s).to_pylist():
                slots = [(x["type"], x["value"]) for x in row["gold_slots"]]
                record = {"id": row["utt_id"], "scenario": row["gold_domain"], "intent": row["gold_intent"],
                          "utt": row["text"], "annot_utt": annotate(row["text"], slots), "partition": s}
                record.update({c: row[c] for c in context})
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
    fields = ["utt_id", "domain", "intent", "slots", "dc", "ic", "ner", "rank", *context]
    evidence = tables.manifest.get("evidence") or {}
    with atomic_path(paths["nbest"]) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for s in SPLITS:
            for d in tables.domains:
                # the evidence columns the domain fills go along (an empty one would read as a partial field)
                for row in tables.read(d, s).select([*fields, *evidence.get(d, ())]).to_pylist():
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return paths
