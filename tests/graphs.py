"""Tiny ONNX graphs written with onnx.helper, for rule and error tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def mlp(act: str = "Relu", *, weights_as_inputs: bool = False, seed: int = 0, extra: str | None = None,
        clip_max: float = 6.0) -> onnx.ModelProto:
    """x[N,16] -> Gemm -> act -> Gemm -> logits[N,4]."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32) * 0.3, "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32) * 0.3, "w2")
    b2 = numpy_helper.from_array(np.zeros(4, np.float32), "b2")
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1)]
    consts = []
    if act == "Clip":
        consts = [numpy_helper.from_array(np.array(0, np.float32), "lo"),
                  numpy_helper.from_array(np.array(clip_max, np.float32), "hi")]
        nodes.append(helper.make_node("Clip", ["h", "lo", "hi"], ["a"], name="act1"))
    else:
        nodes.append(helper.make_node(act, ["h"], ["a"], name="act1"))
    last = "a"
    if extra:
        nodes.append(helper.make_node(extra, ["a"], ["e"], name="extra1"))
        last = "e"
    nodes.append(helper.make_node("Gemm", [last, "w2", "b2"], ["logits"], name="fc2", transB=1))
    inits = [w1, b1, w2, b2, *consts]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])]
    if weights_as_inputs:
        inputs += [helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.dims)) for t in inits]
        inits = []
    g = helper.make_graph(nodes, "mlp", inputs, [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                                               ["N", 4])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    return m


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path
