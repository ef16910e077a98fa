"""ANN ONNX file -> SRP spiking step graph.

    load/validate -> normalize (passes/) -> find neuron sites + thresholds
    -> emit the step graph (neuron.py) -> check -> save atomically

What the written file holds (one IF node per neuron layer, its state as graph
inputs and outputs, the ``srp_onnx.*`` metadata) is stated in fileformat.py.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from srp_onnx import __version__, fileformat, ort
from srp_onnx.errors import ModelError, UnsupportedNodeError, UsageError
from srp_onnx.fileformat import IR_VERSION, META
from srp_onnx.graph import Graph, Node, ValueInfo, from_onnx, to_onnx
from srp_onnx.io import write_bytes
from srp_onnx.load import file_sha256, load_model
from srp_onnx.neuron import MAX_TAU, SRP, Method, emit_neuron, if_function, is_neuron
from srp_onnx.notes import Note, NoteKind
from srp_onnx.passes import PassContext, normalize
from srp_onnx.passes.batch import make_batch_dynamic
from srp_onnx.passes.maxpool import gate_maxpool
from srp_onnx.sites import Site, check_inputs, check_linear, find_sites

MAX_INPUT_ELEMENTS = 1 << 26  # 64 M values per sample (e.g. 3 x 4096 x 4096): beyond any classifier input


@dataclasses.dataclass
class ConvertOptions:
    tau: int = 4
    maxpool: str = "error"  # "error" | "avg" | "gate"
    percentile: float = 99.99
    calib_rule: str = "percentile"  # "percentile" | "max"
    per_channel: bool = False
    method: Method = SRP  # the neuron rule at the end of the pre-simulation (neuron.RULES)

    def validate(self) -> None:
        if not 0 <= self.tau <= MAX_TAU:
            raise UsageError(f"the pre-simulation length must be 0 to {MAX_TAU} (paper: 4 to 14).", param="tau",
                             value=self.tau)
        if not 0 < self.percentile <= 100:
            raise UsageError("the percentile must be in (0, 100], e.g. 99.99.", param="percentile",
                             value=self.percentile)
        if self.maxpool not in ("error", "avg", "gate"):
            raise UsageError("choose 'error', 'gate' or 'avg'.", param="maxpool", value=self.maxpool)
        if self.calib_rule not in ("percentile", "max"):
            raise UsageError("choose 'percentile' or 'max'.", param="calib_rule", value=self.calib_rule)


@dataclasses.dataclass
class Plan:
    """A normalized ANN with its neuron sites found (thresholds may still be missing)."""

    graph: Graph
    sites: list[Site]
    notes: list[Note]
    input: ValueInfo
    logits: str
    source_sha256: str
    source: str
    logits_shape: tuple[int, ...] | None = None  # per sample, set by probe_shapes
    problems: list[UnsupportedNodeError] = dataclasses.field(default_factory=list)  # collect=True only

    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.input.shape[1:])  # type: ignore[union-attr, arg-type]

    def ann_model(self, extra_outputs: list[str] = ()) -> onnx.ModelProto:
        """The normalized ANN as an ONNX model (optionally exposing inner tensors)."""
        g = copy.deepcopy(self.graph)
        g.outputs = [ValueInfo(self.logits, None)] + [ValueInfo(n, None) for n in extra_outputs]
        return to_onnx(g, ir_version=IR_VERSION)


def load_normalized(path: str | os.PathLike[str], ctx: PassContext) -> Graph:
    """The ANN at ``path`` checked and normalized (passes/): heads dropped, BN folded, batch dynamic."""
    graph = from_onnx(load_model(path))
    for name, value in graph.consts.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ModelError(f"'{path}': tensor '{name}' holds NaN or Inf values. The weights are broken; "
                             "re-export from a healthy checkpoint.")
    check_inputs(graph)
    normalize(graph, ctx)
    make_batch_dynamic(graph, ctx)
    return graph


def plan(path: str | os.PathLike[str], options: ConvertOptions | None = None, *, collect: bool = False) -> Plan:
    """Load, normalize and find the sites; no calibration, nothing written.

    With ``collect``, unsupported nodes are gathered in ``Plan.problems`` instead of raised
    (``inspect`` shows them all at once).
    """
    options = options or ConvertOptions()
    options.validate()
    ctx = PassContext(maxpool=options.maxpool)
    graph = load_normalized(path, ctx)
    inp = graph.inputs[0]
    if inp.elem_type != onnx.TensorProto.FLOAT:
        kind = {v: k for k, v in onnx.TensorProto.DataType.items()}.get(inp.elem_type, f"#{inp.elem_type}")
        raise ModelError(f"input '{inp.name}' has element type {kind}; "
                         "srp-onnx converts float32 models. Export the model in float32.")
    if not inp.shape or any(not isinstance(d, int) for d in inp.shape[1:]):
        raise ModelError(f"input '{inp.name}' has shape {inp.shape}: every dimension but the batch must be "
                         "fixed. Export with a fixed input size.")
    problems: list[UnsupportedNodeError] | None = [] if collect else None
    sites = find_sites(graph, problems)
    gates = gate_maxpool(graph, sites, ctx) if options.maxpool == "gate" else set()
    check_linear(graph, sites, problems, exempt=gates, maxpool=options.maxpool)
    flow = [n for n in graph.nodes if n.op in ("If", "Loop", "Scan")]
    if not sites and not problems and flow:  # the network hides in subgraphs, which are not converted
        raise UnsupportedNodeError(f"{flow[0].describe()}: control flow ({flow[0].op}) is not converted; its "
                                   "branches are subgraphs. Export the network without it (trace it with a fixed "
                                   "input, or remove the branch).", nodes=(flow[0].name,))
    if not sites and not problems:
        raise ModelError(f"'{path}': no activation (ReLU, Clip, QCFS) found between linear layers; "
                         "there is nothing to turn into spiking neurons.")
    logits = graph.outputs[0].name
    if any(s.output == logits for s in sites):
        ctx.note(NoteKind.ENDS_WITH_ACTIVATION,
                 f"the network ends with an activation: '{logits}' is a neuron layer's output")
    return Plan(graph, sites, ctx.notes, inp, logits, file_sha256(path), str(path), problems=problems or [])


def _batch_shape(dims) -> tuple[int, ...] | None:
    """Per-sample shape from an inferred (symbolic batch, fixed ...) shape; None when not that."""
    if not dims or isinstance(dims[0], int) or not all(isinstance(d, int) and d > 0 for d in dims[1:]):
        return None
    return tuple(int(d) for d in dims[1:])


def inferred_shapes(p: Plan) -> bool:
    """Set the sites' and the logits' per-sample shapes that ONNX shape inference found; True if all were."""
    inferred = [_batch_shape(p.graph.shapes.get(t)) for t in [p.logits, *(s.input for s in p.sites)]]
    if inferred[0] is not None:
        p.logits_shape = inferred[0]
    for s, d in zip(p.sites, inferred[1:]):
        if d is not None:
            s.shape = d
    return all(d is not None for d in inferred)


def probe_shapes(p: Plan) -> None:
    """Per-sample shape of every site, from onnxruntime runs at batch 1 and 2."""
    n_in = int(np.prod(p.input_shape(), dtype=np.int64))
    if any(d <= 0 for d in p.input_shape()) or n_in > MAX_INPUT_ELEMENTS:
        raise ModelError(f"'{p.source}': input '{p.input.name}' declares shape {list(p.input_shape())} per "
                         "sample; refused (every dimension must be positive and a sample at most "
                         f"{MAX_INPUT_ELEMENTS} values). Export with the real input size.")
    rng = np.random.default_rng(0)
    shapes = []
    try:
        # Creating the session checks every node's types and shapes; running it is the slow part, so
        # it is skipped where ONNX shape inference already gave every site a (batch, fixed...) shape.
        sess = ort.cpu_session(p.ann_model([s.input for s in p.sites]),
                               level=ort.ort().GraphOptimizationLevel.ORT_DISABLE_ALL)
        if inferred_shapes(p):
            return
        for b in (1, 2):
            x = rng.standard_normal((b, *p.input_shape())).astype(np.float32)
            outs = sess.run(None, {p.input.name: x})
            shapes.append([o.shape for o in outs])
    except ort.errors() as e:
        fixed = any(n.kind is NoteKind.BATCH_MADE_DYNAMIC for n in p.notes)
        hint = ("It was exported with a fixed batch size that some node still assumes (a shape constant): "
                "re-export it with a dynamic batch (torch: dynamic_shapes or dynamic_axes)" if fixed else
                "The model is broken or uses features outside srp-onnx's reach")
        raise ModelError(f"'{p.source}': onnxruntime cannot run the normalized network at batch 1 and 2 "
                         f"({ort.message(e)}). {hint}.") from None
    p.logits_shape = tuple(int(d) for d in shapes[0][0][1:])
    for s, s1, s2 in zip(p.sites, shapes[0][1:], shapes[1][1:]):
        if s1[0] != 1 or s2[0] != 2 or s1[1:] != s2[1:]:
            raise ModelError(f"site '{s.name}': its tensor {s.input} does not keep the batch as its first "
                             f"dimension (shapes {s1} and {s2} at batch 1 and 2); cannot convert.")
        s.shape = tuple(int(d) for d in s1[1:])


def emit_step_graph(p: Plan, tau: int, method: Method = SRP) -> onnx.ModelProto:
    """The spiking step graph for a plan whose sites all have thresholds (fileformat.py says what it holds)."""
    g = copy.deepcopy(p.graph)
    drop = {n for s in p.sites for n in s.nodes}
    g.nodes = [n for n in g.nodes if n.name not in drop]
    g.outputs = [ValueInfo(p.logits, ("batch", *(p.logits_shape or ())))]
    g.shapes = {}
    for s in p.sites:
        if s.theta is None:
            raise ModelError(f"site '{s.name}' ({s.kind}) has no threshold; it needs calibration data.")
        theta = np.asarray(s.per_channel if s.per_channel else s.theta, dtype=np.float32)
        if theta.ndim == 1 and s.shape and len(s.shape) > 1:
            theta = theta.reshape(-1, *([1] * (len(s.shape) - 1)))
        emit_neuron(g, s.name, s.input, s.output, theta, s.shape or ())
    g.toposort()
    g.metadata = {k: v for k, v in g.metadata.items() if not k.startswith(META)}
    g.metadata.update(p.graph.metadata)
    g.metadata.update(fileformat.file_metadata(
        version=__version__, tau=tau, sites=p.sites, input=p.input.name, logits=p.logits,
        source=os.fsencode(Path(p.source).name).decode("utf-8", "replace"),  # a non-UTF-8 name too
        source_sha256=p.source_sha256, notes=p.notes, method=method))
    model = to_onnx(g, ir_version=IR_VERSION, functions=[if_function(g.opset)])
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # an internal error: the emitted graph must always check
        raise RuntimeError(f"internal error: the spiking graph fails onnx.checker: {e}") from e
    return model


def convert(path: str | os.PathLike[str], options: ConvertOptions | None = None,
            calib: Callable[[Plan], None] | None = None) -> tuple[onnx.ModelProto, Plan]:
    """Convert the ANN at ``path``; ``calib`` sets thresholds of ReLU sites (see calibrate.py)."""
    options = options or ConvertOptions()
    p = plan(path, options)
    probe_shapes(p)
    if any(s.theta is None for s in p.sites):
        if calib is None:
            names = ", ".join(f"'{s.name}'" for s in p.sites if s.theta is None)
            raise UsageError(f"'{path}': ReLU layers {names} have no upper bound to use as threshold. "
                             "Give calibration data (an .npz, a dataset folder, mnist, digits).", param="calib")
        calib(p)
    return emit_step_graph(p, options.tau, options.method), p


def save_model(model: onnx.ModelProto, path: str | os.PathLike[str]) -> None:
    write_bytes(path, model.SerializeToString())


__all__ = [
    "ConvertOptions",
    "Plan",
    "convert",
    "emit_step_graph",
    "plan",
    "probe_shapes",
    "save_model",
]


def ann_from_snn(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rebuild the ANN a spiking step graph came from (after normalization).

    Each neuron layer (its IF node, found by op type) becomes its activation again: QCFS
    (theta, L) as theta * clip(floor(x / theta * L + 0.5) / L, 0, 1), Clip as clip(x, 0, theta),
    ReLU as max(x, 0). The state inputs and outputs go with the IF nodes.
    """
    sf = fileformat.read(model)
    g = from_onnx(model)
    g.nodes = [n for n in g.nodes if not is_neuron(n)]
    state = {v for layer in sf.layers for v in (layer.state.v, layer.state.mask, layer.state.v_next)}
    g.inputs = [i for i in g.inputs if i.name not in state]
    g.outputs = [o for o in g.outputs if o.name not in state]
    f32 = np.float32
    for s in sf.sites:
        x, y = s.input, s.output
        tag = g.fresh_name(f"{s.name}__ann")
        if s.kind == "relu":
            g.nodes.append(Node("Relu", [x], [y], name=f"{tag}_relu"))
            continue
        t = g.add_const(f"{tag}_theta", np.array(s.theta, f32))
        zero = g.add_const(f"{tag}_zero", np.array(0, f32))
        if s.kind == "clip":
            g.nodes.append(Node("Clip", [x, zero, t], [y], name=f"{tag}_clip"))
            continue
        lv = g.add_const(f"{tag}_L", np.array(s.levels, f32))
        half = g.add_const(f"{tag}_half", np.array(0.5, f32))
        one = g.add_const(f"{tag}_one", np.array(1, f32))
        a, b, c, d, e, f = (g.fresh_name(f"{tag}_{k}") for k in "abcdef")
        g.nodes += [
            Node("Div", [x, t], [a], name=f"{tag}_div"),
            Node("Mul", [a, lv], [b], name=f"{tag}_mul"),
            Node("Add", [b, half], [c], name=f"{tag}_add"),
            Node("Floor", [c], [d], name=f"{tag}_floor"),
            Node("Div", [d, lv], [e], name=f"{tag}_divl"),
            Node("Clip", [e, zero, one], [f], name=f"{tag}_clip01"),
            Node("Mul", [f, t], [y], name=f"{tag}_out"),
        ]
    g.toposort()
    g.prune()
    return to_onnx(g, ir_version=IR_VERSION)
