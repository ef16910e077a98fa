"""Constant folding: a node whose inputs are all constants becomes a constant.

1. Pure-constant subgraphs (e.g. a Div of two initializers, a Reshape of a
   weight, shape arithmetic on constant tensors) are evaluated once with
   onnx's reference evaluator.
2. Nodes with random outputs or subgraphs are left alone.
"""

from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from srp_onnx.graph import Graph, Node
from srp_onnx.passes import PassContext

_NEVER_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
               "If", "Loop", "Scan", "Dropout"}


def _evaluate(node: Node, graph: Graph) -> list[np.ndarray] | None:
    inputs = [i for i in node.inputs if i]
    attrs = {k: (numpy_helper.from_array(v) if isinstance(v, np.ndarray) else v) for k, v in node.attrs.items()}
    proto = helper.make_node(node.op, node.inputs, node.outputs, domain=node.domain or None, **attrs)
    try:
        ev = ReferenceEvaluator(proto, opsets={"": graph.opset})
        return [np.asarray(o) for o in ev.run(None, {i: graph.consts[i] for i in inputs})]
    except Exception:  # noqa: BLE001 - an op the evaluator cannot fold stays in the graph
        return None


def fold_constants(graph: Graph, ctx: PassContext) -> bool:
    changed = False
    for node in list(graph.nodes):
        if node.domain not in ("", "ai.onnx") or node.op in _NEVER_FOLD:
            continue
        if not all((not i) or graph.is_const(i) for i in node.inputs):
            continue
        values = _evaluate(node, graph)
        if values is None:
            continue
        for name, value in zip(node.outputs, values):
            if name:
                graph.consts[name] = value
        graph.nodes.remove(node)
        changed = True
    return changed
