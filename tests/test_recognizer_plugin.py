"""Recognizers are a plug-in point: a toy family defined here, chosen by ``_target_``, builds the tables."""
from __future__ import annotations

from collections import Counter

import numpy as np

from conftest import prepare_config
from rerank.hypotheses.prepare import prepare
from rerank.hypotheses.tables import TableSet
from rerank.recognizers.base import DomainClassifier, Interpreter, Recognizers


class _VocabularyDC(DomainClassifier):
    def __init__(self, vocab, utts, floor):
        self.vocab, self.utts, self.floor = vocab, utts, floor

    def scores(self, rows):
        out = []
        for i in rows:
            toks = self.utts[i].tokens
            out.append(max(self.floor, sum(t in self.vocab for t in toks) / len(toks)))
        return np.array(out)


class _PriorInterpreter(Interpreter):
    def __init__(self, intents, probs, slot_words, utts):
        self.names, self.probs, self.slot_words, self.utts = intents, probs, slot_words, utts

    def intents(self, rows, k):
        k = min(k, len(self.names))
        return (np.tile(np.array(self.names[:k], dtype=object), (len(rows), 1)),
                np.tile(np.array(self.probs[:k]), (len(rows), 1)))

    def labellings(self, rows, k):
        out = []
        for i in rows:
            slots = tuple((t, w) for w in self.utts[i].tokens if (t := self.slot_words.get(w)))
            out.append([(slots, 0.75), ((), 0.25)][:k])
        return out


class KeywordRecognizers(Recognizers):
    """DC: the share of known words; IC: the intent prior; NER: words seen as slot values, or none."""

    def __init__(self, floor: float = 0.05):
        self.floor = floor

    def settings(self) -> dict:
        return {**super().settings(), "floor": self.floor}

    def fit_domain_classifier(self, domain, rows, seed):
        vocab = {t for i in rows if self.utterances[i].domain == domain for t in self.utterances[i].tokens}
        return _VocabularyDC(vocab, self.utterances, self.floor)

    def fit_interpreter(self, domain, rows, seed):
        counts = Counter(self.utterances[i].intent for i in rows)
        names = [n for n, _ in counts.most_common()]
        probs = [counts[n] / len(rows) for n in names]
        slot_words = {w: t for i in rows for t, v in self.utterances[i].slots for w in v.split()}
        return _PriorInterpreter(names, probs, slot_words, self.utterances)

    def describe(self, domain):
        return "keywords"


def test_a_recognizer_family_of_ones_own_builds_the_tables(tmp_path, capsys):
    target = f"{__name__}.KeywordRecognizers"
    # replaced whole ("~", then "+"): a plain override would merge into the built-in family's settings
    cfg = prepare_config(tmp_path, "~recognizers.family", f"+recognizers.family={{_target_: {target}, floor: 0.1}}")
    manifest = prepare(cfg)
    assert "| keywords |" in capsys.readouterr().out
    tables = TableSet.open(tmp_path / "data" / "synthetic")
    rows = 0
    for d in manifest["domains"]:
        t = tables.read(d, "dev")
        rows += t.num_rows
        dc, ic, ner = (t[c].to_numpy() for c in ("dc", "ic", "ner"))
        assert np.all(dc >= 0.1) and np.all(dc <= 1)
        # the toy's numbers, combined as prepare combines any family's: ic * ner, best first
        assert set(np.round(ner, 6)) <= {0.75, 0.25, 1.0}
        assert np.all(np.diff(t["rank"].to_numpy()[t["utt_index"].to_numpy() == t["utt_index"].to_numpy()[0]]) > 0)
    assert rows > 0
    # the family's settings are part of the tables' identity: another floor, another build
    again = prepare(prepare_config(tmp_path, "~recognizers.family", f"+recognizers.family={{_target_: {target}, floor: 0.2}}"))
    assert again["settings_hash"] != manifest["settings_hash"]


def test_a_target_that_is_not_a_recognizer_family_is_refused(tmp_path):
    import pytest

    with pytest.raises(TypeError, match="Recognizers"):
        prepare(prepare_config(tmp_path, "~recognizers.family", "+recognizers.family={_target_: collections.Counter}"))
