"""Accuracy-vs-time-step figure (matplotlib is optional: pip install 'srp-onnx[plot]')."""

from __future__ import annotations

import os

from srp_onnx.errors import UsageError
from srp_onnx.io import atomic_open


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'srp-onnx[plot]'.") from None
    return plt


def save_figure(fig, path: str | os.PathLike[str]) -> None:
    """Save through the one atomic writer (a temporary file renamed over the target)."""
    with atomic_open(path, "wb") as f:
        fig.savefig(f, dpi=120, bbox_inches="tight", format="png")


def accuracy_figure(report):
    """Both latency conventions side by side: accuracy vs t (after the pre-simulation) and vs tau + t."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    ts = list(range(1, report.T + 1))
    for ax, total in zip(axes, (False, True)):
        for r in report.rows:
            if r.tau is None:
                ax.axhline(r.top1[0], color="black", linestyle="--", label=f"{r.name} ({r.top1[0]:.2f}%)")
            else:
                ax.plot([t + r.tau for t in ts] if total else ts, r.top1, marker="o", markersize=3, label=r.name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("total steps tau + t (pre-simulation included)" if total else
                      "time step t (after pre-simulation)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("top-1 accuracy (%)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_accuracy(report, path: str | os.PathLike[str]) -> None:
    plt = _pyplot()
    fig = accuracy_figure(report)
    save_figure(fig, path)
    plt.close(fig)


def plot_analysis(an, path: str | os.PathLike[str]) -> None:
    """Per-layer unevenness-error case shares (stacked) and firing rates, tau = 0 vs SRP."""
    import numpy as np

    from srp_onnx.analysis import CASES

    plt = _pyplot()
    runs = an.runs
    fig, axes = plt.subplots(1, len(runs) + 1, figsize=(5 * (len(runs) + 1), 4))
    colors = ["#cccccc", "#d62728", "#1f77b4", "#ff7f0e", "#2ca02c"]
    for ax, run in zip(axes, runs):
        idx = np.arange(len(run.layers))
        bottom = np.zeros(len(run.layers))
        for c, col in zip(CASES, colors):
            vals = np.array([s.cases[c] for s in run.layers])
            ax.bar(idx, vals, bottom=bottom, color=col, label=c)
            bottom += vals
        ax.set_title("QCFS (tau=0)" if run.tau == 0 else f"SRP (tau={run.tau})")
        ax.set_xlabel("neuron layer")
        ax.set_ylabel("share of neurons")
        ax.set_xticks(idx)
    axes[0].legend(fontsize=7)
    ax = axes[-1]
    for run in runs:
        ax.plot([s.firing_rate for s in run.layers], marker="o",
                label="QCFS (tau=0)" if run.tau == 0 else f"SRP (tau={run.tau})")
    ax.set_title("firing rate (spikes / neuron / step)")
    ax.set_xlabel("neuron layer")
    ax.set_xticks(range(len(runs[0].layers)))  # whole layer indices
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
