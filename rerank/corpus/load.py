"""One entry point from a ``data`` config to a list of utterances and a content hash."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from rerank.corpus.jsonl import MAX_LINE_BYTES, ReadReport
from rerank.corpus.massive import MAX_TOKENS, corpus_files, read_massive, record_to_utterance
from rerank.corpus.utterance import Utterance, check_name

SOURCE_FORMATS = ("synthetic", "massive")


@dataclass
class Corpus:
    name: str
    utterances: list[Utterance]
    content_hash: str
    context_fields: tuple[str, ...]
    report: ReadReport = field(default_factory=ReadReport)

    def split(self, name: str) -> list[Utterance]:
        return [u for u in self.utterances if u.split == name]

    @property
    def domains(self) -> list[str]:
        return sorted({u.domain for u in self.utterances})


def load_corpus(data) -> Corpus:
    """Read the corpus a ``data`` config describes (``configs/data/*.yaml``)."""
    fmt = data["format"]
    check_name(data["name"], "data.name")
    if fmt == "tables":
        raise ValueError(f"data={data['name']} (format tables) names hypothesis tables, not a corpus: "
                         "they are built by scripts/import.py, and prepare has nothing to read")
    context_fields = tuple(data.get("context_fields") or ())
    report = ReadReport()
    if fmt == "synthetic":
        from rerank.corpus import synthetic

        params = dict(data["synthetic"])
        records = synthetic.generate(**params)
        utts = [record_to_utterance(r, context_fields, report) for r in records]
        report.lines = len(utts)
        # The generator's code and catalogues are part of the corpus: a change to either must rebuild.
        digest = _sha256(json.dumps(params, sort_keys=True).encode(), synthetic.generator_source())
    elif fmt == "massive":
        if not data.get("path"):
            raise ValueError(f"data.path is required for the {data['name']!r} corpus (format massive)")
        files = corpus_files(data["path"])
        utts = read_massive(data["path"], on_error=data.get("on_error", "raise"), context_fields=context_fields, report=report,
                            max_tokens=int(data.get("max_tokens") or MAX_TOKENS),
                            max_line_bytes=int(data.get("max_line_bytes") or MAX_LINE_BYTES))
        digest = _sha256(*(f.read_bytes() for f in files))
    else:
        raise ValueError(f"data.format must be one of {SOURCE_FORMATS}, not {fmt!r}")
    if not utts:
        raise ValueError(f"corpus {data['name']!r} holds no utterance")
    for split in ("train", "dev", "test"):
        if not any(u.split == split for u in utts):
            raise ValueError(f"corpus {data['name']!r} has no {split!r} utterance; prepare needs train, dev and test")
    return Corpus(data["name"], utts, digest, context_fields, report)


def _sha256(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()
