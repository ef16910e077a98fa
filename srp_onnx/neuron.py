"""The integrate-and-fire neuron with soft reset, as ONNX.

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
mask. The order of these phases is written once, in schedule.py.

That reset is SRP's *rule*; :data:`RULES` is the table of the rules a converted
model can use instead (srp-algorithm.md section 3a), each a :class:`Rule`: which
neurons stay active (``keep``, from the membrane ``v`` after step tau and, for the
rules that need it, ``N``, the spikes each neuron fired in the tau steps) and
whether the survivors restart at 0.5 or keep their membrane. A model's choice is a
:class:`Method` (rule name and dead-zone level ``c``), recorded in its metadata.
Adding a rule is one entry in :data:`RULES` (plus its oracle in tests/reference.py
and its tests); the runtime, the unrolled graph and the file format read the table.

Two forms.

* **Saved** (:func:`emit_neuron`): every neuron layer of the spiking file is ONE
  node, ``srp.IF(x, v, mask, theta) -> (y, v_next)``, a call of the model-local
  ONNX function :func:`if_function` whose body is exactly the five lines above.
  The layer's membrane and mask are graph inputs, its next membrane a graph
  output; the IF node names them, so readers find a layer's state through its
  node (op type ``IF`` in domain ``srp``) and the layer record, never through a
  naming convention. onnxruntime inlines model-local functions; for a runtime
  that lacks them, ``onnx.inliner.inline_local_functions(model)`` gives the same
  graph without functions.
* **Executed** (:func:`emit_fast_neuron`, used by lower.py): theta is folded into
  the weights around the neuron, so ``u = v + x; s = [u >= 1]; v' = u - s`` and
  ``out = s``; and the mask lives in the membrane: the reset sets
  ``v = 0.5 if v > 1e-3 else -inf``. A neuron at ``-inf`` never fires again
  (``-inf + x < 1``; ``-inf + inf`` is NaN, which never fires either), which is
  exactly ``s * mask`` with ``mask = 0``, and no step multiplies by a mask.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from srp_onnx.errors import ModelError, UsageError
from srp_onnx.graph import Graph, Node, ValueInfo

# Bounds on the simulation length (reviewed: every run is linear in tau + T, and the runtime keeps
# T steps of logits, T x batch x classes floats: 4096 x 64 x 1000 x 4 B = 1 GiB for ImageNet).
# The paper uses tau 4..14 and T up to 256; a file or option beyond these is refused in one line.
MAX_TAU = 1000
MAX_T = 4096

V_INIT = 0.5
MASK_EPS = 1e-3
DOMAIN = "srp"  # the model-local function domain of the neuron
OP = "IF"


@dataclasses.dataclass(frozen=True)
class NeuronState:
    """The state tensors of one neuron layer: graph inputs ``v``, ``mask``; graph output ``v_next``."""

    v: str
    mask: str
    v_next: str


def is_neuron(node) -> bool:
    """Whether ``node`` (a graph.Node or an onnx NodeProto) is a saved neuron layer."""
    op = getattr(node, "op", None) or getattr(node, "op_type", None)
    return op == OP and node.domain == DOMAIN


def if_function(opset: int) -> onnx.FunctionProto:
    """The saved neuron's body: ``(x, v, mask, theta) -> (y, v_next)`` (the module docstring's lines)."""
    nodes = [
        helper.make_node("Constant", [], ["one"], value=helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])),
        helper.make_node("Div", ["x", "theta"], ["charge"]),
        helper.make_node("Add", ["v", "charge"], ["u"]),  # charge
        helper.make_node("GreaterOrEqual", ["u", "one"], ["fire"]),  # fire
        helper.make_node("Cast", ["fire"], ["s"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["u", "s"], ["v_next"]),  # soft reset
        helper.make_node("Mul", ["s", "mask"], ["spikes"]),  # SRP mask
        helper.make_node("Mul", ["spikes", "theta"], ["y"]),
    ]
    return helper.make_function(DOMAIN, OP, ["x", "v", "mask", "theta"], ["y", "v_next"], nodes,
                                [helper.make_opsetid("", opset)],
                                doc_string="Integrate-and-fire neuron, soft reset, SRP mask (srp-onnx).")


def emit_neuron(graph: Graph, name: str, x: str, y: str, theta: np.ndarray,
                shape: tuple[int | str, ...]) -> NeuronState:
    """Append one saved neuron layer (one IF node) reading current ``x`` and writing output ``y``."""
    state = NeuronState(*(graph.fresh_name(f"{name}__{k}") for k in ("v", "mask", "v_next")))
    t = graph.add_const(f"{name}__theta", np.asarray(theta, dtype=np.float32))
    graph.nodes.append(Node(OP, [x, state.v, state.mask, t], [y, state.v_next], name=name, domain=DOMAIN))
    dims = ("batch", *shape)
    graph.inputs += [ValueInfo(state.v, dims), ValueInfo(state.mask, dims)]
    graph.outputs.append(ValueInfo(state.v_next, dims))
    return state


def emit_fast_neuron(graph: Graph, name: str, state: NeuronState, x: str, s: str,
                     theta: np.ndarray | None = None) -> str:
    """Append the executed neuron (module docstring): ``x`` in units of theta -> 0/1 spikes ``s``.

    With ``theta`` given, ``x`` is in true units and the neuron divides by theta
    first and writes ``s * theta`` to ``s`` (the unfolded form, for per-channel
    thresholds or ``fold_theta=False``). Returns the tensor holding the 0/1 spikes.
    """
    one = graph.add_const(f"{name}__one", np.array(1.0, dtype=np.float32))
    u, fire = (graph.fresh_name(f"{name}__{k}") for k in ("u", "fire"))
    spikes = s if theta is None else graph.fresh_name(f"{name}__spikes")
    if theta is not None:
        t = graph.add_const(f"{name}__theta", np.asarray(theta, dtype=np.float32))
        charge = graph.fresh_name(f"{name}__charge")
        graph.nodes.append(Node("Div", [x, t], [charge], name=f"{name}__charge"))
        x = charge
    graph.nodes += [
        Node("Add", [state.v, x], [u], name=f"{name}__integrate"),
        Node("GreaterOrEqual", [u, one], [fire], name=f"{name}__fire"),
        Node("Cast", [fire], [spikes], {"to": TensorProto.FLOAT}, name=f"{name}__spike"),
        Node("Sub", [u, spikes], [state.v_next], name=f"{name}__reset"),
    ]
    if theta is not None:
        graph.nodes.append(Node("Mul", [spikes, t], [s], name=f"{name}__out"))
    return spikes


# -- the state updates between steps, for all layers at once ------------------------------------------------


def _state_graph(name: str, states: list[NeuronState], body, opset: int, ir_version: int) -> onnx.ModelProto:
    nodes, inputs, outputs = [], [], []
    consts = {"mask_eps": MASK_EPS, "v_init": V_INIT, "v_dead": -np.inf}
    for k, st in enumerate(states):
        inputs.append(helper.make_tensor_value_info(st.v, TensorProto.FLOAT, None))
        outputs.append(helper.make_tensor_value_info(st.v_next, TensorProto.FLOAT, None))
        nodes += body(f"layer{k}", st.v, st.v_next)
    inits = [helper.make_tensor(k, TensorProto.FLOAT, [], [v]) for k, v in consts.items()]
    g = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="srp-onnx")
    model.ir_version = ir_version
    return model


def init_graph(states: list[NeuronState], opset: int = 17, ir_version: int = 10) -> onnx.ModelProto:
    """The start of a batch, for all layers: ``v_next = 0.5`` with the shape of ``v`` (its values unread)."""
    def body(tag: str, v: str, v_next: str) -> list[onnx.NodeProto]:
        return [helper.make_node("Shape", [v], [f"{tag}__shape"]),
                helper.make_node("Expand", ["v_init", f"{tag}__shape"], [v_next])]
    return _state_graph("srp_init", states, body, opset, ir_version)


# -- the rules at the end of the pre-simulation (srp-algorithm.md section 3a) ---------------------------------

# A keep test writes nodes through ``emit(op, inputs) -> output name`` and reads scalars through
# ``const(name, value) -> tensor name``; ``v``: the membrane after step tau, ``n``: the spikes fired in
# the tau steps (float32; only for rules with ``counts``), ``level``: c * tau, rounded once to float32.
Emit = Callable[[str, list[str]], str]
Const = Callable[[str, float], str]
KeepTest = Callable[[Emit, Const, str, "str | None", float], str]


def _residual(emit: Emit, const: Const, v: str, n: str | None, level: float) -> str:
    """SRP: ``v > 1e-3`` (a positive residual membrane potential)."""
    return emit("Greater", [v, const("mask_eps", MASK_EPS)])


def _deadzone(emit: Emit, const: Const, v: str, n: str | None, level: float) -> str:
    """``(N + v) - 0.5 > c * tau``: the input summed over the pre-simulation, over theta, above c * tau."""
    assert n is not None
    total = emit("Sub", [emit("Add", [n, v]), const("v_init", V_INIT)])
    return emit("Greater", [total, const("deadzone_level", level)])


def _both(emit: Emit, const: Const, v: str, n: str | None, level: float) -> str:
    return emit("And", [_residual(emit, const, v, n, level), _deadzone(emit, const, v, n, level)])


@dataclasses.dataclass(frozen=True)
class Rule:
    """What every neuron does right after the tau pre-simulation steps.

    ``keep``: the test a neuron must pass to stay active (None: every neuron does);
    ``counts``: the test reads N, the pre-simulation spike count (extra state during the
    pre-simulation only); ``restart``: survivors restart at v = 0.5 (else keep their v).
    The counted steps are the same for every rule: a silenced neuron sits at v = -inf.
    """

    name: str
    keep: KeepTest | None
    counts: bool
    restart: bool
    summary: str


RULES: dict[str, Rule] = {rule.name: rule for rule in (
    Rule("srp", _residual, False, True, "SRP (the paper): mask = [v > 1e-3], v = 0.5"),
    Rule("deadzone", _deadzone, True, True, "mask = [(N + v) - 0.5 > c * tau] (mean input over theta above c), "
                                            "v = 0.5"),
    Rule("both", _both, True, True, "mask = [v > 1e-3] and [(N + v) - 0.5 > c * tau], v = 0.5"),
    Rule("burnin", None, False, False, "no mask, v kept: the pre-simulation only warms the network up"),
)}


@dataclasses.dataclass(frozen=True)
class Method:
    """A model's neuron rule: a name of :data:`RULES` and the dead-zone level ``c`` (units of theta)."""

    rule: str = "srp"
    c: float = 0.0

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise UsageError(f"neuron rule {self.rule!r}: choose one of {', '.join(RULES)}.", param="method",
                             value=self.rule, suggest=tuple(RULES))
        if not (isinstance(self.c, int | float) and 0 <= self.c < 1):
            raise UsageError(f"dead-zone level c = {self.c!r}: must be a number in [0, 1) (units of theta).",
                             param="dead_zone", value=self.c)
        if self.c and not RULES[self.rule].counts:
            raise UsageError(f"neuron rule {self.rule!r} takes no dead-zone level; c must be 0.", param="dead_zone",
                             value=self.c)

    @property
    def spec(self) -> Rule:
        return RULES[self.rule]

    def label(self) -> str:
        return self.rule if not self.spec.counts else f"{self.rule} c={self.c:.4g}"

    def level(self, tau: int) -> float:
        """c * tau in float32, the dead-zone threshold on ``(N + v) - 0.5``."""
        return float(np.float32(self.c * tau))

    def to_json(self) -> dict:
        return {"rule": self.rule, "c": self.c}

    @classmethod
    def from_json(cls, text: str, where: str = "the model") -> Method:
        try:
            d = json.loads(text)
            method = cls(str(d["rule"]), float(d.get("c", 0.0)))
        except (ValueError, TypeError, KeyError, UsageError, RecursionError):
            raise ModelError(f"{where}: its neuron rule record is malformed; the file is damaged. Convert the ANN "
                             "again.") from None
        return method


