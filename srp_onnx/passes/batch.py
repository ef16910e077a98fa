"""Keep the batch dimension dynamic.

1. A graph input whose first dimension is a fixed number gets the symbolic
   dimension ``batch``.
2. When it was fixed (say to 1), constant Reshape targets whose first entry
   equals that number get 0 ("copy the input's dim") instead, so that a
   flatten written as Reshape(x, [1, -1]) works for any batch. A Reshape with
   ``allowzero=1`` (torch's dynamo exporter writes it) reads 0 as a literal
   zero; where its target has no other 0 the attribute is cleared first, which
   changes nothing else.
"""

from __future__ import annotations

import numpy as np

from srp_onnx.graph import Graph
from srp_onnx.notes import NoteKind
from srp_onnx.passes import PassContext


def make_batch_dynamic(graph: Graph, ctx: PassContext) -> bool:
    changed = False
    for vi in graph.inputs:
        if not vi.shape:
            continue
        b0 = vi.shape[0]
        if isinstance(b0, int):
            vi.shape = ("batch", *vi.shape[1:])
            changed = True
            for node in graph.walk(("Reshape",)):
                name = node.inputs[1]
                if not graph.is_const(name):
                    continue
                target = graph.consts[name]
                if target.ndim != 1 or target.size < 1 or int(target[0]) != b0:
                    continue
                if node.attr("allowzero", 0):
                    if (target == 0).any():
                        continue  # a real zero-sized dimension: leave the node as it is
                    node.attrs.pop("allowzero")
                fixed = target.copy()
                fixed[0] = 0
                node.inputs[1] = graph.add_const(f"{name}__dynbatch", fixed.astype(np.int64))
            ctx.note(NoteKind.BATCH_MADE_DYNAMIC, f"input '{vi.name}' had a fixed batch size {b0}; made it dynamic")
    for vo in graph.outputs:
        if vo.shape and isinstance(vo.shape[0], int):
            vo.shape = ("batch", *vo.shape[1:])
    return changed
