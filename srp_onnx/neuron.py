"""The integrate-and-fire neuron with soft reset, as ONNX nodes.

State per neuron layer, in units of theta (srp-algorithm.md section 2): ``v``
(membrane) and ``mask`` (SRP, section 3). One step with input current x:

    u      = v + x / theta          charge
    s      = [u >= 1]               fire
    v'     = u - s                  soft reset (reset by subtraction)
    spikes = s * mask               SRP: silenced neurons emit nothing
    out    = spikes * theta

At the start of a batch v = 0.5 and mask = 1. During the tau pre-simulation
steps mask stays 1 (outputs unmasked). Right after step tau the reset sets
mask = [v > 1e-3] and v = 0.5 for every layer; the T steps after it use that
mask.

Two forms. :func:`emit_neuron` writes the saved step graph exactly as above,
with ``{site}__v`` and ``{site}__mask`` as graph inputs (the format other tools
read). :func:`emit_fast_neuron` writes what the runtime executes (lower.py):
theta is folded into the weights around it, so ``u = v + x; s = [u >= 1];
v' = u - s`` and ``out = s``; and the mask lives in the membrane: the reset
graph sets ``v = 0.5 if v > 1e-3 else -inf``. A neuron at ``-inf`` never fires
again (``-inf + x < 1``; ``-inf + inf`` is NaN, which never fires either), which
is exactly ``s * mask`` with ``mask = 0``, and no step multiplies by a mask.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from srp_onnx.graph import Graph, Node, ValueInfo

# Bounds on the simulation length (reviewed: every run is linear in tau + T, and the runtime keeps
# T steps of logits, T x batch x classes floats: 4096 x 64 x 1000 x 4 B = 1 GiB for ImageNet).
# The paper uses tau 4..14 and T up to 256; a file or option beyond these is refused in one line.
MAX_TAU = 1000
MAX_T = 4096

V_INIT = 0.5
MASK_EPS = 1e-3
# The nodes emit_neuron writes for a layer are named f"{site}__{kind}" with these kinds.
SAVED_NEURON_NODES = ("charge", "integrate", "fire", "spike", "reset", "mask_spikes", "out")


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


def emit_fast_neuron(graph: Graph, site_name: str, x: str, s: str, theta: np.ndarray | None = None) -> None:
    """Append the execution-graph neuron (see the module docstring): ``x`` in units of theta -> spikes ``s``.

    With ``theta`` given, ``x`` is in true units and the neuron divides by theta
    first and writes ``s * theta`` to ``s`` (the unfolded form, for per-channel
    thresholds or ``fold_theta=False``); the 0/1 spikes are then ``{site}__spikes``.
    """
    n = state_names(site_name)
    one = graph.add_const(f"{site_name}__one", np.array(1.0, dtype=np.float32))
    u, fire = (graph.fresh_name(f"{site_name}__{k}") for k in ("u", "fire"))
    spikes = s if theta is None else n["spikes"]
    if theta is not None:
        t = graph.add_const(f"{site_name}__theta", np.asarray(theta, dtype=np.float32))
        charge = graph.fresh_name(f"{site_name}__charge")
        graph.nodes.append(Node("Div", [x, t], [charge], name=f"{site_name}__charge"))
        x = charge
    graph.nodes += [
        Node("Add", [n["v"], x], [u], name=f"{site_name}__integrate"),
        Node("GreaterOrEqual", [u, one], [fire], name=f"{site_name}__fire"),
        Node("Cast", [fire], [spikes], {"to": TensorProto.FLOAT}, name=f"{site_name}__spike"),
        Node("Sub", [u, spikes], [n["v_next"]], name=f"{site_name}__reset"),
    ]
    if theta is not None:
        graph.nodes.append(Node("Mul", [spikes, t], [s], name=f"{site_name}__out"))


def _state_graph(name: str, site_names: list[str], body, opset: int, ir_version: int) -> onnx.ModelProto:
    nodes, inputs, outputs = [], [], []
    consts = {"mask_eps": MASK_EPS, "v_init": V_INIT, "v_dead": -np.inf}
    for site in site_names:
        n = state_names(site)
        inputs.append(helper.make_tensor_value_info(n["v"], TensorProto.FLOAT, None))
        outputs.append(helper.make_tensor_value_info(n["v_next"], TensorProto.FLOAT, None))
        nodes += body(site, n["v"], n["v_next"])
    inits = [helper.make_tensor(k, TensorProto.FLOAT, [], [v]) for k, v in consts.items()]
    g = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="srp-onnx")
    model.ir_version = ir_version
    return model


def init_graph(site_names: list[str], opset: int = 17, ir_version: int = 10) -> onnx.ModelProto:
    """The start of a batch, for all layers: ``v_next = 0.5`` with the shape of ``v`` (its values unread)."""
    def body(site: str, v: str, v_next: str) -> list[onnx.NodeProto]:
        return [helper.make_node("Shape", [v], [f"{site}__shape"]),
                helper.make_node("Expand", ["v_init", f"{site}__shape"], [v_next])]
    return _state_graph("srp_init", site_names, body, opset, ir_version)


def reset_graph(site_names: list[str], opset: int = 17, ir_version: int = 10) -> onnx.ModelProto:
    """The SRP step after pre-simulation, for all layers: ``v_next = 0.5 if v > 1e-3 else -inf``.

    Inputs ``{name}__v``, outputs ``{name}__v_next``. The mask lives in the
    membrane: a silenced neuron (mask 0) is a dead one, ``v = -inf``.
    """
    def body(site: str, v: str, v_next: str) -> list[onnx.NodeProto]:
        return [helper.make_node("Greater", [v, "mask_eps"], [f"{site}__keep"]),
                helper.make_node("Where", [f"{site}__keep", "v_init", "v_dead"], [v_next])]
    return _state_graph("srp_reset", site_names, body, opset, ir_version)
