"""Atomic file output: write to a temporary file in the target folder, then rename.

A crash or Ctrl-C at any point leaves either the old file or the new one,
never a half-written one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from srp_onnx.errors import UsageError


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of ``path``; on success rename it over ``path``."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"cannot write '{target}': folder '{folder}' does not exist. Create it first.")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, umask_mode())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_writable(path: str | os.PathLike[str], *, option: str, not_same_as: str | os.PathLike[str] | None = None
                   ) -> Path:
    """Refuse an output path before any work is done: its folder must exist, it must not be an
    existing folder, and it must not be ``not_same_as`` (the input it would overwrite)."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise UsageError(f"{option} '{target}' is a folder; give a file name.")
    if not folder.is_dir():
        raise UsageError(f"{option} '{target}': folder '{folder}' does not exist. Create it first.")
    if not_same_as is not None and target.resolve() == Path(not_same_as).resolve():
        raise UsageError(f"{option} '{target}' is the input model itself; writing it would destroy the input. "
                         "Give another file name.")
    return target


def umask_mode() -> int:
    """The mode an ordinary new file gets (mkstemp makes 0600 files; outputs should be like any other)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)
