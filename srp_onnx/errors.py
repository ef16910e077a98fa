"""Typed errors. Each message says what failed, where, and how to fix it.

Only the CLI turns these into exit codes (2 for every subclass of
:class:`SrpOnnxError`); the library never exits.
"""

from __future__ import annotations

import os


class _Unset:
    """'No value given': one instance, also after pickling (errors cross processes in distributed runs)."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __reduce__(self) -> tuple:
        return (_Unset, ())

    def __repr__(self) -> str:
        return "<unset>"


_UNSET = _Unset()


class SrpOnnxError(Exception):
    """Base class: a problem with the user's model, data or options.

    ``param`` names the library parameter at fault (``"tau"``, ``"calib"``, ...), ``value``
    the value it had, where one did, and ``suggest`` values of it that would do: a front end
    names them its own way (the CLI as the option and the value the user typed);
    ``str(e)`` says ``param = value: message``. The message itself names no command-line option.
    """

    def __init__(self, message: str, *, param: str | None = None, value: object = _UNSET,
                 suggest: tuple[object, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.value = value
        self.suggest = tuple(suggest)

    @property
    def has_value(self) -> bool:
        return self.value is not _UNSET

    def __str__(self) -> str:
        if self.param is None:
            return self.message
        head = f"{self.param} = {self.value}" if self.has_value else self.param
        return f"{head}: {self.message}"


class ModelError(SrpOnnxError):
    """The ONNX file cannot be read, or the graph cannot be converted."""


class UnsupportedNodeError(ModelError):
    """A node has no spiking equivalent; the message names it (``nodes``: the graph nodes concerned)."""

    def __init__(self, message: str, nodes: tuple[str, ...] = (), *, param: str | None = None,
                 value: object = _UNSET, suggest: tuple[object, ...] = ()) -> None:
        super().__init__(message, param=param, value=value, suggest=suggest)
        self.nodes = tuple(nodes)


class DataError(SrpOnnxError):
    """A dataset is missing, malformed, or does not fit the model."""


class UsageError(SrpOnnxError):
    """Options that contradict each other or are out of range."""


class OutputError(SrpOnnxError):
    """An output cannot be written (read-only or full filesystem, permissions, a name too long)."""


def safe(text: object) -> str:
    """``text`` with every unprintable character escaped (newlines, terminal escape codes, bidi controls,
    undecodable bytes of file names), so a stranger's string cannot forge a line or drive the terminal."""
    s = os.fsdecode(text) if isinstance(text, (bytes, os.PathLike)) else str(text)
    if s.isprintable():
        return s
    out = []
    for ch in s:
        if ch.isprintable():
            out.append(ch)
        elif 0xDC80 <= ord(ch) <= 0xDCFF:  # a byte of a non-UTF-8 file name (surrogateescape)
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def quote(text: object) -> str:
    """``text`` in single quotes, made :func:`safe`: how messages name files, nodes and metadata values."""
    return f"'{safe(text)}'"