SRP = Method()


def presim_end_nodes(method: Method, tau: int, v: str, n: str | None, v_next: str, tag: str,
                     const: Const) -> list[Node]:
    """One layer's end of the pre-simulation in the executed form (the mask lives in the membrane).

    ``v_next = (0.5 if restart else v) if keep else -inf``; ``n`` (the spike count) only
    for rules that count. Constants come from ``const(name, value)``.
    """
    rule = method.spec
    nodes: list[Node] = []

    def emit(op: str, inputs: list[str]) -> str:
        out = f"{tag}__{rule.name}_{len(nodes)}"
        nodes.append(Node(op, inputs, [out], name=out))
        return out

    survivor = const("v_init", V_INIT) if rule.restart else v
    if rule.keep is None:
        nodes.append(Node("Identity", [survivor], [v_next], name=f"{tag}__{rule.name}_reset"))
        return nodes
    keep = rule.keep(emit, const, v, n, method.level(tau))
    nodes.append(Node("Where", [keep, survivor, const("v_dead", -np.inf)], [v_next], name=f"{tag}__{rule.name}_reset"))
    return nodes


def reset_graph(states: list[NeuronState], method: Method = SRP, tau: int = 1, counts: list[str] | None = None,
                opset: int = 17, ir_version: int = 10) -> onnx.ModelProto:
    """The end of the pre-simulation for all layers; SRP: ``v_next = 0.5 if v > 1e-3 else -inf``.

    The mask lives in the membrane: a silenced neuron (mask 0) is a dead one, ``v = -inf``.
    ``counts``: per layer, the name of its pre-simulation spike count input (rules that count).
    """
    extra: dict[str, float] = {}

    def const(name: str, value: float) -> str:
        extra[name] = value
        return name

    nodes, inputs, outputs = [], [], []
    for k, st in enumerate(states):
        n = counts[k] if counts is not None else None
        inputs.append(helper.make_tensor_value_info(st.v, TensorProto.FLOAT, None))
        if n is not None:
            inputs.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, None))
        outputs.append(helper.make_tensor_value_info(st.v_next, TensorProto.FLOAT, None))
        nodes += [helper.make_node(x.op, x.inputs, x.outputs, name=x.name)
                  for x in presim_end_nodes(method, tau, st.v, n, st.v_next, f"layer{k}", const)]
    inits = [helper.make_tensor(k, TensorProto.FLOAT, [], [v]) for k, v in extra.items()]
    g = helper.make_graph(nodes, f"srp_reset_{method.rule}", inputs, outputs, inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="srp-onnx")
    model.ir_version = ir_version
    return model
