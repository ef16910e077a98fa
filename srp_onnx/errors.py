"""Typed errors. Each message says what failed, where, and how to fix it.

Only the CLI turns these into exit codes (2 for every subclass of
:class:`SrpOnnxError`); the library never exits.
"""

from __future__ import annotations


class SrpOnnxError(Exception):
    """Base class: a problem with the user's model, data or options."""


class ModelError(SrpOnnxError):
    """The ONNX file cannot be read, or the graph cannot be converted."""


class UnsupportedNodeError(ModelError):
    """A node has no spiking equivalent; the message names it (``nodes``: the graph nodes concerned)."""

    def __init__(self, message: str, nodes: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.nodes = tuple(nodes)


class DataError(SrpOnnxError):
    """A dataset is missing, malformed, or does not fit the model."""


class UsageError(SrpOnnxError):
    """Options that contradict each other or are out of range."""
