"""Per-domain slot tagger (NER): a linear-chain CRF with an exact k-best Viterbi.

Training is python-crfsuite's (L-BFGS, or OWL-QN when ``c1 > 0``); there is no
hand-written optimiser here. After training the model's weights are read into
numpy and crfsuite is no longer needed:

- ``T[i, j]``: the weight of the transition from label ``i`` to label ``j``;
- one row of ``W`` per attribute (binary feature, value 1): its weight per label.

A labelling ``y`` of a sentence ``x`` of ``n`` tokens scores exactly as in crfsuite
(which has no start/end transition features)::

    score(y) = sum_t E[t, y_t] + sum_{t>0} T[y_{t-1}, y_t],   E[t] = sum of W[a] over t's attributes a

and ``P(y | x) = exp(score(y) - log Z(x))``, ``log Z`` by the forward algorithm.
:meth:`SlotTagger.nbest` returns the exact ``k`` best labellings with these
probabilities (top-k (score, back-pointer) lists per label and position,
vectorised over labels and over sentences of equal length).

The weights are read from the binary model file (its ``FEAT`` chunk stores them
as IEEE doubles), not from ``Tagger.info()``, whose text dump rounds every weight
to 6 decimals; ``info()`` is only the fallback if the binary layout is not the
expected one. The result matches ``Tagger.tag()`` and ``Tagger.probability()``
to floating-point precision (see ``tests/test_slot_tagger.py``).

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
import struct
import tempfile
import warnings
from itertools import repeat
from typing import Sequence

import numpy as np

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


# ----------------------------------------------------------------------------
# Reading a crfsuite (crf1d) model file
# ----------------------------------------------------------------------------

class _ModelFormatError(ValueError):
    pass


_FEATURE_DTYPE = np.dtype([("type", "<u4"), ("src", "<u4"), ("dst", "<u4"), ("weight", "<f8")])
_CQDB_BYTEORDER = 0x62445371


def _read_cqdb_strings(data: bytes, begin: int, count: int) -> list[str]:
    """The strings of ids ``0..count-1`` of the CQDB chunk at ``begin`` (via its backward array)."""
    if data[begin:begin + 4] != b"CQDB":
        raise _ModelFormatError("no CQDB chunk")
    _size, _flag, byteorder, bwd_size, bwd_offset = struct.unpack_from("<IIIII", data, begin + 4)
    if byteorder != _CQDB_BYTEORDER:
        raise _ModelFormatError("unexpected CQDB byte order")
    if count == 0:
        return []
    if bwd_offset == 0 or bwd_size < count:
        raise _ModelFormatError("CQDB without a backward array")
    offsets = struct.unpack_from(f"<{count}I", data, begin + bwd_offset)
    out = []
    for i, off in enumerate(offsets):
        rid, ksize = struct.unpack_from("<iI", data, begin + off)
        if rid != i or ksize == 0:
            raise _ModelFormatError("inconsistent CQDB record")
        start = begin + off + 8
        out.append(data[start:start + ksize - 1].decode("utf-8"))
    return out


def _read_model_binary(data: bytes) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """``(labels, attributes, T [L, L], W [A, L])`` from a crf1d model file's bytes."""
    if len(data) < 48:
        raise _ModelFormatError("truncated header")
    (magic, size, mtype, _version, _n_feat, n_labels, n_attrs,
     off_feat, off_labels, off_attrs, _off_lrefs, _off_arefs) = struct.unpack_from("<4sI4s9I", data, 0)
    if magic != b"lCRF" or mtype != b"FOMC" or size != len(data):
        raise _ModelFormatError("not a crf1d model file")
    labels = _read_cqdb_strings(data, off_labels, n_labels)
    attrs = _read_cqdb_strings(data, off_attrs, n_attrs)
    # (crfsuite leaves the header's num_features at 0; the chunk has the count.)
    chunk, csize, num = struct.unpack_from("<4sII", data, off_feat)
    if chunk != b"FEAT" or csize != 12 + _FEATURE_DTYPE.itemsize * num or off_feat + csize > len(data):
        raise _ModelFormatError("unexpected FEAT chunk")
    feats = np.frombuffer(data, dtype=_FEATURE_DTYPE, count=num, offset=off_feat + 12)
    ftype, src, dst, w = feats["type"], feats["src"].astype(np.intp), feats["dst"].astype(np.intp), feats["weight"]
    if np.any(ftype > 1) or np.any(dst >= n_labels):
        raise _ModelFormatError("unexpected feature record")
    state, trans = ftype == 0, ftype == 1
    if np.any(src[state] >= n_attrs) or np.any(src[trans] >= n_labels):
        raise _ModelFormatError("feature refers to an unknown attribute/label")
    T = np.zeros((n_labels, n_labels))
    np.add.at(T, (src[trans], dst[trans]), w[trans])
    W = np.zeros((n_attrs, n_labels))
    np.add.at(W, (src[state], dst[state]), w[state])
    return labels, attrs, T, W


