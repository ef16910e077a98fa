"""Run a spiking step graph with onnxruntime over tau + T steps.

    for t in range(tau + T):
        logits_t, state = step(x, state)        # the step graph
        if t == tau - 1: state = reset(state)   # SRP: mask = [v > 1e-3], v = 0.5

The state lives in OrtValues on the execution device and is bound with
IOBinding into two ping-pong sets, so it never travels through numpy between
steps; only each post-pre-simulation step's logits are copied out. The CUDA
execution provider is used only when it really loads; otherwise the CPU one,
with a single line saying so.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

import numpy as np
import onnx

from srp_onnx.errors import ModelError, UsageError
from srp_onnx.neuron import V_INIT, reset_graph, state_names
from srp_onnx.sites import Site

_CUDA_PROBE: dict[str, Any] = {}


def _ort():
    import onnxruntime as ort

    return ort


def _session_options(threads: int | None = None):
    ort = _ort()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    return so


def cpu_session(model: onnx.ModelProto | bytes, threads: int | None = None):
    ort = _ort()
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, _session_options(threads), providers=["CPUExecutionProvider"])


def cuda_available() -> tuple[bool, str]:
    """Whether the CUDA EP really loads here (probed once, quietly)."""
    if "ok" in _CUDA_PROBE:
        return _CUDA_PROBE["ok"], _CUDA_PROBE["why"]
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
    _CUDA_PROBE.update(ok=ok, why=why)
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
        raise UsageError(f"--device cuda: {why}. Install onnxruntime-gpu with a matching CUDA, or use --device cpu.")
    if not quiet:
        print(f"srp-onnx: using the CPU execution provider ({why})", file=sys.stderr)
    return ["CPUExecutionProvider"]


@dataclasses.dataclass
class SimResult:
    logits: np.ndarray  # [T, B, K] float32: each post-pre-simulation step's logits (not summed)
    spikes: dict[str, np.ndarray]  # site -> int64 [B, ...] emitted spikes over the T steps (if recorded)


class SpikingModel:
    """A loaded spiking step graph, ready to simulate batches."""

    def __init__(self, model: onnx.ModelProto | str | os.PathLike[str], *, device: str = "auto",
                 threads: int | None = None, record_spikes: bool = False, quiet: bool = False):
        from srp_onnx.convert import META, read_layers

        if not isinstance(model, onnx.ModelProto):
            from srp_onnx.load import read_model

            model = read_model(model)
        self.layers: list[Site] = read_layers(model)
        meta = {m.key: m.value for m in model.metadata_props}
        self.metadata = meta
        self.default_tau = int(meta.get(f"{META}tau", "0"))
        self.input_name = meta[f"{META}input"]
        self.logits_name = meta[f"{META}logits"]
        self.record_spikes = record_spikes
        if record_spikes:
            model = copy_with_spike_outputs(model, self.layers)
        self.providers = select_providers(device, quiet=quiet)
        self.device = "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"
        ort = _ort()
        so = _session_options(threads)
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(model.SerializeToString(), so, providers=self.providers)
        self.reset = ort.InferenceSession(reset_graph([s.name for s in self.layers]).SerializeToString(),
                                          _session_options(threads), providers=self.providers)
        inp = next(i for i in self.session.get_inputs() if i.name == self.input_name)
        self.input_shape = tuple(inp.shape[1:])

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def _ortvalue(self, array: np.ndarray):
        return _ort().OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device, 0)

    def _full(self, shape: tuple[int, ...], value: float):
        return self._ortvalue(np.full(shape, value, dtype=np.float32))

    def simulate(self, x: np.ndarray, T: int, tau: int | None = None) -> SimResult:
        """Run tau + T steps on one batch; return each of the T post-pre-simulation steps' logits."""
        tau = self.default_tau if tau is None else tau
        if T < 1:
            raise UsageError(f"T = {T}: the number of time steps must be at least 1.")
        if tau < 0:
            raise UsageError(f"tau = {tau}: the pre-simulation length must be 0 or more.")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if tuple(x.shape[1:]) != tuple(self.input_shape):
            raise UsageError(f"input batch has shape {tuple(x.shape[1:])} per sample; the model expects "
                             f"{tuple(self.input_shape)}.")
        B = x.shape[0]
        io = self.session.io_binding()
        io.bind_ortvalue_input(self.input_name, self._ortvalue(x))
        names = [state_names(s.name) for s in self.layers]
        shapes = [(B, *s.shape) for s in self.layers]
        cur = [self._full(sh, V_INIT) for sh in shapes]
        nxt = [self._full(sh, V_INIT) for sh in shapes]
        ones = [self._full(sh, 1.0) for sh in shapes]
        masks = ones
        spikes = {s.name: np.zeros((B, *s.shape), dtype=np.int64) for s in self.layers} if self.record_spikes else {}
        out = []
        for t in range(tau + T):
            io.clear_binding_outputs()
            io.bind_output(self.logits_name, self.device)  # output 0
            if self.record_spikes:
                for n in names:  # outputs 1..L
                    io.bind_output(n["spikes"], self.device)
            for n, v, m, v2 in zip(names, cur, masks, nxt):
                io.bind_ortvalue_input(n["v"], v)
                io.bind_ortvalue_input(n["mask"], m)
                io.bind_ortvalue_output(n["v_next"], v2)
            self.session.run_with_iobinding(io)
            cur, nxt = nxt, cur
            if t >= tau:
                outs = io.get_outputs()
                # OrtValue.numpy() is a view of a buffer the next step reuses: copy.
                out.append(np.array(outs[0].numpy(), dtype=np.float32, copy=True))
                if self.record_spikes:
                    for s, o in zip(self.layers, outs[1:]):
                        spikes[s.name] += o.numpy().astype(np.int64)
            if tau > 0 and t == tau - 1:
                masks = [self._full(sh, 1.0) for sh in shapes]
                self._run_reset(names, cur, masks, nxt)
                cur, nxt = nxt, cur
        return SimResult(np.stack(out), spikes)

    def _run_reset(self, names, v, masks, v_out) -> None:
        io = self.reset.io_binding()
        for n, vi, m, vo in zip(names, v, masks, v_out):
            io.bind_ortvalue_input(n["v"], vi)
            io.bind_ortvalue_output(n["mask"], m)
            io.bind_ortvalue_output(n["v_next"], vo)
        self.reset.run_with_iobinding(io)


def copy_with_spike_outputs(model: onnx.ModelProto, layers: list[Site]) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for s in layers:
        m.graph.output.append(onnx.helper.make_tensor_value_info(state_names(s.name)["spikes"],
                                                                 onnx.TensorProto.FLOAT, ["batch", *s.shape]))
    return m


def simulate(model: onnx.ModelProto | str | os.PathLike[str], x: np.ndarray, T: int, tau: int | None = None,
             *, device: str = "auto") -> np.ndarray:
    """Convenience: logits of each post-pre-simulation step, [T, B, K]."""
    return SpikingModel(model, device=device, quiet=True).simulate(x, T, tau).logits


__all__ = ["ModelError", "SimResult", "SpikingModel", "cpu_session", "select_providers", "simulate"]
