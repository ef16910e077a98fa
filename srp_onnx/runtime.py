"""Run a spiking step graph with onnxruntime over tau + T steps.

The saved step graph is first lowered (lower.py: theta folded into the weights, the SRP
mask kept in the membrane as ``v = -inf``, the input-only head split off), then::

    head(x)                        # once per batch: the first linear layer
    schedule.run(...)              # the one schedule (schedule.py), with
      start:      v = 0.5          #   the init graph
      step:       logits_t, v = step(head, v)   # the step graph, v updated in place
      end_presim: v = reset(v)     #   the method's rule; SRP: v = 0.5 if v > 1e-3 else -inf

The membranes live in OrtValues on the execution device, bound once per batch size with
IOBinding (the same buffer as input and output of every graph), so they never travel
through numpy; only each counted step's logits are copied out. ``mode="unrolled"`` runs
head, tau + T steps and the reset as one graph per (tau, T) instead; with
``cuda_graph=True`` its input and outputs sit in buffers bound once, so that the CUDA
execution provider can capture and replay it. The CUDA provider is used only when it
really loads (ort.py); otherwise the CPU one, and ``providers.fallback`` says why.
Recording hooks: ``record_spikes`` (each layer's spike count over the T counted steps
and the neurons the SRP mask silenced) and ``record`` (tensors of the linear part,
handed to ``simulate``'s ``on_step`` at every step, pre-simulation included).
"""

from __future__ import annotations

import dataclasses
import gc
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx

from srp_onnx import fileformat, ort, schedule
from srp_onnx.errors import ModelError, UsageError
from srp_onnx.lower import LowerOptions, counting_step, lower
from srp_onnx.neuron import MAX_T, MAX_TAU, Method, init_graph, reset_graph
from srp_onnx.ort import Providers, select_providers
from srp_onnx.sites import Site

OnStep = Callable[[int, "int | None", dict[str, np.ndarray]], None]  # (step, counted k or None, recorded)


@dataclasses.dataclass
class SimResult:
    logits: np.ndarray  # [T, B, K] float32: each post-pre-simulation step's logits (not summed)
    spikes: dict[str, np.ndarray]  # site -> int64 [B, ...] emitted spikes over the T steps (if recorded)
    silenced: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # site -> bool [B, ...]: mask 0


MODES = ("step", "unrolled")
_INLINE_BYTES = 4096  # constants this big reach onnxruntime as external initializers, not in the proto


