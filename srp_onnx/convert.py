"""ANN ONNX file -> SRP spiking step graph.

    load/validate -> normalize (passes/) -> find neuron sites + thresholds
    -> emit the step graph (neuron.py) -> check -> save atomically

The step graph's inputs are the network input and, per neuron layer, its
membrane ``{site}__v`` and SRP mask ``{site}__mask``; its outputs are this
step's logits and every ``{site}__v_next``. The runtime loops it over
tau + T steps. Metadata (``srp_onnx.*``) records the format version, the
default tau, the layers with their thresholds, the source model's sha256
and the preprocessing when known.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from srp_onnx import __version__
from srp_onnx.errors import ModelError, UnsupportedNodeError, UsageError, quote
from srp_onnx.graph import Graph, Node, ValueInfo, from_onnx, to_onnx
from srp_onnx.io import write_bytes
from srp_onnx.load import file_sha256, load_model
from srp_onnx.neuron import MAX_TAU, emit_neuron, state_names
from srp_onnx.passes import PassContext, normalize
from srp_onnx.passes.batch import make_batch_dynamic
from srp_onnx.passes.maxpool import gate_maxpool
from srp_onnx.sites import Site, check_inputs, check_linear, find_sites, sites_from_json, sites_to_json

FORMAT_VERSION = "1"
IR_VERSION = 10  # onnxruntime 1.31 reads at most 13; onnx 1.23 writes 14 unless told
META = "srp_onnx."
MAX_INPUT_ELEMENTS = 1 << 26  # 64 M values per sample (e.g. 3 x 4096 x 4096): beyond any classifier input


@dataclasses.dataclass
class ConvertOptions:
    tau: int = 4
    maxpool: str = "error"  # "error" | "avg" | "gate"
    percentile: float = 99.99
    calib_rule: str = "percentile"  # "percentile" | "max"
    per_channel: bool = False

    def validate(self) -> None:
        if not 0 <= self.tau <= MAX_TAU:
            raise UsageError(f"--tau {self.tau}: the pre-simulation length must be 0 to {MAX_TAU} (paper: 4 to 14).")
        if not 0 < self.percentile <= 100:
            raise UsageError(f"--percentile {self.percentile}: must be in (0, 100], e.g. 99.99.")
        if self.maxpool not in ("error", "avg", "gate"):
            raise UsageError(f"--maxpool {self.maxpool}: choose 'error', 'gate' or 'avg'.")
        if self.calib_rule not in ("percentile", "max"):
            raise UsageError(f"--calib-rule {self.calib_rule}: choose 'percentile' or 'max'.")


@dataclasses.dataclass
class Plan:
    """A normalized ANN with its neuron sites found (thresholds may still be missing)."""

    graph: Graph
    sites: list[Site]
    notes: list[str]
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
    if not sites and not problems:
        raise ModelError(f"'{path}': no activation (ReLU, Clip, QCFS) found between linear layers; "
                         "there is nothing to turn into spiking neurons.")
    logits = graph.outputs[0].name
    if any(s.output == logits for s in sites):
        ctx.note(f"the network ends with an activation: '{logits}' is a neuron layer's output")
    return Plan(graph, sites, ctx.notes, inp, logits, file_sha256(path), str(path), problems=problems or [])


def ort_message(e: BaseException, limit: int = 160) -> str:
    """onnxruntime's message without its boilerplate, cut at a word boundary."""
    import re

    text = " ".join(str(e).split())
    node = re.search(r"running (\w+) node\. Name:'([^']*)'", text)
    for marker in ("Status Message: ", "] : "):
        if marker in text:
            text = text.split(marker, 1)[1]
            break
    text = re.sub(r"/\S+\.(h|cc|cpp):\d+ \S+?\(.*?\)\s*", "", text)  # the C++ source location
    text = re.sub(r"^.*? was false\.\s*", "", text)  # the failed check as C++ code
    text = text.rstrip(". ")
    if node:
        text = f"node '{node.group(2)}' ({node.group(1)}): {text}"
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " ..."
    return text


