"""Graph normalization passes, applied in one explicit order to a fixed point.

Each pass is a function ``(graph, ctx) -> bool`` (True when it changed the
graph) in its own module, with the cases it handles numbered in its
docstring. ``NORMALIZE_PASSES`` is the order; nothing registers itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from srp_onnx.graph import Graph
from srp_onnx.notes import Note, NoteKind


@dataclasses.dataclass
class PassContext:
    """Options and the notes a pass leaves for the user ("what it did")."""

    maxpool: str = "error"  # "error" | "avg"
    notes: list[Note] = dataclasses.field(default_factory=list)

    def note(self, kind: NoteKind, text: str) -> None:
        note = Note(kind, text)
        if note not in self.notes:
            self.notes.append(note)


Pass = Callable[[Graph, PassContext], bool]

from srp_onnx.passes import batchnorm, constants, heads, identity, maxpool  # noqa: E402 - they import PassContext

NORMALIZE_PASSES: tuple[Pass, ...] = (
    heads.strip_output_heads,
    identity.eliminate_identity,
    constants.fold_constants,
    maxpool.replace_maxpool,
    batchnorm.fold_batchnorm,
)


def normalize(graph: Graph, ctx: PassContext, max_rounds: int = 10) -> Graph:
    for _ in range(max_rounds):
        changed = False
        for p in NORMALIZE_PASSES:
            changed |= p(graph, ctx)
        graph.prune()
        if not changed:
            break
    return graph
