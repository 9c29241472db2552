"""Neural recognizers (``recognizers=neural``): small torch models trained from scratch per domain, on CPU.

- DC: a :class:`~rerank.recognizers.neural_models.DomainModel` per domain, trained
  one-vs-all on the fold's rows of every domain (at most ``dc_max_negatives``
  other-domain rows, a seeded sample), ``dc = sigmoid(logit)``;
- IC + NER: one :class:`~rerank.recognizers.neural_models.InterpreterModel` per
  domain on its own rows: an intent softmax and a linear-chain CRF over BIO
  tags, trained jointly (cross-entropy + CRF negative log-likelihood). Its
  k best labellings and their probabilities are exact (:mod:`rerank.recognizers.kbest`).

Nothing is pretrained: word vocabularies come from the fit rows, characters are
codepoint buckets (:mod:`rerank.recognizers.neural_text`). Nothing is
calibrated either: neural recognizers are typically over-confident, and
putting their scores on one scale is the re-ranker's job.

Every fit is seeded per domain (``domain_seed``) and runs torch on one thread,
so that a (domain, fold) job gives the same numbers in any process.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from rerank.corpus.annotation import tags_to_slots
from rerank.corpus.utterance import Utterance
from rerank.recognizers.base import DomainClassifier, Interpreter, Labelling, MarginalLabelling, Recognizers, domain_seed
from rerank.recognizers.kbest import kbest_probabilities, path_marginals, tag_marginals
from rerank.recognizers.neural_models import DomainModel, EncoderConfig, InterpreterModel
from rerank.recognizers.neural_text import UNK, TokenTable

__all__ = ["NeuralRecognizers"]

# negatives_per_epoch: an epoch sees every positive and this many negatives, cycling through all of them (None: all)
_DC_DEFAULTS = {"epochs": 4, "batch_size": 64, "lr": 0.003, "negatives_per_epoch": None}
_INTERPRETER_DEFAULTS = {"epochs": 20, "batch_size": 32, "lr": 0.003}
_INFERENCE_BATCH = 512
_GRAD_CLIP = 5.0
_POOL = 20  # batches sorted by length together


@contextlib.contextmanager
def torch_one_thread():
    """torch on one thread inside the block (jobs run side by side; results must not depend on threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train(model: torch.nn.Module, loss_of, epoch_positions, lengths: np.ndarray, cfg: Mapping[str, Any],
           rng: np.random.Generator) -> None:
    """Adam on ``loss_of(positions)`` over mini-batches of ``epoch_positions(rng)``, every epoch.

    The positions are shuffled, cut into pools of ``_POOL`` batches, sorted by length within a
    pool (``lengths[position]``: little padding) and the batches are shuffled.
    """
    opt = torch.optim.Adam(model.parameters(), lr=float(cfg["lr"]), fused=True)
    bs = int(cfg["batch_size"])
    model.train()
    for _ in range(int(cfg["epochs"])):
        order = rng.permutation(epoch_positions(rng))
        batches = []
        for p in range(0, len(order), bs * _POOL):
            pool = order[p:p + bs * _POOL]
            pool = pool[np.argsort(lengths[pool], kind="stable")]
            batches += [pool[s:s + bs] for s in range(0, len(pool), bs)]
        for b in rng.permutation(len(batches)):
            opt.zero_grad()
            loss = loss_of(batches[b])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), _GRAD_CLIP)
            opt.step()
    model.eval()


def _drop_words(words: torch.Tensor, rate: float) -> torch.Tensor:
    """Known words read as UNK with probability ``rate`` (so that UNK is learned for unseen words)."""
    if rate <= 0:
        return words
    return words.masked_fill((words > UNK) & (torch.rand(words.shape) < rate), UNK)


def _length_batches(table: TokenTable, rows: np.ndarray) -> list[np.ndarray]:
    """Positions into ``rows``, sorted by length and cut into inference batches (little padding)."""
    order = np.argsort(table.lengths[rows], kind="stable")
    return [order[s:s + _INFERENCE_BATCH] for s in range(0, len(order), _INFERENCE_BATCH)]


class _NegativeStream:
    """Every epoch: all positives and the next ``per_epoch`` negatives of a shuffled cycle through them."""

    def __init__(self, is_mine: np.ndarray, per_epoch: int | None):
        self.positives, self.negatives = np.flatnonzero(is_mine), np.flatnonzero(~is_mine)
        self.per_epoch = min(per_epoch or len(self.negatives), len(self.negatives))
        self.queue = np.zeros(0, dtype=np.int64)

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        if self.per_epoch == len(self.negatives):
            return np.concatenate([self.positives, self.negatives])
        while len(self.queue) < self.per_epoch:
            self.queue = np.concatenate([self.queue, rng.permutation(self.negatives)])
        take, self.queue = self.queue[:self.per_epoch], self.queue[self.per_epoch:]
        return np.concatenate([self.positives, take])


