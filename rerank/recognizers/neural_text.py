"""Token and character ids for the neural recognizers, built once for the whole corpus.

:class:`TokenTable` lists the distinct lower-cased tokens ("types") of every
utterance given to ``setup`` (texts only, no labels) and the characters of each
type as codepoint buckets (no character vocabulary: ``1 + ord(c) % (buckets - 1)``,
0 is padding). A model's *word* vocabulary is built from its fit rows only
(:meth:`TokenTable.vocabulary`): a type that never occurs in them maps to the
unknown word and is seen through its characters alone.

A batch (:class:`Batch`) carries the word ids, the padding mask and the
characters of the batch's distinct types, so that the character CNN runs once
per type, not once per token.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

__all__ = ["PAD", "UNK", "Batch", "TokenTable"]

PAD, UNK = 0, 1  # word ids; known words start at 2


@dataclass
class Batch:
    """``B`` utterances padded to the longest, ``n`` tokens."""

    words: torch.Tensor    # [B, n] long: word ids (PAD beyond the utterance)
    chars: torch.Tensor    # [U, max_chars] long: characters of the batch's distinct types (and the padding type)
    types: torch.Tensor    # [B, n] long: row of ``chars`` of every token
    mask: torch.Tensor     # [B, n] bool: a token, not padding
    lengths: np.ndarray    # [B] tokens per utterance (>= 1)


class TokenTable:
    """The token types of every utterance of the corpus and their characters."""

    def __init__(self, token_lists: Sequence[Sequence[str]], max_chars: int = 20, char_buckets: int = 256):
        if max_chars < 1 or char_buckets < 2:
            raise ValueError(f"max_chars must be >= 1 and char_buckets >= 2, got {max_chars}, {char_buckets}")
        index: dict[str, int] = {}
        ids: list[int] = []
        offsets = [0]
        for toks in token_lists:
            for t in toks:
                w = t.lower()
                j = index.get(w)
                if j is None:
                    j = index[w] = len(index)
                ids.append(j)
            offsets.append(len(ids))
        self.types = list(index)
        self.ids = np.array(ids, dtype=np.int64)
        self.offsets = np.array(offsets, dtype=np.int64)
        self.lengths = np.diff(self.offsets)
        if len(self.lengths) and self.lengths.min() < 1:
            raise ValueError("an utterance without tokens")
        # one extra all-padding row: the "type" of padding positions
        chars = np.zeros((len(self.types) + 1, max_chars), dtype=np.int64)
        for j, w in enumerate(self.types):
            codes = [1 + ord(c) % (char_buckets - 1) for c in w[:max_chars]]
            chars[j, :len(codes)] = codes
        self.chars = chars
        self.pad_type = len(self.types)

    def padded(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Type ids ``[B, n]`` of the utterances ``rows`` (``pad_type`` beyond each), the mask and the lengths."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.lengths[rows]
        n = int(lengths.max())
        pos = np.arange(n)
        mask = pos[None, :] < lengths[:, None]
        idx = np.minimum(self.offsets[rows][:, None] + pos[None, :], len(self.ids) - 1)
        return np.where(mask, self.ids[idx], self.pad_type), mask, lengths

    def vocabulary(self, rows: np.ndarray, min_count: int = 1) -> np.ndarray:
        """Word id of every type (``[n_types + 1]``, the last: padding) from the tokens of ``rows`` only.

        Types seen at least ``min_count`` times in ``rows`` get ids 2, 3, ... in
        order of first appearance in the corpus; the others are ``UNK``.
        """
        rows = np.asarray(rows, dtype=np.int64)
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        tok = np.concatenate([self.ids[s:e] for s, e in zip(starts, ends)]) if len(rows) else np.zeros(0, np.int64)
        counts = np.bincount(tok, minlength=len(self.types) + 1)
        known = counts >= max(1, int(min_count))
        known[self.pad_type] = False
        vocab = np.full(len(self.types) + 1, UNK, dtype=np.int64)
        vocab[known] = 2 + np.arange(int(known.sum()))
        vocab[self.pad_type] = PAD
        return vocab

    def batch(self, rows: np.ndarray, vocab: np.ndarray) -> Batch:
        types, mask, lengths = self.padded(rows)
        uniq, inv = np.unique(types, return_inverse=True)
        chars = self.chars[uniq]
        chars = chars[:, :max(1, int((chars != 0).sum(axis=1).max()))]  # up to the batch's longest word
        return Batch(
            words=torch.from_numpy(vocab[types]),
            chars=torch.from_numpy(chars),
            types=torch.from_numpy(inv.reshape(types.shape).astype(np.int64)),
            mask=torch.from_numpy(mask),
            lengths=lengths,
        )
