"""Run a spiking step graph with onnxruntime over tau + T steps.

The saved step graph is first lowered (lower.py: theta folded into the weights, the SRP
mask kept in the membrane as ``v = -inf``, the input-only head split off), then::

    head(x)                                   # once per batch: the first linear layer
    v = 0.5                                   # init graph
    for t in range(tau + T):
        logits_t, v = step(head, v)           # the step graph, v updated in place
        if t == tau - 1: v = reset(v)         # SRP: v = 0.5 if v > 1e-3 else -inf

The membranes live in OrtValues on the execution device, bound once per batch size with
IOBinding (the same buffer as input and output of every graph), so they never travel
through numpy; only each counted step's logits are copied out. ``mode="unrolled"`` runs
head, tau + T steps and the reset as one graph per (tau, T) instead; with
``cuda_graph=True`` its input and outputs sit in buffers bound once, so that the CUDA
execution provider can capture and replay it. The CUDA provider is used only when it
really loads; otherwise the CPU one, with a single line saying so.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import sys
from typing import Any

import numpy as np
import onnx

from srp_onnx.errors import ModelError, UsageError
from srp_onnx.neuron import MAX_T, MAX_TAU, init_graph, reset_graph, state_names
from srp_onnx.sites import Site

_PROBES: dict[str, Any] = {}


def _ort():
    import onnxruntime as ort

    return ort


def _session_options(threads: int | None = None):
    ort = _ort()
    so = ort.SessionOptions()
    so.log_severity_level = 4  # failures reach the caller as exceptions; no second, colored copy on stderr
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    return so


def cpu_session(model: onnx.ModelProto | bytes, threads: int | None = None, level=None):
    ort = _ort()
    data = model if isinstance(model, bytes) else model.SerializeToString()
    so = _session_options(threads)
    if level is not None:
        so.graph_optimization_level = level
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def cuda_available() -> tuple[bool, str]:
    """Whether the CUDA EP really loads here (probed once, quietly)."""
    if "ok" in _PROBES:
        return _PROBES["ok"], _PROBES["why"]
    ort = _ort()
    ok, why = False, ""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        why = "this onnxruntime build has no CUDA execution provider"
    else:
        from onnx import TensorProto, helper

        g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 10
        prev = None
        try:
            ort.set_default_logger_severity(4)  # the failed CUDA load logs a loud error otherwise
            devnull = os.open(os.devnull, os.O_WRONLY)
            prev = os.dup(2)
            os.dup2(devnull, 2)  # native code writes straight to fd 2
            s = ort.InferenceSession(m.SerializeToString(), _session_options(),
                                     providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
            ok = s.get_providers()[0] == "CUDAExecutionProvider"
            why = "" if ok else "the CUDA execution provider did not load (no GPU or CUDA libraries)"
        except Exception as e:  # noqa: BLE001 - any failure means: no CUDA
            why = f"the CUDA execution provider failed to load ({str(e).splitlines()[0][:80]})"
        finally:
            if prev is not None:
                os.dup2(prev, 2)
                os.close(prev)
                os.close(devnull)
            ort.set_default_logger_severity(2)
    _PROBES.update(ok=ok, why=why)
    return ok, why


def select_providers(device: str = "auto", quiet: bool = False) -> list[str]:
    if device not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device {device}: choose auto, cpu or cuda.")
    if device == "cpu":
        return ["CPUExecutionProvider"]
    ok, why = cuda_available()
    if ok:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        fix = ("install onnxruntime-gpu" if "no CUDA execution provider" in why else
               "check that this machine has an NVIDIA GPU and the CUDA and cuDNN libraries onnxruntime-gpu "
               f"{_ort().__version__} was built for")
        raise UsageError(f"--device cuda: {why}. To use it, {fix}; or use --device cpu.")
    if not quiet:
        print(f"srp-onnx: using the CPU execution provider ({why})", file=sys.stderr)
    return ["CPUExecutionProvider"]


@dataclasses.dataclass
class SimResult:
    logits: np.ndarray  # [T, B, K] float32: each post-pre-simulation step's logits (not summed)
    spikes: dict[str, np.ndarray]  # site -> int64 [B, ...] emitted spikes over the T steps (if recorded)


MODES = ("step", "unrolled")
_INLINE_BYTES = 4096  # constants this big reach onnxruntime as external initializers, not in the proto


class SpikingModel:
    """A loaded spiking step graph, ready to simulate batches.

    The saved graph is lowered (lower.py) into a *head* (what depends on the input only,
    run once per batch) and a *step* graph. ``mode="step"`` (default) runs one call per
    time step, any T; ``"unrolled"`` builds one graph per (tau, T) and runs a batch in one
    call. ``fold_theta`` and ``hoist_static`` are the lowering levers (on by default;
    ``fold_theta=False`` keeps the saved graph's float rounding exactly). ``cuda_graph``
    (CUDA, unrolled mode) fixes the batch size per session and replays a captured CUDA graph.
    ``profile`` (a path prefix) turns on onnxruntime's profiler for the head, step and unrolled
    sessions; :meth:`end_profiling` returns the JSON files.
    """

    def __init__(self, model: onnx.ModelProto | str | os.PathLike[str], *, device: str = "auto",
                 threads: int | None = None, record_spikes: bool = False, quiet: bool = False,
                 mode: str = "step", fold_theta: bool = True, hoist_static: bool = True,
                 cuda_graph: bool = False, profile: str | None = None):
        from srp_onnx.convert import META, check_spiking, read_layers, read_tau
        from srp_onnx.graph import from_onnx
        from srp_onnx.lower import lower

        if mode not in MODES:
            raise UsageError(f"mode '{mode}': choose one of {', '.join(MODES)}.")
        if not isinstance(model, onnx.ModelProto):
            from srp_onnx.load import read_model

            where = model
            model = read_model(model)
        else:
            where = "the model"
        check_spiking(model, where)
        self.layers: list[Site] = read_layers(model)
        meta = {m.key: m.value for m in model.metadata_props}
        self.metadata = meta
        self.default_tau = read_tau(model)
        self.input_name = meta[f"{META}input"]
        self.logits_name = meta[f"{META}logits"]
        self.record_spikes = record_spikes
        self.mode = mode
        self.providers = select_providers(device, quiet=quiet)
        self.device = "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"
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
        self.graphs = lower(graph, read_layers_from(meta), self.logits_name, fold_theta=fold_theta,
                            hoist_static=hoist_static, record_spikes=record_spikes)
        gc.collect()  # the proto and the replaced weight arrays go now, before onnxruntime copies the rest
        self._weights: dict[str, Any] = {}  # const name -> CPU OrtValue over the lowered array
        names = [s.name for s in self.layers]
        self.head = self.session = None
        self.init = self.reset = None
        if mode == "step":
            self.init = self._session(init_graph(names), small=True)
            self.reset = self._session(reset_graph(names), small=True)
            if self.graphs.head is not None:
                self._static_shapes()
                self.head = self._session(self.graphs.head)
            self.session = self._session(self.graphs.step)
            if _ort_copies_external_initializers():  # then our arrays are a second copy: let them go
                self._weights.clear()
                for g in (self.graphs.head, self.graphs.step):
                    if g is not None:
                        g.consts = {k: v for k, v in g.consts.items() if v.nbytes < _INLINE_BYTES}
                self.graphs.consts = self.graphs.step.consts
        self._buffers: dict[int, _Buffers] = {}
        self._unrolled: dict[tuple[int, ...], _Unrolled] = {}

    # -- sessions --------------------------------------------------------------------------------------

    @property
    def provider(self) -> str:
        if self.session is not None:
            return self.session.get_providers()[0]
        entry = next(iter(self._unrolled.values()), None)
        return entry.session.get_providers()[0] if entry is not None else self.providers[0]

    def _session(self, graph, *, small: bool = False, providers: list | None = None):
        """An InferenceSession of a lowered Graph (or of a small ModelProto)."""
        ort = _ort()
        so = _session_options(self.threads)
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No memory arena: it grows by powers of two and keeps what it took (batch 32: VGG-16 peak 489 ->
        # 442 MiB, ResNet-20 83 -> 68 MiB, same speed: glibc's heap serves the repeated sizes).
        so.enable_cpu_mem_arena = False
        if small:
            return ort.InferenceSession(graph.SerializeToString(), so, providers=self.providers)
        if self.profile:
            so.enable_profiling = True
            so.profile_file_prefix = f"{self.profile}_{graph.name}"
        if graph.name == "srp_unrolled":  # measured fastest for it: the arena, the default order
            so.enable_cpu_mem_arena = True
        else:
            # Run each neuron's reset (Sub) right after its fire, not at the end of the graph: the default
            # order keeps every layer's membrane and spikes alive until then, so no buffer can be reused.
            so.execution_order = ort.ExecutionOrder.PRIORITY_BASED
        model, shared = self._model_proto(graph)
        if shared:
            so.add_external_initializers(list(shared), [self._weights[k] for k in shared])
        return ort.InferenceSession(model.SerializeToString(), so, providers=providers or self.providers)

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
                self._weights[name] = _ort().OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr))
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
        return _ort().OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device, 0)

    def _empty(self, shape: tuple[int, ...]):
        return _ort().OrtValue.ortvalue_from_shape_and_type(list(shape), np.float32, self.device, 0)

    def _state_buffers(self, B: int) -> _Buffers:
        """Per batch size: the membranes (on the device) and the IOBindings around them, made once.

        Each graph reads ``{site}__v`` and writes ``{site}__v_next`` into the *same* buffer:
        a layer's membrane is read only by its charge (Add), which the reset (Sub) that writes
        the new membrane depends on, so the update is safe in place and one copy of the state
        suffices (two ping-pong copies would double the state memory for nothing).
        """
        buf = self._buffers.get(B)
        if buf is not None:
            return buf
        if len(self._buffers) >= 2:  # an odd last batch should not keep a third set alive
            self._buffers.pop(next(iter(self._buffers)))
        names = [state_names(s.name) for s in self.layers]
        state = [self._empty((B, *s.shape)) for s in self.layers]
        buf = _Buffers(B, state)
        if self._logits_shape is not None:
            buf.logits = self._empty((B, *self._logits_shape))
        if self.record_spikes:
            buf.spikes = [self._empty((B, *s.shape)) for s in self.layers]
        for sess, kind in ((self.init, "init"), (self.reset, "reset"), (self.session, "step")):
            io = sess.io_binding()
            for n, v in zip(names, state):
                io.bind_ortvalue_input(n["v"], v)
                io.bind_ortvalue_output(n["v_next"], v)
            if kind == "step":
                if buf.logits is not None:
                    io.bind_ortvalue_output(self.logits_name, buf.logits)
                else:
                    io.bind_output(self.logits_name, self.device)
                for s, o in zip(self.layers, buf.spikes):
                    io.bind_ortvalue_output(self.graphs.spikes[s.name], o)
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

    def simulate(self, x: np.ndarray, T: int, tau: int | None = None) -> SimResult:
        """Run tau + T steps on one batch; return each of the T post-pre-simulation steps' logits."""
        x, tau = self._check(x, T, tau)
        if self.mode == "unrolled":
            return self._simulate_unrolled(x, T, tau)
        B = x.shape[0]
        buf = self._state_buffers(B)
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
        self.init.run_with_iobinding(buf.init)  # v = 0.5
        logits = np.empty((T, B, *self._logits_shape), np.float32) if self._logits_shape else [None] * T
        spikes = ({s.name: np.zeros((B, *s.shape), np.int64) for s in self.layers}
                  if self.record_spikes else {})
        for t in range(tau + T):
            self.session.run_with_iobinding(buf.step)
            if t >= tau:
                out = buf.logits if buf.logits is not None else buf.step.get_outputs()[0]
                # On the CPU numpy() is a view of the bound buffer, which the next step overwrites: copy.
                logits[t - tau] = np.array(out.numpy(), np.float32, copy=True)
                for s, o in zip(self.layers, buf.spikes):
                    spikes[s.name] += o.numpy().astype(np.int64)
            if tau > 0 and t == tau - 1:
                self.reset.run_with_iobinding(buf.reset)  # v = 0.5 if v > 1e-3 else -inf
        return SimResult(logits if isinstance(logits, np.ndarray) else np.stack(logits), spikes)

    def _simulate_unrolled(self, x: np.ndarray, T: int, tau: int) -> SimResult:
        from srp_onnx.lower import unroll

        B = x.shape[0]
        key = (tau, T, B) if self.cuda_graph else (tau, T)
        entry = self._unrolled.get(key)
        if entry is None:
            if len(self._unrolled) >= 2:  # each session holds its own pre-packed weights: keep two at most
                self._unrolled.pop(next(iter(self._unrolled)))
            g, out_name, count_names = unroll(self.graphs, self.layers, self.logits_name, tau, T,
                                              record_spikes=self.record_spikes,
                                              batch=B if self.cuda_graph else None)
            providers = ([("CUDAExecutionProvider", {"enable_cuda_graph": "1"}), "CPUExecutionProvider"]
                         if self.cuda_graph and self.device == "cuda" else None)
            entry = _Unrolled(self._session(g, providers=providers), out_name,
                              [count_names[s.name] for s in self.layers] if self.record_spikes else [])
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


def _ort_copies_external_initializers() -> bool:
    """Whether onnxruntime copies weights given with ``add_external_initializers`` into the session.

    onnxruntime 1.31 does on the CPU (a CUDA session copies them to the device anyway), so the
    runtime's own arrays are a second copy once the sessions exist. Found out, once, the only
    sure way: change the buffer after the session is made and see whether the result moves.
    """
    if "copies" not in _PROBES:
        from onnx import TensorProto, helper

        ort = _ort()
        w = np.ones(4, np.float32)
        t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
        t.external_data.add(key="location", value="srp-onnx-probe")
        g = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [t])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 10
        so = _session_options(1)
        so.add_external_initializers(["w"], [ort.OrtValue.ortvalue_from_numpy(w)])
        sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        x = np.ones(4, np.float32)
        before = sess.run(None, {"x": x})[0]
        w[:] = 0
        _PROBES["copies"] = bool(np.array_equal(before, sess.run(None, {"x": x})[0]))
    return _PROBES["copies"]


