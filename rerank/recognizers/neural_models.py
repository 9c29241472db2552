"""The torch models of the neural recognizers: an encoder and the DC, IC and CRF heads on it.

- :class:`Encoder`: per token, a word embedding (vocabulary of the fit rows) and a
  character CNN (max-pooled over the characters), then a BiLSTM or a word CNN;
- :class:`DomainModel` (DC): the encoder, max-pooled over tokens, one logit;
- :class:`InterpreterModel` (IC + NER on one shared encoder): an intent softmax
  on the pooled states and per-token tag scores for a linear-chain CRF with
  transition, start and end scores. :meth:`InterpreterModel.crf_nll` is the exact
  negative log-likelihood (the forward algorithm), the same model that
  :mod:`rerank.recognizers.kbest` decodes (start and end scores folded into the
  first and last emission, see :meth:`InterpreterModel.crf_matrices`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rerank.recognizers.neural_text import Batch

__all__ = ["EncoderConfig", "Encoder", "DomainModel", "InterpreterModel"]

ENCODERS = ("bilstm", "cnn")


@dataclass(frozen=True)
class EncoderConfig:
    kind: str = "bilstm"       # bilstm | cnn (two convolutions of width 3 over the tokens)
    word_dim: int = 64
    char_dim: int = 16
    char_filters: int = 32     # 0: no character CNN
    char_width: int = 3
    char_buckets: int = 256
    max_chars: int = 20
    hidden: int = 64           # per direction for the BiLSTM; channels for the CNN
    dropout: float = 0.2
    word_dropout: float = 0.1  # training only: a known word is read as UNK with this probability
    min_count: int = 1         # a word is in the vocabulary when the fit rows hold it this many times

    def __post_init__(self):
        if self.kind not in ENCODERS:
            raise ValueError(f"encoder.kind must be one of {ENCODERS}, not {self.kind!r}")
        if min(self.word_dim, self.hidden, self.max_chars) < 1 or self.char_filters < 0:
            raise ValueError(f"encoder sizes must be positive: {asdict(self)}")
        if not (0 <= self.dropout < 1 and 0 <= self.word_dropout < 1):
            raise ValueError(f"dropout and word_dropout must be in [0, 1): {asdict(self)}")

    @property
    def out_dim(self) -> int:
        return 2 * self.hidden if self.kind == "bilstm" else self.hidden


class Encoder(nn.Module):
    """Token states ``[B, n, out_dim]`` of a :class:`~rerank.recognizers.neural_text.Batch`."""

    def __init__(self, n_words: int, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.words = nn.Embedding(n_words, cfg.word_dim, padding_idx=0)
        in_dim = cfg.word_dim
        if cfg.char_filters:
            self.chars = nn.Embedding(cfg.char_buckets, cfg.char_dim, padding_idx=0)
            self.char_conv = nn.Conv1d(cfg.char_dim, cfg.char_filters, cfg.char_width, padding=cfg.char_width // 2)
            in_dim += cfg.char_filters
        self.drop = nn.Dropout(cfg.dropout)
        if cfg.kind == "bilstm":
            self.rnn = nn.LSTM(in_dim, cfg.hidden, batch_first=True, bidirectional=True)
        else:
            self.convs = nn.ModuleList([nn.Conv1d(in_dim, cfg.hidden, 3, padding=1),
                                        nn.Conv1d(cfg.hidden, cfg.hidden, 3, padding=1)])

    def char_vectors(self, chars: torch.Tensor) -> torch.Tensor:
        """``[U, char_filters]``: ReLU'd convolution max-pooled over each type's characters (padding gives 0)."""
        x = self.chars(chars).transpose(1, 2)                      # [U, char_dim, max_chars]
        h = torch.relu(self.char_conv(x))[:, :, :chars.shape[1]]   # [U, filters, max_chars]
        h = h.masked_fill((chars == 0)[:, None, :], 0.0)
        return h.max(dim=2).values

    def forward(self, batch: Batch, words: torch.Tensor | None = None) -> torch.Tensor:
        words = batch.words if words is None else words
        x = self.words(words)
        if self.cfg.char_filters:
            x = torch.cat([x, self.char_vectors(batch.chars)[batch.types]], dim=2)
        x = self.drop(x)
        mask = batch.mask[:, :, None]
        if self.cfg.kind == "bilstm":
            packed = pack_padded_sequence(x, torch.from_numpy(batch.lengths), batch_first=True, enforce_sorted=False)
            h, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=x.shape[1])
        else:
            h = x.masked_fill(~mask, 0.0)
            for conv in self.convs:
                h = torch.relu(conv(h.transpose(1, 2)).transpose(1, 2)).masked_fill(~mask, 0.0)
        return self.drop(h)


def max_pool(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, D]``: the largest state of each utterance's tokens."""
    return h.masked_fill(~mask[:, :, None], float("-inf")).max(dim=1).values