class SpikingModel:
    """A loaded spiking step graph, ready to simulate batches.

    The saved graph is lowered (lower.py) into a *head* (what depends on the input only,
    run once per batch) and a *step* graph. What a user chooses: ``device`` ('auto', 'cpu',
    'cuda'), ``mode`` ("step" (default): one call per time step, any T; "unrolled": one graph
    per (tau, T), a batch in one call), ``cuda_graph`` (CUDA, unrolled mode: the batch size is
    fixed per session and a captured CUDA graph replays), ``threads``, and what to record
    (module docstring). ``lowering`` holds the lowering's levers (lower.LowerOptions, for
    ablations); ``profile`` (a path prefix) turns on onnxruntime's profiler for the head, step
    and unrolled sessions, and :meth:`end_profiling` returns the JSON files.
    """

    def __init__(self, model: onnx.ModelProto | str | os.PathLike[str], *, device: str = "auto",
                 mode: str = "step", cuda_graph: bool = False, threads: int | None = None,
                 record_spikes: bool = False, record: tuple[str, ...] = (),
                 lowering: LowerOptions = LowerOptions(), profile: str | None = None, method: Method | None = None):
        from srp_onnx.graph import from_onnx

        if mode not in MODES:
            raise UsageError(f"mode '{mode}': choose one of {', '.join(MODES)}.")
        if not isinstance(model, onnx.ModelProto):
            from srp_onnx.load import read_model

            where = f"'{model}'"
            model = read_model(model)
        else:
            where = "the model"
        sf = fileformat.read(model, where)
        self.layers: list[Site] = sf.sites
        self.metadata = sf.metadata
        self.notes = sf.notes
        self.default_tau = sf.tau
        # The neuron rule simulated by default (the file's unless given); simulate(method=...) overrides it.
        self.method = sf.method if method is None else method
        self._dropped = False  # the lowered weights were handed to onnxruntime: no session can be made later
        self.input_name = sf.input
        self.logits_name = sf.logits
        self.record_spikes = record_spikes
        self.record = tuple(record)
        if record and mode != "step":
            raise UsageError("recording tensors at every step needs mode='step'.")
        self.mode = mode
        self.providers: Providers = select_providers(device)
        self.device = self.providers.device
        if cuda_graph and mode != "unrolled":
            raise UsageError("cuda_graph=True needs mode='unrolled' (one graph per batch to capture).")
        # Fixed batch per session, input and outputs in buffers bound once: what a CUDA graph replays.
        # On the CPU the same path runs without the capture (so the CPU tests cover it).
        self.cuda_graph = bool(cuda_graph)
        self.threads = threads
        self.profile = profile
        self.input_shape = _dims(model, self.input_name, "input")
        self._logits_shape = _dims(model, self.logits_name, "output")
        graph = from_onnx(model)
        # When we read the file, this frees the proto before lowering (a caller's proto stays theirs). No
        # sub-message of it may stay referenced: protobuf keeps the whole message alive for any of them.
        del model
        # Lowering consumes its layer records (it may rescale them): a fresh copy, SpikingModel.layers stays.
        layers = [fileformat.Layer(dataclasses.replace(x.site), x.state) for x in sf.layers]
        self.graphs = lower(graph, layers, self.logits_name, lowering, record_spikes=record_spikes,
                            record=self.record)
        if set(self.record) & set(self.graphs.static):
            raise UsageError("recorded tensors must depend on the neurons' state (the head before the first "
                             "neuron layer runs once per batch).")
        gc.collect()  # the proto and the replaced weight arrays go now, before onnxruntime copies the rest
        self._weights: dict[str, Any] = {}  # const name -> CPU OrtValue over the lowered array
        self.head = self.session = None
        self.init = None
        self._resets: dict[tuple[Method, int], Any] = {}  # (method, tau) -> its end-of-pre-simulation session
        self._counting: tuple[Any, list[str], list[str]] | None = None  # step that counts spikes, made on demand
        if mode == "step":
            self.init = self._session(init_graph(self.graphs.states), small=True)
            if self.graphs.head is not None:
                self._static_shapes()
                self.head = self._session(self.graphs.head)
            self.session = self._session(self.graphs.step)
            if self.method.spec.counts:
                self.counting()
            if ort.copies_external_initializers():  # then our arrays are a second copy: let them go
                self._weights.clear()
                for g in (self.graphs.head, self.graphs.step):
                    if g is not None:
                        g.consts = {k: v for k, v in g.consts.items() if v.nbytes < _INLINE_BYTES}
                self.graphs.consts = self.graphs.step.consts
                self._dropped = True
        self._buffers: dict[int, _Buffers] = {}
        self._unrolled: dict[tuple[int, ...], _Unrolled] = {}

    # -- sessions --------------------------------------------------------------------------------------

    @property
    def provider(self) -> str:
        """The execution provider the sessions run on."""
        if self.session is not None:
            return self.session.get_providers()[0]
        entry = next(iter(self._unrolled.values()), None)
        return entry.session.get_providers()[0] if entry is not None else self.providers.names[0]

    def _session(self, graph, *, small: bool = False, providers: list | None = None):
        """An InferenceSession of a lowered Graph (or of a small ModelProto)."""
        rt = ort.ort()
        so = ort.session_options(self.threads, level=rt.GraphOptimizationLevel.ORT_ENABLE_ALL)
        # No memory arena: it grows by powers of two and keeps what it took (batch 32: VGG-16 peak 489 ->
        # 442 MiB, ResNet-20 83 -> 68 MiB, same speed: glibc's heap serves the repeated sizes).
        so.enable_cpu_mem_arena = False
        if small:
            return ort.session(graph, self.providers, options=so)
        if self.profile:
            so.enable_profiling = True
            so.profile_file_prefix = f"{self.profile}_{graph.name}"
        if graph.name == "srp_unrolled":  # measured fastest for it: the arena, the default order
            so.enable_cpu_mem_arena = True
        else:
            # Run each neuron's reset (Sub) right after its fire, not at the end of the graph: the default
            # order keeps every layer's membrane and spikes alive until then, so no buffer can be reused.
            so.execution_order = rt.ExecutionOrder.PRIORITY_BASED
        model, shared = self._model_proto(graph)
        if shared:
            so.add_external_initializers(list(shared), [self._weights[k] for k in shared])
        return rt.InferenceSession(model.SerializeToString(), so, providers=providers or list(self.providers.names))

    def end_profiling(self) -> list[str]:
        """Stop profiling; the onnxruntime profile files of the sessions that ran (``profile=``)."""
        sessions = [self.head, self.session, *(e.session for e in self._unrolled.values())]
        return [s.end_profiling() for s in sessions if s is not None and self.profile]

    def _static_shapes(self) -> None:
        """Declare the shapes of the step graph's static inputs (the head's outputs).

        onnxruntime's NCHWc layout transform only rewrites a pooling layer whose input has a
        known channel count, and shapes reach it by inference from the graph inputs.
        """
        model, _ = self._model_proto(self.graphs.head)
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception:  # noqa: BLE001 - shapes are an optimization hint only
            return
        shapes = {}
        for v in inferred.graph.output:
            if v.type.tensor_type.HasField("shape"):
                shapes[v.name] = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                       for d in v.type.tensor_type.shape.dim)
        for v in self.graphs.step.inputs:
            if v.shape is None and v.name in shapes:
                v.shape = shapes[v.name]

    def _model_proto(self, graph) -> tuple[onnx.ModelProto, list[str]]:
        """``graph`` as a ModelProto whose big constants are external, backed by shared OrtValues.

        onnxruntime uses those buffers in place (CPU), so every session reads the one copy of
        the weights that lowering made; it copies only what it re-lays out or pre-packs.
        """
        from onnx import TensorProto, helper, numpy_helper

        used = {i for n in graph.nodes for i in n.inputs if i in graph.consts}
        inits, shared = [], []
        for name in sorted(used):
            arr = graph.consts[name]
            if arr.nbytes < _INLINE_BYTES or arr.dtype != np.float32:
                inits.append(numpy_helper.from_array(np.asarray(arr), name))
                continue
            if name not in self._weights:
                self._weights[name] = ort.ort().OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr))
            t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=arr.shape,
                            data_location=TensorProto.EXTERNAL)
            t.external_data.add(key="location", value="srp-onnx-shared-weights")
            inits.append(t)
            shared.append(name)
        nodes = [helper.make_node(n.op, n.inputs, n.outputs, name=n.name, domain=n.domain or None,
                                  **{k: (numpy_helper.from_array(v) if isinstance(v, np.ndarray) else v)
                                     for k, v in n.attrs.items()}) for n in graph.nodes]

        def vi(v):
            shape = None if v.shape is None else list(v.shape)
            return helper.make_tensor_value_info(v.name, v.elem_type, shape)

        g = helper.make_graph(nodes, graph.name, [vi(v) for v in graph.inputs],
                              [vi(v) for v in graph.outputs], inits)
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", graph.opset)],
                                  producer_name="srp-onnx")
        model.ir_version = 10
        return model, shared

    # -- buffers ---------------------------------------------------------------------------------------

    def _ortvalue(self, array: np.ndarray):
        return ort.ort().OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device, 0)

    def _empty(self, shape: tuple[int, ...]):
        return ort.ort().OrtValue.ortvalue_from_shape_and_type(list(shape), np.float32, self.device, 0)

    def _state_buffers(self, B: int) -> _Buffers:
        """Per batch size: the membranes (on the device) and the IOBindings around them, made once.

        Each graph reads a layer's ``v`` and writes its ``v_next`` into the *same* buffer:
        a layer's membrane is read only by its charge (Add), which the reset (Sub) that writes
        the new membrane depends on, so the update is safe in place and one copy of the state
        suffices (two ping-pong copies would double the state memory for nothing).
        """
        buf = self._buffers.get(B)
        if buf is not None:
            return buf
        if len(self._buffers) >= 2:  # an odd last batch should not keep a third set alive
            self._buffers.pop(next(iter(self._buffers)))
        states = self.graphs.states
        state = [self._empty((B, *s.shape)) for s in self.layers]
        buf = _Buffers(B, state)
        if self._logits_shape is not None:
            buf.logits = self._empty((B, *self._logits_shape))
        if self.record_spikes:
            buf.spikes = [self._empty((B, *s.shape)) for s in self.layers]
        for sess, kind in ((self.init, "init"), (self.session, "step")):
            io = sess.io_binding()
            for st, v in zip(states, state):
                io.bind_ortvalue_input(st.v, v)
                io.bind_ortvalue_output(st.v_next, v)
            if kind == "step":
                if buf.logits is not None:
                    io.bind_ortvalue_output(self.logits_name, buf.logits)
                else:
                    io.bind_output(self.logits_name, self.device)
                for name, o in zip(self.graphs.spikes, buf.spikes):
                    io.bind_ortvalue_output(name, o)
                # A recorded tensor that is a recorded spike tensor already has its buffer; the rest are
                # bound last, so they are the last outputs of every run.
                bound = dict(zip(self.graphs.spikes, buf.spikes))
                buf.recorded = [bound.get(name) for name in self.record]
                for name in self.record:
                    if name not in bound:
                        io.bind_output(name, "cpu")
            setattr(buf, kind, io)
        self._buffers[B] = buf
        return buf

    # -- simulation ------------------------------------------------------------------------------------

    def _check(self, x: np.ndarray, T: int, tau: int | None) -> tuple[np.ndarray, int]:
        tau = self.default_tau if tau is None else tau
        if not 1 <= T <= MAX_T:
            raise UsageError(f"T = {T}: the number of time steps must be 1 to {MAX_T}.")
        if not 0 <= tau <= MAX_TAU:
            raise UsageError(f"tau = {tau}: the pre-simulation length must be 0 to {MAX_TAU}.")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if tuple(x.shape[1:]) != tuple(self.input_shape):
            raise UsageError(f"input batch has shape {tuple(x.shape[1:])} per sample; the model expects "
                             f"{tuple(self.input_shape)}.")
        return x, tau

    def reset_session(self, method: Method, tau: int) -> Any:
        """The end of the pre-simulation under ``method`` for all layers (one small session per method, tau)."""
        key = (method, tau)
        if key not in self._resets:
            counts = self.counting()[1] if method.spec.counts else None
            self._resets[key] = self._session(reset_graph(self.graphs.states, method, tau, counts), small=True)
        return self._resets[key]

    def counting(self) -> tuple[Any, list[str], list[str]]:
        """The step graph that also counts spikes (pre-simulation of a rule that reads N): session, n, n_next."""
        if self._counting is None:
            if self._dropped:
                raise UsageError("this SpikingModel was made for a rule that counts no spikes; make one with "
                                 "method=<the counting rule> to simulate rules that read the spike count.")
            g, n_in, n_out = counting_step(self.graphs)
            self._counting = (self._session(g), n_in, n_out)
        return self._counting

    def simulate(self, x: np.ndarray, T: int, tau: int | None = None, *, on_step: OnStep | None = None,
                 method: Method | None = None) -> SimResult:
        """Run tau + T steps on one batch; return each of the T post-pre-simulation steps' logits.

        ``on_step(step, counted, recorded)`` is called after every step (pre-simulation
        included) with the tensors named in ``record``, as numpy arrays valid during the call.
        ``method``: the neuron rule at the end of the pre-simulation (default: the file's).
        """
        x, tau = self._check(x, T, tau)
        method = self.method if method is None else method
        if self.mode == "unrolled":
            return self._simulate_unrolled(x, T, tau, method)
        buf = self._state_buffers(x.shape[0])
        xv = self._ortvalue(x)
        static = {self.input_name: xv}
        if self.head is not None:  # the part that sees only the input: once per batch
            io = self.head.io_binding()
            io.bind_ortvalue_input(self.input_name, xv)
            outs = [v for v in self.graphs.static if v != self.input_name]
            for name in outs:
                io.bind_output(name, self.device)
            self.head.run_with_iobinding(io)
            static.update(zip(outs, io.get_outputs()))
        for name in self.graphs.static:
            buf.step.bind_ortvalue_input(name, static[name])
        run = _StepRun(self, buf, T, on_step, method, tau, static)
        schedule.run(run, tau, T)
        return run.result()

    def _simulate_unrolled(self, x: np.ndarray, T: int, tau: int, method: Method) -> SimResult:
        from srp_onnx.lower import unroll

        B = x.shape[0]
        key = (tau, T, method, B) if self.cuda_graph else (tau, T, method)
        entry = self._unrolled.get(key)
        if entry is None:
            if len(self._unrolled) >= 2:  # each session holds its own pre-packed weights: keep two at most
                self._unrolled.pop(next(iter(self._unrolled)))
            g, out_name, count_names = unroll(self.graphs, self.layers, self.logits_name, tau, T,
                                              record_spikes=self.record_spikes,
                                              batch=B if self.cuda_graph else None, method=method)
            providers = ([("CUDAExecutionProvider", {"enable_cuda_graph": "1"}), "CPUExecutionProvider"]
                         if self.cuda_graph and self.device == "cuda" else None)
            entry = _Unrolled(self._session(g, providers=providers), out_name, count_names)
            self._unrolled[key] = entry
        io = entry.bindings.get(B)
        if io is None:
            io = entry.session.io_binding()
            shape = (T, B, *self._logits_shape) if self._logits_shape else None
            if self.cuda_graph and shape is not None:  # fixed addresses: buffers bound once, input copied in
                entry.x[B] = self._empty(x.shape)
                io.bind_ortvalue_input(self.input_name, entry.x[B])
                entry.outs[B] = [self._empty(shape)] + [self._empty((B, *s.shape)) for s in self.layers
                                                        if self.record_spikes]
                for name, v in zip([entry.logits, *entry.counts], entry.outs[B]):
                    io.bind_ortvalue_output(name, v)
            else:
                for name in [entry.logits, *entry.counts]:
                    io.bind_output(name, self.device)
            entry.bindings[B] = io
        if B in entry.x:
            entry.x[B].update_inplace(x)
        else:
            io.bind_ortvalue_input(self.input_name, self._ortvalue(x))
        entry.session.run_with_iobinding(io)
        outs = entry.outs.get(B) or io.get_outputs()
        logits = np.array(outs[0].numpy(), np.float32, copy=True)
        spikes = {s.name: np.rint(o.numpy()).astype(np.int64) for s, o in zip(self.layers, outs[1:])}
        return SimResult(logits, spikes)


