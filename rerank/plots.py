"""Pictures people would rather look at than tables: reliability diagrams, feature weights, intervals."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rerank.metrics.calibration import N_BINS, ece, reliability_bins  # noqa: E402


# A bin with a handful of points draws a zig-zag that says nothing: such bins are not drawn
# (the ECE in the legend still counts them).
MIN_BIN_COUNT = 10


def reliability_diagram(systems: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str = "", n_bins: int = N_BINS,
                        histogram: bool = True, min_count: int = MIN_BIN_COUNT):
    """Accuracy against confidence per bin, one curve per system, the diagonal dotted.

    ``systems`` maps a name to ``(confidence, correct)``. Below, a histogram
    of the confidences shows where the mass is. Bins with fewer than
    ``min_count`` points are not drawn.
    """
    rows = 2 if histogram else 1
    fig, axes = plt.subplots(rows, 1, figsize=(5.5, 6.5 if histogram else 4.5), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1] if histogram else [1]})
    ax = axes[0, 0]
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    for name, (conf, correct) in systems.items():
        if len(conf) == 0:
            continue
        b = reliability_bins(conf, correct, n_bins)
        keep = b["count"] >= min(min_count, len(conf))
        ax.plot(b["conf"][keep], b["acc"][keep], "o-", ms=3, label=f"{name} (ECE {ece(conf, correct, n_bins):.3f})")
    ax.set_xlim(0, 1), ax.set_ylim(0, 1)
    ax.set_xlabel("confidence"), ax.set_ylabel("accuracy (1 - IE)")
    ax.set_title(title or "reliability diagram")
    ax.legend(fontsize=7, loc="upper left")
    if histogram:
        h = axes[1, 0]
        edges = np.linspace(0, 1, n_bins + 1)
        for name, (conf, _) in systems.items():
            if len(conf):
                h.hist(conf, bins=edges, histtype="step", label=name)
        h.set_xlim(0, 1), h.set_xlabel("confidence"), h.set_ylabel("count")
    fig.tight_layout()
    return fig


def reliability_grid(per_domain: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]], n_bins: int = N_BINS, cols: int = 4,
                     min_count: int = MIN_BIN_COUNT):
    """Small multiples: one reliability diagram per domain (bins of fewer than ``min_count`` points not drawn)."""
    names = list(per_domain)
    rows = max(1, int(np.ceil(len(names) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        ax.plot([0, 1], [0, 1], ":", color="grey")
        for sys_name, (conf, correct) in per_domain[name].items():
            if len(conf):
                b = reliability_bins(conf, correct, n_bins)
                keep = b["count"] >= min(min_count, len(conf))
                ax.plot(b["conf"][keep], b["acc"][keep], "o-", ms=2, label=sys_name)
        ax.set_title(f"{name} (n={max(len(c) for c, _ in per_domain[name].values())})", fontsize=9)
        ax.set_xlim(0, 1), ax.set_ylim(0, 1)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    if names:
        axes.flat[0].legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    return fig


def feature_weights(weights: Mapping[str, Mapping[str, float]], features: Sequence[str] | None = None, title: str = "learned feature weights (standardised)"):
    """Heat map: domains (rows) x features (columns) of learned weights."""
    domains = list(weights)
    features = list(features or dict.fromkeys(f for d in domains for f in weights[d]))
    M = np.array([[weights[d].get(f, np.nan) for f in features] for d in domains], dtype=float)
    lim = np.nanmax(np.abs(M)) if np.isfinite(M).any() else 1.0
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(features) + 2), max(2.5, 0.35 * len(domains) + 1.5)))
    im = ax.imshow(M, cmap="coolwarm", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(len(features)), features, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(domains)), domains, fontsize=8)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def interval_rows(rows: Sequence[tuple[str, float, Sequence[float]]], xlabel: str, title: str = "",
                  reference: float | None = None):
    """One horizontal bar per ``(label, value, [low, high])``, with its interval; ``reference``: a dashed line."""
    labels = [r[0] for r in rows]
    values = np.array([r[1] for r in rows])
    err = np.abs(np.array([r[2] for r in rows]).T - values)
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(rows) + 1.4))
    y = np.arange(len(rows))[::-1]
    ax.barh(y, values, xerr=err, color="#4c72b0", alpha=0.8, capsize=3)
    if reference is not None:
        ax.axvline(reference, color="k", ls="--", lw=1)
    ax.set_yticks(y, labels, fontsize=8)
    lo = float(np.min([r[2][0] for r in rows]))
    ax.set_xlim(max(0.0, lo - 0.1 * (float(np.max(values)) - lo + 1e-9)), None)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def save(fig, path) -> None:
    from rerank.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
