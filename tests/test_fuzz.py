"""Fuzz: mutated valid models and random small graphs either convert or raise SrpOnnxError.

Any other exception (a crash inside onnx, onnxruntime or our passes) fails the test.
Bounded in count and time so CI stays fast; the counts are printed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from graphs import mlp
from onnx import TensorProto, helper, numpy_helper

from srp_onnx.calibrate import calibrate
from srp_onnx.convert import ConvertOptions, convert, plan
from srp_onnx.errors import SrpOnnxError

DATA = Path(__file__).parent / "data" / "exporters"
BUDGET_S = 150.0  # CI on 2 busy cores; 1500 cases take about 20 s here


def _calib(p):
    rng = np.random.default_rng(0)
    calibrate(p, [rng.standard_normal((8, *p.input_shape())).astype(np.float32)])


def _try(path: Path) -> str:
    try:
        plan(path, ConvertOptions())
        convert(path, ConvertOptions(tau=2), calib=_calib)
    except SrpOnnxError:
        return "refused"
    return "converted"


def _mutations(base: onnx.ModelProto, rng: np.random.Generator):
    data = base.SerializeToString()
    kinds = ["bytes", "truncate", "drop_node", "attr", "dims", "input_shape", "init_data", "rename_input"]
    while True:
        kind = kinds[int(rng.integers(len(kinds)))]
        m = onnx.ModelProto()
        m.CopyFrom(base)
        g = m.graph
        if kind == "bytes":
            b = bytearray(data)
            for _ in range(int(rng.integers(1, 8))):
                b[int(rng.integers(len(b)))] = int(rng.integers(256))
            yield kind, bytes(b)
            continue
        if kind == "truncate":
            yield kind, data[: int(rng.integers(1, len(data)))]
            continue
        if kind == "drop_node" and len(g.node) > 1:
            del g.node[int(rng.integers(len(g.node)))]
        elif kind == "attr":
            nodes = [n for n in g.node if n.attribute]
            if nodes:
                a = nodes[int(rng.integers(len(nodes)))].attribute
                a = a[int(rng.integers(len(a)))]
                if a.type == onnx.AttributeProto.INT:
                    a.i = int(rng.choice([-1, 0, 1, 2, 7, 1 << 40]))
                elif a.type == onnx.AttributeProto.FLOAT:
                    a.f = float(rng.choice([-1.0, 0.0, np.nan, 1e30]))
                elif a.type == onnx.AttributeProto.INTS and len(a.ints):
                    a.ints[int(rng.integers(len(a.ints)))] = int(rng.choice([-3, 0, 5, 1 << 33]))
        elif kind == "dims" and g.initializer:
            t = g.initializer[int(rng.integers(len(g.initializer)))]
            if t.dims:
                t.dims[int(rng.integers(len(t.dims)))] = int(rng.choice([0, -1, 3, 1 << 20, 1 << 40]))
        elif kind == "input_shape":
            dims = g.input[0].type.tensor_type.shape.dim
            d = dims[int(rng.integers(len(dims)))]
            d.dim_value = int(rng.choice([0, 1, 7, 1 << 31]))
        elif kind == "init_data" and g.initializer:
            t = g.initializer[int(rng.integers(len(g.initializer)))]
            arr = numpy_helper.to_array(t).copy()
            if arr.size and arr.dtype.kind == "f":
                arr.reshape(-1)[int(rng.integers(arr.size))] = rng.choice([np.nan, np.inf, -1e30, 0.0])
                t.CopyFrom(numpy_helper.from_array(arr, t.name))
        elif kind == "rename_input" and g.node:
            n = g.node[int(rng.integers(len(g.node)))]
            if n.input:
                n.input[int(rng.integers(len(n.input)))] = "missing_tensor"
        yield kind, m.SerializeToString()


LAYERS = ["conv", "gemm_flat", "relu", "clip", "sigmoid", "avgpool", "maxpool", "bn", "add_const", "residual",
          "qcfs", "tanh", "mul_self"]


def random_graph(rng: np.random.Generator) -> onnx.ModelProto:
    """A random small CNN/MLP from a menu of layers, some supported and some not."""
    c, h = int(rng.integers(1, 4)), int(rng.choice([4, 6, 8]))
    nodes, inits = [], []
    cur, shape, k = "x", [c, h, h], 0

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name))
        return name

    for _ in range(int(rng.integers(1, 6))):
        layer = LAYERS[int(rng.integers(len(LAYERS)))]
        k += 1
        out = f"t{k}"
        if layer == "conv" and len(shape) == 3:
            co = int(rng.integers(1, 5))
            w = const(f"w{k}", rng.standard_normal((co, shape[0], 3, 3)) * 0.3)
            nodes.append(helper.make_node("Conv", [cur, w], [out], pads=[1, 1, 1, 1]))
            shape = [co, shape[1], shape[2]]
        elif layer == "gemm_flat":
            n_in = int(np.prod(shape))
            if len(shape) > 1:
                nodes.append(helper.make_node("Flatten", [cur], [f"f{k}"]))
                cur = f"f{k}"
            w = const(f"w{k}", rng.standard_normal((6, n_in)) * 0.3)
            nodes.append(helper.make_node("Gemm", [cur, w, const(f"b{k}", np.zeros(6))], [out], transB=1))
            shape = [6]
        elif layer in ("relu", "sigmoid", "tanh"):
            nodes.append(helper.make_node({"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}[layer], [cur], [out]))
        elif layer == "clip":
            hi = const(f"hi{k}", float(rng.uniform(0.5, 4)))
            nodes.append(helper.make_node("Clip", [cur, const(f"lo{k}", 0.0), hi], [out]))
        elif layer == "qcfs":
            up = const(f"up{k}", float(rng.uniform(0.5, 4)))
            L = const(f"L{k}", 4.0)
            nodes += [helper.make_node("Div", [cur, up], [f"a{k}"]), helper.make_node("Mul", [f"a{k}", L], [f"b{k}"]),
                      helper.make_node("Add", [f"b{k}", const(f"h{k}", 0.5)], [f"c{k}"]),
                      helper.make_node("Floor", [f"c{k}"], [f"d{k}"]), helper.make_node("Div", [f"d{k}", L], [f"e{k}"]),
                      helper.make_node("Clip", [f"e{k}", const(f"z{k}", 0.0), const(f"o{k}", 1.0)], [f"g{k}"]),
                      helper.make_node("Mul", [f"g{k}", up], [out])]
        elif layer in ("avgpool", "maxpool") and len(shape) == 3 and shape[1] >= 2:
            nodes.append(helper.make_node("AveragePool" if layer == "avgpool" else "MaxPool", [cur], [out],
                                          kernel_shape=[2, 2], strides=[2, 2]))
            shape = [shape[0], shape[1] // 2, shape[2] // 2]
        elif layer == "bn" and len(shape) == 3:
            C = shape[0]
            nodes.append(helper.make_node("BatchNormalization", [cur, const(f"s{k}", rng.uniform(.5, 2, C)),
                                                                  const(f"bb{k}", rng.standard_normal(C)),
                                                                  const(f"m{k}", rng.standard_normal(C)),
                                                                  const(f"v{k}", rng.uniform(.5, 2, C))], [out]))
        elif layer == "add_const":
            nodes.append(helper.make_node("Add", [cur, const(f"ac{k}", float(rng.standard_normal()))], [out]))
        elif layer == "residual":
            nodes.append(helper.make_node("Add", [cur, cur], [out]))
        elif layer == "mul_self":
            nodes.append(helper.make_node("Mul", [cur, cur], [out]))
        else:
            continue
        cur = out
    if len(shape) > 1:
        nodes.append(helper.make_node("Flatten", [cur], ["flat"]))
        cur = "flat"
    w = const("w_out", rng.standard_normal((3, int(np.prod(shape)))) * 0.3)
    nodes.append(helper.make_node("Gemm", [cur, w], ["logits"], transB=1))
    g = helper.make_graph(nodes, "rand", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c, h, h])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    return m


CASES = int(os.environ.get("SRP_FUZZ_CASES", "1500"))
SEED = int(os.environ.get("SRP_FUZZ_SEED", "1234"))


def test_fuzz_mutated_and_random_models_never_crash(tmp_path, capsys):
    rng = np.random.default_rng(SEED)
    bases = [mlp("Clip"), mlp("Relu"), onnx.load(str(DATA / "torch_ts_qcfs_cnn.onnx"))] \
        if (DATA / "torch_ts_qcfs_cnn.onnx").exists() else [mlp("Clip"), mlp("Relu")]
    gens = [_mutations(b, rng) for b in bases]
    counts = {"tried": 0, "converted": 0, "refused": 0}
    kinds: dict[str, int] = {}
    start = time.monotonic()
    path = tmp_path / "case.onnx"
    for i in range(CASES):
        if time.monotonic() - start > BUDGET_S:
            break
        if i % 3 == 2:
            kind, data = "random_graph", random_graph(rng).SerializeToString()
        else:
            kind, data = next(gens[i % len(gens)])
        path.write_bytes(data)
        try:
            outcome = _try(path)
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"case {i} ({kind}) raised {type(e).__name__}: {e}")
        counts["tried"] += 1
        counts[outcome] += 1
        kinds[kind] = kinds.get(kind, 0) + 1
    with capsys.disabled():
        print(f"\nfuzz: {counts['tried']} cases tried, {counts['converted']} converted, {counts['refused']} refused "
              f"({time.monotonic() - start:.1f} s; kinds {kinds})")
    assert counts["tried"] >= min(CASES, 1000)
    assert counts["converted"] > 0 and counts["refused"] > 0


JUNK = ["", "0", "-1", "1e9", "1000000000", "nan", "[]", "{}", "[{}]", "[" * 5000 + "]" * 5000, "\x1b[2J\n",
        '[{"name": "a"}]', "null", "true", "4", "[1, 2]", '"x"', "{" * 3000]


def test_fuzz_converted_model_metadata_never_crashes(tmp_path):
    """A converted model whose srp_onnx.* metadata values are replaced or cut: runs or raises SrpOnnxError."""
    from srp_onnx.convert import convert as convert_ann
    from srp_onnx.runtime import SpikingModel

    rng = np.random.default_rng(SEED)
    snn, _ = convert_ann(_save(mlp("Clip"), tmp_path / "m.onnx"), ConvertOptions(tau=2))
    x = rng.standard_normal((2, 16)).astype(np.float32)
    keys = [p.key for p in snn.metadata_props if p.key.startswith("srp_onnx.")]
    outcomes = {"ran": 0, "refused": 0}
    for i in range(120):
        m = onnx.ModelProto()
        m.CopyFrom(snn)
        for _ in range(int(rng.integers(1, 3))):
            key = keys[int(rng.integers(len(keys)))]
            p = next(q for q in m.metadata_props if q.key == key)
            cut = p.value[: int(rng.integers(len(p.value) + 1))]
            p.value = JUNK[int(rng.integers(len(JUNK)))] if rng.random() < 0.7 else cut
        try:
            SpikingModel(m, device="cpu").simulate(x, 2)
            outcomes["ran"] += 1
        except SrpOnnxError:
            outcomes["refused"] += 1
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"metadata case {i} raised {type(e).__name__}: {e}")
    assert outcomes["refused"] > 40


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path
