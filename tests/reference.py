"""Numpy reference simulator: the oracle the onnxruntime spiking graph is tested against.

It reads the ANN graph (the structure of :mod:`srp_onnx.graph`, by duck typing: see
:class:`GraphLike`) and imports neither onnx nor onnxruntime nor any other part of
srp_onnx, so a bug in the converter cannot hide in the oracle too.

The neuron (docs/srp-algorithm.md sections 2-3)
-----------------------------------------------
One integrate-and-fire neuron per activation element; membrane ``v`` in units of the
threshold ``theta``; all arithmetic in float32, in this order (the emitted spiking
graph must compute the same)::

    v_0 = 0.5
    charge:  v   = v + x_t / theta
    fire:    s_t = [v >= 1]
    reset:   v   = v - s_t                       (soft reset: the residual is kept)
    out_t = theta * s_t                          t <  tau      (pre-simulation)
    out_t = theta * s_t * mask                   t >= tau
    after step tau - 1 (only if tau > 0):  mask = [v > 1e-3],  v = 0.5

``mask`` is all ones when ``tau == 0``. That end of the pre-simulation is SRP's rule
(``rule="srp"``, the default). The other rules (docs/srp-algorithm.md section 3a) change
only what happens after step ``tau - 1``; with ``N`` the spikes fired in the ``tau``
pre-simulation steps (float32, exact) and ``c`` in units of theta::

    srp:       mask = [v > 1e-3]                                  v = 0.5
    deadzone:  mask = [(N + v) - 0.5 > c * tau]                   v = 0.5
    both:      mask = [v > 1e-3] * [(N + v) - 0.5 > c * tau]      v = 0.5
    burnin:    mask = 1                                           v kept

``(N + v) - 0.5`` is the summed input current over theta (each spike took 1 from v,
which started at 0.5), so the dead-zone test asks whether the mean input over the
pre-simulation exceeds ``c * theta``; ``c * tau`` is rounded once to float32. For a constant input ``x`` the number of
spikes after ``n`` steps is ``clip(floor(n x / theta + 1/2), 0, n)``; the mean output
tends to ``clip(x, 0, theta)``.

Stepping layer by layer
-----------------------
The network is not stepped in lockstep. The nodes are walked once, in topological
order, and every value is either

* *static*: independent of time (constants, and anything computed from the input
  image only, which is applied unchanged at every step): one array; or
* a *time sequence*: an array ``[S, *per_step_shape]`` with ``S = tau + T``.

An op whose inputs are all static is evaluated once. Otherwise static inputs are
broadcast over time and the op is applied at every step (elementwise ops and
batch-wise ops such as Conv are applied to all steps at once, which is the same
computation; shape ops such as ``Shape`` see the per-step shape). At the node that
produces a site's ``output`` the value of ``output`` is replaced by the neuron layer's
output sequence, computed from the value of the site's ``input`` over all ``S``
steps. Because a neuron layer's output at step ``t`` depends only on its inputs at
steps ``<= t``, this equals lockstep simulation; tests check that too.

``run_ann`` evaluates the plain ANN with the same op handlers; its ``overrides`` put a
function in place of an activation (``RefSite`` key: ``fn(value of site.input)``) or of
any tensor (``str`` key: ``fn(its own value)``), e.g. the L = 1 ANN of section 6.

Numerics and limits
-------------------
Float tensors stay float32 (an input image in float64 is cast). The op handlers follow
the ONNX spec (opsets 13-21, with the older attribute forms of Clip, Squeeze, Unsqueeze,
Slice, Pad, ReduceX and Softmax); their summation order differs from onnxruntime's, so
ANN values agree to float tolerance, not bit for bit. Spike counts computed from
different engines agree exactly only when every sum is exact in float32 (e.g. dyadic
weights and inputs), because a neuron at the threshold flips on one ulp. Unsupported
ops raise ``NotImplementedError`` naming the op; so do ops whose output shape would
change from one time step to the next.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "RULES",
    "GraphLike",
    "NodeLike",
    "RefResult",
    "RefSite",
    "ValueInfoLike",
    "end_of_presimulation",
    "if_neuron",
    "if_step",
    "run_ann",
    "simulate",
]

RULES = ("srp", "deadzone", "both", "burnin")
"""What every neuron does at the end of the pre-simulation (see the module docstring)."""

MASK_EPS = np.float32(1e-3)
"""A neuron stays active after pre-simulation iff its residual ``v > MASK_EPS`` (float32)."""

V_INIT = np.float32(0.5)
"""Initial membrane potential, in units of theta."""


Array = np.ndarray
Inputs = Sequence["np.ndarray | None"]  # an op's inputs; None for an omitted optional input
Handler = Callable[["NodeLike", Inputs, int], "np.ndarray | tuple[np.ndarray, ...]"]  # (node, inputs, opset)


# -- the graph shape this module reads ------------------------------------------------


class NodeLike(Protocol):
    @property
    def op(self) -> str: ...
    @property
    def inputs(self) -> Sequence[str]: ...
    @property
    def outputs(self) -> Sequence[str]: ...
    @property
    def attrs(self) -> Mapping[str, Any]: ...
    @property
    def name(self) -> str: ...


class ValueInfoLike(Protocol):
    @property
    def name(self) -> str: ...


class GraphLike(Protocol):
    """``srp_onnx.graph.Graph`` as seen here: nodes in topological order, constants by name.

    An optional ``opset`` attribute (default 17) selects the Softmax/LogSoftmax semantics.
    """

    @property
    def nodes(self) -> Sequence[NodeLike]: ...
    @property
    def consts(self) -> Mapping[str, np.ndarray]: ...
    @property
    def inputs(self) -> Sequence[ValueInfoLike]: ...
    @property
    def outputs(self) -> Sequence[ValueInfoLike]: ...


# -- public API -----------------------------------------------------------------------


@dataclass(frozen=True)
class RefSite:
    """One activation that becomes an IF neuron layer."""

    input: str  # tensor name of the neuron's input current x in the ANN graph
    output: str  # tensor name of the activation's output y (its value becomes the neuron output)
    theta: float


@dataclass
class RefResult:
    logits: np.ndarray  # [T, B, K] float32: ``output`` at each post-pre-simulation step (not summed)
    spikes: dict[str, np.ndarray]  # site.output -> int64 [B, ...]: emitted spikes (s * mask) over T steps
    presim_spikes: dict[str, np.ndarray]  # site.output -> int64 [B, ...]: spikes over the tau steps
    masks: dict[str, np.ndarray]  # site.output -> float32 [B, ...]: mask after pre-simulation


def if_step(v: np.ndarray, x: np.ndarray, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """One step of the IF neuron: charge, fire, soft reset. Returns ``(s, v_new)``, ``s`` bool.

    ``v`` is in units of ``theta``; float32 throughout: ``v + x / theta`` (division first).
    """
    v = np.asarray(v, dtype=np.float32) + np.asarray(x, dtype=np.float32) / np.float32(theta)
    s = v >= np.float32(1.0)
    return s, v - s.astype(np.float32)


def end_of_presimulation(v: np.ndarray, n: np.ndarray, tau: int, rule: str = "srp",
                         c: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A rule of :data:`RULES` applied after ``tau`` pre-simulation steps: ``(mask, v_new)``, float32.

    ``v`` is the membrane after step ``tau - 1``, ``n`` the spikes fired in the ``tau`` steps.
    """
    _check_rule(rule, c)
    v = np.asarray(v, dtype=np.float32)
    if rule == "burnin":
        return np.ones_like(v), v
    residual = v > MASK_EPS
    deadzone = (np.asarray(n, dtype=np.float32) + v) - V_INIT > np.float32(c * tau)
    keep = {"srp": residual, "deadzone": deadzone, "both": residual & deadzone}[rule]
    return keep.astype(np.float32), np.full_like(v, V_INIT)