def _dims(model: onnx.ModelProto, name: str, where: str) -> tuple[int, ...] | None:
    """Per-sample dims of graph input/output ``name`` as plain ints (None when not all fixed)."""
    vis = [v for v in (model.graph.input if where == "input" else model.graph.output) if v.name == name]
    if not vis or not vis[0].type.tensor_type.HasField("shape"):
        return None
    dims = list(vis[0].type.tensor_type.shape.dim)[1:]
    return tuple(int(d.dim_value) for d in dims) if all(d.HasField("dim_value") for d in dims) else None


def read_layers_from(meta: dict[str, str]) -> list[Site]:
    """A fresh copy of the sites for lowering (``SpikingModel.layers`` is public and stays untouched)."""
    from srp_onnx.convert import META
    from srp_onnx.sites import sites_from_json

    return sites_from_json(meta[f"{META}layers"])


@dataclasses.dataclass
class _Buffers:
    B: int
    state: list[Any]  # per layer: its membranes [B, ...] (OrtValues on the device), updated in place
    init: Any = None  # IOBinding: v = 0.5
    reset: Any = None  # IOBinding: the SRP reset after pre-simulation
    step: Any = None  # IOBinding: one time step
    logits: Any = None
    spikes: list[Any] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _Unrolled:
    session: Any
    logits: str
    counts: list[str]
    bindings: dict[int, Any] = dataclasses.field(default_factory=dict)
    x: dict[int, Any] = dataclasses.field(default_factory=dict)  # cuda_graph: the bound input buffer
    outs: dict[int, list[Any]] = dataclasses.field(default_factory=dict)  # cuda_graph: bound outputs


def simulate(model: onnx.ModelProto | str | os.PathLike[str], x: np.ndarray, T: int, tau: int | None = None,
             *, device: str = "auto") -> np.ndarray:
    """Convenience: logits of each post-pre-simulation step, [T, B, K]."""
    return SpikingModel(model, device=device, quiet=True).simulate(x, T, tau).logits


__all__ = ["ModelError", "SimResult", "SpikingModel", "cpu_session", "select_providers", "simulate"]
