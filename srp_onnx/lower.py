"""Lower a saved spiking step graph into the graphs the runtime executes.

The saved step graph (convert.py, neuron.py) states the method as written:
``v += x / theta``, fire, soft reset, ``out = s * theta * mask``, with ``v`` and
``mask`` as graph inputs. The runtime runs an equivalent, cheaper form:

1. **Theta folded into the weights.** Every tensor ``t`` of the linear part gets
   a scale ``c(t)`` with ``stored(t) = c(t) * true(t)``. A neuron layer reads
   its current in units of its threshold (``c = 1 / theta``) and emits its 0/1
   spikes as they are (``c = 1 / theta`` again: the true output is
   ``theta * s``). A weight layer (Conv, ConvTranspose, Gemm, MatMul with
   constant weights) takes any input scale ``c_in`` and produces the scale
   ``c_out`` its consumers want: ``W' = W * c_out / c_in``, ``b' = b * c_out``.
   Scale-preserving ops (pooling, reshapes, Add, Concat, ...) pass the scale
   through; where two scales meet (an identity shortcut into a residual Add,
   say) or a consumer needs true values (the logits, ops outside the list) a
   scalar Mul converts. The neuron then is ``u = v + x; s = [u >= 1];
   v' = u - s``: no Div, no Mul. With power-of-two thresholds (and dyadic
   weights) every factor is exact, so the results are bit-identical; otherwise
   each folded weight is computed in float64 and rounded once (relative 6e-8),
   which moves a neuron's membrane by a few ulp and can flip a spike that lands
   within that distance of the threshold. ``fold_theta=False`` divides by theta
   as the saved graph does.
2. **The mask lives in the membrane.** After pre-simulation a silenced neuron
   gets ``v = -inf`` instead of ``mask = 0``: ``-inf + x = -inf < 1`` never
   fires (``x = +inf`` gives NaN, which never fires either), and its output
   ``s * theta * mask`` was 0 anyway. So no step multiplies by a mask, and the
   pre-simulation and the counted steps run the same graph.
3. **The static head is computed once per batch.** Everything that depends on
   the network input only (the first linear layer: the input is the same at
   every step) becomes a separate *head* graph; the step graph reads its
   outputs as inputs.
4. **Unrolled** (optional): head once, then tau + T copies of the step with
   the reset in between, in one graph that returns every counted step's
   logits: one call per batch, fixed (tau, T).

The head and the step graph share no weight: each belongs to the one graph
that reads it. Folding replaces a weight array
by its scaled copy and drops the old one, so lowering never holds two copies.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
from onnx import TensorProto

from srp_onnx import schedule
from srp_onnx.fileformat import Layer
from srp_onnx.graph import Graph, Node, ValueInfo
from srp_onnx.neuron import SRP, V_INIT, Method, NeuronState, emit_fast_neuron, is_neuron, presim_end_nodes
from srp_onnx.sites import Site

# Weight layers: (weight slot, bias slot or None). Their output scale is free.
_WEIGHTED = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (1, None)}
# c(out) = c(input 0); other inputs are indices, shapes, axes (never rescaled).
_PASS_FIRST = frozenset({
    "AveragePool", "GlobalAveragePool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice",
    "Gather", "Identity", "Dropout", "Split", "Expand", "Tile", "ReduceMean", "ReduceSum", "DepthToSpace",
    "SpaceToDepth", "Neg", "Pad",
})  # fmt: skip
# Every non-constant input carries the scale; constant inputs are rescaled to it.
_PASS_ALL = frozenset({"Add", "Sub", "Sum", "Concat"})
# Read only the shape: the output has no scale.
_SHAPE_ONLY = frozenset({"Shape", "Size"})


@dataclasses.dataclass(frozen=True)
class LowerOptions:
    """The lowering's levers (all on by default); turning them off is for ablations and benchmarks.

    ``fold_theta``: case 1 (off: divide by theta as the saved graph does, keeping its rounding);
    ``hoist_static``: case 3; ``timing_bound``: every neuron becomes ``v' = v + x; s = v'``, a
    single Add with *wrong* outputs, to time what no neuron kernel can beat (bench/ only).
    """

    fold_theta: bool = True
    hoist_static: bool = True
    timing_bound: bool = False


@dataclasses.dataclass
class StepGraphs:
    """What the runtime runs. All graphs read their constants from ``consts``."""

    head: Graph | None  # network input -> ``static`` tensors; None when the step reads the input itself
    step: Graph  # inputs: ``static`` + every layer's ``v``; outputs: logits, every ``v_next``, recorded tensors
    static: list[str]  # step inputs that do not change over time
    states: list[NeuronState]  # per layer, in layer order: its membrane in ``step`` (``v`` in, ``v_next`` out)
    spikes: list[str]  # per layer: its 0/1 spike tensor in ``step`` (an output when recorded)
    consts: dict[str, np.ndarray]


def counting_step(sg: StepGraphs) -> tuple[Graph, list[str], list[str]]:
    """The step graph that also counts spikes, for the pre-simulation of a rule that reads N.

    Per layer an extra input ``n`` and output ``n_next = n + s``; everything else is ``sg.step``.
    Returns ``(graph, n inputs, n_next outputs)``, per layer in layer order.
    """
    g = dataclasses.replace(sg.step, nodes=list(sg.step.nodes), inputs=list(sg.step.inputs),
                            outputs=list(sg.step.outputs))
    n_in, n_out = [], []
    for k, (st, spikes) in enumerate(zip(sg.states, sg.spikes)):
        n, n_next = f"srp__layer{k}__n", f"srp__layer{k}__n_next"
        g.nodes.append(Node("Add", [n, spikes], [n_next], name=f"srp__layer{k}__count"))
        shape = next((v.shape for v in sg.step.inputs if v.name == st.v), None)
        g.inputs.append(ValueInfo(n, shape))
        g.outputs.append(ValueInfo(n_next, shape))
        n_in.append(n)
        n_out.append(n_next)
    g.name = "srp_step_counting"
    return g, n_in, n_out


def strip_neurons(g: Graph, layers: list[Layer]) -> None:
    """Remove the saved neurons (IF nodes, by op type) and their state I/O, leaving the linear part."""
    g.nodes = [n for n in g.nodes if not is_neuron(n)]
    state = {v for layer in layers for v in (layer.state.v, layer.state.mask, layer.state.v_next)}
    g.inputs = [i for i in g.inputs if i.name not in state]
    g.outputs = [o for o in g.outputs if o.name not in state]


def lower(g: Graph, layers: list[Layer], logits: str, options: LowerOptions = LowerOptions(), *,
          record_spikes: bool = False, record: tuple[str, ...] = ()) -> StepGraphs:
    """The head and step graphs for a saved step graph read with ``from_onnx`` (``g`` is consumed).

    ``record``: tensors of the saved graph's linear part that the step graph also outputs
    (in true units wherever folding kept them; their zero pattern is always the true one).
    """
    strip_neurons(g, layers)
    g.outputs = [ValueInfo(logits, None)]
    g.shapes = {}
    sites = [layer.site for layer in layers]
    # A layer whose spikes are the network output keeps its theta (the logits are in true units).
    folded = {s.name: options.fold_theta and not s.per_channel and s.theta is not None and s.output != logits
              and 0 < float(s.theta) < np.inf and not options.timing_bound for s in sites}
    current = _fold_scales(g, sites, folded, logits) if any(folded.values()) else {}
    spikes = []
    for layer in layers:
        s, st = layer.site, layer.state
        x = current.get(s.name, s.input)
        if options.timing_bound:
            g.nodes += [Node("Add", [st.v, x], [st.v_next], name=f"{s.name}__integrate"),
                        Node("Identity", [st.v_next], [s.output], name=f"{s.name}__bound")]
            spikes.append(s.output)
        else:
            spikes.append(emit_fast_neuron(g, s.name, st, x, s.output, None if folded[s.name] else _theta(s)))
        g.inputs.append(ValueInfo(st.v, ("batch", *(s.shape or ()))))
        g.outputs.append(ValueInfo(st.v_next, ("batch", *(s.shape or ()))))
    if record_spikes:
        g.outputs += [ValueInfo(t, ("batch", *(s.shape or ()))) for t, s in zip(spikes, sites)]
    g.outputs += [ValueInfo(t, None) for t in record if t not in g.output_names()]
    g.toposort()
    g.prune()
    inp = g.inputs[0].name
    states = [layer.state for layer in layers]
    head, static = _split_static(g, states) if options.hoist_static else (None, [inp])
    return StepGraphs(head, g, static, states, spikes, g.consts)


def _theta(s: Site) -> np.ndarray:
    theta = np.asarray(s.per_channel if s.per_channel else s.theta, dtype=np.float32)
    if theta.ndim == 1 and s.shape and len(s.shape) > 1:
        theta = theta.reshape(-1, *([1] * (len(s.shape) - 1)))
    return theta


# -- 1. theta folding ------------------------------------------------------------------------------------


def _fold_scales(g: Graph, layers: list[Site], folded: dict[str, bool], logits: str) -> dict[str, str]:
    """Give every tensor a scale and fold the scales into the weights (module docstring, case 1).

    A backward pass records the scale each tensor's consumers *want* (a neuron:
    1 / theta; the logits: 1), carried back through scale-preserving ops to the
    weight layer that can produce it. A forward pass then fixes every scale,
    rescales weights and constants, and inserts a scalar Mul wherever a tensor
    arrives with a scale other than the one its consumer needs. Returns, per
    site, the tensor that holds its current in the scale it needs.
    """
    want: dict[str, float] = {logits: 1.0}
    fixed: dict[str, float] = {}  # neuron outputs: their scale is set by the neuron
    for s in layers:
        c = 1.0 / float(s.theta) if folded[s.name] else 1.0
        want[s.input] = c
        fixed[s.output] = c
    for node in reversed(g.nodes):
        w = want.get(node.outputs[0]) if node.outputs else None
        if w is None or node.op in _WEIGHTED or node.op in _SHAPE_ONLY:
            continue
        if node.op in _PASS_FIRST or node.op in ("Mul", "Div"):
            dyn = [k for k, i in enumerate(node.inputs) if not g.is_const(i)]
            slots = [0] if node.op != "Mul" else dyn[:1]
        elif node.op in _PASS_ALL:
            slots = [k for k, i in enumerate(node.inputs) if i and not g.is_const(i)]
        else:
            continue
        for k in slots:
            want.setdefault(node.inputs[k], w)

    scale: dict[str, float] = {i.name: 1.0 for i in g.inputs}
    scale.update(fixed)
    rescaled: dict[tuple[str, float], str] = {}
    new_nodes: list[Node] = []

    def sc(name: str) -> float:
        return 1.0 if not name or g.is_const(name) else scale.get(name, 1.0)

    def convert(name: str, to: float) -> str:
        """``name`` with scale ``to`` (a Mul by a scalar when it has another)."""
        have = sc(name)
        if have == to:
            return name
        key = (name, to / have)
        if key not in rescaled:
            out = g.fresh_name(f"{name}__rescaled")
            k = g.add_const(f"{name}__rescale", np.array(to / have, dtype=np.float32))
            new_nodes.append(Node("Mul", [name, k], [out], name=g.fresh_name(f"srp_rescale__{name}")))
            scale[out] = to
            rescaled[key] = out
        return rescaled[key]

    uses = collections.Counter(i for n in g.nodes for i in n.inputs)

    def const_times(name: str, factor: float) -> str:
        if factor == 1.0:
            return name
        v = g.consts[name]
        uses[name] -= 1
        if uses[name] == 0:  # the last user: the old array goes, so folding never doubles the weights
            del g.consts[name]
        if v.dtype.kind != "f":
            v = v.astype(np.float32)
        # Each element is multiplied in float64 and rounded once (ufunc buffering: no float64 copy).
        out = v if uses[name] == 0 and v.flags.writeable and v.base is None else np.empty_like(v)
        np.multiply(v, np.float64(factor), out=out, casting="same_kind")
        return g.add_const(f"{name}__scaled", out)

    for node in g.nodes:
        outs = [o for o in node.outputs if o]
        if node.op in _WEIGHTED and _weights_const(g, node):
            w_slot, b_slot = _WEIGHTED[node.op]
            c_in = sc(node.inputs[0])
            c_out = want.get(node.outputs[0], 1.0)
            node.inputs[w_slot] = const_times(node.inputs[w_slot], c_out / c_in)
            if b_slot is not None and len(node.inputs) > b_slot and node.inputs[b_slot]:
                node.inputs[b_slot] = const_times(node.inputs[b_slot], c_out)
            scale[node.outputs[0]] = c_out
        elif node.op in _SHAPE_ONLY:
            pass
        elif node.op in _PASS_FIRST:
            c = sc(node.inputs[0])
            if node.op == "Pad" and len(node.inputs) > 2 and node.inputs[2]:  # the pad value scales too
                if g.is_const(node.inputs[2]):
                    node.inputs[2] = const_times(node.inputs[2], c)
                else:
                    node.inputs[0] = convert(node.inputs[0], 1.0)
                    c = 1.0
            for o in outs[:1] if node.op == "Dropout" else outs:
                scale[o] = c
        elif node.op in ("Mul", "Div"):
            a, b = sc(node.inputs[0]), sc(node.inputs[1])
            scale[outs[0]] = a * b if node.op == "Mul" else a / b
        elif node.op in _PASS_ALL:
            dyn = [k for k, i in enumerate(node.inputs) if i and not g.is_const(i)]
            have = [sc(node.inputs[k]) for k in dyn]
            target = want.get(outs[0]) if want.get(outs[0]) in have else (have[0] if have else 1.0)
            for k, i in enumerate(node.inputs):
                if not i:
                    continue
                if g.is_const(i):
                    node.inputs[k] = const_times(i, target)
                else:
                    node.inputs[k] = convert(i, target)
            scale[outs[0]] = target
        elif node.op == "Cast" and int(node.attr("to", 0)) in (TensorProto.FLOAT, TensorProto.DOUBLE,
                                                               TensorProto.FLOAT16):
            scale[outs[0]] = sc(node.inputs[0])
        else:  # anything else sees true values
            node.inputs = [convert(i, 1.0) if i and not g.is_const(i) else i for i in node.inputs]
            for o in outs:
                scale[o] = 1.0
        new_nodes.append(node)
    # Sinks: each neuron's current in units of its threshold; the logits in true units.
    current = {s.name: convert(s.input, 1.0 / float(s.theta) if folded[s.name] else 1.0) for s in layers}
    g.nodes = new_nodes
    if sc(logits) != 1.0:
        raw = g.fresh_name(f"{logits}__scaled")
        for n in g.nodes:
            n.outputs = [raw if o == logits else o for o in n.outputs]
            n.inputs = [raw if i == logits else i for i in n.inputs]
        scale[raw] = scale[logits]
        k = g.add_const(f"{logits}__rescale", np.array(1.0 / scale[raw], dtype=np.float32))
        g.nodes.append(Node("Mul", [raw, k], [logits], name=g.fresh_name("srp_rescale__logits")))
    return current  # the sinks' Muls come last: lower() sorts once the neurons are in


def _weights_const(g: Graph, node: Node) -> bool:
    w_slot, b_slot = _WEIGHTED[node.op]
    if len(node.inputs) <= w_slot or not g.is_const(node.inputs[w_slot]):
        return False
    has_bias = b_slot is not None and len(node.inputs) > b_slot and node.inputs[b_slot]
    return not has_bias or g.is_const(node.inputs[b_slot])


# -- 3. the static head ----------------------------------------------------------------------------------


def _split_static(g: Graph, states: list[NeuronState]) -> tuple[Graph | None, list[str]]:
    """Move the nodes that depend on the network input only into a head graph (module docstring, case 3)."""
    dynamic = {st.v for st in states}
    for n in g.nodes:
        if any(i in dynamic for i in n.inputs):
            dynamic.update(o for o in n.outputs if o)
    head_nodes = [n for n in g.nodes if not any(o in dynamic for o in n.outputs)]
    step_nodes = [n for n in g.nodes if any(o in dynamic for o in n.outputs)]
    produced_static = {o for n in head_nodes for o in n.outputs if o}
    inp = g.inputs[0].name
    static = []
    for n in step_nodes:
        for i in n.inputs:
            if (i in produced_static or i == inp) and i not in static:
                static.append(i)
    if not head_nodes or static == [inp]:
        return None, static
    types = {t: _elem_type(g, t) for t in static}
    head = Graph(head_nodes, g.consts, [g.inputs[0]],
                 [ValueInfo(t, None, types[t]) for t in static if t != inp], g.opset, {}, "srp_head")
    head.prune()
    g.nodes = step_nodes
    g.inputs = ([ValueInfo(t, g.inputs[0].shape if t == inp else None, types[t]) for t in static]
                + g.inputs[1:])
    return head, static


_INT64_OUT = {("MaxPool", 1), ("Shape", 0), ("Size", 0), ("ArgMax", 0), ("ArgMin", 0), ("NonZero", 0)}
# Ops whose output has input 0's element type.
_SAME_TYPE = ("Reshape", "Gather", "Concat", "Squeeze", "Unsqueeze", "Slice", "Identity", "Transpose",
              "Expand", "Tile", "Flatten", "Split")


def _elem_type(g: Graph, name: str) -> int:
    """Element type of a tensor of the (float) network: int64 indices and shapes, float otherwise."""
    from onnx import helper

    if name in g.consts:
        return helper.np_dtype_to_tensor_dtype(g.consts[name].dtype)
    for n in g.nodes:
        if name in n.outputs:
            k = n.outputs.index(name)
            if (n.op, k) in _INT64_OUT:
                return TensorProto.INT64
            if n.op == "Cast":
                return int(n.attrs["to"])
            first = next((i for i in n.inputs if i), None)
            if n.op in _SAME_TYPE and first is not None:
                return _elem_type(g, first)
            return TensorProto.FLOAT
    return next((v.elem_type for v in g.inputs if v.name == name), TensorProto.FLOAT)


# -- 4. unrolled -----------------------------------------------------------------------------------------


class _Unroller:
    """A :class:`schedule.Simulator` that writes each step's nodes into one graph instead of running them."""

    def __init__(self, sg: StepGraphs, layers: list[Site], logits: str, g: Graph, record_spikes: bool,
                 method: Method, tau: int):
        self.sg, self.layers, self.logits, self.g, self.record_spikes = sg, layers, logits, g, record_spikes
        self.method, self.tau = method, tau
        self.keep = set(sg.static) | set(sg.consts)
        self.v: list[str] = []
        self.step_logits: list[str] = []
        self.counts: list[list[str]] = [[] for _ in layers]
        self.presim_counts: list[list[str]] = [[] for _ in layers]  # per layer: spikes of each pre-simulation step
        self.t = 0
        g.add_const("srp__v_init", np.array(V_INIT, np.float32))
        g.add_const("srp__axis0", np.array([0], np.int64))

    def start(self) -> None:  # v = 0.5, shaped [B, *layer shape]
        g = self.g
        g.nodes.append(Node("Shape", [g.inputs[0].name], ["srp__batch"], {"start": 0, "end": 1},
                            name="srp_unroll__batch"))
        for k, s in enumerate(self.layers):
            dims = g.add_const(f"srp__layer{k}__dims", np.array(s.shape or (), np.int64))
            shape, v0 = f"srp__layer{k}__v_shape", f"srp__layer{k}__v_init"
            g.nodes += [Node("Concat", ["srp__batch", dims], [shape], {"axis": 0}, name=f"srp__layer{k}__shape"),
                        Node("Expand", ["srp__v_init", shape], [v0], name=f"srp__layer{k}__init")]
            self.v.append(v0)

    def step(self, counted: int | None) -> None:
        t, sg = self.t, self.sg
        ren = {st.v: v for st, v in zip(sg.states, self.v)}

        def r(name: str) -> str:
            if not name or name in self.keep:
                return name
            return ren.setdefault(name, f"{name}__t{t}")

        for n in sg.step.nodes:
            self.g.nodes.append(Node(n.op, [r(i) for i in n.inputs], [r(o) for o in n.outputs], dict(n.attrs),
                                     f"{n.name}__t{t}", n.domain))
        self.v = [ren[st.v_next] for st in sg.states]
        if counted is not None:
            u = f"srp__logits__t{t}__seq"
            self.g.nodes.append(Node("Unsqueeze", [ren[self.logits], "srp__axis0"], [u],
                                     name=f"srp_unroll__logits__t{t}"))
            self.step_logits.append(u)
            for c, spikes in zip(self.counts, sg.spikes):
                c.append(ren[spikes])
        elif self.method.spec.counts:
            for c, spikes in zip(self.presim_counts, sg.spikes):
                c.append(ren[spikes])
        self.t += 1

    def end_presim(self) -> None:  # the method's rule; SRP: v = 0.5 if v > 1e-3 else -inf
        g = self.g

        made: dict[str, str] = {"v_init": "srp__v_init"}

        def const(name: str, value: float) -> str:
            if name not in made:
                made[name] = g.add_const(f"srp__{name}", np.array(value, np.float32))
            return made[name]

        for k, v in enumerate(self.v):
            n = None
            if self.method.spec.counts:
                n = f"srp__layer{k}__presim_count"
                g.nodes.append(Node("Sum", self.presim_counts[k], [n], name=f"srp__layer{k}__presim_count"))
            vr = f"srp__layer{k}__v_reset"
            g.nodes += presim_end_nodes(self.method, self.tau, v, n, vr, f"srp__layer{k}", const)
            self.v[k] = vr