def _dims(model: onnx.ModelProto, name: str, where: str) -> tuple[int, ...] | None:
    """Per-sample dims of graph input/output ``name`` as plain ints (None when not all fixed)."""
    vis = [v for v in (model.graph.input if where == "input" else model.graph.output) if v.name == name]
    if not vis or not vis[0].type.tensor_type.HasField("shape"):
        return None
    dims = list(vis[0].type.tensor_type.shape.dim)[1:]
    return tuple(int(d.dim_value) for d in dims) if all(d.HasField("dim_value") for d in dims) else None


@dataclasses.dataclass
class _Buffers:
    B: int
    state: list[Any]  # per layer: its membranes [B, ...] (OrtValues on the device), updated in place
    init: Any = None  # IOBinding: v = 0.5
    step: Any = None  # IOBinding: one time step
    logits: Any = None
    spikes: list[Any] = dataclasses.field(default_factory=list)
    recorded: list[Any] = dataclasses.field(default_factory=list)  # per ``record`` name: its buffer, or None


@dataclasses.dataclass
class _Unrolled:
    session: Any
    logits: str
    counts: list[str]
    bindings: dict[int, Any] = dataclasses.field(default_factory=dict)
    x: dict[int, Any] = dataclasses.field(default_factory=dict)  # cuda_graph: the bound input buffer
    outs: dict[int, list[Any]] = dataclasses.field(default_factory=dict)  # cuda_graph: bound outputs


