"""BatchNormalization (inference) folded into the preceding linear layer.

With k = scale / sqrt(var + eps):  BN(y) = k * (y - mean) + B.
1. Conv / ConvTranspose (group 1) whose output feeds only this BN:
   W' = W * k along the output-channel axis (0 for Conv, 1 for ConvTranspose),
   b' = (b - mean) * k + B.
2. Gemm whose output feeds only this BN (y = alpha * A @ op(W) + beta * C):
   W' = W * k along the output axis (rows when transB, else columns),
   C' = (beta * C - mean) * k + B, beta' = 1.
3. Anything else (BN on the input, after a residual add, on a shared
   tensor): a per-channel affine Mul + Add on the channel axis 1, which the
   spiking graph passes through as a linear op.
The folded node takes over the BN's output name, so names downstream stay.
"""

from __future__ import annotations

import numpy as np

from srp_onnx.graph import Graph, Node
from srp_onnx.passes import PassContext


def _bn_params(graph: Graph, bn: Node) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    names = bn.inputs[1:5]
    if len(names) < 4 or not all(graph.is_const(n) for n in names):
        return None
    scale, bias, mean, var = (graph.consts[n].astype(np.float64) for n in names)
    k = scale / np.sqrt(var + float(bn.attr("epsilon", 1e-5)))
    return k, bias, mean


def _fold_into(graph: Graph, lin: Node, bn: Node, k: np.ndarray, bias: np.ndarray, mean: np.ndarray) -> bool:
    w_name = lin.inputs[1]
    if not graph.is_const(w_name):
        return False
    w = graph.consts[w_name].astype(np.float64)
    if lin.op in ("Conv", "ConvTranspose"):
        if lin.op == "ConvTranspose" and int(lin.attr("group", 1)) != 1:
            return False
        axis = 0 if lin.op == "Conv" else 1
        if w.shape[axis] != k.shape[0]:
            return False
        shape = [1] * w.ndim
        shape[axis] = -1
        w = w * k.reshape(shape)
        b_old = graph.consts[lin.inputs[2]].astype(np.float64) if len(lin.inputs) > 2 and lin.inputs[2] else 0.0
        if len(lin.inputs) > 2 and lin.inputs[2] and not graph.is_const(lin.inputs[2]):
            return False
        b = (b_old - mean) * k + bias
    else:  # Gemm
        if int(lin.attr("transA", 0)) or w.ndim != 2:
            return False
        trans_b = int(lin.attr("transB", 0))
        n_out = w.shape[0] if trans_b else w.shape[1]
        if n_out != k.shape[0]:
            return False
        w = w * (k[:, None] if trans_b else k[None, :])
        beta = float(lin.attr("beta", 1.0))
        c_name = lin.inputs[2] if len(lin.inputs) > 2 else ""
        if c_name and not graph.is_const(c_name):
            return False
        c = beta * graph.consts[c_name].astype(np.float64) if c_name else 0.0
        b = (c - mean) * k + bias
        lin.attrs["beta"] = 1.0
    dtype = graph.consts[w_name].dtype
    new_w = graph.add_const(f"{w_name}__bnfold", w.astype(dtype))
    new_b = graph.add_const(f"{lin.name}__bnfold_bias", np.asarray(b, dtype=dtype).reshape(-1))
    lin.inputs = [lin.inputs[0], new_w, new_b]
    lin.outputs = [bn.outputs[0]]
    graph.nodes.remove(bn)
    return True


def fold_batchnorm(graph: Graph, ctx: PassContext) -> bool:
    producers, users = graph.producers(), graph.consumers()
    changed = False
    for bn in list(graph.walk(("BatchNormalization",))):
        if int(bn.attr("training_mode", 0)):
            continue
        params = _bn_params(graph, bn)
        if params is None:
            continue
        k, bias, mean = params
        x = bn.inputs[0]
        lin = producers.get(x)
        if (lin is not None and lin.op in ("Conv", "ConvTranspose", "Gemm") and len(users.get(x, [])) == 1
                and x not in graph.output_names() and _fold_into(graph, lin, bn, k, bias, mean)):
            changed = True
            continue
        # case 3: per-channel affine on axis 1
        dtype = graph.consts[bn.inputs[1]].dtype
        shape = (-1,) + (1,) * max(_rank(graph, x) - 2, 0)
        mul = graph.add_const(f"{bn.name}__scale", k.astype(dtype).reshape(shape))
        add = graph.add_const(f"{bn.name}__shift", (bias - mean * k).astype(dtype).reshape(shape))
        mid = graph.fresh_name(f"{bn.name}__scaled")
        i = graph.nodes.index(bn)
        graph.nodes[i:i + 1] = [
            Node("Mul", [x, mul], [mid], name=f"{bn.name}__mul"),
            Node("Add", [mid, add], [bn.outputs[0]], name=f"{bn.name}__add"),
        ]
        changed = True
    return changed


def _rank(graph: Graph, name: str) -> int:
    shape = graph.shapes.get(name)
    return len(shape) if shape is not None else 4
