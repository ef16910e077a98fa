"""Max pooling has no rate-equivalent on spike trains.

1. ``--maxpool error`` (default): left in place; the site finder refuses it
   with an explanation.
2. ``--maxpool avg``: MaxPool -> AveragePool with the same kernel, strides,
   pads and ceil_mode (count_include_pad=1, as torch's AvgPool2d), and
   GlobalMaxPool -> GlobalAveragePool. This changes the network; the user is
   told, and eval reports the ANN accuracy after the swap.
"""

from __future__ import annotations

from srp_onnx.graph import Graph
from srp_onnx.passes import PassContext


def replace_maxpool(graph: Graph, ctx: PassContext) -> bool:
    if ctx.maxpool != "avg":
        return False
    changed = False
    for node in graph.walk(("MaxPool", "GlobalMaxPool")):
        if node.op == "GlobalMaxPool":
            node.op = "GlobalAveragePool"
        else:
            kept = ("kernel_shape", "strides", "pads", "ceil_mode", "auto_pad")
            keep = {k: v for k, v in node.attrs.items() if k in kept}
            keep["count_include_pad"] = 1
            node.op, node.attrs = "AveragePool", keep
            node.outputs = node.outputs[:1]
        ctx.note(f"replaced {node.name} by {node.op} (--maxpool avg): the network changed; compare its ANN accuracy")
        changed = True
    return changed
