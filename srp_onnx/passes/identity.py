"""Remove nodes that are the identity at inference.

1. ``Identity``.
2. ``Dropout`` (inference mode; its optional mask output must be unused).
The consumers of the removed node's output read its input instead; when the
output is a graph output the node is kept, so graph output names survive.
"""

from __future__ import annotations

from srp_onnx.graph import Graph
from srp_onnx.passes import PassContext


def eliminate_identity(graph: Graph, ctx: PassContext) -> bool:
    users = graph.consumers()
    outputs = set(graph.output_names())
    changed = False
    for node in list(graph.walk(("Identity", "Dropout"))):
        if node.op == "Dropout" and len(node.outputs) > 1 and node.outputs[1] and users.get(node.outputs[1]):
            continue
        src, dst = node.inputs[0], node.outputs[0]
        if dst in outputs:
            continue
        graph.nodes.remove(node)
        graph.rename_uses(dst, src)
        changed = True
    return changed
