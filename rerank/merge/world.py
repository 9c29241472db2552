r"""The worlds a release can make: the merge of every domain on the gate's split, each version scored once.

A *world* is the live state with some moves applied (``{domain: version}``, ``None`` for
the baseline). :class:`World` loads the split once, scores every domain's live version
once and every candidate once, and then evaluates any world from those arrays alone:
the merged top hypothesis of every utterance, the paired differences against the live
state, and their bootstrap intervals. The intervals come from one matrix of resample
counts (:func:`rerank.metrics.corpus.resample_counts`, the same resamples for every
world), so a difference that touches a few utterances costs a product with those
columns only:

.. math::
    \Delta^{*}_{r} = \frac{\sum_u C_{ru} (e^{world}_u - e^{live}_u)}{\sum_u C_{ru} t_u}

This is what the promotion gate and the release planner read; neither climbs back to
the registry or the tables once a world is built.
"""
from __future__ import annotations

import time
from typing import Mapping

import numpy as np

from rerank.hypotheses.figures import top_hypothesis_outcome
from rerank.hypotheses.tables import TableSet
from rerank.merge.evaluate import SplitData, load_split
from rerank.merge.gate import GateLimits, judge
from rerank.merge.ranker import BASELINE, DomainScorer
from rerank.merge.top_calibration import TopCalibration, cross_fitted, fit_top_calibration
from rerank.metrics.calibration import bin_index, ece, ece_rows
from rerank.metrics.corpus import bootstrap_ci, percentile_interval, resample_counts
from rerank.model.registry import Registry, RegistryError
from rerank.model.releases import LiveState
from rerank.model.spec import spec_from_manifest
from rerank.ranking import top_per_utterance

Moves = Mapping[str, "str | None"]


