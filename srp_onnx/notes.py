"""Typed notes and warnings: what the library did or suspects, for the CLI to show.

The library never prints. It returns :class:`Note` values; their ``kind`` says what
happened (code branches on it), their ``text`` says it to people (nothing parses it).
Conversion notes are saved with the spiking model (fileformat.py), so ``inspect`` and
``eval`` of the file see what conversion did.
"""

from __future__ import annotations

import dataclasses
import enum


class NoteKind(enum.Enum):
    # conversion: what a pass did to the graph
    BATCH_MADE_DYNAMIC = "batch_made_dynamic"
    HEAD_DROPPED = "head_dropped"
    OUTPUT_DROPPED = "output_dropped"
    MAXPOOL_TO_AVGPOOL = "maxpool_to_avgpool"  # the network changed: its ANN accuracy differs
    MAXPOOL_GATED = "maxpool_gated"
    ACTIVATION_MOVED = "activation_moved"
    ENDS_WITH_ACTIVATION = "ends_with_activation"
    # run time: results a user should read with care
    OUTPUT_CONSTANT = "output_constant"  # no spike reaches the output: accuracy of a constant guess
    ANN_NOT_SOURCE = "ann_not_source"  # the --ann file is not the one the model was converted from
    PREPROCESSING_GUESSED = "preprocessing_guessed"  # taken from the input shape, not the model's metadata


# Kinds that put results in doubt (the rest say what was done or assumed).
WARNINGS = frozenset({NoteKind.OUTPUT_CONSTANT, NoteKind.ANN_NOT_SOURCE})


@dataclasses.dataclass(frozen=True)
class Note:
    kind: NoteKind
    text: str

    @property
    def warning(self) -> bool:
        return self.kind in WARNINGS

    def __str__(self) -> str:
        return self.text

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind.value, "text": self.text}

    @classmethod
    def from_json(cls, d: object) -> Note:
        if not isinstance(d, dict) or not isinstance(d.get("text"), str):
            raise ValueError("a note is an object with 'kind' and 'text'")
        return cls(NoteKind(d.get("kind")), d["text"])
