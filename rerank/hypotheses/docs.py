"""docs/DATA.md, generated from the schema and the input formats (``tests/test_schema_doc.py`` keeps them in sync)."""
from __future__ import annotations

import json

from rerank.hypotheses.nbest import EXAMPLE, FIELDS_DOC
from rerank.hypotheses.schema import HYPOTHESIS_COLUMNS, SCHEMA_VERSION, UTTERANCE_COLUMNS

GOLD_EXAMPLE = {"id": "u-17", "scenario": "Music", "intent": "play_music", "utt": "play mary poppins",
                "annot_utt": "play [song_name : mary poppins]", "partition": "test", "device": "fire_tv"}


def render_data_doc() -> str:
    lines = ["# Hypothesis tables: the contract between any NLU stack and rerank", "",
             "A table set lives in `<paths.data_dir>/<name>/` (default `outputs/data/<name>/`). Only two commands write one:",
             "`scripts/prepare.py` (the built-in recognizers on a corpus) and `scripts/import.py` (your own recognizers' n-best).",
             "Training, merge, serving and the benchmark read it and never change it. A set is complete or absent: it is built",
             "in a staging folder, its manifest (with every file's rows and SHA-256) is written last, and it is then moved into",
             "place; readers check every file they read against the manifest.", "",
             f"Schema version {SCHEMA_VERSION}, also in each file's Parquet metadata as `rerank_schema_version`.", "",
             "## `<name>/<domain>/<split>.parquet`: one row per hypothesis", "",
             "| column | type | meaning |", "| --- | --- | --- |"]
    for name, typ, meaning in HYPOTHESIS_COLUMNS:
        lines.append(f"| `{name}` | `{typ}` | {meaning} |")
        if name == "n_slots":
            lines.append("| `<context field>` | `string` | one column per context field of the corpus, "
                         "e.g. `device` (`unknown` when absent) |")
    lines += ["", "Rows are sorted by `utt_index`, then `rank`. Imported tables have `fold` -1. The evidence columns "
              "(`ic_margin` to `unigram_logp`) are null where a domain's recognizers or n-best do not give them; prepare "
              "computes the ones learned from training data (vocabulary, catalogue, unigram model) on the same cross-fitted "
              "rows as the recognizers, so a train row never sees itself.", "",
              "## `<name>/_utterances/<split>.parquet`: one row per utterance", "",
              "| column | type | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{n}` | `{t}` | {m} |" for n, t, m in UTTERANCE_COLUMNS]
    lines += ["| `<context field>` | `string` | as above |", "",
              "## `<name>/manifest.json`", "",
              "`schema_version`, `corpus` (the set's name), `origin` (`prepared` or `imported`), `files` (per file: `rows`, "
              "`bytes`, `sha256`), `corpus_hash` (of the corpus files, the synthetic generator and its settings, or the two "
              "imported files), `settings_hash` (recognizer and hypothesis settings, or import settings), `inputs` (imported: "
              "path, size and SHA-256 of the n-best and gold files), `domains`, `intents` and `slot_types` per domain, "
              "`feature_columns`, `context_fields`, `context_values`, `n_best` (rank one-hots of the re-rankers), `splits` "
              "(utterances per split), `rows` (hypotheses per domain and split), `evidence` (per domain: the evidence columns "
              "every one of its rows fills; `features.evidence` can use only those), `computed_evidence` (per domain: the "
              "text-derived columns rerank computed from the domain's resources, `<domain>/evidence.json`; a version carries "
              "those resources only for these), `folds`, `skipped_lines`, `no_hypothesis` "
              "(imported: gold utterances without any hypothesis, per split), `built_at`, `seconds`. `summary.json` and "
              "`summary.md` hold the baseline and oracle figures and the coverage.", "",
              "# Importing your own recognizers' n-best", "",
              "```bash",
              "python scripts/import.py name=acme nbest=acme_nbest.jsonl gold=acme_gold.jsonl",
              "```", "",
              "## The n-best file: JSONL (one hypothesis per line) or Parquet (one per row)", "",
              "| field | type | required | meaning |", "| --- | --- | --- | --- |"]
    lines += [f"| `{n}` | {t} | {r} | {m} |" for n, t, r, m in FIELDS_DOC]
    lines += ["", "```json", json.dumps(EXAMPLE), "```", "",
              "Each hypothesis is labelled against its utterance's gold (SemER and IE of REFERENCE.md).",
              "Refused, with the file, the line (Parquet: the row) and the field: a `utt_id` not in the gold, a score",
              "outside [0, 1], NaN or infinite, a domain name unsafe as a folder name, a duplicate hypothesis (same",
              "utterance, domain, intent and slots), a list ranked only in part, a byte that is not UTF-8, a line over",
              "`max_line_bytes`, an evidence field out of its range. `on_error=skip` skips and counts such lines instead "
              "(the manifest lists them). Gold",
              "utterances with no hypothesis are counted and reported, not refused: they count as full errors.", "",
              "## The gold file: MASSIVE JSONL (what the corpus readers read)", "",
              "| field | meaning |", "| --- | --- |",
              "| `id` | the utterance id the n-best's `utt_id` refers to |",
              "| `scenario` | the gold domain |",
              "| `intent` | the gold intent (`alarm_set`, or `set` of scenario `alarm`) |",
              "| `annot_utt` | the utterance with its gold slots in brackets: `wake me at [time : five am]` |",
              "| `partition` | the split: `train`, `dev` (or `validation`, `valid`) or `test` |",
              "| `<context field>` | optional, e.g. `device` |", "",
              "```json", json.dumps(GOLD_EXAMPLE), "```", "",
              "`scripts/export_nbest.py data=<name> out=<folder>` writes any table set back as these two files.", ""]
    return "\n".join(lines)
