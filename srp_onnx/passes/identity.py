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
    """One pass over the graph (linear: 100k Identity nodes take a blink, not minutes)."""
    users = graph.consumers()
    outputs = set(graph.output_names())
    alias: dict[str, str] = {}  # removed node's output -> its input
    removed: set[int] = set()
    for node in graph.walk(("Identity", "Dropout")):
        if node.op == "Dropout" and len(node.outputs) > 1 and node.outputs[1] and users.get(node.outputs[1]):
            continue
        if not node.inputs or not node.inputs[0]:
            continue
        src, dst = node.inputs[0], node.outputs[0]
        if dst in outputs:
            continue
        alias[dst] = src
        removed.add(id(node))
    if not removed:
        return False

    def resolve(name: str) -> str:
        seen = []
        while name in alias:
            seen.append(name)
            name = alias[name]
        for s in seen:  # path compression keeps chains linear overall
            alias[s] = name
        return name

    graph.nodes = [n for n in graph.nodes if id(n) not in removed]
    for n in graph.nodes:
        n.inputs = [resolve(i) if i in alias else i for i in n.inputs]
    for o in graph.outputs:
        o.name = resolve(o.name)
    return True