def ort_errors() -> tuple[type[BaseException], ...]:
    """onnxruntime's exception classes (they derive from Exception directly)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as st

    names = ("Fail", "InvalidGraph", "InvalidArgument", "NoSuchFile", "NotImplemented", "RuntimeException",
             "InvalidProtobuf", "ModelLoaded", "EPFail")
    return tuple(getattr(st, n) for n in names if hasattr(st, n))


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
    from srp_onnx.runtime import cpu_session

    n_in = int(np.prod(p.input_shape(), dtype=np.int64))
    if any(d <= 0 for d in p.input_shape()) or n_in > MAX_INPUT_ELEMENTS:
        raise ModelError(f"'{p.source}': input '{p.input.name}' declares shape {list(p.input_shape())} per "
                         "sample; refused (every dimension must be positive and a sample at most "
                         f"{MAX_INPUT_ELEMENTS} values). Export with the real input size.")
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    shapes = []
    try:
        # Creating the session checks every node's types and shapes; running it is the slow part, so
        # it is skipped where ONNX shape inference already gave every site a (batch, fixed...) shape.
        sess = cpu_session(p.ann_model([s.input for s in p.sites]), level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        if inferred_shapes(p):
            return
        for b in (1, 2):
            x = rng.standard_normal((b, *p.input_shape())).astype(np.float32)
            outs = sess.run(None, {p.input.name: x})
            shapes.append([o.shape for o in outs])
    except ort_errors() as e:
        fixed = any("had a fixed batch size" in n for n in p.notes)
        hint = ("It was exported with a fixed batch size that some node still assumes (a shape constant): "
                "re-export it with a dynamic batch (torch: dynamic_shapes or dynamic_axes)" if fixed else
                "The model is broken or uses features outside srp-onnx's reach")
        raise ModelError(f"'{p.source}': onnxruntime cannot run the normalized network at batch 1 and 2 "
                         f"({ort_message(e)}). {hint}.") from None
    p.logits_shape = tuple(int(d) for d in shapes[0][0][1:])
    for s, s1, s2 in zip(p.sites, shapes[0][1:], shapes[1][1:]):
        if s1[0] != 1 or s2[0] != 2 or s1[1:] != s2[1:]:
            raise ModelError(f"site '{s.name}': its tensor {s.input} does not keep the batch as its first "
                             f"dimension (shapes {s1} and {s2} at batch 1 and 2); cannot convert.")
        s.shape = tuple(int(d) for d in s1[1:])


def emit_step_graph(p: Plan, tau: int) -> onnx.ModelProto:
    """The spiking step graph for a plan whose sites all have thresholds."""
    g = copy.deepcopy(p.graph)
    drop = {n for s in p.sites for n in s.nodes}
    g.nodes = [n for n in g.nodes if n.name not in drop]
    g.outputs = [ValueInfo(p.logits, ("batch", *(p.logits_shape or ())))]
    g.shapes = {}
    for s in p.sites:
        if s.theta is None:
            raise ModelError(f"site '{s.name}' ({s.kind}) has no threshold; calibrate it with --calib DATA.")
        theta = np.asarray(s.per_channel if s.per_channel else s.theta, dtype=np.float32)
        if theta.ndim == 1 and s.shape and len(s.shape) > 1:
            theta = theta.reshape(-1, *([1] * (len(s.shape) - 1)))
        emit_neuron(g, s.name, s.input, s.output, theta, s.shape or ())
    g.toposort()
    g.metadata = {k: v for k, v in g.metadata.items() if not k.startswith(META)}
    g.metadata.update(p.graph.metadata)
    g.metadata.update({
        f"{META}format_version": FORMAT_VERSION,
        f"{META}version": __version__,
        f"{META}tau": str(tau),
        f"{META}layers": sites_to_json(p.sites),
        f"{META}input": p.input.name,
        f"{META}logits": p.logits,
        f"{META}source_sha256": p.source_sha256,
        f"{META}source": os.fsencode(Path(p.source).name).decode("utf-8", "replace"),  # a non-UTF-8 name too
        f"{META}notes": json.dumps(p.notes),
    })
    model = to_onnx(g, ir_version=IR_VERSION)
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
                             "Give calibration data with --calib DATA (an .npz, a dataset folder, mnist, digits).")
        calib(p)
    return emit_step_graph(p, options.tau), p


def save_model(model: onnx.ModelProto, path: str | os.PathLike[str]) -> None:
    write_bytes(path, model.SerializeToString())


def read_layers(model: onnx.ModelProto) -> list[Site]:
    meta = {m.key: m.value for m in model.metadata_props}
    if f"{META}layers" not in meta:
        raise ModelError("this model has no srp_onnx metadata: it is not a converted spiking model. "
                         "Convert it first with `srp-onnx convert`.")
    return sites_from_json(meta[f"{META}layers"])


def read_tau(model: onnx.ModelProto, default: int = 0) -> int:
    """The default tau a converted model records (bounded by neuron.MAX_TAU); ModelError if malformed."""
    value = next((m.value for m in model.metadata_props if m.key == f"{META}tau"), None)
    if value is None:
        return default
    if not (value.isascii() and value.isdigit() and len(value) <= 6 and int(value) <= MAX_TAU):
        raise ModelError(f"its srp_onnx.tau metadata is {quote(value[:40])}, not a whole number from 0 to {MAX_TAU}; "
                         "re-convert the model with a valid --tau.")
    return int(value)


def check_spiking(model: onnx.ModelProto, where: str | os.PathLike[str]) -> None:
    """Validate a converted model's metadata before it is used; ModelError naming ``where`` if malformed."""
    try:
        read_layers(model)
        read_tau(model)
        meta = {m.key: m.value for m in model.metadata_props}
        inputs = {i.name for i in model.graph.input}
        outputs = {o.name for o in model.graph.output}
        if meta.get(f"{META}input") not in inputs or meta.get(f"{META}logits") not in outputs:
            raise ModelError("its srp_onnx.input/srp_onnx.logits metadata do not name the graph's input and "
                             "output; re-convert the model.")
        notes = meta.get(f"{META}notes", "[]")
        try:
            ok = len(notes) < 1 << 20 and isinstance(parsed := json.loads(notes), list) \
                and all(isinstance(n, str) for n in parsed)
        except (ValueError, RecursionError):
            ok = False
        if not ok:
            raise ModelError("its srp_onnx.notes metadata is not a list of strings; re-convert the model.")
    except ModelError as e:
        raise ModelError(f"{quote(where)}: {e}") from None


