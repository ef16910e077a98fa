"""The integrate-and-fire neuron with soft reset, as ONNX nodes.

State per neuron layer, in units of theta (srp-algorithm.md section 2):
``v`` (membrane) and ``mask`` (SRP, section 3). One step with input current x:

    u      = v + x / theta          charge
    s      = [u >= 1]               fire
    v'     = u - s                  soft reset (reset by subtraction)
    spikes = s * mask               SRP: silenced neurons emit nothing
    out    = spikes * theta

At the start of a batch v = 0.5 and mask = 1. During the tau pre-simulation
steps mask stays 1 (outputs unmasked). Right after step tau the *reset
graph* sets mask = [v > 1e-3] and v = 0.5 for every layer; the T steps after
it use that mask. Both state tensors are graph inputs and outputs of the
step graph, so the runtime owns them and T is chosen at run time.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from srp_onnx.graph import Graph, Node, ValueInfo

V_INIT = 0.5
MASK_EPS = 1e-3


def state_names(site_name: str) -> dict[str, str]:
    """Names of a layer's state tensors and its spike tensor in the step graph."""
    return {
        "v": f"{site_name}__v",
        "mask": f"{site_name}__mask",
        "v_next": f"{site_name}__v_next",
        "spikes": f"{site_name}__spikes",
    }


def emit_neuron(graph: Graph, site_name: str, x: str, y: str, theta: np.ndarray,
                shape: tuple[int | str, ...]) -> None:
    """Append the IF neuron for one layer: reads current ``x``, writes output ``y``."""
    n = state_names(site_name)
    t = graph.add_const(f"{site_name}__theta", np.asarray(theta, dtype=np.float32))
    one = graph.add_const(f"{site_name}__one", np.array(1.0, dtype=np.float32))
    charge, u, fire, s = (graph.fresh_name(f"{site_name}__{k}") for k in ("charge", "u", "fire", "s"))
    graph.nodes += [
        Node("Div", [x, t], [charge], name=f"{site_name}__charge"),
        Node("Add", [n["v"], charge], [u], name=f"{site_name}__integrate"),
        Node("GreaterOrEqual", [u, one], [fire], name=f"{site_name}__fire"),
        Node("Cast", [fire], [s], {"to": TensorProto.FLOAT}, name=f"{site_name}__spike"),
        Node("Sub", [u, s], [n["v_next"]], name=f"{site_name}__reset"),
        Node("Mul", [s, n["mask"]], [n["spikes"]], name=f"{site_name}__mask_spikes"),
        Node("Mul", [n["spikes"], t], [y], name=f"{site_name}__out"),
    ]
    dims = ("batch", *shape)
    graph.inputs += [ValueInfo(n["v"], dims), ValueInfo(n["mask"], dims)]
    graph.outputs.append(ValueInfo(n["v_next"], dims))


def reset_graph(site_names: list[str], opset: int = 17, ir_version: int = 10) -> onnx.ModelProto:
    """The SRP step after pre-simulation, for all layers: mask = [v > 1e-3], v = 0.5.

    Inputs ``{name}__v``; outputs ``{name}__mask`` and ``{name}__v_next``.
    """
    nodes, inputs, outputs = [], [], []
    eps = helper.make_tensor("mask_eps", TensorProto.FLOAT, [], [MASK_EPS])
    half = helper.make_tensor("v_init", TensorProto.FLOAT, [], [V_INIT])
    for name in site_names:
        n = state_names(name)
        inputs.append(helper.make_tensor_value_info(n["v"], TensorProto.FLOAT, None))
        outputs += [helper.make_tensor_value_info(n["mask"], TensorProto.FLOAT, None),
                    helper.make_tensor_value_info(n["v_next"], TensorProto.FLOAT, None)]
        nodes += [
            helper.make_node("Greater", [n["v"], "mask_eps"], [f"{name}__gt"]),
            helper.make_node("Cast", [f"{name}__gt"], [n["mask"]], to=TensorProto.FLOAT),
            helper.make_node("Shape", [n["v"]], [f"{name}__shape"]),
            helper.make_node("Expand", ["v_init", f"{name}__shape"], [n["v_next"]]),
        ]
    g = helper.make_graph(nodes, "srp_reset", inputs, outputs, [eps, half])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="srp-onnx")
    model.ir_version = ir_version
    return model
