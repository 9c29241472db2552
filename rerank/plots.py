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
#: the width of a character per point of font size, in inches (DejaVu Sans, on average): for margins that fit labels
_TEXT_INCHES = 0.6 / 72
#: the longest figure side in inches: 4,000 px at the 110 dpi of :func:`save`, whatever the number of domains
MAX_INCHES = 4000 / 110


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
                     min_count: int = MIN_BIN_COUNT, title: str = ""):
    """Small multiples: one reliability diagram per domain, of equal-count bins (:func:`equal_count_bins`).

    A domain has tens of test utterances where a corpus has hundreds of domains: the fixed bins of the
    ECE would leave most of its panel empty, or draw bins of two points.
    """
    names = list(per_domain)
    rows = max(1, int(np.ceil(len(names) / cols)))
    # shared axes: tick labels on the outer panels only, which is also a third of the drawing time
    fig, axes = plt.subplots(rows, cols, figsize=(_inches(cols, 3.0, 0, 0), _inches(rows, 2.8, 0.4, 0)), squeeze=False,
                             sharex=True, sharey=True)
    for ax, name in zip(axes.flat, names):
        ax.plot([0, 1], [0, 1], ":", color="grey")
        for sys_name, (conf, correct) in per_domain[name].items():
            if len(conf):
                ax.plot(*equal_count_bins(conf, correct, n_bins, min_count), "o-", ms=2, label=sys_name)
        ax.set_title(f"{name} (n={max(len(c) for c, _ in per_domain[name].values())})", fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0, 0].set_xlim(0, 1), axes[0, 0].set_ylim(0, 1)
    # no ticks on the panels' edges, where a label would run into the next panel's
    axes[0, 0].set_xticks([0.25, 0.5, 0.75]), axes[0, 0].set_yticks([0.25, 0.5, 0.75])
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    if names:
        axes.flat[0].legend(fontsize=6, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.supxlabel("confidence", fontsize=9), fig.supylabel("accuracy (1 - IE)", fontsize=9)
    _margins(fig, left=0.75, right=0.15, bottom=0.6, top=0.6 if title else 0.35, wspace=0.08, hspace=0.15)
    return fig


def equal_count_bins(conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS, min_count: int = MIN_BIN_COUNT):
    """Mean confidence and accuracy of bins of equal count, in order of confidence: as many bins as give each
    ``min_count`` points, at most ``n_bins``, at least one."""
    order = np.argsort(conf, kind="stable")
    parts = np.array_split(order, max(1, min(n_bins, len(conf) // min_count)))
    return np.array([conf[p].mean() for p in parts]), np.array([correct[p].mean() for p in parts])


def feature_weights(weights: Mapping[str, Mapping[str, float]], features: Sequence[str] | None = None,
                    title: str = "learned feature weights (standardised)"):
    """Heat map: domains (rows) x features (columns) of learned weights."""
    domains = list(weights)
    features = list(features or dict.fromkeys(f for d in domains for f in weights[d]))
    fig, ax = plt.subplots(figsize=(_inches(len(features), 0.35, 2, 6), _inches(len(domains), 0.35, 1.5, 2.5)))
    fig.colorbar(_weights_heat_map(ax, weights, domains, features), ax=ax, shrink=0.8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def weights_overview(weights: Mapping[str, Mapping[str, float]], rows: Sequence[str], features: Sequence[str],
                     title: str = "learned feature weights (standardised)"):
    """The weights of ``features`` as a heat map of the ``rows`` domains, and below, their spread over every domain
    of ``weights`` (box: quartiles, whiskers: 5th-95th percentile): the size does not grow with the domains."""
    fig, (ax, box) = plt.subplots(2, 1, figsize=(_inches(len(features), 0.35, 3, 7), _inches(len(rows), 0.3, 4.5, 6)),
                                  gridspec_kw={"height_ratios": [max(len(rows), 4), 6]})
    # margins from the labels' lengths (a layout engine measures them by drawing the figure once more)
    left = 0.35 + _TEXT_INCHES * 8 * max(map(len, rows), default=0)
    bottom = 0.3 + _TEXT_INCHES * 7 * max(map(len, features), default=0) * np.sin(np.radians(60))
    _margins(fig, left=left, right=1.1, bottom=bottom, top=0.35, hspace=0.04)
    # the colour bar on its own axes, so that the heat map's columns stay above the box plots'
    width, height = fig.get_size_inches()
    cax = fig.add_axes((1 - 0.8 / width, 0.5, 0.15 / width, 0.5 - 0.35 / height))
    fig.colorbar(_weights_heat_map(ax, weights, rows, features), cax=cax)
    ax.set_xticks(range(len(features)), [])
    ax.set_title(title, fontsize=10)
    spread = [[w[f] for w in weights.values() if f in w] for f in features]
    box.boxplot(spread, positions=range(len(features)), whis=(5, 95), showfliers=False, widths=0.6)
    box.axhline(0, color="grey", lw=0.5)
    box.set_xlim(-0.5, len(features) - 0.5)
    box.set_xticks(range(len(features)), features, rotation=60, ha="right", fontsize=7)
    box.set_ylabel(f"every domain ({len(weights)})", fontsize=8)
    box.tick_params(axis="y", labelsize=7)
    return fig


def _weights_heat_map(ax, weights, domains, features):
    """The heat map of ``domains`` x ``features`` on ``ax``, coloured symmetrically around 0; its image."""
    M = np.array([[weights[d].get(f, np.nan) for f in features] for d in domains], dtype=float)
    lim = np.nanmax(np.abs(M)) if np.isfinite(M).any() else 1.0
    im = ax.imshow(M, cmap="coolwarm", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(len(features)), features, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(domains)), domains, fontsize=8)
    return im


def domain_summary(semer_change: tuple[Sequence[str], np.ndarray, np.ndarray],
                   ece: tuple[Sequence[str], np.ndarray, np.ndarray, np.ndarray], system: str, reference: str, label: int = 5):
    """Every domain in two sorted dot-and-interval plots, readable at a thousand domains.

    Above, ``semer_change``: (domains, ``system``'s SemER minus ``reference``'s, ``[n, 2]`` intervals), coloured
    by whether the interval lies below 0 (better), above (worse) or across it. Below, ``ece``: (domains,
    ``system``'s top-hypothesis ECE, its intervals, ``reference``'s ECE). Domains have no tick labels (there
    can be a thousand); the ``label`` highest of each plot are named.
    """
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(13.5, 8))
    # the right margin holds the names of the highest, in monospace of 7 points, and their values
    longest = max(map(len, [*semer_change[0], *ece[0]]), default=0)
    _margins(fig, left=0.8, right=0.3 + _TEXT_INCHES * 7 * (longest + 9), bottom=0.4, top=0.35, hspace=0.22)
    domains, values, ci = semer_change
    _sorted_intervals(top, domains, values, ci, label)
    top.axhline(0, color="k", lw=0.8)
    top.set_ylabel(f"SemER, {system} - {reference}")
    top.set_title(f"SemER change against {reference}, every gold domain ({len(domains)}), 95% paired bootstrap intervals",
                  fontsize=10)
    domains, values, ci, ref = ece
    order = _sorted_intervals(bottom, domains, values, ci, label, name=system)
    bottom.plot(np.arange(len(order)), np.asarray(ref, dtype=float)[order], "x", color="grey", ms=3, label=reference)
    bottom.set_ylabel("top-hypothesis ECE")
    bottom.set_title(f"ECE of {system} (95% bias-corrected bootstrap intervals) and of {reference}, every gold domain",
                     fontsize=10)
    bottom.legend(fontsize=8, loc="upper left")
    return fig


def _sorted_intervals(ax, domains, values, ci, label: int, name: str | None = None) -> np.ndarray:
    """Values in ascending order with their intervals, the ``label`` largest named; coloured by the sign of the
    interval, or in one colour with the legend ``name``. Returns the order."""
    values, ci = np.asarray(values, dtype=float), np.asarray(ci, dtype=float).reshape(-1, 2)
    order = np.argsort(values, kind="stable")
    x, v, lo, hi = np.arange(len(order)), values[order], ci[order, 0], ci[order, 1]
    # thin intervals and small dots: at a thousand domains they form a band whose shape is the message
    lw, ms = (1.2, 4) if len(order) <= 100 else (0.5, 1.5)
    groups = [(hi < 0, "#2a9d55", "better (interval below 0)"), (lo > 0, "#c0392b", "worse (interval above 0)"),
              ((hi >= 0) & (lo <= 0), "#7f7f7f", "no clear change")] if name is None else [(np.ones(len(v), bool), "#4c72b0", name)]
    for keep, colour, legend in groups:
        if keep.any():
            ax.vlines(x[keep], lo[keep], hi[keep], color=colour, lw=lw, alpha=0.7)
            ax.plot(x[keep], v[keep], "o", color=colour, ms=ms, label=f"{legend}: {int(keep.sum())}")
    # the highest named beside the plot: at the end of a sorted band, labels by their dots would pile up
    last = x[~np.isnan(v)][-label:][::-1]
    ax.plot(last, v[last], "o", mfc="none", mec="k", ms=ms + 3)
    fmt = "+.3f" if name is None else ".3f"  # a change has a sign
    ax.text(1.01, 1.0, "highest (circled):\n" + "\n".join(f"{domains[order[i]]}  {v[i]:{fmt}}" for i in last),
            transform=ax.transAxes, ha="left", va="top", fontsize=7, family="monospace")
    ax.set_xlim(-1, len(order))
    ax.set_xticks([])
    ax.set_xlabel("gold domains, sorted")
    ax.legend(fontsize=8, loc="upper left")
    return order


def _margins(fig, left: float, right: float, bottom: float, top: float, **space) -> None:
    """Margins in inches, whatever the figure's size: a fixed layout, without tight_layout's extra drawing."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height, **space)


def _inches(n: int, per: float, fixed: float, least: float, most: float = MAX_INCHES) -> float:
    """A figure side of ``n`` items of ``per`` inches and ``fixed`` more, within [least, most]."""
    return float(min(max(least, per * n + fixed), most))


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
