"""Progress of long-running work, reported to whoever called (the library never prints).

A long-running function takes ``progress=`` (anything with the three methods of
:class:`Progress`), calls ``start`` once with the amount of work it will do, ``update``
as it does it, and ``close`` at the end (also on error or Ctrl-C). The unit is the work
really done: image-steps for a simulation (images x time steps, pre-simulation included),
images for a single ANN pass. The command line passes a tqdm bar on stderr; a library
caller passes nothing and gets :data:`NULL_PROGRESS`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Progress(Protocol):
    def start(self, total: int | None, unit: str, desc: str) -> None:
        """Begin a piece of work of ``total`` units (None: not known in advance)."""

    def update(self, n: int) -> None:
        """``n`` more units done."""

    def close(self) -> None:
        """The piece of work ended (finished, failed or interrupted)."""


class _NullProgress:
    """Reports nowhere."""

    def start(self, total: int | None, unit: str, desc: str) -> None:
        pass

    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


NULL_PROGRESS: Progress = _NullProgress()