def _check_rule(rule: str, c: float) -> None:
    if rule not in RULES:
        raise ValueError(f"rule {rule!r} is not one of {RULES}")
    if not c >= 0:
        raise ValueError(f"the dead-zone level c must be >= 0, got {c}")


def if_neuron(x_seq: np.ndarray, theta: float, tau: int, rule: str = "srp",
              c: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run an IF neuron layer with SRP over ``S = len(x_seq)`` steps (``tau`` of them pre-simulation).

    Returns ``(out_seq, spike_seq, mask)``: ``out_seq`` float32 ``[S, ...]`` is
    ``theta * s_t`` (times ``mask`` for ``t >= tau``); ``spike_seq`` bool ``[S, ...]`` are
    the *emitted* spikes (masked after pre-simulation); ``mask`` float32 ``[...]`` is the
    mask recorded after step ``tau - 1`` (all ones when ``tau == 0``). ``rule`` and ``c``
    choose what happens after step ``tau - 1`` (:func:`end_of_presimulation`; SRP by default).
    """
    x_seq = np.asarray(x_seq, dtype=np.float32)
    if tau < 0 or tau > x_seq.shape[0]:
        raise ValueError(f"tau={tau} must lie in [0, {x_seq.shape[0]}] (the number of steps)")
    _check_rule(rule, c)
    th = np.float32(theta)
    v = np.full(x_seq.shape[1:], V_INIT, dtype=np.float32)
    mask = np.ones(x_seq.shape[1:], dtype=np.float32)
    spikes = np.empty(x_seq.shape, dtype=bool)
    for t in range(x_seq.shape[0]):
        s, v = if_step(v, x_seq[t], theta)
        spikes[t] = s if t < tau else s & (mask > 0)
        if tau > 0 and t == tau - 1:
            mask, v = end_of_presimulation(v, spikes[:tau].sum(axis=0), tau, rule, c)
    out = spikes.astype(np.float32) * th  # == s * theta * mask exactly: s, mask are 0 or 1
    return out, spikes, mask


def simulate(
    graph: GraphLike,
    sites: Sequence[RefSite],
    x: np.ndarray,
    *,
    T: int,
    tau: int,
    output: str,
    input: str | None = None,
    rule: str = "srp",
    c: float = 0.0,
) -> RefResult:
    """Simulate the spiking network for ``tau + T`` steps, layer by layer (see the module docstring).

    ``x`` (the image batch) is applied at every step. ``logits[t]`` is the value of
    ``output`` at step ``tau + t``; its running sum over ``t`` is what SRP classifies.
    ``rule`` and ``c``: what every neuron does at the end of the pre-simulation (:data:`RULES`).
    """
    if T < 1 or tau < 0:
        raise ValueError(f"need T >= 1 and tau >= 0, got T={T}, tau={tau}")
    _check_rule(rule, c)
    S = tau + T
    spikes: dict[str, np.ndarray] = {}
    presim: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}

    def neuron(site: RefSite) -> Callable[[_Val], _Val]:
        def run(v: _Val) -> _Val:
            seq = v.data if v.seq else np.broadcast_to(v.data, (S, *v.data.shape))
            out, spk, mask = if_neuron(seq, site.theta, tau, rule, c)
            spikes[site.output] = spk[tau:].sum(axis=0, dtype=np.int64)
            presim[site.output] = spk[:tau].sum(axis=0, dtype=np.int64)
            masks[site.output] = mask
            return _Val(out, True)

        return run

    replace: dict[str, tuple[str, Callable[[_Val], _Val]]] = {}
    for site in sites:
        if site.output in replace:
            raise ValueError(f"two sites replace tensor '{site.output}'")
        replace[site.output] = (site.input, neuron(site))
    y = _run(graph, x, input, output, replace, S)
    seq = y.data if y.seq else np.broadcast_to(y.data, (S, *y.data.shape))
    logits = np.ascontiguousarray(seq[tau:], dtype=np.float32)
    return RefResult(logits, spikes, presim, masks)


def run_ann(
    graph: GraphLike,
    x: np.ndarray,
    output: str,
    input: str | None = None,
    overrides: Mapping[str | RefSite, Callable[[np.ndarray], np.ndarray]] | None = None,
) -> np.ndarray:
    """Evaluate the plain ANN graph on ``x`` and return the value of ``output``.

    ``overrides`` replaces the value of tensors as they are produced:

    * key ``RefSite`` ``site``: the value of ``site.output`` becomes ``fn(value of site.input)``,
      e.g. ``{s: lambda v, th=s.theta: th * np.clip(np.floor(v / th + 0.5), 0, 1) for s in sites}``
      is the L = 1 ANN of section 6. ``fn`` may keep state (a lockstep simulator does).
    * key ``str`` ``name``: the value of ``name`` becomes ``fn(value it was computed to be)``.
    """
    replace: dict[str, tuple[str, Callable[[_Val], _Val]]] = {}
    for key, fn in (overrides or {}).items():
        src, dst = (key.input, key.output) if isinstance(key, RefSite) else (key, key)
        if dst in replace:
            raise ValueError(f"two overrides replace tensor '{dst}'")
        replace[dst] = (src, lambda v, fn=fn: _Val(np.asarray(fn(v.data)), False))
    return _run(graph, x, input, output, replace, S=1).data


# -- the walk -------------------------------------------------------------------------


@dataclass
class _Val:
    data: np.ndarray
    seq: bool  # True: ``data`` is [S, *per_step_shape]


def _run(
    graph: GraphLike,
    x: np.ndarray,
    input: str | None,
    output: str,
    replace: Mapping[str, tuple[str, Callable[[_Val], _Val]]],
    S: int,
) -> _Val:
    consts = graph.consts
    if input is None:
        names = [v.name for v in graph.inputs if v.name not in consts]
        if len(names) != 1:
            raise ValueError(f"graph has non-constant inputs {names}; pass input= to choose one")
        input = names[0]
    x = np.asarray(x)
    if x.dtype.kind == "f":
        x = x.astype(np.float32, copy=False)
    opset = int(getattr(graph, "opset", 17))

    produced = {o for n in graph.nodes for o in n.outputs if o}
    missing = sorted(set(replace) - produced)
    if missing:
        raise ValueError(f"tensors {missing[:5]} are produced by no node of the graph")
    if output not in produced and output != input and output not in consts:
        raise ValueError(f"output '{output}' is produced by no node of the graph")

    # Free each value after its last use (the site's input is used where its output is made).
    last_use: dict[str, int] = {}
    for k, n in enumerate(graph.nodes):
        for name in n.inputs:
            last_use[name] = k
        for o in n.outputs:
            if o in replace:
                last_use[replace[o][0]] = k

    values: dict[str, _Val] = {input: _Val(x, False)}

    def get(name: str) -> _Val | None:
        if not name:
            return None
        if name in values:
            return values[name]
        if name in consts:
            return _Val(np.asarray(consts[name]), False)
        raise ValueError(f"tensor '{name}' is used before it is produced (graph not topologically sorted?)")

    for k, node in enumerate(graph.nodes):
        ins = [get(i) for i in node.inputs]
        outs = _apply(node, ins, opset, S)
        for name, val in zip(node.outputs, outs):
            if name:
                values[name] = val
        for name in node.outputs:
            if name in replace:
                src, fn = replace[name]
                source = get(src)
                assert source is not None
                values[name] = fn(source)
        if output in values:
            return values[output]
        for name in [*node.inputs, *(replace[o][0] for o in node.outputs if o in replace)]:
            if last_use.get(name) == k and name != output:
                values.pop(name, None)
        for name in node.outputs:
            if name not in last_use and name in values:
                values.pop(name)  # an output nobody reads
    if output in values:
        return values[output]
    return _Val(np.asarray(consts[output]), False)


# Ops that broadcast their inputs elementwise: applied to all steps at once after aligning ranks.
_ELEMENTWISE = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Min", "Max", "Sum", "Equal", "Less", "Greater", "Not", "Where",
    "Relu", "LeakyRelu", "Clip", "Floor", "Ceil", "Round", "Neg", "Abs", "Sqrt", "Reciprocal", "Exp", "Erf",
    "Sigmoid", "Tanh", "Cast", "Identity", "Dropout",
})  # fmt: skip
# Ops that treat axis 0 of input 0 as a batch: [S, B, ...] is folded to [S * B, ...].
_BATCHWISE = frozenset(
    {"Conv", "ConvTranspose", "AveragePool", "MaxPool", "GlobalAveragePool", "BatchNormalization"}
)
# Ops that read only the shape of input 0, which is the same at every step.
_SHAPE_OF = frozenset({"Shape", "Size"})


def _apply(node: NodeLike, ins: list[_Val | None], opset: int, S: int) -> list[_Val]:
    handler = _HANDLERS.get(node.op)
    if handler is None or getattr(node, "domain", "") not in ("", "ai.onnx"):
        domain = getattr(node, "domain", "")
        op = f"{domain}::{node.op}" if domain else node.op
        raise NotImplementedError(f"reference simulator: op '{op}' (node '{node.name}') is not implemented")
    raw = [None if v is None else v.data for v in ins]
    if not any(v is not None and v.seq for v in ins):
        return [_Val(y, False) for y in _call(handler, node, raw, opset)]

    if node.op in _SHAPE_OF:
        first = ins[0]
        assert first is not None
        return [_Val(y, False) for y in _call(handler, node, [first.data[0]], opset)]

    if node.op in _ELEMENTWISE:
        rank = max(v.data.ndim - v.seq for v in ins if v is not None)
        aligned = [None if v is None else _align(v, rank) for v in ins]
        return [_Val(y, True) for y in _call(handler, node, aligned, opset)]

    first = ins[0]
    # MaxPool's Indices count flat positions in its input, so folding time into the batch would shift them.
    indices = node.op == "MaxPool" and len(node.outputs) > 1 and bool(node.outputs[1])
    if (
        node.op in _BATCHWISE
        and not indices
        and first is not None
        and first.seq
        and first.data.ndim >= 2
        and not any(v is not None and v.seq for v in ins[1:])
    ):
        lead = first.data.shape[:2]
        folded = [first.data.reshape(-1, *first.data.shape[2:]), *raw[1:]]
        ys = _call(handler, node, folded, opset)
        return [_Val(y.reshape(*lead, *y.shape[1:]), True) for y in ys]

    steps = [
        _call(handler, node, [None if v is None else (v.data[t] if v.seq else v.data) for v in ins], opset)
        for t in range(S)
    ]
    try:
        return [_Val(np.stack(ys), True) for ys in zip(*steps)]
    except ValueError as e:  # per-step shapes differ: the shape depends on the spikes
        raise NotImplementedError(
            f"reference simulator: node '{node.name}' ({node.op}) gives outputs of different shapes at "
            "different time steps; data-dependent shapes are not supported"
        ) from e


def _align(v: _Val, rank: int) -> np.ndarray:
    """View ``v`` with rank ``rank + 1``: time first (size 1 when static), per-step dims right-aligned."""
    d = v.data
    if v.seq:
        return d.reshape(d.shape[0], *(1,) * (rank - d.ndim + 1), *d.shape[1:])
    return d.reshape(*(1,) * (rank + 1 - d.ndim), *d.shape)


def _call(handler: Handler, node: NodeLike, ins: Inputs, opset: int) -> list[np.ndarray]:
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):  # inf/nan silently, as onnxruntime
        out = handler(node, ins, opset)
    outs = out if isinstance(out, tuple) else (out,)
    return [np.asarray(y) for y in outs]


# -- op helpers -----------------------------------------------------------------------


def _opt(ins: Inputs, i: int) -> Array | None:
    return ins[i] if i < len(ins) else None


def _attr(node: NodeLike, key: str, default: Any = None) -> Any:
    return node.attrs.get(key, default)


def _ints(a: Array | Sequence[int] | None) -> list[int] | None:
    return None if a is None else [int(v) for v in np.asarray(a).reshape(-1)]


def _axes(node: NodeLike, ins: Inputs, i: int) -> list[int] | None:
    """Axes from input ``i`` (newer opsets) or the ``axes`` attribute (older ones)."""
    a = _opt(ins, i)
    return _ints(a) if a is not None else _ints(_attr(node, "axes"))


def _same_pads(
    auto_pad: str, size: Sequence[int], span: Sequence[int], strides: Sequence[int]
) -> list[tuple[int, int]]:
    """Pads for ``auto_pad`` (SAME_UPPER puts the odd pixel at the end, SAME_LOWER at the start)."""
    if auto_pad == "VALID":
        return [(0, 0)] * len(size)
    pads = []
    for n, w, s in zip(size, span, strides):
        total = max((-(-n // s) - 1) * s + w - n, 0)
        small, big = total // 2, total - total // 2
        pads.append((small, big) if auto_pad == "SAME_UPPER" else (big, small))
    return pads


def _window_geometry(node: NodeLike, x: Array, kernel: Sequence[int]) -> tuple[Any, ...]:
    """``(strides, dilations, pads [(begin, end)], spans)`` of a Conv/pool node over ``x`` [N, C, ...]."""
    nsp = x.ndim - 2
    strides = _ints(_attr(node, "strides")) or [1] * nsp
    dil = _ints(_attr(node, "dilations")) or [1] * nsp
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
    auto_pad = _attr(node, "auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER", "VALID"):
        pads = _same_pads(auto_pad, x.shape[2:], spans, strides)
    else:
        p = _ints(_attr(node, "pads")) or [0] * (2 * nsp)
        pads = list(zip(p[:nsp], p[nsp:]))
    return strides, dil, pads, spans


def _windows(xp: Array, spans: Sequence[int], strides: Sequence[int], dil: Sequence[int]) -> Array:
    """Sliding windows of a padded ``[N, C, *spatial]`` array: a view ``[N, C, *out, *kernel]``."""
    nsp = len(spans)
    w = sliding_window_view(xp, tuple(spans), axis=tuple(range(2, 2 + nsp)))
    sl = (
        slice(None),
        slice(None),
        *(slice(None, None, s) for s in strides),
        *(slice(None, None, d) for d in dil),
    )
    return w[sl]


def _pool_input(node: NodeLike, x: Array, fill: float, count: bool) -> tuple[Array, Array | None, int]:
    """Pad ``x`` for pooling (explicit pads with ``fill``, ceil_mode overhang too); also the window counts.

    Returns ``(windows [N, C, *out, *k], counts [*out] or None, nsp)``. ``counts`` is the
    divisor of AveragePool: window cells inside the input, plus those in the explicit
    pads when ``count_include_pad`` (never the ceil_mode overhang).
    """
    kernel = _ints(_attr(node, "kernel_shape"))
    assert kernel is not None, "pooling needs kernel_shape"
    strides, dil, pads, spans = _window_geometry(node, x, kernel)
    extra = []
    for n, (b, e), w, s in zip(x.shape[2:], pads, spans, strides):
        span_in = n + b + e
        out = (span_in - w) // s + 1
        if _attr(node, "ceil_mode", 0):
            out = -(-(span_in - w) // s) + 1
            if (out - 1) * s >= n + b:  # the last window must start inside the input or left pad
                out -= 1
        extra.append(max((out - 1) * s + w - span_in, 0))
    full = [(b, e + x_) for (b, e), x_ in zip(pads, extra)]
    xp = np.pad(x, [(0, 0), (0, 0), *full], constant_values=fill)
    wins = _windows(xp, spans, strides, dil)
    counts = None
    if count:
        inc = 1.0 if _attr(node, "count_include_pad", 0) else 0.0
        ones = np.pad(np.ones(x.shape[2:], np.float32), pads, constant_values=inc)
        ones = np.pad(ones, [(0, x_) for x_ in extra])
        cwin = _windows(ones[None, None], spans, strides, dil)[0, 0]
        counts = cwin.sum(axis=tuple(range(-len(spans), 0)))
    return wins, counts, len(spans)


def _softmax(x: Array, axis: int, opset: int, log: bool) -> Array:
    shape = x.shape
    if opset < 13:  # coerce to 2D at ``axis`` and normalise over the trailing block
        axis = axis % x.ndim
        x = x.reshape(int(np.prod(shape[:axis])), -1)
        axis = 1
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=axis, keepdims=True)
    y = z - np.log(s) if log else e / s
    return y.reshape(shape)


def _reduce(fn: Callable[..., Array], node: NodeLike, ins: Inputs) -> Array:
    x = ins[0]
    assert x is not None
    axes = _axes(node, ins, 1)
    keep = bool(_attr(node, "keepdims", 1))
    if not axes:
        if _attr(node, "noop_with_empty_axes", 0):
            return x
        axes = list(range(x.ndim))
    return np.asarray(fn(x, axis=tuple(a % x.ndim for a in axes), keepdims=keep)).astype(x.dtype)


# ONNX TensorProto.DataType -> numpy dtype (the ones a classifier graph can carry).
_DTYPES: dict[int, Any] = {
    1: np.float32,
    2: np.uint8,
    3: np.int8,
    4: np.uint16,
    5: np.int16,
    6: np.int32,
    7: np.int64,
    9: np.bool_,
    10: np.float16,
    11: np.float64,
    12: np.uint32,
    13: np.uint64,
}


# -- op handlers: named after the op, ONNX attribute names and defaults ---------------
# Signature: (node, inputs (None = omitted), opset) -> output or tuple of outputs.


_IM2COL_BYTES = 32 << 20  # column buffer per chunk of images: large enough for BLAS, small enough for cache


def Conv(node: NodeLike, ins: Inputs, opset: int) -> Array:
    """im2col + matmul: ``Y[n,m,o] = B[m] + sum_{c,k} W[m,c,k] Xpad[n,c,o*s+k*d]`` (c within m's group).

    Images are processed in chunks so the column buffer ``[g, C/g * K, chunk * P]`` stays
    small; the summation order differs from onnxruntime's (within float tolerance).
    """
    x, w, b = ins[0], ins[1], _opt(ins, 2)
    assert x is not None and w is not None
    kernel = list(w.shape[2:])
    strides, dil, pads, spans = _window_geometry(node, x, kernel)
    g = int(_attr(node, "group", 1))
    n = x.shape[0]
    m, cg = w.shape[:2]
    xp = np.pad(x, [(0, 0), (0, 0), *pads])
    out = [(i - span) // s + 1 for i, span, s in zip(xp.shape[2:], spans, strides)]
    p, kk = int(np.prod(out)), int(np.prod(kernel))
    taps = [
        tuple(slice(t * d, t * d + s * (o - 1) + 1, s) for t, d, s, o in zip(tap, dil, strides, out))
        for tap in itertools.product(*(range(k) for k in kernel))
    ]
    wmat = w.reshape(g, m // g, cg * kk)
    chunk = max(1, min(n, _IM2COL_BYTES // max(1, cg * g * kk * p * x.itemsize)))
    cols = np.empty((g, cg, kk, chunk, p), dtype=x.dtype)
    y = np.empty((n, m, p), dtype=x.dtype)
    for n0 in range(0, n, chunk):
        n1 = min(n, n0 + chunk)
        c = cols[:, :, :, : n1 - n0]
        for k, sl in enumerate(taps):
            c[:, :, k] = xp[(slice(n0, n1), slice(None), *sl)].swapaxes(0, 1).reshape(g, cg, n1 - n0, p)
        yc = np.matmul(wmat, c.reshape(g, cg * kk, (n1 - n0) * p))  # g, M/g, chunk * P
        y[n0:n1] = yc.reshape(m, n1 - n0, p).swapaxes(0, 1)
    y = y.reshape(n, m, *out)
    if b is not None:
        y = y + b.reshape(m, *(1,) * len(kernel))
    return y.astype(x.dtype, copy=False)


def ConvTranspose(node: NodeLike, ins: Inputs, opset: int) -> Array:
    """Scatter form: input pixel ``i`` with kernel tap ``k`` adds ``X W`` at output ``i*s + k*d - pad``."""
    x, w, b = ins[0], ins[1], _opt(ins, 2)
    assert x is not None and w is not None
    n, c = x.shape[:2]
    size = x.shape[2:]
    nsp = len(size)
    g = int(_attr(node, "group", 1))
    cg, mg = c // g, w.shape[1]
    kernel = list(w.shape[2:])
    strides = _ints(_attr(node, "strides")) or [1] * nsp
    dil = _ints(_attr(node, "dilations")) or [1] * nsp
    opad = _ints(_attr(node, "output_padding")) or [0] * nsp
    full = [s * (i - 1) + (k - 1) * d + 1 + o for s, i, k, d, o in zip(strides, size, kernel, dil, opad)]
    auto_pad = _attr(node, "auto_pad", "NOTSET")
    out_shape = _ints(_attr(node, "output_shape"))
    if out_shape is None and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out_shape = [i * s for i, s in zip(size, strides)]
    if out_shape is not None:
        out_shape = out_shape[-nsp:]
        pads = []
        for f, o in zip(full, out_shape):
            total = f - o
            small, big = total // 2, total - total // 2
            pads.append((small, big) if auto_pad == "SAME_UPPER" else (big, small))
    else:
        p = _ints(_attr(node, "pads")) or [0] * (2 * nsp)
        pads = list(zip(p[:nsp], p[nsp:]))
    y = np.zeros((n, g * mg, *full), dtype=x.dtype)
    for gi in range(g):
        xg = x[:, gi * cg : (gi + 1) * cg]
        wg = w[gi * cg : (gi + 1) * cg]
        contrib = np.tensordot(xg, wg, axes=([1], [0]))  # N, *in, Mg, *k
        contrib = np.moveaxis(contrib, 1 + nsp, 1)  # N, Mg, *in, *k
        for tap in itertools.product(*(range(k) for k in kernel)):
            sl = tuple(
                slice(t * d, t * d + s * (i - 1) + 1, s) for t, d, s, i in zip(tap, dil, strides, size)
            )
            y[(slice(None), slice(gi * mg, (gi + 1) * mg), *sl)] += contrib[(Ellipsis, *tap)]
    y = y[(slice(None), slice(None), *(slice(b_, f - e) for (b_, e), f in zip(pads, full)))]
    if b is not None:
        y = y + b.reshape(-1, *(1,) * nsp)
    return np.ascontiguousarray(y, dtype=x.dtype)


def Gemm(node: NodeLike, ins: Inputs, opset: int) -> Array:
    a, b, c = ins[0], ins[1], _opt(ins, 2)
    assert a is not None and b is not None
    a = a.T if _attr(node, "transA", 0) else a
    b = b.T if _attr(node, "transB", 0) else b
    alpha, beta = _attr(node, "alpha", 1.0), _attr(node, "beta", 1.0)
    y = a @ b
    if alpha != 1.0:
        y = y * np.float32(alpha)
    if c is not None:
        y = y + (c if beta == 1.0 else c * np.float32(beta))
    return y.astype(a.dtype, copy=False)


def MatMul(node: NodeLike, ins: Inputs, opset: int) -> Array:
    return np.matmul(ins[0], ins[1])


def Add(node: NodeLike, ins: Inputs, opset: int) -> Array:
    return np.add(ins[0], ins[1])


def Sub(node: NodeLike, ins: Inputs, opset: int) -> Array:
    return np.subtract(ins[0], ins[1])


def Mul(node: NodeLike, ins: Inputs, opset: int) -> Array:
    return np.multiply(ins[0], ins[1])


def Div(node: NodeLike, ins: Inputs, opset: int) -> Array:
    a, b = ins[0], ins[1]
    assert a is not None and b is not None
    if a.dtype.kind in "iu":  # C semantics: truncate toward zero
        q = np.abs(a) // np.abs(b)
        return np.where((a < 0) != (b < 0), -q, q).astype(a.dtype)
    return np.divide(a, b)


def Pow(node: NodeLike, ins: Inputs, opset: int) -> Array:
    a, b = ins[0], ins[1]
    assert a is not None and b is not None
    return np.power(a, b.astype(a.dtype)).astype(a.dtype)


def Min(node: NodeLike, ins: Inputs, opset: int) -> Array:
    return _variadic(np.minimum, ins)


def Max(node: NodeLike, ins: Inputs, opset: int) -> Array:
    return _variadic(np.maximum, ins)


def Sum(node: NodeLike, ins: Inputs, opset: int) -> Array:
    return _variadic(np.add, ins)


def _variadic(fn: Callable[[Array, Array], Array], ins: Inputs) -> Array:
    arrays = [a for a in ins if a is not None]
    y = arrays[0]
    for a in arrays[1:]:
        y = fn(y, a)
    return y


def Equal(node: NodeLike, ins: Inputs, opset: int) -> Array:
    return np.equal(ins[0], ins[1])


def Less(node: NodeLike, ins: Inputs, opset: int) -> Array:
    return np.less(ins[0], ins[1])


def Greater(node: NodeLike, ins: Inputs, opset: int) -> Array:
    return np.greater(ins[0], ins[1])


def Not(node: NodeLike, ins: Inputs, opset: int) -> Array:
    return np.logical_not(ins[0])


def Where(node: NodeLike, ins: Inputs, opset: int) -> Array:
    return np.where(ins[0], ins[1], ins[2])


def AveragePool(node: NodeLike, ins: Inputs, opset: int) -> Array:
    x = ins[0]
    assert x is not None
    wins, counts, nsp = _pool_input(node, x, 0.0, count=True)
    assert counts is not None
    total = wins.sum(axis=tuple(range(-nsp, 0)), dtype=x.dtype)
    return (total / counts.astype(x.dtype)).astype(x.dtype)


def MaxPool(node: NodeLike, ins: Inputs, opset: int) -> Array:
    x = ins[0]
    assert x is not None
    fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    wins, _, nsp = _pool_input(node, x, fill, count=False)
    y = wins.max(axis=tuple(range(-nsp, 0)))
    if not (len(node.outputs) > 1 and node.outputs[1]):
        return y
    # Indices: flat positions in x (batch and channel included, padding not counted) of the
    # first maximum of each window in row-major window order.
    if _attr(node, "storage_order", 0):
        raise NotImplementedError(f"reference simulator: MaxPool storage_order=1 (node '{node.name}')")
    pos = np.arange(x.size, dtype=np.float64).reshape(x.shape)
    pwins, _, _ = _pool_input(node, pos, -1.0, count=False)
    flat_v = wins.reshape(*wins.shape[: wins.ndim - nsp], -1)
    flat_p = pwins.reshape(*pwins.shape[: pwins.ndim - nsp], -1)
    first = np.argmax(flat_v, axis=-1)[..., None]
    return y, np.take_along_axis(flat_p, first, axis=-1)[..., 0].astype(np.int64)


def GlobalAveragePool(node: NodeLike, ins: Inputs, opset: int) -> Array:
    x = ins[0]
    assert x is not None
    return x.mean(axis=tuple(range(2, x.ndim)), keepdims=True, dtype=x.dtype)


def BatchNormalization(node: NodeLike, ins: Inputs, opset: int) -> Array:
    """Inference: ``Y = (X - mean) / sqrt(var + epsilon) * scale + B`` over axis 1."""
    x, scale, bias, mean, var = ins[:5]
    assert x is not None and scale is not None and bias is not None and mean is not None and var is not None
    shape = (-1, *(1,) * (x.ndim - 2))
    eps = np.float32(_attr(node, "epsilon", 1e-5))
    inv_std = np.float32(1) / np.sqrt(var.reshape(shape) + eps)
    y = (x - mean.reshape(shape)) * inv_std * scale.reshape(shape) + bias.reshape(shape)
    return y.astype(x.dtype, copy=False)


def Flatten(node: NodeLike, ins: Inputs, opset: int) -> Array:
    x = ins[0]
    assert x is not None
    axis = int(_attr(node, "axis", 1)) % (x.ndim + 1) if x.ndim else 0
    return x.reshape(int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:])))


def Reshape(node: NodeLike, ins: Inputs, opset: int) -> Array:
    x, shape = ins[0], _ints(ins[1])
    assert x is not None and shape is not None
    if not _attr(node, "allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(shape)


def Transpose(node: NodeLike, ins: Inputs, opset: int) -> Array:
    x = ins[0]
    assert x is not None
    return np.transpose(x, _ints(_attr(node, "perm")))


def Concat(node: NodeLike, ins: Inputs, opset: int) -> Array:
    return np.concatenate([a for a in ins if a is not None], axis=int(_attr(node, "axis")))


def Split(node: NodeLike, ins: Inputs, opset: int) -> tuple[Array, ...]:
    x = ins[0]
    assert x is not None
    axis = int(_attr(node, "axis", 0)) % x.ndim
    sizes = _ints(_opt(ins, 1)) or _ints(_attr(node, "split"))
    if sizes is None:
        k = int(_attr(node, "num_outputs", len(node.outputs)))
        chunk = -(-x.shape[axis] // k)
        sizes = [min(chunk, x.shape[axis] - i * chunk) for i in range(k)]
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


def Squeeze(node: NodeLike, ins: Inputs, opset: int) -> Array:
    x = ins[0]
    assert x is not None
    axes = _axes(node, ins, 1)
    if axes is None:
        return np.squeeze(x)
    return np.squeeze(x, axis=tuple(a % x.ndim for a in axes))


def Unsqueeze(node: NodeLike, ins: Inputs, opset: int) -> Array:
    x = ins[0]
    assert x is not None
    axes = _axes(node, ins, 1)
    assert axes is not None, "Unsqueeze needs axes"
    rank = x.ndim + len(axes)
    for a in sorted(a % rank for a in axes):
        x = np.expand_dims(x, a)
    return x


def Slice(node: NodeLike, ins: Inputs, opset: int) -> Array:
    """Python slicing clamps like ONNX (starts/ends past the bounds, negative indices, steps)."""
    x = ins[0]
    assert x is not None
    if "starts" in node.attrs:  # opset < 10
        starts, ends = _ints(_attr(node, "starts")), _ints(_attr(node, "ends"))
        axes, steps = _ints(_attr(node, "axes")), None
    else:
        starts, ends, axes, steps = (_ints(_opt(ins, i)) for i in (1, 2, 3, 4))
    assert starts is not None and ends is not None
    axes = axes or list(range(len(starts)))
    steps = steps or [1] * len(starts)
    sl = [slice(None)] * x.ndim
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        sl[ax % x.ndim] = slice(st, en, sp)
    return x[tuple(sl)]


def Pad(node: NodeLike, ins: Inputs, opset: int) -> Array:
    """``pads = [x1_begin, x2_begin, ..., x1_end, ...]``; negative pads crop."""
    x = ins[0]
    assert x is not None
    mode = _attr(node, "mode", "constant")
    if "pads" in node.attrs:  # opset < 11
        p, value, axes = _ints(_attr(node, "pads")), _attr(node, "value", 0.0), None
    else:
        p, cv, axes = _ints(ins[1]), _opt(ins, 2), _ints(_opt(ins, 3))
        value = 0 if cv is None or cv.size == 0 else cv.reshape(-1)[0]
    assert p is not None
    axes = [a % x.ndim for a in axes] if axes else list(range(x.ndim))
    k = len(axes)
    widths = [(0, 0)] * x.ndim
    for i, a in enumerate(axes):
        widths[a] = (p[i], p[i + k])
    grow = [(max(b, 0), max(e, 0)) for b, e in widths]
    if mode == "constant":
        y = np.pad(x, grow, mode="constant", constant_values=np.asarray(value, dtype=x.dtype))
    elif mode in ("reflect", "edge", "wrap"):
        y = np.pad(x, grow, mode=mode)
    else:
        raise NotImplementedError(f"reference simulator: Pad mode '{mode}' (node '{node.name}')")
    crop = tuple(slice(-min(b, 0), y.shape[i] + min(e, 0)) for i, (b, e) in enumerate(widths))
    return y[crop]


def Identity(node: NodeLike, ins: Inputs, opset: int) -> Array:
    return ins[0]  # type: ignore[return-value]


def Dropout(node: NodeLike, ins: Inputs, opset: int) -> tuple[Array, Array]:
    x = ins[0]
    assert x is not None
    return x, np.ones(x.shape, dtype=bool)


def Relu(node: NodeLike, ins: Inputs, opset: int) -> Array:
    x = ins[0]
    assert x is not None
    return np.maximum(x, x.dtype.type(0))


def LeakyRelu(node: NodeLike, ins: Inputs, opset: int) -> Array:
    x = ins[0]
    assert x is not None
    return np.where(x >= 0, x, x * x.dtype.type(_attr(node, "alpha", 0.01)))


def Clip(node: NodeLike, ins: Inputs, opset: int) -> Array:
    """``min(max(x, lo), hi)``; bounds from inputs 1, 2 ("" = none), or attributes before opset 11."""
    x = ins[0]
    assert x is not None
    lo, hi = _opt(ins, 1), _opt(ins, 2)
    if lo is None and "min" in node.attrs:
        lo = np.asarray(_attr(node, "min"))
    if hi is None and "max" in node.attrs:
        hi = np.asarray(_attr(node, "max"))
    y = x
    if lo is not None:
        y = np.maximum(y, lo.astype(x.dtype))
    if hi is not None:
        y = np.minimum(y, hi.astype(x.dtype))
    return y


def _unary(fn: Callable[[Array], Array]) -> Handler:
    def handler(node: NodeLike, ins: Inputs, opset: int) -> Array:
        x = ins[0]
        assert x is not None
        return np.asarray(fn(x)).astype(x.dtype, copy=False)

    return handler


def _sigmoid(x: Array) -> Array:
    with np.errstate(over="ignore"):
        e = np.exp(-np.abs(x))  # stable on both sides
        return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


_erf = np.vectorize(math.erf, otypes=[np.float64])

Floor = _unary(np.floor)
Ceil = _unary(np.ceil)
Round = _unary(np.round)  # numpy rounds half to even, as ONNX does
Neg = _unary(np.negative)
Abs = _unary(np.abs)
Sqrt = _unary(np.sqrt)
Reciprocal = _unary(np.reciprocal)
Exp = _unary(np.exp)
Erf = _unary(lambda x: _erf(x.astype(np.float64)))
Sigmoid = _unary(_sigmoid)
Tanh = _unary(np.tanh)


def Softmax(node: NodeLike, ins: Inputs, opset: int) -> Array:
    x = ins[0]
    assert x is not None
    axis = int(_attr(node, "axis", -1 if opset >= 13 else 1))
    return _softmax(x, axis, opset, log=False).astype(x.dtype, copy=False)


def LogSoftmax(node: NodeLike, ins: Inputs, opset: int) -> Array:
    x = ins[0]
    assert x is not None
    axis = int(_attr(node, "axis", -1 if opset >= 13 else 1))
    return _softmax(x, axis, opset, log=True).astype(x.dtype, copy=False)


def ArgMax(node: NodeLike, ins: Inputs, opset: int) -> Array:
    x = ins[0]
    assert x is not None
    axis = int(_attr(node, "axis", 0)) % x.ndim
    if _attr(node, "select_last_index", 0):
        idx = x.shape[axis] - 1 - np.argmax(np.flip(x, axis), axis=axis)
    else:
        idx = np.argmax(x, axis=axis)
    if _attr(node, "keepdims", 1):
        idx = np.expand_dims(idx, axis)
    return idx.astype(np.int64)


def ReduceMean(node: NodeLike, ins: Inputs, opset: int) -> Array:
    return _reduce(np.mean, node, ins)


def ReduceSum(node: NodeLike, ins: Inputs, opset: int) -> Array:
    return _reduce(np.sum, node, ins)


def ReduceMax(node: NodeLike, ins: Inputs, opset: int) -> Array:
    return _reduce(np.max, node, ins)


def Shape(node: NodeLike, ins: Inputs, opset: int) -> Array:
    x = ins[0]
    assert x is not None
    start, end = _attr(node, "start", 0), _attr(node, "end", None)
    return np.array(x.shape[start:end], dtype=np.int64)


def Size(node: NodeLike, ins: Inputs, opset: int) -> Array:
    x = ins[0]
    assert x is not None
    return np.array(x.size, dtype=np.int64)


def Gather(node: NodeLike, ins: Inputs, opset: int) -> Array:
    x, idx = ins[0], ins[1]
    assert x is not None and idx is not None
    axis = int(_attr(node, "axis", 0)) % x.ndim
    return np.take(x, np.where(idx < 0, idx + x.shape[axis], idx), axis=axis)


def GatherND(node: NodeLike, ins: Inputs, opset: int) -> Array:
    """ONNX GatherND with batch_dims = 0: out[i...] = x[idx[i..., 0], ..., idx[i..., k-1]]."""
    x, idx = ins[0], ins[1]
    assert x is not None and idx is not None
    if int(_attr(node, "batch_dims", 0)) != 0:
        raise NotImplementedError(f"reference simulator: GatherND with batch_dims != 0 (node '{node.name}')")
    k = idx.shape[-1]
    idx = np.where(idx < 0, idx + np.array(x.shape[:k]), idx)
    return x[tuple(idx[..., i] for i in range(k))]


def Cast(node: NodeLike, ins: Inputs, opset: int) -> Array:
    x = ins[0]
    assert x is not None
    to = int(_attr(node, "to"))
    if to not in _DTYPES:
        raise NotImplementedError(f"reference simulator: Cast to type {to} (node '{node.name}')")
    return x.astype(_DTYPES[to])


def ConstantOfShape(node: NodeLike, ins: Inputs, opset: int) -> Array:
    value = _attr(node, "value")
    v = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    return np.full(_ints(ins[0]) or [], v[0], dtype=v.dtype)


def Expand(node: NodeLike, ins: Inputs, opset: int) -> Array:
    x, shape = ins[0], _ints(ins[1])
    assert x is not None and shape is not None
    return np.array(np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(shape))))


def Range(node: NodeLike, ins: Inputs, opset: int) -> Array:
    """``start + i * delta`` for ``i < max(ceil((limit - start) / delta), 0)``."""
    start, limit, delta = ins[0], ins[1], ins[2]
    assert start is not None and limit is not None and delta is not None
    n = max(math.ceil((float(limit) - float(start)) / float(delta)), 0)
    return (start + np.arange(n).astype(start.dtype) * delta).astype(start.dtype)


def Tile(node: NodeLike, ins: Inputs, opset: int) -> Array:
    return np.tile(ins[0], _ints(ins[1]))


# Every supported op, explicitly (no registry filled at import time).
_HANDLERS: dict[str, Handler] = {
    "Conv": Conv,
    "ConvTranspose": ConvTranspose,
    "Gemm": Gemm,
    "MatMul": MatMul,
    "Add": Add,
    "Sub": Sub,
    "Mul": Mul,
    "Div": Div,
    "Pow": Pow,
    "Min": Min,
    "Max": Max,
    "Sum": Sum,
    "Equal": Equal,
    "Less": Less,
    "Greater": Greater,
    "Not": Not,
    "Where": Where,
    "AveragePool": AveragePool,
    "MaxPool": MaxPool,
    "GlobalAveragePool": GlobalAveragePool,
    "BatchNormalization": BatchNormalization,
    "Flatten": Flatten,
    "Reshape": Reshape,
    "Transpose": Transpose,
    "Concat": Concat,
    "Split": Split,
    "Squeeze": Squeeze,
    "Unsqueeze": Unsqueeze,
    "Slice": Slice,
    "Pad": Pad,
    "Identity": Identity,
    "Dropout": Dropout,
    "Relu": Relu,
    "LeakyRelu": LeakyRelu,
    "Clip": Clip,
    "Floor": Floor,
    "Ceil": Ceil,
    "Round": Round,
    "Neg": Neg,
    "Abs": Abs,
    "Sqrt": Sqrt,
    "Reciprocal": Reciprocal,
    "Exp": Exp,
    "Erf": Erf,
    "Sigmoid": Sigmoid,
    "Tanh": Tanh,
    "Softmax": Softmax,
    "LogSoftmax": LogSoftmax,
    "ArgMax": ArgMax,
    "ReduceMean": ReduceMean,
    "ReduceSum": ReduceSum,
    "ReduceMax": ReduceMax,
    "Shape": Shape,
    "Size": Size,
    "Gather": Gather,
    "GatherND": GatherND,
    "Cast": Cast,
    "ConstantOfShape": ConstantOfShape,
    "Expand": Expand,
    "Range": Range,
    "Tile": Tile,
}