def set_default_tau(model: onnx.ModelProto, tau: int) -> None:
    for m in model.metadata_props:
        if m.key == f"{META}tau":
            m.value = str(tau)


def is_spiking(model: onnx.ModelProto) -> bool:
    return any(m.key == f"{META}layers" for m in model.metadata_props)


__all__ = [
    "ConvertOptions",
    "Plan",
    "convert",
    "emit_step_graph",
    "is_spiking",
    "plan",
    "probe_shapes",
    "read_layers",
    "read_tau",
    "check_spiking",
    "save_model",
]


def ann_from_snn(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rebuild the ANN a spiking step graph came from (after normalization).

    Each neuron layer becomes its activation again: QCFS (theta, L) as
    theta * clip(floor(x / theta * L + 0.5) / L, 0, 1), Clip as clip(x, 0, theta),
    ReLU as max(x, 0). State inputs and outputs are removed.
    """
    layers = read_layers(model)
    g = from_onnx(model)
    names = {s.name for s in layers}
    prefixes = tuple(f"{n}__" for n in names)
    g.nodes = [n for n in g.nodes if not (n.name.startswith(prefixes) and n.name.split("__")[0] in names)]
    state = {v for s in layers for k, v in state_names(s.name).items()}
    g.inputs = [i for i in g.inputs if i.name not in state]
    g.outputs = [o for o in g.outputs if o.name not in state]
    f32 = np.float32
    for s in layers:
        x, y = s.input, s.output
        if s.kind == "relu":
            g.nodes.append(Node("Relu", [x], [y], name=f"{s.name}__ann_relu"))
            continue
        t = g.add_const(f"{s.name}__ann_theta", np.array(s.theta, f32))
        zero = g.add_const(f"{s.name}__ann_zero", np.array(0, f32))
        if s.kind == "clip":
            g.nodes.append(Node("Clip", [x, zero, t], [y], name=f"{s.name}__ann_clip"))
            continue
        lv = g.add_const(f"{s.name}__ann_L", np.array(s.levels, f32))
        half = g.add_const(f"{s.name}__ann_half", np.array(0.5, f32))
        one = g.add_const(f"{s.name}__ann_one", np.array(1, f32))
        a, b, c, d, e, f = (g.fresh_name(f"{s.name}__ann_{k}") for k in "abcdef")
        g.nodes += [
            Node("Div", [x, t], [a], name=f"{s.name}__ann_div"),
            Node("Mul", [a, lv], [b], name=f"{s.name}__ann_mul"),
            Node("Add", [b, half], [c], name=f"{s.name}__ann_add"),
            Node("Floor", [c], [d], name=f"{s.name}__ann_floor"),
            Node("Div", [d, lv], [e], name=f"{s.name}__ann_divl"),
            Node("Clip", [e, zero, one], [f], name=f"{s.name}__ann_clip"),
            Node("Mul", [f, t], [y], name=f"{s.name}__ann_out"),
        ]
    g.toposort()
    g.prune()
    return to_onnx(g, ir_version=IR_VERSION)