class _StepRun:
    """Step mode as a :class:`schedule.Simulator`: the sessions run, the recordings are kept."""

    def __init__(self, model: SpikingModel, buf: _Buffers, T: int, on_step: OnStep | None, method: Method,
                 tau: int, static: dict[str, Any]):
        self.m, self.buf, self.on_step, self.t = model, buf, on_step, 0
        self.method, self.tau = method, tau
        self.counts: list[Any] = []  # rules that read N: each layer's pre-simulation spike count, on the device
        self.counting = None  # their IOBinding of the counting step
        if method.spec.counts and tau > 0:
            sess, n_in, n_out = model.counting()
            io = sess.io_binding()
            for st, v in zip(model.graphs.states, buf.state):
                io.bind_ortvalue_input(st.v, v)
                io.bind_ortvalue_output(st.v_next, v)
            self.counts = [model._ortvalue(np.zeros((buf.B, *s.shape), np.float32)) for s in model.layers]
            for n, n_next, c in zip(n_in, n_out, self.counts):
                io.bind_ortvalue_input(n, c)
                io.bind_ortvalue_output(n_next, c)  # n_next = n + s: elementwise, safe in place
            for name in model.graphs.static:
                io.bind_ortvalue_input(name, static[name])
            # The rest (logits, recorded tensors) in this order: the last outputs of every run.
            self.counting_rest = [o.name for o in sess.get_outputs()
                                  if o.name not in {*n_out, *(st.v_next for st in model.graphs.states)}]
            for name in self.counting_rest:
                io.bind_output(name, "cpu" if name in model.record else model.device)
            self.counting = io
        B = buf.B
        shape = model._logits_shape
        self.logits = np.empty((T, B, *shape), np.float32) if shape is not None else [None] * T
        # Counted in float32 (exact below 2^24 steps, T is far below), made int64 once at the end.
        self.spikes = ({s.name: np.zeros((B, *s.shape), np.float32) for s in model.layers}
                       if model.record_spikes else {})
        self.silenced: dict[str, np.ndarray] = {}

    def start(self) -> None:
        self.m.init.run_with_iobinding(self.buf.init)  # v = 0.5

    def step(self, counted: int | None) -> None:
        m, buf = self.m, self.buf
        if counted is None and self.counting is not None:
            m.counting()[0].run_with_iobinding(self.counting)
            if self.on_step is not None:
                outs = self.counting.get_outputs()
                rest = dict(zip(self.counting_rest, outs[len(outs) - len(self.counting_rest):]))
                self.on_step(self.t, None, {n: rest[n].numpy() for n in m.record})
            self.t += 1
            return
        m.session.run_with_iobinding(buf.step)
        if counted is not None:
            out = buf.logits if buf.logits is not None else buf.step.get_outputs()[0]
            # On the CPU numpy() is a view of the bound buffer, which the next step overwrites: copy.
            self.logits[counted] = np.array(out.numpy(), np.float32, copy=True)
            for s, o in zip(m.layers, buf.spikes):
                np.add(self.spikes[s.name], o.numpy(), out=self.spikes[s.name])
        if self.on_step is not None:
            outs = buf.step.get_outputs()
            tail = iter(outs[len(outs) - sum(v is None for v in buf.recorded):])
            self.on_step(self.t, counted, {n: (v if v is not None else next(tail)).numpy()
                                           for n, v in zip(m.record, buf.recorded)})
        self.t += 1

    def end_presim(self) -> None:  # the method's rule; SRP: v = 0.5 if v > 1e-3 else -inf
        sess = self.m.reset_session(self.method, self.tau)
        io = sess.io_binding()
        for st, v in zip(self.m.graphs.states, self.buf.state):
            io.bind_ortvalue_input(st.v, v)
            io.bind_ortvalue_output(st.v_next, v)
        if self.counts:
            for n, c in zip(self.m.counting()[1], self.counts):
                io.bind_ortvalue_input(n, c)
        sess.run_with_iobinding(io)
        if self.m.record_spikes:
            self.silenced = {s.name: np.isneginf(v.numpy()) for s, v in zip(self.m.layers, self.buf.state)}

    def result(self) -> SimResult:
        logits = self.logits if isinstance(self.logits, np.ndarray) else np.stack(self.logits)
        return SimResult(logits, {k: v.astype(np.int64) for k, v in self.spikes.items()}, self.silenced)


def simulate(model: onnx.ModelProto | str | os.PathLike[str], x: np.ndarray, T: int, tau: int | None = None,
             *, device: str = "auto") -> np.ndarray:
    """Convenience: logits of each post-pre-simulation step, [T, B, K]."""
    return SpikingModel(model, device=device).simulate(x, T, tau).logits


__all__ = ["LowerOptions", "ModelError", "SimResult", "SpikingModel", "simulate"]
