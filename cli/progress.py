"""The command line's progress bars: tqdm on stderr, off when stderr is not a terminal or with --quiet."""

from __future__ import annotations

import sys

import click
from tqdm import tqdm

from srp_onnx.progress import NULL_PROGRESS, Progress


class TqdmProgress:
    """:class:`srp_onnx.progress.Progress` drawn by tqdm (rate and time left) on stderr."""

    def __init__(self) -> None:
        self._bar: tqdm | None = None

    def start(self, total: int | None, unit: str, desc: str) -> None:
        self.close()
        self._bar = tqdm(total=total, unit=" " + unit, desc=desc, file=sys.stderr, leave=False,
                         unit_scale=total is None or total >= 100_000,  # 1.2M/3.4M, but 300/2400 as they are
                         dynamic_ncols=True, smoothing=0.1)

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def progress_enabled() -> bool:
    """Bars only for a person watching: stderr is a terminal and --quiet was not given."""
    ctx = click.get_current_context(silent=True)
    quiet = bool(ctx is not None and (ctx.find_root().obj or {}).get("quiet"))
    return not quiet and sys.stderr.isatty()


def cli_progress() -> Progress:
    """A bar for one long step of the running command; closed with the command, however it ends (so an
    error line is never printed under a bar still drawn)."""
    if not progress_enabled():
        return NULL_PROGRESS
    bar = TqdmProgress()
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(bar.close)
    return bar
