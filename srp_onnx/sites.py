"""Find the neuron sites: the activations that become integrate-and-fire layers.

A site is a chain of *scalar elementwise* nodes (unary Relu/Floor/Ceil/
Round/Neg/Clip with constant bounds, or Add/Sub/Mul/Div/Min/Max with one
scalar constant operand) that contains at least one nonlinear node. Rather
than matching each exporter's spelling, the chain is evaluated as a scalar
function f: R -> R on a grid and classified:

1. ``relu``: f(x) = max(x, 0); theta comes from calibration data.
2. ``clip``: f(x) = clip(x, 0, c) (Clip(0, c), ReLU6, Min/Max pairs); theta = c.
3. ``qcfs``: f(x) = lam * clip(floor(x * L / lam + 0.5) / L, 0, 1) for an
   integer L; theta = lam = f(+inf). f(+inf) is computed with the graph's own
   float32 ops, so lam is recovered bit-exactly.

Leading or trailing scalar ops that do not belong to the activation (a bias
Add before a Relu, say) are tried off the ends of the chain, longest chain
first. A residual Add followed by an activation is simply a site whose
input is the Add's output.

Everything else that carries activations must be linear (see
``check_linear``); anything without a spiking equivalent is refused with
the node named.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np

from srp_onnx.errors import ModelError, UnsupportedNodeError, safe
from srp_onnx.graph import Graph, Node

UNARY = {"Relu", "Floor", "Ceil", "Round", "Neg", "Clip"}
BINARY = {"Add", "Sub", "Mul", "Div", "Min", "Max"}
NONLINEAR = {"Relu", "Floor", "Ceil", "Round", "Clip", "Min", "Max"}

# Ops that are linear in their (single) activation input, or route values.
LINEAR = {
    "Conv", "ConvTranspose", "Gemm", "MatMul", "AveragePool", "GlobalAveragePool", "Pad", "Reshape",
    "Flatten", "Transpose", "Concat", "Squeeze", "Unsqueeze", "Slice", "Split", "Gather", "Identity",
    "Dropout", "BatchNormalization", "ReduceMean", "ReduceSum", "Cast", "Expand", "Tile", "Sum",
    "Add", "Sub", "Mul", "Div", "Neg", "DepthToSpace", "SpaceToDepth",
    "GatherND", "Where",  # with constant indices / condition: they only route values (dynamo's adaptive pool)
}
# Inputs (by position) that must not carry activations: weights, indices, shapes.
_STATIC_SLOTS = {
    "Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (1,), "Gather": (1,),
    "Reshape": (1,), "Pad": (1, 2), "Slice": (1, 2, 3, 4), "Expand": (1,), "Tile": (1,),
    "Squeeze": (1,), "Unsqueeze": (1,), "Split": (1,), "ReduceMean": (1,), "ReduceSum": (1,),
    "Mul": (), "Div": (1,), "GatherND": (1,), "Where": (0,),
}
_SHAPE_OPS = {"Shape", "Size"}  # outputs describe shapes, not activations


@dataclasses.dataclass
class Site:
    """One neuron layer. ``input``/``output`` are tensor names of the source graph."""

    name: str
    input: str
    output: str
    kind: str  # "qcfs" | "clip" | "relu"
    theta: float | None
    nodes: list[str]
    levels: int | None = None  # L for qcfs
    source: str = ""  # where theta came from
    shape: tuple[int, ...] | None = None  # per-sample shape (no batch dim)
    per_channel: list[float] | None = None

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape) if self.shape else None
        return d


def _scalar(graph: Graph, name: str) -> float | None:
    if not name or not graph.is_const(name):
        return None
    v = graph.consts[name]
    return float(v.reshape(-1)[0]) if v.size == 1 and v.dtype.kind == "f" else None


def _dynamic_input(graph: Graph, node: Node) -> int | None:
    """Index of the one non-constant input of a scalar-elementwise node, else None."""
    if node.op in UNARY:
        if node.op == "Clip" and not all(not i or _scalar(graph, i) is not None for i in node.inputs[1:]):
            return None
        return 0 if node.inputs and not graph.is_const(node.inputs[0]) else None
    if node.op in BINARY:
        dyn = [k for k, i in enumerate(node.inputs) if i and not graph.is_const(i)]
        consts = [i for k, i in enumerate(node.inputs) if i and graph.is_const(i)]
        if len(dyn) == 1 and consts and all(_scalar(graph, c) is not None for c in consts):
            return dyn[0]
    return None


def _apply(graph: Graph, node: Node, v: np.ndarray) -> np.ndarray:
    """Evaluate one scalar-elementwise node on float32 values (the graph's own arithmetic)."""
    op, f32 = node.op, np.float32
    if op == "Relu":
        return np.maximum(v, f32(0))
    if op == "Floor":
        return np.floor(v)
    if op == "Ceil":
        return np.ceil(v)
    if op == "Round":
        return np.round(v)
    if op == "Neg":
        return -v
    if op == "Clip":
        lo = _scalar(graph, node.inputs[1]) if len(node.inputs) > 1 else node.attr("min")
        hi = _scalar(graph, node.inputs[2]) if len(node.inputs) > 2 else node.attr("max")
        if lo is not None:
            v = np.maximum(v, f32(lo))
        if hi is not None:
            v = np.minimum(v, f32(hi))
        return v
    args = [v if (i and not graph.is_const(i)) else f32(_scalar(graph, i)) for i in node.inputs if i]
    with np.errstate(all="ignore"):
        if op == "Add":
            return (args[0] + args[1]).astype(f32)
        if op == "Sub":
            return (args[0] - args[1]).astype(f32)
        if op == "Mul":
            return (args[0] * args[1]).astype(f32)
        if op == "Div":
            return (args[0] / args[1]).astype(f32)
        if op == "Min":
            return np.minimum.reduce([np.broadcast_to(a, v.shape) for a in args]).astype(f32)
        if op == "Max":
            return np.maximum.reduce([np.broadcast_to(a, v.shape) for a in args]).astype(f32)
    raise AssertionError(op)


def _evaluate(graph: Graph, chain: list[Node], x: np.ndarray) -> np.ndarray:
    v = x.astype(np.float32)
    for node in chain:
        v = _apply(graph, node, v)
    return v


@dataclasses.dataclass
class _Kind:
    kind: str
    theta: float | None
    levels: int | None = None


def classify(graph: Graph, chain: list[Node]) -> _Kind | None:
    """Which activation does this chain compute? None when none of ours."""
    big = np.array([-1e20, 1e20], dtype=np.float32)
    lo_v, hi_v = _evaluate(graph, chain, big)
    if not np.isfinite(lo_v) or lo_v != 0:
        return None
    if not np.isfinite(hi_v) or hi_v > 1e15:  # unbounded: ReLU?
        xs = np.concatenate([np.linspace(-100, 100, 4001), np.array([-1e-3, 0, 1e-3, 1e4])]).astype(np.float32)
        return _Kind("relu", None) if np.allclose(_evaluate(graph, chain, xs), np.maximum(xs, 0), rtol=1e-6,
                                                  atol=1e-6) else None
    c = float(hi_v)
    if c <= 0:
        return None
    xs = np.linspace(-0.5 * c, 1.5 * c, 40001, dtype=np.float64)
    ys = _evaluate(graph, chain, xs.astype(np.float32)).astype(np.float64)
    if np.allclose(ys, np.clip(xs, 0, c), rtol=1e-5, atol=1e-6 * c):
        return _Kind("clip", c)
    levels = np.unique(ys)
    L = len(levels) - 1
    if L < 1 or L > 4096:
        return None
    expected = c * np.clip(np.floor(xs * L / c + 0.5) / L, 0, 1)
    z = xs * L / c + 0.5
    near_jump = np.abs(z - np.round(z)) < 1e-4
    ok = np.isclose(ys, expected, rtol=1e-5, atol=1e-6 * c) | near_jump
    return _Kind("qcfs", c, L) if ok.all() else None


def _chains(graph: Graph) -> list[list[Node]]:
    producers, users = graph.producers(), graph.consumers()
    outputs = set(graph.output_names())
    taken: set[int] = set()
    chains = []
    for node in graph.nodes:
        if id(node) in taken or node.op not in NONLINEAR or _dynamic_input(graph, node) is None:
            continue
        chain = [node]
        cur = node
        while True:  # upstream
            src = cur.inputs[_dynamic_input(graph, cur)]
            p = producers.get(src)
            if (p is None or id(p) in taken or _dynamic_input(graph, p) is None or src in outputs
                    or len(users.get(src, [])) != 1):
                break
            chain.insert(0, p)
            cur = p
        cur = node
        while True:  # downstream
            out = cur.outputs[0]
            nxt = users.get(out, [])
            if out in outputs or len(nxt) != 1 or id(nxt[0]) in taken or _dynamic_input(graph, nxt[0]) is None:
                break
            if nxt[0].inputs[_dynamic_input(graph, nxt[0])] != out:
                break
            chain.append(nxt[0])
            cur = nxt[0]
        taken.update(id(n) for n in chain)
        chains.append(chain)
    return chains


def _describe_chain(chain: list[Node]) -> str:
    return " -> ".join(f"{n.name} ({n.op})" for n in chain)


def _refuse(error: UnsupportedNodeError, problems: list[UnsupportedNodeError] | None) -> None:
    """Raise, or collect when the caller wants every problem at once (``inspect``)."""
    if problems is None:
        raise error
    problems.append(error)


def find_sites(graph: Graph, problems: list[UnsupportedNodeError] | None = None) -> list[Site]:
    """Find and classify every activation chain; refuse chains that are no known activation."""
    sites: list[Site] = []
    for chain in _chains(graph):
        nl = [k for k, n in enumerate(chain) if n.op in NONLINEAR]
        first, last = nl[0], nl[-1]
        candidates = sorted(
            ((i, j) for i in range(first + 1) for j in range(last + 1, len(chain) + 1)),
            key=lambda ij: -(ij[1] - ij[0]),
        )
        for i, j in candidates:
            sub = chain[i:j]
            kind = classify(graph, sub)
            if kind is None:
                continue
            x = sub[0].inputs[_dynamic_input(graph, sub[0])]
            y = sub[-1].outputs[0]
            sites.append(Site(y, x, y, kind.kind, kind.theta, [n.name for n in sub], kind.levels,
                              source={"qcfs": "QCFS lambda", "clip": "Clip upper bound", "relu": ""}[kind.kind]))
            break
        else:
            _refuse(UnsupportedNodeError(
                f"{chain[first].describe()}: the elementwise chain {_describe_chain(chain)} computes neither "
                "ReLU, Clip(0, c) nor a QCFS staircase c*clip(floor(x*L/c+0.5)/L, 0, 1), so it has no "
                "integrate-and-fire equivalent. Replace it by one of these activations and re-export.",
                nodes=tuple(n.name for n in chain)), problems)
    return sites


def activation_tensors(graph: Graph) -> set[str]:
    """Tensors that carry activations (depend on the graph input through non-shape ops)."""
    carrying = set(graph.input_names())
    for node in graph.nodes:
        if node.op in _SHAPE_OPS:
            continue
        if any(i in carrying for i in node.inputs if i):
            carrying.update(o for o in node.outputs if o)
    return carrying


SUPPORTED_TEXT = ("Conv, ConvTranspose, Gemm, MatMul, Add/Sub/Mul/Div/Neg by constants, residual Add/Sum, "
                  "AveragePool, GlobalAveragePool, ReduceMean, ReduceSum, Pad, Reshape, Flatten, Transpose, "
                  "Concat, Split, Squeeze, Unsqueeze, Slice, Gather, GatherND, Where (constant condition), Expand, "
                  "Tile, DepthToSpace, SpaceToDepth, Cast, BatchNormalization, Identity, Dropout, and the "
                  "activations ReLU, Clip(0, c), QCFS")


def check_linear(graph: Graph, sites: list[Site], problems: list[UnsupportedNodeError] | None = None,
                 exempt: set[str] | None = None, maxpool: str = "error") -> None:
    """Every activation-carrying node outside the sites (and ``exempt``) must pass spikes through linearly."""
    in_site = {n for s in sites for n in s.nodes} | (exempt or set())
    in_site |= {n for p in problems or () for n in p.nodes}  # a refused chain is reported once
    carrying = activation_tensors(graph)
    for node in graph.nodes:
        if node.name in in_site or not any(i in carrying for i in node.inputs if i):
            continue
        if node.op in _SHAPE_OPS:
            continue
        if node.op in ("MaxPool", "GlobalMaxPool") and maxpool == "gate":
            _refuse(UnsupportedNodeError(
                f"{node.describe()}: the max-pool gate applies to a MaxPool that reads a neuron layer's output "
                f"(or one followed directly by the activation); this one reads '{node.inputs[0]}'. Use the "
                "'avg' max-pool mode (average pooling; this changes the network), or retrain with AvgPool.",
                param="maxpool", value=maxpool, suggest=("avg",)), problems)
            continue
        if node.op in ("MaxPool", "GlobalMaxPool"):
            _refuse(UnsupportedNodeError(
                f"{node.describe()}: max pooling of spike trains is not rate-equivalent to max pooling "
                "of activations (the max of rates is not the rate of the max). Retrain with AvgPool, or choose "
                "the max-pool mode 'gate' (a spiking max pool, where it follows a neuron layer) or 'avg' "
                "(average pooling; this changes the network).", param="maxpool", value=maxpool,
                suggest=("gate", "avg")), problems)
            continue
        if node.op not in LINEAR or node.domain not in ("", "ai.onnx"):
            _refuse(UnsupportedNodeError(
                f"{node.describe()}: has no spiking equivalent between neuron layers. "
                f"Supported: {SUPPORTED_TEXT}. Replace it and re-export."
            ), problems)
            continue
        carried = [k for k, i in enumerate(node.inputs) if i in carrying]
        static_slots = _STATIC_SLOTS.get(node.op, ())
        if node.op in ("Mul", "Div", "MatMul", "Gemm", "Conv", "ConvTranspose") and len(carried) > 1:
            _refuse(UnsupportedNodeError(
                f"{node.describe()}: multiplies two activation tensors {[node.inputs[k] for k in carried]}; "
                "a product of spike trains is not the product of their rates. Only products with "
                "constant weights can be converted."
            ), problems)
            continue
        bad = [k for k in carried if k in static_slots]
        if bad:
            _refuse(UnsupportedNodeError(
                f"{node.describe()}: input '{node.inputs[bad[0]]}' (position {bad[0]}) depends on the "
                "network input, where a constant is expected. Export with constant weights/shapes."
            ), problems)
            continue


def check_inputs(graph: Graph) -> None:
    """One data input; weights must be initializers."""
    weight_slots = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1, "BatchNormalization": 1}
    if len(graph.inputs) == 1:
        return
    names = set(graph.input_names())
    for node in graph.nodes:
        k = weight_slots.get(node.op)
        if k is not None and len(node.inputs) > k and node.inputs[k] in names:
            raise ModelError(
                f"{node.describe()}: weight '{node.inputs[k]}' is a graph input, not an initializer. "
                "Re-export with export_params=True (weights stored in the model)."
            )
    if not graph.inputs:
        raise ModelError("the graph has no input. Export the model with its image input.")
    raise ModelError(
        f"the graph has {len(graph.inputs)} inputs {graph.input_names()[:4]}; srp-onnx converts "
        "single-input classifiers. Export with one image input (and weights as initializers)."
    )


