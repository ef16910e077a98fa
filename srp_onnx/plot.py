"""Figures for a paper: accuracy over time steps, and the per-layer analysis (matplotlib, optional:
pip install 'srp-onnx[plot]').

The format is the file's suffix (``FORMATS``); the file is written atomically through
:mod:`srp_onnx.io`, so an interrupted run leaves no half-written figure.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from srp_onnx.errors import UsageError
from srp_onnx.io import atomic_open

FORMATS = ("png", "pdf", "svg")
CASE_LABELS = {"a=0,r>0": "a = 0, r > 0 (spurious spikes)", "a>0,r=0": "a > 0, r = 0 (no spike)",
               "a>r>0": "a > r > 0 (too few)", "r>a>0": "r > a > 0 (too many)"}
CASE_COLORS = {"a=0,r>0": "#d62728", "a>0,r=0": "#9467bd", "a>r>0": "#1f77b4", "r>a>0": "#ff7f0e"}
ROW_COLORS = {0: "#4c72b0"}  # tau = 0 (plain conversion); SRP rows take the next colors
SRP_COLORS = ("#c44e52", "#55a868", "#8172b2")


def figure_format(path: str | os.PathLike[str]) -> str:
    """The format a figure file's suffix names; anything but png, pdf or svg is refused."""
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise UsageError(f"--plot '{path}': the figure's format comes from its suffix; give a name ending in "
                         f"{', '.join('.' + f for f in FORMATS)}.")
    return fmt


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'srp-onnx[plot]'.") from None
    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
                         "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.spines.top": False,
                         "axes.spines.right": False, "svg.hashsalt": "srp-onnx", "pdf.fonttype": 42})
    return plt


def save_figure(fig, path: str | os.PathLike[str]) -> None:
    """Write ``fig`` in the format of ``path``'s suffix, atomically."""
    fmt = figure_format(path)
    meta = {"png": {"Software": "srp-onnx"}, "pdf": {"Creator": "srp-onnx", "CreationDate": None},
            "svg": {"Date": None}}[fmt]
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format=fmt, dpi=200, bbox_inches="tight", metadata=meta)


def _row_color(tau: int, k: int) -> str:
    return ROW_COLORS.get(tau, SRP_COLORS[k % len(SRP_COLORS)])


def accuracy_ylim(report) -> tuple[float, float]:
    """A y range that shows where the rows differ: from the lowest accuracy once the first quarter of
    the steps has passed (the first steps of any conversion are near chance and would flatten the rest)
    to the highest value, the ANN's included, with a margin. Earlier, lower points leave the axes."""
    snn = [r for r in report.rows if r.tau is not None]
    ann = [r.top1[0] for r in report.rows if r.tau is None]
    first = report.T // 4 + 1  # the first t after the first quarter of the steps (1-based)
    late = [v for r in snn for v in r.top1[first - 1:]]
    every = [v for r in snn for v in r.top1] + ann
    lo, hi = min(late + ann), max(every)
    margin = max(0.5, 0.15 * (hi - lo))
    return max(0.0, lo - margin), min(100.0, hi + margin) + (0.3 if hi + margin >= 100 else 0.0)


def _title(settings: dict, n: int) -> str:
    model = Path(str(settings.get("model", "model"))).name
    data = settings.get("data")
    return f"{model} on {data} ({n} images)" if data else f"{model} ({n} images)"


def accuracy_figure(report):
    """Top-1 accuracy against t (the paper's latency: steps after the pre-simulation) and against the total
    steps tau + t, one line per row, the ANN as a horizontal reference; model and data in the title."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4), sharey=True)
    ylo, yhi = accuracy_ylim(report)
    snn = [r for r in report.rows if r.tau is not None]
    xmax = {0: report.T, 1: max(r.tau + report.T for r in snn)}
    for panel, ax in enumerate(axes):
        k = 0
        for r in report.rows:
            if r.tau is None:
                ax.axhline(r.top1[0], color="black", linestyle="--", linewidth=1,
                           label=f"{r.name} ({r.top1[0]:.2f} %)")
                continue
            x = np.arange(1, report.T + 1) + (r.tau if panel == 1 else 0)
            color = _row_color(r.tau, k)
            k += r.tau != 0
            ax.plot(x, r.top1, color=color, marker="o", markersize=3 if report.T <= 64 else 0, linewidth=1.5,
                    label=r.name)
            if panel == 1 and r.tau:  # the pre-simulation steps: paid for, no output counted yet
                ax.axvspan(0.5, r.tau + 0.5, color=color, alpha=0.07, linewidth=0)
        ax.set_xlim(0.5, xmax[panel] + 0.5)
        ax.set_ylim(ylo, yhi)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True, min_n_ticks=3))
        ax.grid(True, alpha=0.25, linewidth=0.6)
        ax.set_xlabel("t: steps after pre-simulation" if panel == 0 else
                      "total steps tau + t (pre-simulation shaded)")
    axes[0].set_ylabel("top-1 accuracy (%)")
    axes[0].set_title("(a) accuracy vs t (the paper's T)", loc="left")
    axes[1].set_title("(b) accuracy vs total latency tau + t", loc="left")
    axes[0].legend(loc="best", frameon=False)
    title = _title(report.settings, report.n)
    if min(v for r in snn for v in r.top1) < ylo:
        title += f"\ny axis from {ylo:.1f} %, where the rows differ; the first steps lie below it"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_accuracy(report, path: str | os.PathLike[str]) -> None:
    """:func:`accuracy_figure`, written in the format of ``path``'s suffix."""
    figure_format(path)
    plt = _pyplot()
    fig = accuracy_figure(report)
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)


