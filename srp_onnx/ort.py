"""The onnxruntime glue, in one place: session options, providers, the CUDA probe, error text.

Every session srp-onnx creates goes through :func:`session_options`, so logging and
threading are set the same way everywhere. The CUDA execution provider is used only
where it really loads: :func:`cuda_status` probes it once, quietly, and returns a
:class:`CudaStatus` code (never a sentence to match); :func:`select_providers` turns a
``device`` choice into a :class:`Providers` record that says whether, and why, the
CPU provider stands in for CUDA. Callers decide whether to tell the user.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re
from typing import Any

import numpy as np
import onnx

from srp_onnx.errors import UsageError

DEVICES = ("auto", "cpu", "cuda")
PROBE_IR_VERSION = 10
_PROBES: dict[str, Any] = {}


def ort():
    """onnxruntime, imported on first use (``inspect`` and the data tools never need it)."""
    import onnxruntime

    return onnxruntime


class CudaStatus(enum.Enum):
    """Whether the CUDA execution provider loads here, and if not, why."""

    OK = "ok"
    NOT_BUILT = "not_built"  # this onnxruntime build has no CUDA execution provider
    NOT_LOADED = "not_loaded"  # the provider exists but fell back (no GPU, or CUDA/cuDNN libraries missing)
    LOAD_FAILED = "load_failed"  # creating a CUDA session raised

    def describe(self) -> str:
        """The reason in words, for people."""
        return {
            CudaStatus.OK: "the CUDA execution provider loads",
            CudaStatus.NOT_BUILT: "this onnxruntime build has no CUDA execution provider",
            CudaStatus.NOT_LOADED: "the CUDA execution provider did not load (no GPU or CUDA libraries)",
            CudaStatus.LOAD_FAILED: "the CUDA execution provider failed to load",
        }[self]

    def fix(self) -> str:
        """What to do about it, for people."""
        if self is CudaStatus.NOT_BUILT:
            return "install onnxruntime-gpu"
        return (f"check that this machine has an NVIDIA GPU and the CUDA and cuDNN libraries onnxruntime-gpu "
                f"{ort().__version__} was built for")


@dataclasses.dataclass(frozen=True)
class Providers:
    """The execution providers to ask for, and why CUDA is not among them where it was wanted."""

    names: tuple[str, ...]
    fallback: CudaStatus | None = None  # set when device="auto" wanted CUDA but got the CPU

    @property
    def device(self) -> str:
        return "cuda" if self.names[0] == "CUDAExecutionProvider" else "cpu"


def session_options(threads: int | None = None, *, level: Any = None):
    so = ort().SessionOptions()
    so.log_severity_level = 4  # failures reach the caller as exceptions; no second, colored copy on stderr
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    if level is not None:
        so.graph_optimization_level = level
    return so


def session(model: onnx.ModelProto | bytes, providers: Providers | None = None, *, threads: int | None = None,
            level: Any = None, options: Any = None):
    """An InferenceSession of ``model`` on ``providers`` (the CPU when not given)."""
    data = model if isinstance(model, bytes) else model.SerializeToString()
    so = options if options is not None else session_options(threads, level=level)
    names = list(providers.names) if providers is not None else ["CPUExecutionProvider"]
    return ort().InferenceSession(data, so, providers=names)


def cpu_session(model: onnx.ModelProto | bytes, threads: int | None = None, level: Any = None):
    return session(model, None, threads=threads, level=level)


def _identity_model() -> onnx.ModelProto:
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = PROBE_IR_VERSION
    return m


def cuda_status() -> CudaStatus:
    """Whether the CUDA EP really loads here (probed once, with native logging silenced)."""
    if "cuda" in _PROBES:
        return _PROBES["cuda"]
    rt = ort()
    if "CUDAExecutionProvider" not in rt.get_available_providers():
        status = CudaStatus.NOT_BUILT
    else:
        prev = devnull = None
        try:
            rt.set_default_logger_severity(4)  # the failed CUDA load logs a loud error otherwise
            devnull = os.open(os.devnull, os.O_WRONLY)
            prev = os.dup(2)
            os.dup2(devnull, 2)  # native code writes straight to fd 2
            s = rt.InferenceSession(_identity_model().SerializeToString(), session_options(),
                                    providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
            status = CudaStatus.OK if s.get_providers()[0] == "CUDAExecutionProvider" else CudaStatus.NOT_LOADED
        except Exception:  # noqa: BLE001 - any failure means: no CUDA
            status = CudaStatus.LOAD_FAILED
        finally:
            if prev is not None:
                os.dup2(prev, 2)
                os.close(prev)
            if devnull is not None:
                os.close(devnull)
            rt.set_default_logger_severity(2)
    _PROBES["cuda"] = status
    return status


def select_providers(device: str = "auto") -> Providers:
    """The providers for ``device`` ('auto', 'cpu' or 'cuda'); 'cuda' without CUDA is a UsageError."""
    if device not in DEVICES:
        raise UsageError(f"device '{device}': choose auto, cpu or cuda.")
    if device == "cpu":
        return Providers(("CPUExecutionProvider",))
    status = cuda_status()
    if status is CudaStatus.OK:
        return Providers(("CUDAExecutionProvider", "CPUExecutionProvider"))
    if device == "cuda":
        raise UsageError(f"device cuda: {status.describe()}. To use it, {status.fix()}; or use the CPU.")
    return Providers(("CPUExecutionProvider",), fallback=status)


def copies_external_initializers() -> bool:
    """Whether onnxruntime copies weights given with ``add_external_initializers`` into the session.

    onnxruntime 1.31 does on the CPU (a CUDA session copies them to the device anyway), so the
    runtime's own arrays are a second copy once the sessions exist. Found out, once, the only
    sure way: change the buffer after the session is made and see whether the result moves.
    """
    if "copies" not in _PROBES:
        from onnx import TensorProto, helper

        rt = ort()
        w = np.ones(4, np.float32)
        t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
        t.external_data.add(key="location", value="srp-onnx-probe")
        g = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [t])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = PROBE_IR_VERSION
        so = session_options(1)
        so.add_external_initializers(["w"], [rt.OrtValue.ortvalue_from_numpy(w)])
        sess = rt.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        x = np.ones(4, np.float32)
        before = sess.run(None, {"x": x})[0]
        w[:] = 0
        _PROBES["copies"] = bool(np.array_equal(before, sess.run(None, {"x": x})[0]))
    return _PROBES["copies"]


def errors() -> tuple[type[BaseException], ...]:
    """onnxruntime's exception classes (they derive from Exception directly)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as st

    names = ("Fail", "InvalidGraph", "InvalidArgument", "NoSuchFile", "NotImplemented", "RuntimeException",
             "InvalidProtobuf", "ModelLoaded", "EPFail")
    return tuple(getattr(st, n) for n in names if hasattr(st, n))


def message(e: BaseException, limit: int = 160) -> str:
    """onnxruntime's message without its boilerplate, cut at a word boundary."""
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