class NeuralDomainClassifier(DomainClassifier):
    def __init__(self, model: DomainModel | None, table: TokenTable, vocab: np.ndarray | None, constant: float = 0.0):
        self.model, self.table, self.vocab, self.constant = model, table, vocab, constant

    def scores(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if self.model is None:
            return np.full(len(rows), self.constant)
        out = np.empty(len(rows))
        with torch_one_thread(), torch.inference_mode():
            for pos in _length_batches(self.table, rows):
                out[pos] = torch.sigmoid(self.model(self.table.batch(rows[pos], self.vocab)).double()).numpy()
        return out


class NeuralInterpreter(Interpreter):
    """IC and CRF NER of one domain; one forward pass serves both calls on the same rows."""

    def __init__(self, model: InterpreterModel | None, table: TokenTable, vocab: np.ndarray | None,
                 intents: np.ndarray, tags: np.ndarray, utterances: Sequence[Utterance]):
        self.model, self.table, self.vocab = model, table, vocab
        self.intent_names, self.tag_names, self.utterances = intents, tags, utterances
        self._cache: tuple[bytes, tuple] | None = None

    def _forward(self, rows: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Intent probabilities ``[n, n_intents]`` and every row's tag scores ``[len, L]`` (float32)."""
        key = rows.tobytes()
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        probs = np.empty((len(rows), len(self.intent_names)))
        emissions: list[np.ndarray] = [None] * len(rows)  # type: ignore[list-item]
        with torch_one_thread(), torch.inference_mode():
            for pos in _length_batches(self.table, rows):
                batch = self.table.batch(rows[pos], self.vocab)
                logits, em = self.model(batch)
                probs[pos] = torch.softmax(logits.double(), dim=1).numpy()
                em = em.numpy()
                for j, p in enumerate(pos):
                    emissions[p] = em[j, :batch.lengths[j]]
        self._cache = (key, (probs, emissions))
        return probs, emissions

    def intents(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.asarray(rows, dtype=np.int64)
        if self.model is None or len(self.intent_names) == 1:
            return np.tile(self.intent_names[:1], (len(rows), 1)), np.ones((len(rows), 1))
        probs = self._forward(rows)[0]
        k = min(k, probs.shape[1])
        idx = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return self.intent_names[idx], np.take_along_axis(probs, idx, axis=1)

    def labellings(self, rows: np.ndarray, k: int) -> list[list[Labelling]]:
        return [[(slots, p) for slots, p, _ in row] for row in self.labellings_with_marginals(rows, k)]

    def labellings_with_marginals(self, rows: np.ndarray, k: int) -> list[list[MarginalLabelling]]:
        rows = np.asarray(rows, dtype=np.int64)
        if self.model is None or len(self.tag_names) == 1:
            tag = str(self.tag_names[0])
            return [[(tags_to_slots(self.utterances[i].tokens, [tag] * len(self.utterances[i].tokens)), 1.0, (1.0, 1.0))]
                    for i in rows]
        emissions = self._forward(rows)[1]
        lengths = self.table.lengths[rows]
        out: list[list[MarginalLabelling]] = [None] * len(rows)  # type: ignore[list-item]
        for n in np.unique(lengths):
            pos = np.flatnonzero(lengths == n)
            E, T = self.model.crf_matrices(np.stack([emissions[p] for p in pos]))
            paths, probs = kbest_probabilities(E, T, k)
            stats = path_marginals(tag_marginals(E, T), paths).tolist()
            probs, tags = probs.tolist(), self.tag_names[paths].tolist()
            for b, p in enumerate(pos):
                toks = self.utterances[rows[p]].tokens
                out[p] = [(tags_to_slots(toks, t), q, tuple(m)) for t, q, m in zip(tags[b], probs[b], stats[b])]
        return out


class NeuralRecognizers(Recognizers):
    """Per domain: a neural DC, and a neural IC + CRF NER sharing one encoder. See the module's docstring."""

    def __init__(self, encoder: Mapping[str, Any] | None = None, dc: Mapping[str, Any] | None = None,
                 interpreter: Mapping[str, Any] | None = None, dc_max_negatives: int | None = None):
        self.encoder = EncoderConfig(**dict(encoder or {}))
        self.dc = {**_DC_DEFAULTS, **dict(dc or {})}
        self.interpreter = {**_INTERPRETER_DEFAULTS, **dict(interpreter or {})}
        for name, cfg, known in (("dc", self.dc, _DC_DEFAULTS), ("interpreter", self.interpreter, _INTERPRETER_DEFAULTS)):
            if unknown := sorted(set(cfg) - set(known)):
                raise ValueError(f"recognizers.family.{name}: unknown settings {unknown}; known: {sorted(known)}")
            if int(cfg["epochs"]) < 1 or int(cfg["batch_size"]) < 1 or float(cfg["lr"]) <= 0:
                raise ValueError(f"recognizers.family.{name}: epochs, batch_size and lr must be positive: {cfg}")
        self.dc_max_negatives = int(dc_max_negatives) if dc_max_negatives else None
        self.table: TokenTable | None = None

    def describe(self, domain: str) -> str:
        return f"neural-{self.encoder.kind}"

    def settings(self) -> dict:
        return {**super().settings(), "encoder": asdict(self.encoder), "dc": self.dc, "interpreter": self.interpreter,
                "dc_max_negatives": self.dc_max_negatives, "torch": torch.__version__.split("+")[0]}

    def setup(self, utterances: Sequence[Utterance]) -> None:
        super().setup(utterances)
        self.table = TokenTable([u.tokens for u in utterances], self.encoder.max_chars, self.encoder.char_buckets)

    def fit_domain_classifier(self, domain: str, rows: np.ndarray, seed: int) -> DomainClassifier:
        rows, is_mine = self.dc_rows(domain, rows, seed, self.dc_max_negatives)
        dom_seed = domain_seed(seed, domain)
        if is_mine.all():  # a corpus of one domain
            return NeuralDomainClassifier(None, self.table, None, constant=1.0)
        vocab = self.table.vocabulary(rows, self.encoder.min_count)
        target = torch.from_numpy(is_mine.astype(np.float32))
        with torch_one_thread():
            torch.manual_seed(dom_seed)
            model = DomainModel(int(vocab.max()) + 1, self.encoder)
            loss_fn = torch.nn.BCEWithLogitsLoss()

            def loss_of(pos: np.ndarray) -> torch.Tensor:
                batch = self.table.batch(rows[pos], vocab)
                return loss_fn(model(batch, _drop_words(batch.words, self.encoder.word_dropout)), target[pos])

            _train(model, loss_of, _NegativeStream(is_mine, self.dc["negatives_per_epoch"]), self.table.lengths[rows],
                   self.dc, np.random.default_rng(dom_seed))
        return NeuralDomainClassifier(model, self.table, vocab)

    def fit_interpreter(self, domain: str, rows: np.ndarray, seed: int) -> Interpreter:
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            raise ValueError(f"domain {domain!r}: an interpreter needs at least one training utterance")
        utts = self.utterances
        intents = np.array(sorted({utts[i].intent for i in rows}))
        tags = np.array(sorted({t for i in rows for t in utts[i].tags}))
        if len(intents) == 1 and len(tags) == 1:
            return NeuralInterpreter(None, self.table, None, intents, tags, utts)
        dom_seed = domain_seed(seed, domain)
        vocab = self.table.vocabulary(rows, self.encoder.min_count)
        intent_y = torch.from_numpy(np.searchsorted(intents, [utts[i].intent for i in rows]))
        tag_index = {t: j for j, t in enumerate(tags)}
        tag_matrix = torch.zeros((len(rows), int(self.table.lengths[rows].max())), dtype=torch.long)
        for j, i in enumerate(rows):
            tag_matrix[j, :len(utts[i].tags)] = torch.tensor([tag_index[t] for t in utts[i].tags])
        with torch_one_thread():
            torch.manual_seed(dom_seed)
            model = InterpreterModel(int(vocab.max()) + 1, self.encoder, len(intents), len(tags))

            def loss_of(pos: np.ndarray) -> torch.Tensor:
                batch = self.table.batch(rows[pos], vocab)
                logits, em = model(batch, _drop_words(batch.words, self.encoder.word_dropout))
                loss = torch.nn.functional.cross_entropy(logits, intent_y[pos]) if len(intents) > 1 else 0.0
                if len(tags) > 1:
                    y = tag_matrix[torch.from_numpy(pos), :batch.mask.shape[1]]
                    loss = loss + model.crf_nll(em, y, batch.mask).mean()
                return loss

            _train(model, loss_of, lambda rng: np.arange(len(rows)), self.table.lengths[rows], self.interpreter,
                   np.random.default_rng(dom_seed))
        return NeuralInterpreter(model, self.table, vocab, intents, tags, utts)
