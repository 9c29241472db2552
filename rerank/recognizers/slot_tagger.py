"""Per-domain slot tagger (NER): a linear-chain CRF with an exact k-best Viterbi.

Training is python-crfsuite's (L-BFGS, or OWL-QN when ``c1 > 0``); there is no
hand-written optimiser here. After training the model's weights are read into
numpy (:mod:`rerank.recognizers.crfsuite_model`) and crfsuite is no longer
needed; :meth:`SlotTagger.nbest` returns the exact ``k`` best labellings with
their probabilities (:mod:`rerank.recognizers.kbest`). The result matches
``Tagger.tag()`` and ``Tagger.probability()`` to floating-point precision (see
``tests/test_slot_tagger.py``).

Features per token (lower-cased; all binary): a bias, the words at offsets
``-window..+window`` (``BOS``/``EOS`` beyond the sentence), 2-3 character
prefixes and suffixes of words longer than that (``affixes``), ``digit``, the
``BOS``/``EOS`` position markers, and the bigrams with the previous/next word.
At prediction time every feature *template* is a dict from its key (a word, an
affix, a word pair) to a row of ``W``; a key the model does not know maps to an
all-zero row, exactly like an attribute crfsuite does not know. A sentence's
emissions are one gather ``W[rows]`` and one sum.
"""
from __future__ import annotations

import os
import tempfile
from itertools import repeat
from typing import Sequence

import numpy as np

from rerank.recognizers.crfsuite_model import read_model
from rerank.recognizers.kbest import kbest_probabilities, log_partition, path_marginals, tag_marginals

__all__ = ["SlotTagger"]

# Word-slot sentinels beyond the sentence. Upper case, so that no lower-cased
# token can be equal to them.
_BOS = "BOS"
_EOS = "EOS"
# Separator of the two words of a bigram attribute. It (and NUL, which ends a
# C string inside crfsuite) is removed from tokens, so attribute names are
# injective and can be parsed back into (template, key).
_SEP = "\x1f"
_AFFIX_LENGTHS = (2, 3)
# Tokens per chunk when building emissions of many sentences at once.
_CHUNK_TOKENS = 4096
# ... and at most this many k-best candidates per decoding step.
_CHUNK_CANDIDATES = 4_000_000


def _normalise(tokens: Sequence[str]) -> list[str]:
    out = []
    for tok in tokens:
        w = tok.lower()
        if "\x00" in w or _SEP in w:
            w = w.replace("\x00", " ").replace(_SEP, " ")
        out.append(w)
    return out


