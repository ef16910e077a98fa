"""Accuracy-vs-time-step figure (matplotlib is optional: pip install 'srp-onnx[plot]')."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from srp_onnx.errors import UsageError


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'srp-onnx[plot]'.") from None
    return plt


def save_figure(fig, path: str | os.PathLike[str]) -> None:
    """Save atomically (temporary file in the target folder, then rename)."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".png", dir=target.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def plot_accuracy(report, path: str | os.PathLike[str]) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ts = list(range(1, report.T + 1))
    for r in report.rows:
        if r.tau is None:
            ax.axhline(r.top1[0], color="black", linestyle="--", label=f"{r.name} ({r.top1[0]:.2f}%)")
        else:
            ax.plot(ts, r.top1, marker="o", markersize=3, label=r.name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("time step t (after pre-simulation)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    save_figure(fig, path)
    plt.close(fig)