def sites_to_json(sites: list[Site]) -> str:
    return json.dumps([s.to_json() for s in sites])


def sites_from_json(text: str) -> list[Site]:
    """The layers recorded in a converted model's metadata; malformed records raise ModelError."""
    def bad(why: str) -> ModelError:
        return ModelError(f"its srp_onnx.layers metadata is malformed ({why}); re-convert the model.")

    if len(text) > MAX_LAYERS_JSON:
        raise bad(f"{len(text)} characters")
    try:
        records = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise bad("nested too deep" if isinstance(e, RecursionError) else f"not JSON: {safe(str(e)[:60])}") from None
    if not isinstance(records, list) or not records:
        raise bad("not a non-empty list of layers")
    out = []
    for i, d in enumerate(records):
        if not isinstance(d, dict):
            raise bad(f"entry {i} is not an object")
        known = {f.name for f in dataclasses.fields(Site)}
        if set(d) - known or not {"name", "input", "output", "kind", "theta", "nodes"} <= set(d):
            raise bad(f"entry {i} has keys {sorted(map(safe, d))[:8]}")
        if not all(isinstance(d[k], str) and d[k] for k in ("name", "input", "output")) \
                or d["kind"] not in ("qcfs", "clip", "relu") or not isinstance(d.get("source", ""), str) \
                or not isinstance(d["nodes"], list) or not all(isinstance(n, str) for n in d["nodes"]):
            raise bad(f"entry {i}: name, input, output, kind or nodes")
        if not _finite_positive(d["theta"]) or (d["kind"] == "qcfs" and not _whole(d.get("levels"), 1 << 20)):
            raise bad(f"entry {i}: theta {safe(d['theta'])!s:.20} or levels {safe(d.get('levels'))!s:.20}")
        shape = d.get("shape")
        if shape is not None and (not isinstance(shape, list) or len(shape) > 8
                                  or not all(_whole(v, 1 << 31) for v in shape)):
            raise bad(f"entry {i}: shape")
        pc = d.get("per_channel")
        if pc is not None and (not isinstance(pc, list) or not all(_finite_positive(v) for v in pc)):
            raise bad(f"entry {i}: per_channel")
        d["shape"] = tuple(shape) if shape else None
        d["theta"] = float(d["theta"])
        out.append(Site(**d))
    return out


MAX_LAYERS_JSON = 1 << 24  # 16 MB of layer records: far beyond any network's


def _finite_positive(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _whole(v: object, limit: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= limit