def layer_labels(names: list[str]) -> list[str]:
    """Readable layer labels for the axis, from the source graph's tensor names: an exporter's scoped name
    ``/features/features.2/Mul_1_output_0`` is shown as its module, ``features.2``. Names that are not
    scoped, or whose modules would collide, are shown in full."""
    short = []
    for n in names:
        parts = [p for p in n.split("/") if p]
        short.append(parts[-2] if n.startswith("/") and len(parts) >= 2 else n)
    return short if len(set(short)) == len(short) else list(names)


def plot_analysis(an, path: str | os.PathLike[str], title: str | None = None) -> None:
    """Per layer, tau = 0 and SRP side by side: (a) the four unevenness-error cases as shares of the
    neurons whose SNN output is NOT equal to the ANN's (the label above each bar: that non-equal share of
    all neurons), (b) the firing rate, (c) the share of neurons the SRP mask silences."""
    figure_format(path)
    plt = _pyplot()
    from srp_onnx.analysis import CASES

    runs = an.runs
    names = [s.name for s in runs[0].layers]
    labels = layer_labels(names)
    idx = np.arange(len(names))
    width = 0.8 / len(runs)
    fig, axes = plt.subplots(3, 1, figsize=(max(5.5, 1.0 * len(names) + 3.5), 7.2), sharex=True,
                             gridspec_kw={"height_ratios": [3, 1.3, 1.3]})
    ax = axes[0]
    run_names = ["tau = 0" if run.tau == 0 else f"SRP, tau = {run.tau}" for run in runs]
    for j, run in enumerate(runs):
        x = idx + (j - (len(runs) - 1) / 2) * width
        unequal = np.array([1.0 - s.cases["equal"] for s in run.layers])
        bottom = np.zeros(len(names))
        for c in CASES[1:]:
            share = np.array([s.cases[c] for s in run.layers]) / np.where(unequal > 0, unequal, 1.0)
            ax.bar(x, 100 * share, width * 0.92, bottom=100 * bottom, color=CASE_COLORS[c],
                   edgecolor="white", linewidth=0.5, hatch=None if run.tau == 0 else "///",
                   label=CASE_LABELS[c] if j == 0 else None)
            bottom += share
        for xi, u in zip(x, unequal):
            ax.text(xi, 101, f"{100 * u:.1f}%", ha="center", va="bottom", fontsize=7)
        for xi in x:
            ax.text(xi, -2, run_names[j].replace("SRP, ", ""), ha="center", va="top", fontsize=6.5, color="0.3")
    ax.set_ylim(-9, 112)
    ax.set_yticks([0, 25, 50, 75, 100])
    ax.set_ylabel("share of non-equal\nneurons (%)")
    ax.set_title("(a) unevenness-error cases among the neurons whose r differs from a\n"
                 "(a: ANN activation, r: SNN mean output; above each bar: those neurons, % of the layer)",
                 loc="left", fontsize=9)
    handles, hl = ax.get_legend_handles_labels()
    from matplotlib.patches import Patch

    handles += [Patch(facecolor="white", edgecolor="0.3", label="tau = 0 (plain)"),
                Patch(facecolor="white", edgecolor="0.3", hatch="///", label=run_names[-1])]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax = axes[1]
    for j, run in enumerate(runs):
        x = idx + (j - (len(runs) - 1) / 2) * width
        ax.bar(x, [s.firing_rate for s in run.layers], width * 0.92, color=_row_color(run.tau, j - 1),
               label=run_names[j])
    ax.set_ylabel("firing rate\n(spikes/neuron/step)")
    ax.set_title(f"(b) firing rate over the T = {an.T} counted steps", loc="left", fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax = axes[2]
    srp = [run for run in runs if run.tau > 0]
    if srp:
        vals = [100 * s.silenced for s in srp[-1].layers]
        ax.bar(idx, vals, 0.8 * 0.5, color=_row_color(srp[-1].tau, 0))
        for xi, v in zip(idx, vals):
            ax.text(xi, v, f"{v:.1f}%", ha="center", va="bottom", fontsize=7)
        ax.set_ylim(0, max(vals + [1.0]) * 1.25)
    ax.set_ylabel("silenced (%)")
    ax.set_title("(c) neurons the SRP mask silences (v <= 1e-3 after the pre-simulation)", loc="left",
                 fontsize=9)
    ax.set_xticks(idx)
    ax.set_xticklabels(labels, rotation=30 if max(len(s) for s in labels) > 8 else 0, ha="right"
                       if max(len(s) for s in labels) > 8 else "center")
    ax.set_xlabel("neuron layer (source graph)")
    for a in axes:
        a.grid(True, axis="y", alpha=0.25, linewidth=0.6)
    fig.suptitle(f"{title + ': ' if title else ''}per-layer analysis on {an.images} images, T = {an.T}",
                 fontsize=10)
    fig.tight_layout()
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)