class SlotTagger:
    """A linear-chain CRF slot tagger with exact k-best decoding and P(labelling | tokens).

    Tags are BIO strings (``B-type``, ``I-type``, ``O``); any label strings work.
    After :meth:`fit` the object holds only numpy arrays and dicts: it pickles and
    does not depend on crfsuite or on any file.

    ``seed`` is kept for the record: crfsuite's L-BFGS is deterministic, so
    training does not depend on it. Transitions between every pair of labels get
    a weight (crfsuite's ``feature.possible_transitions``), so that transitions
    never seen in training (``O -> I-x``) are learned to be unlikely.
    """

    def __init__(
        self,
        c1: float = 0.0,
        c2: float = 1.0,
        max_iterations: int = 100,
        window: int = 2,
        affixes: bool = True,
        seed: int = 0,
    ):
        if window < 0:
            raise ValueError(f"window must be >= 0, got {window}")
        if c1 < 0 or c2 < 0:
            raise ValueError(f"c1 and c2 must be >= 0, got c1={c1}, c2={c2}")
        if max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
        self.c1 = float(c1)
        self.c2 = float(c2)
        self.max_iterations = int(max_iterations)
        self.window = int(window)
        self.affixes = bool(affixes)
        self.seed = seed
        self._labels: list[str] | None = None
        self.crfsuite_model_: bytes | None = None

    # ------------------------------------------------------------------ features

    def attributes(self, tokens: Sequence[str]) -> list[list[str]]:
        """crfsuite attribute names of every token (what training saw; also for ``Tagger.set``)."""
        lw = _normalise(tokens)
        n, W = len(lw), self.window
        padded = [_BOS] * W + lw + [_EOS] * W
        out = []
        for i, w in enumerate(lw):
            f = ["bias"]
            for o in range(-W, W + 1):
                f.append(f"w[{o:+d}]={padded[W + i + o]}")
            if self.affixes:
                for a in _AFFIX_LENGTHS:
                    if len(w) > a:
                        f.append(f"p{a}={w[:a]}")
                        f.append(f"s{a}={w[-a:]}")
            if w.isdigit():
                f.append("digit")
            if i == 0:
                f.append("BOS")
            if i == n - 1:
                f.append("EOS")
            prev = lw[i - 1] if i > 0 else _BOS
            nxt = lw[i + 1] if i < n - 1 else _EOS
            f.append(f"bg[-1]={prev}{_SEP}{w}")
            f.append(f"bg[+1]={w}{_SEP}{nxt}")
            out.append(f)
        return out

    def _build_lookup(self, attrs: list[str]) -> None:
        """Per-template dicts from key to row of ``self._W`` (``attrs[i]`` is row ``i``)."""
        Z = len(attrs)  # the all-zero row
        words: dict[int, dict[str, int]] = {o: {} for o in range(-self.window, self.window + 1)}
        prefix: dict[int, dict[str, int]] = {a: {} for a in _AFFIX_LENGTHS}
        suffix: dict[int, dict[str, int]] = {a: {} for a in _AFFIX_LENGTHS}
        bg_prev: dict[tuple[str, str], int] = {}
        bg_next: dict[tuple[str, str], int] = {}
        single = {"bias": Z, "digit": Z, "BOS": Z, "EOS": Z}
        for row, name in enumerate(attrs):
            if name in single:
                single[name] = row
                continue
            tmpl, sep, val = name.partition("=")
            if not sep:
                raise RuntimeError(f"unexpected attribute in the crfsuite model: {name!r}")
            if tmpl in ("bg[-1]", "bg[+1]"):
                a, _, b = val.partition(_SEP)
                (bg_prev if tmpl == "bg[-1]" else bg_next)[(a, b)] = row
            elif tmpl.startswith("w["):
                words.setdefault(int(tmpl[2:-1]), {})[val] = row
            elif tmpl[0] in "ps" and tmpl[1:].isdigit():
                (prefix if tmpl[0] == "p" else suffix).setdefault(int(tmpl[1:]), {})[val] = row
            else:
                raise RuntimeError(f"unexpected attribute in the crfsuite model: {name!r}")
        self._zero_row = Z
        self._bias_row = single["bias"]
        self._digit_row = single["digit"]
        self._bos_row = single["BOS"]
        self._eos_row = single["EOS"]
        self._word_dicts = [(o, words[o]) for o in range(-self.window, self.window + 1)]
        self._affix_dicts = [(a, prefix[a], suffix[a]) for a in _AFFIX_LENGTHS] if self.affixes else []
        self._bg_prev = bg_prev
        self._bg_next = bg_next
        # Number of feature templates: one row per template and token.
        self._n_templates = 1 + len(self._word_dicts) + 2 * len(self._affix_dicts) + 1 + 2 + 2

    def _rows(self, lw: list[str], out: list[int]) -> None:
        """Append the ``[n_templates, n]`` (template-major) rows of one normalised sentence."""
        n, W, Z = len(lw), self.window, self._zero_row
        zeros = repeat(Z)
        out.extend(repeat(self._bias_row, n))
        padded = [_BOS] * W + lw + [_EOS] * W
        for o, d in self._word_dicts:
            out.extend(map(d.get, padded[W + o:W + o + n], zeros))
        for a, dp, ds in self._affix_dicts:
            out.extend([dp.get(w[:a], Z) if len(w) > a else Z for w in lw])
            out.extend([ds.get(w[-a:], Z) if len(w) > a else Z for w in lw])
        digit = self._digit_row
        out.extend([digit if w.isdigit() else Z for w in lw])
        out.append(self._bos_row)
        out.extend(repeat(Z, n - 1))
        out.extend(repeat(Z, n - 1))
        out.append(self._eos_row)
        prev = [_BOS] + lw[:-1]
        nxt = lw[1:] + [_EOS]
        out.extend(map(self._bg_prev.get, zip(prev, lw), zeros))
        out.extend(map(self._bg_next.get, zip(lw, nxt), zeros))

    def _emissions(self, sents: list[list[str]], n: int) -> np.ndarray:
        """``E [B, n, L]`` of ``B`` normalised sentences of length ``n``."""
        rows: list[int] = []
        for lw in sents:
            self._rows(lw, rows)
        idx = np.array(rows, dtype=np.intp).reshape(len(sents), self._n_templates, n)
        return self._W[idx].sum(axis=1)

    # ------------------------------------------------------------------ training

    def fit(self, token_lists: list[list[str]], tag_lists: list[list[str]]) -> "SlotTagger":
        """Train on sentences ``token_lists`` with BIO ``tag_lists``. Empty sentences are skipped."""
        if len(token_lists) != len(tag_lists):
            raise ValueError(
                f"token_lists has {len(token_lists)} sentences but tag_lists has {len(tag_lists)}"
            )
        pairs = []
        for i, (toks, tags) in enumerate(zip(token_lists, tag_lists)):
            if isinstance(toks, str) or isinstance(tags, str):
                raise TypeError(f"sentence {i}: tokens and tags must be lists of strings, not a string")
            if len(toks) != len(tags):
                raise ValueError(
                    f"sentence {i}: {len(toks)} tokens but {len(tags)} tags ({list(toks)!r} / {list(tags)!r})"
                )
            if len(toks):
                pairs.append((list(toks), [str(t) for t in tags]))
        if not pairs:
            raise ValueError("no training sentence (all are empty)")
        label_set = {t for _, tags in pairs for t in tags}
        self.crfsuite_model_ = None
        if len(label_set) == 1:
            # A domain without slots (every tag O), or a single label: the only
            # labelling has probability 1; crfsuite is not needed.
            self._labels = sorted(label_set)
            self._label_array = np.array(self._labels, dtype=object)
            self._T = np.zeros((1, 1))
            self._W = np.zeros((1, 1))
            return self

        import pycrfsuite

        trainer = pycrfsuite.Trainer(verbose=False)
        trainer.set_params({
            "c1": self.c1,
            "c2": self.c2,
            "max_iterations": self.max_iterations,
            "feature.possible_transitions": True,
        })
        for toks, tags in pairs:
            trainer.append(self.attributes(toks), tags)
        with tempfile.TemporaryDirectory(prefix="slot_tagger_") as tmp:
            path = os.path.join(tmp, "model.crfsuite")
            trainer.train(path)
            data, labels, attrs, T, W = read_model(path)
        del trainer
        self.crfsuite_model_ = data
        self._labels = labels
        self._label_array = np.array(labels, dtype=object)
        self._T = np.ascontiguousarray(T)
        self._W = np.vstack([W, np.zeros((1, len(labels)))])  # last row: unknown attribute
        self._build_lookup(attrs)
        return self

    # ------------------------------------------------------------------ inference

    @property
    def labels(self) -> list[str]:
        """The model's labels, in the order of its transition matrix."""
        if self._labels is None:
            raise RuntimeError("SlotTagger is not fitted")
        return list(self._labels)

    @property
    def transitions(self) -> np.ndarray:
        """``T[i, j]``: weight of the transition ``labels[i] -> labels[j]`` (a copy)."""
        if self._labels is None:
            raise RuntimeError("SlotTagger is not fitted")
        return self._T.copy()

    def crfsuite_tagger(self):
        """A ``pycrfsuite.Tagger`` on the trained model (for checks; ``None`` without a crfsuite model)."""
        if self.crfsuite_model_ is None:
            return None
        import pycrfsuite

        tagger = pycrfsuite.Tagger()
        with tempfile.TemporaryDirectory(prefix="slot_tagger_") as tmp:
            path = os.path.join(tmp, "model.crfsuite")
            with open(path, "wb") as fh:
                fh.write(self.crfsuite_model_)
            tagger.open(path)  # crfsuite reads the whole file into memory
        return tagger

    def score(self, tokens: Sequence[str], tags: Sequence[str]) -> tuple[float, float]:
        """``(score(tags), log P(tags | tokens))`` of one labelling (unknown labels: ``KeyError``)."""
        if self._labels is None:
            raise RuntimeError("SlotTagger is not fitted")
        if len(tokens) == 0 or len(tokens) != len(tags):
            raise ValueError(f"need as many tags as tokens (>= 1), got {len(tokens)} tokens and {len(tags)} tags")
        if len(self._labels) == 1:
            if any(t != self._labels[0] for t in tags):
                raise KeyError(f"unknown label in {list(tags)!r}; labels are {self._labels}")
            return 0.0, 0.0
        lid = {lab: i for i, lab in enumerate(self._labels)}
        y = [lid[t] for t in tags]
        E = self._emissions([_normalise(tokens)], len(tokens))
        s = float(E[0, np.arange(len(y)), y].sum() + self._T[y[:-1], y[1:]].sum())
        return s, s - float(log_partition(E, self._T)[0])

    def nbest(self, tokens: list[str], k: int = 5) -> list[tuple[list[str], float]]:
        """The ``k`` most probable labellings of ``tokens`` with ``P(tags | tokens)``, best first.

        Fewer than ``k`` when the sentence has fewer possible labellings. Exact.
        """
        return self.nbest_many([tokens], k)[0]

    def nbest_many(self, token_lists: list[list[str]], k: int = 5, marginals: bool = False) -> list[list[tuple]]:
        """:meth:`nbest` of every sentence (sentences of equal length are decoded together).

        ``marginals=True`` adds to every labelling the ``(min, mean)`` over its tokens of
        ``P(tag_t | tokens)`` (:func:`~rerank.recognizers.kbest.path_marginals`).

        Corpora repeat requests (the synthetic one has ~4.5 utterances per
        distinct text) and the n-best depends only on the tokens, so each
        distinct token list is decoded once; repeats share the labellings
        (no caller modifies them in place).
        """
        position: dict = {}
        distinct: list = []
        where: list[int] = []
        for toks in token_lists:
            key = toks if isinstance(toks, str) else tuple(toks)
            j = position.get(key)
            if j is None:
                j = position[key] = len(distinct)
                distinct.append(toks)
            where.append(j)
        if len(distinct) == len(where):
            return self._decode_many(token_lists, k, marginals)
        out = self._decode_many(distinct, k, marginals)
        return [list(out[j]) for j in where]

    def _decode_many(self, token_lists: list[list[str]], k: int, marginals: bool = False) -> list[list[tuple]]:
        if self._labels is None:
            raise RuntimeError("SlotTagger is not fitted")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        for i, toks in enumerate(token_lists):
            if isinstance(toks, str):
                raise TypeError(f"sentence {i}: tokens must be a list of strings, not a string")
            if len(toks) == 0:
                raise ValueError(f"sentence {i}: empty token list")
        out: list = [None] * len(token_lists)
        if len(self._labels) == 1:
            lab = self._labels[0]
            for i, toks in enumerate(token_lists):
                out[i] = [([lab] * len(toks), 1.0, (1.0, 1.0)) if marginals else ([lab] * len(toks), 1.0)]
            return out
        by_len: dict[int, list[int]] = {}
        for i, toks in enumerate(token_lists):
            by_len.setdefault(len(toks), []).append(i)
        labels = self._label_array
        L = len(labels)
        # Candidates per sentence, label and step; bounds the memory of a chunk.
        per_label = k * (k + 1) // 2 if L > k else L * k
        for n, members in by_len.items():
            chunk = max(1, min(_CHUNK_TOKENS // n, _CHUNK_CANDIDATES // (L * per_label)))
            for c in range(0, len(members), chunk):
                part = members[c:c + chunk]
                E = self._emissions([_normalise(token_lists[i]) for i in part], n)
                paths, probs = kbest_probabilities(E, self._T, k)
                probs, tags = probs.tolist(), labels[paths].tolist()
                if marginals:
                    stats = [[tuple(x) for x in row] for row in path_marginals(tag_marginals(E, self._T), paths).tolist()]
                    for b, i in enumerate(part):
                        out[i] = list(zip(tags[b], probs[b], stats[b]))
                else:
                    for b, i in enumerate(part):
                        out[i] = list(zip(tags[b], probs[b]))
        return out

    def __repr__(self) -> str:
        state = f"{len(self._labels)} labels" if self._labels is not None else "unfitted"
        return (
            f"SlotTagger(c1={self.c1}, c2={self.c2}, max_iterations={self.max_iterations}, "
            f"window={self.window}, affixes={self.affixes}, {state})"
        )