class DomainModel(nn.Module):
    """DC: the logit of "this utterance is mine"."""

    def __init__(self, n_words: int, cfg: EncoderConfig):
        super().__init__()
        self.encoder = Encoder(n_words, cfg)
        self.out = nn.Linear(cfg.out_dim, 1)

    def forward(self, batch: Batch, words: torch.Tensor | None = None) -> torch.Tensor:
        return self.out(max_pool(self.encoder(batch, words), batch.mask))[:, 0]


class InterpreterModel(nn.Module):
    """IC and NER on one encoder: intent logits ``[B, n_intents]`` and tag scores ``[B, n, L]``."""

    def __init__(self, n_words: int, cfg: EncoderConfig, n_intents: int, n_tags: int):
        super().__init__()
        self.encoder = Encoder(n_words, cfg)
        self.intent = nn.Linear(cfg.out_dim, n_intents)
        self.tags = nn.Linear(cfg.out_dim, n_tags)
        self.transitions = nn.Parameter(torch.zeros(n_tags, n_tags))  # [from, to]
        self.start = nn.Parameter(torch.zeros(n_tags))
        self.end = nn.Parameter(torch.zeros(n_tags))

    def forward(self, batch: Batch, words: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(batch, words)
        return self.intent(max_pool(h, batch.mask)), self.tags(h)

    def crf_nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``-log P(tags | u)`` of every utterance ``[B]`` (``tags [B, n]``, anything beyond the mask)."""
        B, n, _ = emissions.shape
        T = self.transitions
        ar = torch.arange(B)
        lengths = mask.sum(dim=1)
        tags = tags.masked_fill(~mask, 0)
        maskf = mask.to(emissions.dtype)
        gold = self.start[tags[:, 0]] + (emissions.gather(2, tags[:, :, None])[:, :, 0] * maskf).sum(dim=1)
        if n > 1:
            gold = gold + (T[tags[:, :-1], tags[:, 1:]] * maskf[:, 1:]).sum(dim=1)
        gold = gold + self.end[tags[ar, lengths - 1]]
        alpha = self.start[None, :] + emissions[:, 0]
        for t in range(1, n):
            nxt = torch.logsumexp(alpha[:, :, None] + T[None], dim=1) + emissions[:, t]
            alpha = torch.where(mask[:, t, None], nxt, alpha)
        log_z = torch.logsumexp(alpha + self.end[None, :], dim=1)
        return log_z - gold

    def crf_matrices(self, emissions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float64 ``(E [B, n, L], T [L, L])`` of utterances of one length ``n``, for :mod:`~rerank.recognizers.kbest`:
        start and end scores folded into the first and last emission."""
        E = np.array(emissions, dtype=np.float64)
        E[:, 0] += self.start.detach().double().numpy()
        E[:, -1] += self.end.detach().double().numpy()
        return E, self.transitions.detach().double().numpy()