def _read_model_info(tagger) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Fallback: the same from ``Tagger.info()`` (weights rounded to 1e-6 by crfsuite's dump)."""
    info = tagger.info()
    labels = [name for name, _ in sorted(info.labels.items(), key=lambda kv: int(kv[1]))]
    attrs = [name for name, _ in sorted(info.attributes.items(), key=lambda kv: int(kv[1]))]
    lid = {name: i for i, name in enumerate(labels)}
    aid = {name: i for i, name in enumerate(attrs)}
    T = np.zeros((len(labels), len(labels)))
    for (a, b), w in info.transitions.items():
        T[lid[a], lid[b]] = w
    W = np.zeros((len(attrs), len(labels)))
    for (a, b), w in info.state_features.items():
        W[aid[a], lid[b]] = w
    return labels, attrs, T, W


# ----------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------

_PAIRS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _pairs(k: int, kp: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidate (m, r) pairs of the pruned k-best step: ``m + r < k`` and ``r < kp``."""
    key = (k, kp)
    if key not in _PAIRS:
        mr = [(m, r) for m in range(k) for r in range(min(kp, k - m))]
        _PAIRS[key] = (np.array([m for m, _ in mr], dtype=np.intp), np.array([r for _, r in mr], dtype=np.intp))
    return _PAIRS[key]


def _kbest(E: np.ndarray, T: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-best labellings of ``B`` sentences of equal length ``n``.

    ``E`` is ``[B, n, L]``, ``T`` is ``[L, L]``. Returns ``(paths [B, kf, n]`` label
    indices, ``scores [B, kf])``, best first, ``kf = min(k, L**n)``.

    Works on costs (negated scores), so that an ascending sort gives the best first.
    ``cost[b, j, r]`` is the r-th best cost of a prefix ending in label ``j`` (sorted
    along ``r``); its width is ``min(k, L**(t+1))``, so every entry is a real,
    distinct prefix and no infinite padding is needed. ``backptrs[t-1][b, j, r]``
    is the flat index ``i * width_{t-1} + r'`` of its predecessor.

    A step extends the prefixes of every label ``i`` by ``j``. Only the k labels
    ``i`` with the best heads ``cost[i, 0] - T[i, j]`` can contribute to ``j``'s
    k best, and the m-th of them (0-based) only with ranks ``r < k - m``: any
    other candidate has at least k candidates at least as good (the heads of the
    better labels and its own better ranks). So a step sorts k(k+1)/2 candidates
    per label instead of L*k. Ties are broken arbitrarily but the scores are exact.
    """
    B, n, L = E.shape
    negTT = np.ascontiguousarray(-T.T)                         # [L_to, L_from]
    cost = -E[:, 0, :, None]                                   # [B, L, 1]
    b3 = np.arange(B)[:, None, None]
    j3 = np.arange(L)[None, :, None]
    backptrs, widths = [], [1]
    for t in range(1, n):
        kp = widths[-1]
        kt = min(k, L * kp)
        heads = cost[:, None, :, 0] + negTT                    # [B, L_to, L_from]
        if kt == 1:
            best = heads.argmin(axis=2)[:, :, None]            # kp == 1 here
            new = heads[b3, j3, best]
            bp = best
        elif L <= k:
            # No pruning possible: sort all L * kp candidates.
            cand = (cost[:, None, :, :] + negTT[None, :, :, None]).reshape(B, L, L * kp)
            order = np.argsort(cand, axis=2)[:, :, :kt]
            new = cand[b3, j3, order]
            bp = order
        else:
            m_idx, r_idx = _pairs(k, kp)
            top = np.argsort(heads, axis=2)[:, :, :k]          # [B, L_to, k] labels, best head first
            labs = top[:, :, m_idx]                            # [B, L_to, P]
            cand = cost[b3, labs, r_idx] + negTT[j3, labs]     # [B, L_to, P]
            order = np.argsort(cand, axis=2)[:, :, :kt]
            new = cand[b3, j3, order]
            bp = labs[b3, j3, order] * kp + r_idx[order]
        new -= E[:, t, :, None]
        cost = new
        backptrs.append(bp)
        widths.append(kt)
    kp = widths[-1]
    final = cost.reshape(B, L * kp)
    kf = min(k, L * kp)
    order = np.argsort(final, axis=1)[:, :kf]  # flat index j * kp + r
    b2 = np.arange(B)[:, None]
    scores = -final[b2, order]
    paths = np.empty((B, kf, n), dtype=np.intp)
    flat = order
    for t in range(n - 1, 0, -1):
        lab, rank = np.divmod(flat, widths[t])
        paths[:, :, t] = lab
        flat = backptrs[t - 1][b2, lab, rank]
    paths[:, :, 0] = flat  # widths[0] == 1
    return paths, scores


def _log_partition(E: np.ndarray, T: np.ndarray) -> np.ndarray:
    """``log Z`` of ``B`` sentences of equal length: the forward algorithm, ``[B]``.

    Runs in probability space with emissions and transitions shifted by their
    maxima (every factor is <= 1, so alpha grows by at most L per step) and
    rescaled every few steps, as crfsuite scales its forward pass; falls back to
    log-space if anything under/overflows (weights spanning hundreds of nats).
    """
    B, n, L = E.shape
    m = E.max(axis=2, keepdims=True)
    expE = np.exp(E - m).transpose(1, 0, 2)  # [n, B, L]
    tmax = float(T.max())
    expT = np.exp(T - tmax)
    alpha = expE[0]
    log_scale = np.zeros(B)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        for t in range(1, n):
            alpha = (alpha @ expT) * expE[t]
            if t % 4 == 0:
                s = alpha.sum(axis=1)
                log_scale += np.log(s)
                alpha = alpha / s[:, None]
        logZ = log_scale + np.log(alpha.sum(axis=1)) + m.sum(axis=(1, 2)) + tmax * (n - 1)
    if np.all(np.isfinite(logZ)):
        return logZ
    # Log-space fallback (never needed with realistic weights).
    la = E[:, 0, :]
    for t in range(1, n):
        x = la[:, :, None] + T[None, :, :]
        mx = x.max(axis=1)
        la = mx + np.log(np.exp(x - mx[:, None, :]).sum(axis=1)) + E[:, t, :]
    mx = la.max(axis=1)
    return mx + np.log(np.exp(la - mx[:, None]).sum(axis=1))


# ----------------------------------------------------------------------------
# The tagger
# ----------------------------------------------------------------------------

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
            with open(path, "rb") as fh:
                data = fh.read()
            tagger = pycrfsuite.Tagger()
            tagger.open(path)
            try:
                api_labels = list(tagger.labels())
                try:
                    labels, attrs, T, W = _read_model_binary(data)
                    if labels != api_labels:
                        raise _ModelFormatError("labels differ from Tagger.labels()")
                except (_ModelFormatError, struct.error, UnicodeDecodeError) as exc:
                    warnings.warn(
                        f"could not read the crfsuite model file ({exc}); using Tagger.info(), "
                        "whose weights are rounded to 6 decimals",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    labels, attrs, T, W = _read_model_info(tagger)
            finally:
                tagger.close()
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
        return s, s - float(_log_partition(E, self._T)[0])

    def nbest(self, tokens: list[str], k: int = 5) -> list[tuple[list[str], float]]:
        """The ``k`` most probable labellings of ``tokens`` with ``P(tags | tokens)``, best first.

        Fewer than ``k`` when the sentence has fewer possible labellings. Exact.
        """
        return self.nbest_many([tokens], k)[0]

    def nbest_many(self, token_lists: list[list[str]], k: int = 5) -> list[list[tuple[list[str], float]]]:
        """:meth:`nbest` of every sentence (sentences of equal length are decoded together).

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
            return self._decode_many(token_lists, k)
        out = self._decode_many(distinct, k)
        return [list(out[j]) for j in where]

    def _decode_many(self, token_lists: list[list[str]], k: int) -> list[list[tuple[list[str], float]]]:
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
                out[i] = [([lab] * len(toks), 1.0)]
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
                paths, scores = _kbest(E, self._T, k)
                logZ = _log_partition(E, self._T)
                probs = np.minimum(np.exp(scores - logZ[:, None]), 1.0).tolist()  # no 1 + 1e-16
                tags = labels[paths].tolist()
                for b, i in enumerate(part):
                    out[i] = list(zip(tags[b], probs[b]))
        return out

    def __repr__(self) -> str:
        state = f"{len(self._labels)} labels" if self._labels is not None else "unfitted"
        return (
            f"SlotTagger(c1={self.c1}, c2={self.c2}, max_iterations={self.max_iterations}, "
            f"window={self.window}, affixes={self.affixes}, {state})"
        )