def unroll(sg: StepGraphs, layers: list[Site], logits: str, tau: int, T: int, *,
           record_spikes: bool = False, batch: int | None = None,
           method: Method = SRP) -> tuple[Graph, str, list[str]]:
    """One graph for tau + T steps (module docstring, case 4), written by the one schedule.

    Input: the network input only (``batch`` fixes its first dimension). The membranes start
    at 0.5 inside the graph. Outputs: the counted steps' logits ``[T, B, K]`` and, when
    recorded, each layer's spike count over them (float32, exact below 2^24 steps).
    Returns ``(graph, logits_name, [counts_name per layer])``.
    """
    g = Graph([], dict(sg.consts), [], [], sg.step.opset, {}, "srp_unrolled")
    if sg.head is not None:
        g.inputs = [dataclasses.replace(v) for v in sg.head.inputs]
        g.nodes += [dataclasses.replace(n, inputs=list(n.inputs), outputs=list(n.outputs))
                    for n in sg.head.nodes]
    else:
        g.inputs = [dataclasses.replace(v) for v in sg.step.inputs if v.name in sg.static]
    if batch is not None:
        g.inputs[0].shape = (batch, *(g.inputs[0].shape or ())[1:])
    u = _Unroller(sg, layers, logits, g, record_spikes, method, tau)
    schedule.run(u, tau, T)
    out = "srp__logits_seq"
    g.nodes.append(Node("Concat", u.step_logits, [out], {"axis": 0}, name="srp_unroll__logits"))
    g.outputs = [ValueInfo(out, None)]
    names = []
    if record_spikes:
        for k, c in enumerate(u.counts):
            name = f"srp__layer{k}__spike_count"
            g.nodes.append(Node("Sum", c, [name], name=f"srp__layer{k}__count"))
            g.outputs.append(ValueInfo(name, None))
            names.append(name)
    g.prune()
    return g, out, names
