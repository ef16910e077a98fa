"""A small in-memory graph: nodes in topological order plus numpy constants.

Why not onnx-ir: the passes here need little more than "list of nodes,
dict of constant arrays", and the numpy reference simulator (the test
oracle) must read the same structure without importing onnx. A plain
dataclass graph that both can walk keeps the oracle independent of every
onnx code path except this file's import of the protobuf.

Conventions
- ``Node.inputs`` may contain ``""`` for an omitted optional input.
- ``Graph.consts`` holds initializers and folded ``Constant`` nodes.
- Attribute values are plain Python (int, float, str, lists) or numpy
  arrays (tensor attributes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from srp_onnx.errors import ModelError

Dim = int | str | None


@dataclasses.dataclass
class ValueInfo:
    name: str
    shape: tuple[Dim, ...] | None
    elem_type: int = onnx.TensorProto.FLOAT


@dataclasses.dataclass
class Node:
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)
    name: str = ""
    domain: str = ""

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def describe(self) -> str:
        out = next((o for o in self.outputs if o), None)
        if not self.name or out is None or out == self.name:
            return f"node '{self.name or out}' ({self.op})"
        return f"node '{self.name}' ({self.op} -> '{out}')"  # dynamo's node names are often just 'n0'


@dataclasses.dataclass
class Graph:
    nodes: list[Node]
    consts: dict[str, np.ndarray]
    inputs: list[ValueInfo]
    outputs: list[ValueInfo]
    opset: int = 17
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)
    name: str = "graph"
    shapes: dict[str, tuple[Dim, ...]] = dataclasses.field(default_factory=dict)  # from shape inference

    # -- queries -----------------------------------------------------------
    def producers(self) -> dict[str, Node]:
        return {out: n for n in self.nodes for out in n.outputs if out}

    def consumers(self) -> dict[str, list[Node]]:
        users: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    users.setdefault(i, []).append(n)
        return users

    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    def is_const(self, name: str) -> bool:
        return name in self.consts

    def rename_uses(self, old: str, new: str) -> None:
        """Make every consumer (and graph output) of ``old`` read ``new``."""
        for n in self.nodes:
            n.inputs = [new if i == old else i for i in n.inputs]
        for o in self.outputs:
            if o.name == old:
                o.name = new

    def prune(self) -> None:
        """Drop nodes and constants that no graph output depends on."""
        live = set(self.output_names())
        kept: list[Node] = []
        for n in reversed(self.nodes):
            if any(o in live for o in n.outputs):
                kept.append(n)
                live.update(i for i in n.inputs if i)
        self.nodes = kept[::-1]
        self.consts = {k: v for k, v in self.consts.items() if k in live}

    def toposort(self) -> None:
        ready = set(self.consts) | set(self.input_names()) | {""}
        pending = list(self.nodes)
        ordered: list[Node] = []
        while pending:
            rest = []
            for n in pending:
                if all(i in ready for i in n.inputs):
                    ordered.append(n)
                    ready.update(n.outputs)
                else:
                    rest.append(n)
            if len(rest) == len(pending):
                missing = sorted({i for n in rest for i in n.inputs if i not in ready})
                raise ModelError(
                    f"{rest[0].describe()}: inputs {missing[:3]} are produced by no node, "
                    "initializer or graph input. The graph is broken; re-export it."
                )
            pending = rest
        self.nodes = ordered

    def fresh_name(self, base: str) -> str:
        taken = self._names()
        name, k = base, 0
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        return name

    def _names(self) -> set[str]:
        cache = getattr(self, "_name_cache", None)
        if cache is None:
            cache = set(self.consts) | set(self.input_names()) | set(self.output_names())
            for n in self.nodes:
                cache.update(n.inputs)
                cache.update(n.outputs)
                cache.add(n.name)
            object.__setattr__(self, "_name_cache", cache)
        return cache

    def add_const(self, base: str, value: np.ndarray) -> str:
        name = self.fresh_name(base)
        self.consts[name] = value
        return name

    def walk(self, ops: Iterable[str]) -> Iterator[Node]:
        wanted = set(ops)
        return (n for n in list(self.nodes) if n.op in wanted)


# -- onnx <-> Graph ----------------------------------------------------------

def _dims(t: onnx.TypeProto) -> tuple[Dim, ...] | None:
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    out: list[Dim] = []
    for d in t.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return tuple(out)


def _value_info(v: onnx.ValueInfoProto) -> ValueInfo:
    elem = v.type.tensor_type.elem_type if v.type.HasField("tensor_type") else 0
    return ValueInfo(v.name, _dims(v.type), elem)


def _attr_value(a: onnx.AttributeProto, where: str) -> Any:
    if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
        return a  # kept opaque; only control-flow ops carry graphs and none is supported
    value = helper.get_attribute_value(a)
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode("utf-8", errors="replace") for v in value]
    return value


def _tensor(t: onnx.TensorProto) -> np.ndarray:
    try:
        return numpy_helper.to_array(t)
    except Exception as e:  # noqa: BLE001 - unknown data types, inconsistent sizes in corrupt files
        raise ModelError(f"tensor '{t.name}' cannot be read ({type(e).__name__}: {str(e)[:80]}); "
                         "the file is corrupt. Re-export it.") from None


def _constant_value(node: onnx.NodeProto) -> np.ndarray:
    a = node.attribute[0]
    if a.name == "value":
        return _tensor(a.t)
    if a.name == "value_float":
        return np.array(a.f, dtype=np.float32)
    if a.name == "value_floats":
        return np.array(list(a.floats), dtype=np.float32)
    if a.name == "value_int":
        return np.array(a.i, dtype=np.int64)
    if a.name == "value_ints":
        return np.array(list(a.ints), dtype=np.int64)
    raise ModelError(
        f"node '{node.name}' (Constant): attribute '{a.name}' is not supported; "
        "re-export with a dense tensor constant."
    )


def _check_text(model: onnx.ModelProto) -> None:
    """Names must be valid UTF-8 (a corrupted file can carry byte garbage in string fields)."""
    g = model.graph
    names = [n for node in g.node for n in (node.name, node.op_type, node.domain, *node.input, *node.output)]
    names += [t.name for t in g.initializer] + [v.name for v in (*g.input, *g.output)] + [g.name]
    names += [p.key for p in model.metadata_props] + [p.value for p in model.metadata_props]
    for v in (*g.input, *g.output, *g.value_info):
        if v.type.HasField("tensor_type"):
            names += [d.dim_param for d in v.type.tensor_type.shape.dim if d.HasField("dim_param")]
    for name in names:
        try:
            if not isinstance(name, str):
                raise UnicodeError
            name.encode("utf-8")
        except UnicodeError:
            raise ModelError(f"the model holds a name that is not valid text ({name!r:.40}); the file is "
                             "corrupt. Re-export it.") from None


def from_onnx(model: onnx.ModelProto) -> Graph:
    """Read a (loaded, validated) model into a :class:`Graph`.

    ``Constant`` nodes become entries of ``consts``, so passes and the
    reference simulator see one kind of constant.
    """
    _check_text(model)
    g = model.graph
    consts = {t.name: _tensor(t) for t in g.initializer}
    nodes: list[Node] = []
    for k, n in enumerate(g.node):
        where = n.name or f"#{k}"
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and len(n.output) == 1:
            consts[n.output[0]] = _constant_value(n)
            continue
        attrs = {a.name: _attr_value(a, where) for a in n.attribute}
        nodes.append(Node(n.op_type, list(n.input), list(n.output), attrs, n.name or f"{n.op_type}_{k}", n.domain))
    inputs = [_value_info(v) for v in g.input if v.name not in consts]
    outputs = [_value_info(v) for v in g.output]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    meta = {p.key: p.value for p in model.metadata_props}
    shapes = {}
    for v in [*g.value_info, *g.input, *g.output]:
        dims = _dims(v.type)
        if dims is not None:
            shapes[v.name] = dims
    return Graph(nodes, consts, inputs, outputs, opset, meta, g.name or "graph", shapes)


def _make_value_info(v: ValueInfo) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(v.name, v.elem_type, None if v.shape is None else list(v.shape))


def to_onnx(graph: Graph, *, ir_version: int = 10, producer: str = "srp-onnx",
            functions: Iterable[onnx.FunctionProto] = ()) -> onnx.ModelProto:
    """Write a :class:`Graph` as a ModelProto with an explicit IR version (and model-local ``functions``)."""
    from srp_onnx import __version__

    nodes = []
    for n in graph.nodes:
        attrs = {k: (numpy_helper.from_array(v) if isinstance(v, np.ndarray) else v) for k, v in n.attrs.items()}
        nodes.append(helper.make_node(n.op, n.inputs, n.outputs, name=n.name, domain=n.domain or None, **attrs))
    used = {i for n in graph.nodes for i in n.inputs} | set(graph.output_names())
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in graph.consts.items() if k in used]
    g = helper.make_graph(
        nodes,
        graph.name,
        [_make_value_info(v) for v in graph.inputs],
        [_make_value_info(v) for v in graph.outputs],
        inits,
    )
    functions = list(functions)
    domains = sorted({f.domain for f in functions})
    model = helper.make_model(
        g,
        opset_imports=[helper.make_opsetid("", graph.opset)] + [helper.make_opsetid(d, 1) for d in domains],
        producer_name=producer,
        producer_version=__version__,
        functions=functions,
    )
    model.ir_version = ir_version
    for k, v in graph.metadata.items():
        model.metadata_props.add(key=k, value=v)
    return model
