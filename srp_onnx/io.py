"""The one writer of every output file, and the checks run on outputs before any work.

Regular files (and new ones) are written to a temporary file in the target's folder,
flushed and fsynced, then renamed over the target (and the folder fsynced): a crash,
Ctrl-C, SIGTERM or SIGHUP at any point leaves either the old file or the new one, never
a half-written one, and no temporary file. The temporary name is short (``.srp-XXXXXXXX.tmp``)
so that a legal 255-byte target name never makes it too long.

Targets that are not regular files (``/dev/null``, a FIFO, ``/dev/stdout``, a pipe such as
``>(jq .)``) are written directly: replacing them would turn a device node into a file.
A symlink to a regular file is followed: the file it points to gets the new content.

OS errors (read-only or full filesystem, permissions, a name too long) become
:class:`~srp_onnx.errors.OutputError` naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO

from srp_onnx.errors import OutputError, UsageError, quote

TEMP_PREFIX = ".srp-"
TEMP_SUFFIX = ".tmp"


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived while an output was being written (raised like KeyboardInterrupt,
    so every ``finally`` runs and the temporary file is removed). ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _terminate_as_exception() -> Iterator[None]:
    """While writing, SIGTERM/SIGHUP raise :class:`Terminated` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum, _frame):
        raise Terminated(signum)

    old = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):
            old[sig] = signal.signal(sig, raise_terminated)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _special(path: Path) -> bool:
    """Whether ``path`` exists and (after following links) is not a regular file: a device, FIFO, socket."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode)


def _os_error(target: Path, e: OSError) -> OutputError:
    reason = os.strerror(e.errno) if e.errno else str(e)
    hint = {errno.ENOSPC: "free some space or write elsewhere", errno.EDQUOT: "free some space or write elsewhere",
            errno.EROFS: "write to another folder", errno.EACCES: "write to a folder you may write to",
            errno.EPERM: "write to a folder you may write to",
            errno.ENAMETOOLONG: "give a shorter file name"}.get(e.errno or 0, "check the path")
    return OutputError(f"cannot write {quote(target)}: {reason}. Nothing was written; {hint}.")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open ``path`` for writing: a temporary sibling renamed over it on success (see the module docstring)."""
    target = Path(path)
    if _special(target):
        try:
            with _terminate_as_exception(), open(target, mode) as f:
                yield f
        except OSError as e:
            raise _os_error(target, e) from None
        return
    target, folder = _real_target(target, "cannot write")
    tmp = None
    with _terminate_as_exception():
        try:
            fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=folder)
            os.fchmod(fd, umask_mode())
            with os.fdopen(fd, mode) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
            tmp = None
            _fsync_folder(folder)
        except OSError as e:
            raise _os_error(target, e) from None
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (best effort: some filesystems cannot open folders)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def umask_mode() -> int:
    """The mode an ordinary new file gets (mkstemp makes 0600 files; outputs should be like any other)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


# -- checks before any work -----------------------------------------------------------------------------


def _real_target(target: Path, what: str) -> tuple[Path, Path]:
    """The file a (symlinked) output really is, and its folder, which must exist."""
    with contextlib.suppress(OSError):
        if target.is_symlink():
            target = Path(os.path.realpath(target))
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"{what} {quote(target)}: folder {quote(folder)} does not exist. Create it first.")
    return target, folder


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path`` (links followed); None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_writable(path: str | os.PathLike[str], *, option: str) -> Path:
    """Refuse an output before any work: it must not be a folder, its folder must exist and be
    writable, and its filesystem must not be full. Special files need only be writable."""
    target = Path(path)
    try:
        return _check_writable(target, option)
    except OSError as e:  # a name too long for the filesystem, a link loop, ...
        reason = os.strerror(e.errno) if e.errno else str(e)
        raise OutputError(f"{option} {quote(target)}: {reason}. Give another output file name.") from None


def _check_writable(target: Path, option: str) -> Path:
    if target.is_dir():
        raise UsageError(f"{option} {quote(target)} is a folder; give a file name.")
    if _special(target):
        if not os.access(target, os.W_OK):
            raise OutputError(f"{option} {quote(target)}: not writable. Give another output.")
        return target
    target, folder = _real_target(target, option)
    if len(os.fsencode(target.name)) > _name_max(folder):
        raise OutputError(f"{option} {quote(target)}: the file name is longer than this filesystem allows "
                          f"({_name_max(folder)} bytes). Give a shorter name.")
    if not os.access(folder, os.W_OK | os.X_OK):
        why = "is on a read-only filesystem" if _read_only(folder) else "is not writable"
        raise OutputError(f"{option} {quote(target)}: folder {quote(folder)} {why}. Write to another folder.")
    if target.exists() and not os.access(target, os.W_OK) and _read_only(folder):
        raise OutputError(f"{option} {quote(target)}: on a read-only filesystem. Write to another folder.")
    with contextlib.suppress(OSError):
        vfs = os.statvfs(folder)
        if vfs.f_bavail == 0 and os.geteuid() != 0:
            raise OutputError(f"{option} {quote(target)}: the filesystem of {quote(folder)} is full. "
                              "Free some space or write elsewhere.")
    return target


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def check_outputs(outputs: Mapping[str, str | os.PathLike[str] | None],
                  inputs: Mapping[str, str | os.PathLike[str] | None | Iterable[str | os.PathLike[str]]]) -> None:
    """Before any work: every output is writable (:func:`check_writable`), is not the same file as any
    input (same device and inode, so hard links and symlinks count), and no two outputs are one file.

    ``outputs`` maps an option (``"--json"``) to a path or None; ``inputs`` maps how the input is named
    (``"the model"``, ``"--data"``) to a path, None, or several paths (e.g. the model's weight files).
    """
    given = {opt: Path(p) for opt, p in outputs.items() if p is not None}
    for opt, p in given.items():
        check_writable(p, option=opt)
    ins: list[tuple[str, Path]] = []
    for what, value in inputs.items():
        if value is None:
            continue
        for p in [value] if isinstance(value, (str, os.PathLike)) else value:
            ins.append((what, Path(p)))
    in_ids = [(what, p, file_identity(p)) for what, p in ins]
    seen: dict[object, str] = {}
    for opt, p in given.items():
        ident = file_identity(p)
        special = _special(p)
        if ident is not None and not special:
            for what, q, qid in in_ids:
                if qid == ident:
                    same = "" if str(q) == str(p) else f" ({quote(q)})"
                    raise UsageError(f"{opt} {quote(p)} is the same file as {what}{same}; writing it would "
                                     "destroy the input. Give another output file name.")
        if special:
            continue  # /dev/null twice is fine
        key: object = ident if ident is not None else _would_be(p)
        if key in seen:
            raise UsageError(f"{opt} {quote(p)} and {seen[key]} are the same file; give each output its own name.")
        seen[key] = opt


def _would_be(p: Path) -> tuple[str, str]:
    """Where a file that does not exist yet would be (its folder resolved), to compare two new outputs."""
    folder = p.parent if str(p.parent) else Path(".")
    return str(folder.resolve()), p.name