class World:
    """The live state of ``tables``' corpus on ``limits.split``, and every world a set of moves makes of it."""

    def __init__(self, tables: TableSet, registry: Registry, limits: GateLimits, state: LiveState | None = None,
                 data: SplitData | None = None):
        t0 = time.perf_counter()
        self.tables, self.registry, self.limits = tables, registry, limits
        self.corpus = tables.name
        self.state = registry.live_state(self.corpus) if state is None else state
        self.data = data if data is not None else load_split(tables, limits.split)
        self.domains = list(self.data.domains)
        self.specs = {d: spec_from_manifest(tables.manifest, d) for d in tables.domains}
        sizes = [self.data.tables[d].num_rows for d in self.domains]
        self.offsets = dict(zip(self.domains, np.cumsum([0] + sizes)[:-1].tolist()))
        self.sizes = dict(zip(self.domains, sizes))
        self.live = {d: self.state.version(d) for d in tables.domains}
        self._scores: dict[tuple[str, str | None], np.ndarray] = {}
        self.base = np.concatenate([self.scores(d, self.live[d]) for d in self.domains]) if self.domains else np.zeros(0)
        self.top_n, self.e_n, self.ie_n = (np.asarray(a) for a in top_hypothesis_outcome(
            self.data.utt_index, self.base, self.data.sem_errors, self.data.ie, self.data.totals))
        self.e_n = self.e_n.astype(np.float64)
        self.has = self.top_n >= 0
        self.conf_n = self._conf(self.base, self.top_n)
        cal = self.state.top_calibration
        self.served = TopCalibration.from_dict(cal, "the live state's top calibration") if cal else TopCalibration()
        self.served_conf = self._served_conf()
        self.totals = self.data.totals
        gold = self.data.gold_domain
        self.gold_names = sorted(set(gold.tolist()))
        self.gold_code = np.searchsorted(np.array(self.gold_names, dtype=object), gold) if len(gold) else np.zeros(0, int)
        self._counts: np.ndarray | None = None
        # rows grouped by utterance (ascending rows within each): a world's new tops are found on the
        # utterances its moves touch, not by sorting every row again
        self._by_utt = np.argsort(self.data.utt_index, kind="stable")
        self._utt_start = np.searchsorted(self.data.utt_index[self._by_utt], np.arange(self.data.n_utterances + 1))
        self._t_gold = np.bincount(self.gold_code, weights=self.totals, minlength=len(self.gold_names)) \
            if len(self.totals) else np.zeros(len(self.gold_names))
        self._e_gold = np.bincount(self.gold_code, weights=self.e_n, minlength=len(self.gold_names)) \
            if len(self.totals) else np.zeros(len(self.gold_names))
        self._n_gold = np.bincount(self.gold_code, minlength=len(self.gold_names)) if len(self.totals) else np.zeros(0, int)
        self.seconds_to_build = time.perf_counter() - t0

    def _served_conf(self) -> np.ndarray:
        """The live tops' served confidence, as the gate weighs it: cross-fitted when the served map was fitted on
        these very tops (the figure a new world's fit is weighed by; in-sample, an isotonic map is near 0 ECE)."""
        conf, served = self.conf_n[self.has], self.served
        fitted_here = served.fitted_for and not served.stale(self.versions({})) and served.split == self.limits.split \
            and served.utterances == len(conf)
        if fitted_here:
            return np.clip(cross_fitted(served.method, conf, 1.0 - self.ie_n[self.has]), 0, 1)
        return np.clip(served(conf), 0, 1)

    # ------------------------------------------------------------------ scoring, once per version

    def load(self, domain: str, version: str | None) -> DomainScorer:
        """The scorer of ``domain`` at ``version`` (None: the baseline), checked against the tables' spec."""
        if version is None or version == BASELINE:
            return DomainScorer(domain, BASELINE)
        pub = self.registry.load(self.corpus, domain, version, expect_spec=self.specs[domain])
        return DomainScorer.from_published(pub)

    def scores(self, domain: str, version: str | None) -> np.ndarray:
        """``domain``'s dev rows scored by ``version``; each (domain, version) is scored once."""
        key = (domain, version)
        if key not in self._scores:
            if domain not in self.specs:
                raise RegistryError(f"unknown domain {domain!r}; the tables' domains: {sorted(self.specs)}")
            table = self.data.tables.get(domain)
            scorer = self.load(domain, version)  # a version that does not load fails here, before anything is written
            self._scores[key] = scorer.score_table(table) if table is not None else np.zeros(0)
        return self._scores[key]

    def _conf(self, score: np.ndarray, top: np.ndarray) -> np.ndarray:
        has = top >= 0
        return np.where(has, score[np.where(has, top, 0)] if len(score) else 0.0, 0.0)

    @property
    def counts(self) -> np.ndarray:
        """The bootstrap's resample counts over utterances, drawn once for every world."""
        if self._counts is None:
            self._counts = resample_counts(max(1, self.data.n_utterances), max(1, self.limits.bootstrap), self.limits.seed)
            c = self._counts
            self._den_all = c @ self.totals if len(self.totals) else np.zeros(len(c))
            self._den_gold = np.stack([c[:, self.gold_code == j] @ self.totals[self.gold_code == j]
                                       for j in range(len(self.gold_names))], axis=1) if self.gold_names else np.zeros((len(c), 0))
        return self._counts

    def _ratio_ci(self, diff: np.ndarray) -> list[float]:
        """The interval of ``sum(diff) / sum(totals)`` over every utterance."""
        if self.limits.bootstrap <= 0 or not len(diff):
            return [float("nan"), float("nan")]
        nz = np.flatnonzero(diff)
        if not len(nz):
            return [0.0, 0.0]
        num = self.counts[:, nz] @ diff[nz]
        return list(percentile_interval(num / np.maximum(self._den_all, 1e-300), self.limits.confidence))

    def _gold_cis(self, diff: np.ndarray, golds: np.ndarray) -> dict[int, list[float]]:
        """The interval of every gold domain in ``golds``' ``sum(diff) / sum(totals)``, in one pass."""
        if self.limits.bootstrap <= 0 or not len(golds):
            return {int(j): [float("nan"), float("nan")] for j in golds}
        nz = np.flatnonzero(diff)
        nz = nz[np.isin(self.gold_code[nz], golds)]
        nz = nz[np.argsort(self.gold_code[nz], kind="stable")]
        codes = self.gold_code[nz]
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if len(nz) else np.zeros(0, int)
        num = np.add.reduceat(self.counts[:, nz] * diff[nz], starts, axis=1) if len(nz) else np.zeros((len(self.counts), 0))
        ratio = num / np.maximum(self._den_gold[:, codes[starts]], 1e-300)
        alpha = 1.0 - self.limits.confidence
        lo, hi = np.quantile(ratio, [alpha / 2, 1 - alpha / 2], axis=0) if ratio.shape[1] else (np.zeros(0), np.zeros(0))
        out = {int(j): [0.0, 0.0] for j in golds}
        out.update({int(c): [float(a), float(b)] for c, a, b in zip(codes[starts], lo, hi)})
        return out

    def _tops(self, score: np.ndarray, moves: Moves) -> np.ndarray:
        """Every utterance's top row in the world ``score`` (moves applied): recomputed where the moves reach."""
        rows = [np.arange(self.offsets[d], self.offsets[d] + self.sizes[d]) for d in moves if d in self.offsets]
        top = self.top_n.copy()
        if not rows:
            return top
        utts = np.unique(self.data.utt_index[np.concatenate(rows)])
        lo, hi = self._utt_start[utts], self._utt_start[utts + 1]
        size = hi - lo
        idx = np.repeat(lo - np.cumsum(np.r_[0, size[:-1]]), size) + np.arange(size.sum())
        sub = np.sort(self._by_utt[idx])  # ascending rows: ties break as a full ranking would
        local = np.searchsorted(utts, self.data.utt_index[sub])
        got = top_per_utterance(local, score[sub], len(utts))
        top[utts] = np.where(got >= 0, sub[np.maximum(got, 0)], -1)
        return top

    # ------------------------------------------------------------------ one world

    def world_scores(self, moves: Moves) -> np.ndarray:
        score = self.base.copy()
        for d, v in moves.items():
            if d in self.offsets:
                lo = self.offsets[d]
                score[lo:lo + self.sizes[d]] = self.scores(d, v)
            else:
                self.scores(d, v)  # (no dev rows: still loaded and checked)
        return score

    def versions(self, moves: Moves) -> dict[str, str]:
        """Every domain's version in the world ``moves`` makes (``baseline`` for none)."""
        return {d: (moves[d] if d in moves else self.live[d]) or BASELINE for d in sorted(self.live)}

    def overall_delta(self, moves: Moves) -> float:
        """The world's overall SemER minus the live state's (the figure alone, no interval)."""
        moves = {d: v for d, v in moves.items() if v != self.live.get(d)}
        top = self._tops(self.world_scores(moves), moves)
        e_c = self._errors(top)
        return float((e_c.sum() - self.e_n.sum()) / (self.totals.sum() or 1.0))

    def _errors(self, top: np.ndarray) -> np.ndarray:
        has = top >= 0
        return np.where(has, self.data.sem_errors[np.where(has, top, 0)], self.totals).astype(np.float64)

    def evaluate(self, moves: Moves, fit_calibration: bool = True, intervals: str = "all") -> dict:
        """The gate's report on the world ``moves`` makes, against the live state (:func:`rerank.merge.gate.judge`).

        ``intervals="all"``: every changed gold domain's interval; ``"checks"``: only where a check needs one
        (a rise beyond ``domain_max_delta``), which is what a planner's trial worlds need.
        """
        t0 = time.perf_counter()
        moves = {d: v for d, v in moves.items() if v != self.live.get(d)}
        score = self.world_scores(moves)
        top_c = self._tops(score, moves)
        has_c = top_c >= 0
        e_c = self._errors(top_c)
        ie_c = np.where(has_c, self.data.ie[np.where(has_c, top_c, 0)], 1)
        diff = e_c - self.e_n
        t, has = self.totals, self.has
        total = float(t.sum()) or 1.0
        overall = {"before": float(self.e_n.sum() / total), "after": float(e_c.sum() / total), "ci": self._ratio_ci(diff)}
        changed = top_c != self.top_n
        k = len(self.gold_names)
        e_gold = np.bincount(self.gold_code, weights=e_c, minlength=k) if len(t) else np.zeros(k)
        ch_gold = np.bincount(self.gold_code, weights=changed, minlength=k) if len(t) else np.zeros(k)
        t_gold = np.where(self._t_gold > 0, self._t_gold, 1.0)
        before, after = self._e_gold / t_gold, e_gold / t_gold
        delta = after - before
        moved_gold = np.flatnonzero(np.bincount(self.gold_code, weights=np.abs(diff), minlength=k) > 0) if len(t) else []
        need = moved_gold if intervals == "all" else np.flatnonzero(delta > self.limits.domain_max_delta)
        cis = self._gold_cis(diff, np.asarray(need, dtype=int))
        unknown = set(int(j) for j in moved_gold)  # changed, and no interval asked for: none is claimed
        per_domain = {d: {"n": int(self._n_gold[j]), "before": float(before[j]), "after": float(after[j]),
                          "delta": float(delta[j]), "changed": int(ch_gold[j]),
                          "ci": cis.get(j, [float("nan"), float("nan")] if j in unknown else [0.0, 0.0])}
                      for j, d in enumerate(self.gold_names)}
        y_n, y_c = 1.0 - self.ie_n[has], 1.0 - np.asarray(ie_c)[has]
        conf_c = self._conf(score, top_c)[has]
        if fit_calibration:  # weighed by its cross-fitted confidence, as the live tops are (World._served_conf)
            top_cal = fit_top_calibration(conf_c, y_c, self.versions(moves), self.limits.split, self.limits.top_calibration)
            c_c = np.clip(cross_fitted(top_cal.method, conf_c, y_c), 0, 1)
        else:
            top_cal = self.served
            c_c = np.clip(top_cal(conf_c), 0, 1)
        c_n = self.served_conf
        ece_fig = None
        if has.any():
            ece_fig = {"before": ece(c_n, y_n), "after": ece(c_c, y_c), "ci": [float("nan"), float("nan")]}
            if ece_fig["after"] - ece_fig["before"] > self.limits.ece_max_delta:  # only then can the interval matter
                b_n, b_c = bin_index(c_n), bin_index(c_c)
                ece_fig["ci"] = list(bootstrap_ci(lambda a, b, c, d, e, f: ece_rows(d, e, f) - ece_rows(a, b, c),
                                                  c_n, y_n, b_n, c_c, y_c, b_c, n_resamples=self.limits.bootstrap,
                                                  confidence=self.limits.confidence, seed=self.limits.seed, vectorized=True))
        added, removed = float(np.clip(diff, 0, None).sum()), float(np.clip(-diff, 0, None).sum())
        report = judge(self.limits, overall, ece_fig, per_domain, moved=set(moves), added=added, removed=removed)
        report.update({
            "corpus": self.corpus, "moves": {d: v or BASELINE for d, v in sorted(moves.items())},
            "from": {d: self.live.get(d) or BASELINE for d in sorted(moves)}, "release": self.state.release,
            "split": self.limits.split, "utterances": int(self.data.n_utterances), "changed_top": int(changed.sum()),
            "top_calibration": top_cal.to_dict(), "served_top_calibration": self.served.to_dict(),
            "seconds": round(time.perf_counter() - t0, 4),
        })
        return report
