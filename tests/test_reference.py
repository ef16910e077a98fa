"""Tests of the numpy reference simulator (tests/reference.py), the oracle of the parity tests.

Neuron tests use dyadic numbers so that float32 arithmetic is exact and boundaries are
hit exactly. Graph tests build tiny models with onnx.helper and compare ``run_ann``
with onnxruntime (CPU, optimisations off).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from reference import RULES, RefSite, end_of_presimulation, if_neuron, if_step, run_ann, simulate

from srp_onnx.graph import Graph, from_onnx

F32 = np.float32


# -- helpers --------------------------------------------------------------------------


def make_model(
    nodes: list[onnx.NodeProto],
    feed: tuple[str, np.ndarray],
    inits: dict[str, np.ndarray],
    outputs: Sequence[tuple[str, int]],
    opset: int = 17,
) -> onnx.ModelProto:
    name, x = feed
    elem = helper.np_dtype_to_tensor_dtype(x.dtype)
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info(name, elem, list(x.shape))],
        [helper.make_tensor_value_info(o, t, None) for o, t in outputs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)  # fills the output shapes
    onnx.checker.check_model(model, full_check=True)
    return model


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def dyadic(rng: np.random.Generator, shape: Sequence[int], scale: int = 16, bound: int = 16) -> np.ndarray:
    """Multiples of 1/scale in [-bound/scale, bound/scale]: sums and products stay exact in float32."""
    return (rng.integers(-bound, bound + 1, size=shape) / scale).astype(F32)


def l1_activation(theta: float) -> Callable[[np.ndarray], np.ndarray]:
    """The L = 1 QCFS activation of section 6 (float32, the same arithmetic as the neuron's first step)."""
    th = F32(theta)
    return lambda v: th * np.clip(np.floor(v / th + F32(0.5)), 0, 1).astype(F32)


def test_reference_module_imports_neither_onnx_nor_the_converter() -> None:
    import reference as ref

    tree = ast.parse(Path(ref.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if m.split(".")[0] in ("onnx", "onnxruntime", "srp_onnx")}


# -- the neuron -----------------------------------------------------------------------


def test_if_step_golden_membrane_trajectory() -> None:
    # theta = 1: v = 0.5 -> 2.0 fires, keeps 1.0 (one spike per step) -> 0.5 -> 0.75 -> 2.75 fires -> ...
    xs = [1.5, -0.5, 0.25, 2.0, 0.0, -1.0]
    v = np.full((), 0.5, F32)
    trajectory, spikes = [], []
    for x in xs:
        s, v = if_step(v, np.asarray(x, F32), 1.0)
        trajectory.append(float(v))
        spikes.append(bool(s))
    assert spikes == [True, False, False, True, True, False]
    assert trajectory == [1.0, 0.5, 0.75, 1.75, 0.75, -0.25]


@pytest.mark.parametrize(
    ("x", "theta", "golden"),
    [
        (0.25, 1.0, [0, 1, 0, 0, 0, 1]),  # v: .75, 1 -> 0, .25, .5, .75, 1 -> 0
        (0.75, 2.0, [0, 1, 0, 1, 0, 0]),  # x/theta = .375: .875, 1.25 -> .25, .625, 1 -> 0, .375, .75
        (3.0, 2.0, [1, 1, 1, 1, 1, 1]),  # above theta: fires every step, v grows
        (-0.5, 1.0, [0, 0, 0, 0, 0, 0]),
    ],
)
def test_if_neuron_golden_spike_trains(x: float, theta: float, golden: list[int]) -> None:
    out, spikes, mask = if_neuron(np.full((6, 1), x, F32), theta, tau=0)
    assert spikes[:, 0].astype(int).tolist() == golden
    np.testing.assert_array_equal(out[:, 0], F32(theta) * np.array(golden, F32))
    assert out.dtype == np.float32 and spikes.dtype == bool
    np.testing.assert_array_equal(mask, np.ones(1, F32))


def test_membrane_exactly_at_threshold_fires() -> None:
    below = F32(0.5) - F32(2**-24)  # v = 0.5 + below = 1 - 2^-24 exactly: the float32 just below 1
    _, spikes, _ = if_neuron(np.array([[0.5, below]], F32), 1.0, tau=0)
    assert spikes[0].tolist() == [True, False]
    _, spikes, _ = if_neuron(np.array([[2.0, 1.0]], F32), 4.0, tau=0)  # x / theta = 0.5 exactly
    assert spikes[0].tolist() == [True, False]


def test_mask_is_zero_at_residual_exactly_1e_3_and_one_just_above() -> None:
    # Two pre-simulation steps: -0.5 brings v to 0 exactly, then the residual r is added exactly.
    r = F32(1e-3)
    cases = np.array([r, np.nextafter(r, F32(1)), np.nextafter(r, F32(0)), 0.0], F32)
    x = np.stack([np.full(4, -0.5, F32), cases, np.zeros(4, F32)])
    _, spikes, mask = if_neuron(x, 1.0, tau=2)
    np.testing.assert_array_equal(mask, np.array([0, 1, 0, 0], F32))
    # theta = 2: x / theta is exact, the same boundary holds
    _, _, mask2 = if_neuron(x * F32(2), 2.0, tau=2)
    np.testing.assert_array_equal(mask2, mask)
    assert not spikes.any()


def test_presimulation_masks_neurons_without_positive_residual() -> None:
    # x = 0.25: after 2 steps v = 1 -> fires -> 0: masked, silent although it fires at step 3.
    # x = 0.375: residual 0.25 > 1e-3: active; v restarts at 0.5 after pre-simulation.
    x = np.tile(np.array([0.25, 0.375], F32), (6, 1))
    out, spikes, mask = if_neuron(x, 1.0, tau=2)
    np.testing.assert_array_equal(mask, np.array([0, 1], F32))
    assert spikes[:, 0].astype(int).tolist() == [0, 1, 0, 0, 0, 0]  # pre-simulation spikes are not masked
    assert spikes[:, 1].astype(int).tolist() == [0, 1, 0, 1, 0, 1]
    np.testing.assert_array_equal(out, spikes.astype(F32))


def spike_count_formula(n: int | np.ndarray, ratio: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(n * ratio + 0.5), 0, n).astype(np.int64)


def test_spike_count_with_constant_input_is_rounded_n_x_over_theta() -> None:
    ratios = np.arange(-80, 161, dtype=np.float64) / 64  # x / theta, dyadic, below 0 to above 1
    for theta in (1.0, 0.5, 4.0):
        x = (ratios * theta).astype(F32)
        _, spikes, _ = if_neuron(np.tile(x, (40, 1)), theta, tau=0)
        counts = np.cumsum(spikes, axis=0)
        for n in range(1, 41):
            np.testing.assert_array_equal(counts[n - 1], spike_count_formula(n, ratios), err_msg=f"n={n}")


@pytest.mark.parametrize("tau", [1, 3, 8])
def test_spike_count_restarts_after_presimulation(tau: int) -> None:
    ratios = np.arange(-16, 97, dtype=np.float64) / 64
    x = ratios.astype(F32)
    T = 20
    _, spikes, mask = if_neuron(np.tile(x, (tau + T, 1)), 1.0, tau=tau)
    residual = 0.5 + tau * ratios - spike_count_formula(tau, ratios)  # exact in float64
    np.testing.assert_array_equal(mask, (residual > 1e-3).astype(F32))
    assert 0 < mask.sum() < mask.size  # both kinds occur
    np.testing.assert_array_equal(spikes[:tau].sum(axis=0), spike_count_formula(tau, ratios))
    counts = np.cumsum(spikes[tau:], axis=0)
    for n in range(1, T + 1):
        np.testing.assert_array_equal(counts[n - 1], mask * spike_count_formula(n, ratios))


def test_mean_output_approaches_clipped_input_not_quantized_value() -> None:
    rng = np.random.default_rng(0)
    theta, T = 2.0, 1000
    x = rng.uniform(-1, 3, size=500).astype(F32)
    out, _, _ = if_neuron(np.tile(x, (T, 1)), theta, tau=0)
    mean = out.mean(axis=0, dtype=np.float64)
    np.testing.assert_array_less(np.abs(mean - np.clip(x, 0, theta)), theta / T)


# -- the rules at the end of the pre-simulation (docs/srp-algorithm.md section 3a) -------

# Constant input x / theta (dyadic, so every step is exact), tau = 4; c = 1/8 makes c * tau = 0.5.
#   ratio  v after 4 steps  N   (N + v) - 0.5   srp  deadzone c=0  deadzone c=1/8  both c=1/8
#  -1/16        0.25        0       -0.25        1        0              0             0
#   0           0.5         0        0           1        0              0             0
#   1/16        0.75        0        0.25        1        1              0             0   (the dead zone)
#   1/8         0           1        0.5         0        1              0             0   (exactly at c)
#   3/16        0.25        1        0.75        1        1              1             1
#   1/4         0.5         1        1.0         1        1              1             1
#   3/8         0           2        1.5         0        1              1             0
RATIOS = np.array([-1, 0, 1, 2, 3, 4, 6], np.float64) / 16
GOLDEN_MASKS = {
    ("srp", 0.0): [1, 1, 1, 0, 1, 1, 0],
    ("deadzone", 0.0): [0, 0, 1, 1, 1, 1, 1],
    ("deadzone", 0.125): [0, 0, 0, 0, 1, 1, 1],
    ("both", 0.0): [0, 0, 1, 0, 1, 1, 0],
    ("both", 0.125): [0, 0, 0, 0, 1, 1, 0],
    ("burnin", 0.0): [1, 1, 1, 1, 1, 1, 1],
}


@pytest.mark.parametrize(("rule", "c"), list(GOLDEN_MASKS))
def test_rule_golden_masks_and_post_presimulation_spike_counts(rule: str, c: float) -> None:
    tau, T = 4, 12
    for theta in (1.0, 4.0):  # x / theta exact either way
        x = np.tile((RATIOS * theta).astype(F32), (tau + T, 1))
        _, spikes, mask = if_neuron(x, theta, tau, rule, c)
        np.testing.assert_array_equal(mask, np.array(GOLDEN_MASKS[rule, c], F32), err_msg=f"theta={theta}")
        np.testing.assert_array_equal(spikes[:tau].sum(axis=0), spike_count_formula(tau, RATIOS))
        counts = np.cumsum(spikes[tau:], axis=0)
        for n in range(1, T + 1):
            if rule == "burnin":  # v kept: the count goes on from where the pre-simulation left it
                want = spike_count_formula(tau + n, RATIOS) - spike_count_formula(tau, RATIOS)
            else:  # v restarts at 0.5: the count restarts
                want = mask.astype(np.int64) * spike_count_formula(n, RATIOS)
            np.testing.assert_array_equal(counts[n - 1], want, err_msg=f"n={n}")


def test_deadzone_sum_is_the_accumulated_input_over_theta() -> None:
    # Varying input: (N + v) - 0.5 after tau steps equals sum(x) / theta exactly (dyadic), whatever fired.
    rng = np.random.default_rng(11)
    tau = 6
    x = dyadic(rng, (tau, 200), scale=16, bound=24)
    v = np.full(200, 0.5, F32)
    n = np.zeros(200, np.int64)
    for t in range(tau):
        s, v = if_step(v, x[t], 1.0)
        n += s
    assert n.max() > 0 and (x.sum(axis=0) < 0).any()
    np.testing.assert_array_equal((n + v.astype(np.float64)) - 0.5, x.astype(np.float64).sum(axis=0))
    for c in (0.0, 0.0625, 0.125):
        mask, v_new = end_of_presimulation(v, n, tau, "deadzone", c)
        np.testing.assert_array_equal(mask, (x.astype(np.float64).sum(axis=0) > c * tau).astype(F32))
        np.testing.assert_array_equal(v_new, np.full(200, 0.5, F32))


def test_rule_masks_are_one_ulp_sharp_at_the_deadzone_boundary() -> None:
    # N = 0, tau = 4, c = 1/8: the boundary is (N + v) - 0.5 = 0.5, i.e. v = 1 (exact in float32).
    v = np.array([1.0, np.nextafter(F32(1), F32(2)), np.nextafter(F32(1), F32(0))], F32)
    mask, _ = end_of_presimulation(v, np.zeros(3), 4, "deadzone", 0.125)
    np.testing.assert_array_equal(mask, np.array([0, 1, 0], F32))


def test_srp_is_the_default_rule_and_unknown_rules_are_refused() -> None:
    assert RULES[0] == "srp"
    x = np.tile((RATIOS * 2).astype(F32), (10, 1))
    for got, want in zip(if_neuron(x, 2.0, 4), if_neuron(x, 2.0, 4, "srp", 0.0)):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="rule"):
        if_neuron(x, 2.0, 4, "release")
    with pytest.raises(ValueError, match="c must be"):
        end_of_presimulation(np.zeros(1, F32), np.zeros(1), 4, "deadzone", -0.1)


def test_if_neuron_rejects_tau_beyond_the_steps() -> None:
    with pytest.raises(ValueError, match="tau"):
        if_neuron(np.zeros((3, 2), F32), 1.0, tau=4)


# -- single ops against onnxruntime ---------------------------------------------------

R = np.random.default_rng(1234)


def f(*shape: int) -> np.ndarray:
    return R.standard_normal(shape).astype(F32)


def i64(*values: Any) -> np.ndarray:
    return np.array(values, dtype=np.int64)


FLOAT, INT64, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
# (op, inputs (first one is the graph input; None = omitted), attributes, opset, output types)
OP_CASES: list[Any] = [
    ("Conv", [f(2, 3, 7, 7), f(4, 3, 3, 3), f(4)], {"pads": [1, 1, 1, 1]}, 17, [FLOAT]),
    ("Conv", [f(1, 3, 9, 8), f(4, 3, 3, 2)], {"strides": [2, 1], "dilations": [2, 2], "pads": [0, 1, 2, 0]}, 17,
     [FLOAT]),
    ("Conv", [f(2, 4, 6, 6), f(6, 2, 3, 3), f(6)], {"group": 2}, 17, [FLOAT]),
    ("Conv", [f(1, 4, 5, 5), f(4, 1, 3, 3)], {"group": 4, "pads": [1, 1, 1, 1]}, 17, [FLOAT]),
    ("Conv", [f(1, 3, 7, 7), f(2, 3, 4, 4)], {"strides": [2, 2], "auto_pad": "SAME_UPPER"}, 17, [FLOAT]),
    ("Conv", [f(1, 3, 7, 7), f(2, 3, 4, 4)], {"strides": [2, 2], "auto_pad": "SAME_LOWER"}, 17, [FLOAT]),
    ("Conv", [f(1, 3, 7, 7), f(2, 3, 4, 4)], {"auto_pad": "VALID"}, 17, [FLOAT]),
    ("Conv", [f(2, 3, 10), f(5, 3, 3), f(5)], {"strides": [2], "pads": [1, 2]}, 17, [FLOAT]),
    ("Conv", [f(1, 2, 4, 5, 5), f(3, 2, 2, 3, 3)], {"pads": [0, 1, 1, 1, 1, 0]}, 17, [FLOAT]),
    ("ConvTranspose", [f(1, 4, 5, 5), f(4, 3, 3, 3), f(3)],
     {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}, 17, [FLOAT]),
    ("ConvTranspose", [f(2, 4, 4, 4), f(4, 2, 3, 3)], {"group": 2, "dilations": [2, 2]}, 17, [FLOAT]),
    ("ConvTranspose", [f(1, 2, 3, 3), f(2, 3, 3, 3)], {"strides": [2, 2], "auto_pad": "SAME_UPPER"}, 17,
     [FLOAT]),
    ("ConvTranspose", [f(1, 2, 3, 4), f(2, 3, 2, 3)], {"strides": [1, 2], "pads": [0, 1, 1, 0]}, 17, [FLOAT]),
    ("ConvTranspose", [f(1, 2, 3, 3), f(2, 3, 3, 3)], {"strides": [2, 2], "output_shape": [6, 6]}, 17, [FLOAT]),
    ("ConvTranspose", [f(1, 2, 3, 3), f(2, 3, 3, 3)], {"strides": [2, 2], "auto_pad": "SAME_LOWER"}, 17,
     [FLOAT]),
    ("ConvTranspose", [f(1, 2, 5), f(2, 4, 3), f(4)], {"strides": [3]}, 17, [FLOAT]),
    ("Gemm", [f(3, 5), f(4, 5), f(4)], {"transB": 1, "alpha": 0.5, "beta": 2.0}, 17, [FLOAT]),
    ("Gemm", [f(5, 3), f(5, 4), f(3, 4)], {"transA": 1}, 17, [FLOAT]),
    ("Gemm", [f(3, 5), f(5, 4)], {}, 17, [FLOAT]),
    ("MatMul", [f(2, 3, 4), f(4, 5)], {}, 17, [FLOAT]),
    ("Add", [f(2, 3, 4), f(3, 1)], {}, 17, [FLOAT]),
    ("Sub", [f(2, 3, 4), f(4)], {}, 17, [FLOAT]),
    ("Mul", [f(2, 3, 4), f(1, 3, 1)], {}, 17, [FLOAT]),
    ("Div", [f(2, 3, 4), np.abs(f(3, 4)) + 0.5], {}, 17, [FLOAT]),
    ("Div", [i64(7, -7, 7, -7, 0, 5), i64(2, 2, -2, -2, 3, -5)], {}, 17, [INT64]),
    ("Pow", [np.abs(f(3, 4)), np.array(2.0, F32)], {}, 17, [FLOAT]),
    ("AveragePool", [f(2, 3, 7, 7)], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, 17,
     [FLOAT]),
    ("AveragePool", [f(2, 3, 7, 7)],
     {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}, 17, [FLOAT]),
    ("AveragePool", [f(1, 2, 7, 7)], {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}, 17, [FLOAT]),
    ("AveragePool", [f(1, 2, 6, 6)],
     {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1, "count_include_pad": 1},
     17, [FLOAT]),
    ("AveragePool", [f(1, 2, 7, 7)], {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}, 17,
     [FLOAT]),
    ("AveragePool", [f(1, 2, 8)], {"kernel_shape": [2], "strides": [2]}, 17, [FLOAT]),
    ("MaxPool", [f(2, 3, 7, 7)], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, 17, [FLOAT]),
    ("MaxPool", [f(1, 2, 7, 7)], {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}, 17, [FLOAT]),
    ("MaxPool", [f(1, 2, 9, 9)], {"kernel_shape": [2, 2], "dilations": [2, 2]}, 17, [FLOAT]),
    ("MaxPool", [f(1, 2, 7, 7)], {"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "SAME_UPPER"}, 17,
     [FLOAT]),
    ("MaxPool", [f(1, 2, 7, 7)], {"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "SAME_LOWER"}, 17,
     [FLOAT]),
    ("AveragePool", [f(1, 2, 7, 7)],
     {"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "SAME_LOWER", "count_include_pad": 1}, 17, [FLOAT]),
    ("AveragePool", [f(1, 2, 9, 9)], {"kernel_shape": [3, 3], "dilations": [2, 2], "pads": [1, 1, 1, 1]}, 19,
     [FLOAT]),
    ("GlobalAveragePool", [f(2, 3, 5, 4)], {}, 17, [FLOAT]),
    ("Flatten", [f(2, 3, 4, 5)], {"axis": 2}, 17, [FLOAT]),
    ("Flatten", [f(2, 3, 4)], {"axis": 0}, 17, [FLOAT]),
    ("Reshape", [f(2, 3, 4), i64(0, -1)], {}, 17, [FLOAT]),
    ("Reshape", [f(2, 3, 4), i64(4, 3, 2)], {"allowzero": 1}, 17, [FLOAT]),
    ("Transpose", [f(2, 3, 4)], {"perm": [2, 0, 1]}, 17, [FLOAT]),
    ("Transpose", [f(2, 3, 4)], {}, 17, [FLOAT]),
    ("Concat", [f(2, 3), f(2, 2)], {"axis": -1}, 17, [FLOAT]),
    ("Split", [f(2, 6)], {"axis": 1}, 17, [FLOAT, FLOAT]),
    ("Split", [f(3, 4), i64(1, 2)], {}, 17, [FLOAT, FLOAT]),
    ("Split", [f(5, 2)], {"num_outputs": 2}, 18, [FLOAT, FLOAT]),
    ("Squeeze", [f(2, 1, 3, 1), i64(1, -1)], {}, 17, [FLOAT]),
    ("Squeeze", [f(2, 1, 3, 1)], {"axes": [1]}, 11, [FLOAT]),
    ("Squeeze", [f(1, 3, 1)], {}, 17, [FLOAT]),
    ("Unsqueeze", [f(2, 3), i64(0, -1)], {}, 17, [FLOAT]),
    ("Unsqueeze", [f(2, 3)], {"axes": [1]}, 11, [FLOAT]),
    ("Slice", [f(5, 6, 7), i64(1, -1), i64(4, -(2**63)), i64(0, 2), i64(2, -2)], {}, 17, [FLOAT]),
    ("Slice", [f(5, 6), i64(1, 2), i64(100, -1)], {}, 17, [FLOAT]),
    ("Pad", [f(1, 2, 4, 4), i64(0, 0, 1, 2, 0, 0, 2, 1), np.array(0.5, F32)], {}, 17, [FLOAT]),
    ("Pad", [f(1, 2, 4, 4), i64(0, 0, 1, 2, 0, 0, 2, 1)], {"mode": "reflect"}, 17, [FLOAT]),
    ("Pad", [f(1, 2, 4, 4), i64(0, 0, 1, 2, 0, 0, 2, 1)], {"mode": "edge"}, 17, [FLOAT]),
    ("Pad", [f(1, 2, 4, 4), i64(0, 0, -1, 1, 0, 0, 1, -1)], {}, 17, [FLOAT]),
    ("Pad", [f(1, 2, 4, 4), i64(1, 2, 0, 1), None, i64(2, 3)], {}, 18, [FLOAT]),
    ("BatchNormalization", [f(2, 3, 4, 4), f(3), f(3), f(3), np.abs(f(3)) + 0.5], {"epsilon": 1e-3}, 17,
     [FLOAT]),
    ("Identity", [f(2, 3)], {}, 17, [FLOAT]),
    ("Dropout", [f(2, 3)], {}, 17, [FLOAT]),
    ("Relu", [f(2, 3, 4)], {}, 17, [FLOAT]),
    ("LeakyRelu", [f(2, 3, 4)], {"alpha": 0.2}, 17, [FLOAT]),
    ("Clip", [f(3, 4), np.array(-0.5, F32), np.array(0.7, F32)], {}, 17, [FLOAT]),
    ("Clip", [f(3, 4), None, np.array(0.7, F32)], {}, 17, [FLOAT]),
    ("Clip", [f(3, 4)], {}, 17, [FLOAT]),
    ("Clip", [f(3, 4)], {"min": -0.2, "max": 0.3}, 6, [FLOAT]),
    ("Floor", [f(3, 4) * 3], {}, 17, [FLOAT]),
    ("Ceil", [f(3, 4) * 3], {}, 17, [FLOAT]),
    ("Round", [np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.3, -0.7], F32)], {}, 17, [FLOAT]),
    ("Neg", [f(3, 4)], {}, 17, [FLOAT]),
    ("Abs", [f(3, 4)], {}, 17, [FLOAT]),
    ("Sqrt", [np.abs(f(3, 4))], {}, 17, [FLOAT]),
    ("Reciprocal", [np.abs(f(3, 4)) + 0.1], {}, 17, [FLOAT]),
    ("Exp", [f(3, 4)], {}, 17, [FLOAT]),
    ("Erf", [f(3, 4)], {}, 17, [FLOAT]),
    ("Sigmoid", [np.concatenate([f(8), np.array([-100, 100, 0], F32)])], {}, 17, [FLOAT]),
    ("Tanh", [f(3, 4)], {}, 17, [FLOAT]),
    ("Min", [f(2, 3), f(3), f(1, 1)], {}, 17, [FLOAT]),
    ("Max", [f(2, 3), f(3), f(1, 1)], {}, 17, [FLOAT]),
    ("Sum", [f(2, 3), f(3)], {}, 17, [FLOAT]),
    ("Softmax", [f(2, 3, 4)], {}, 17, [FLOAT]),
    ("Softmax", [f(2, 3, 4)], {"axis": 1}, 17, [FLOAT]),
    ("Softmax", [f(2, 3, 4)], {}, 11, [FLOAT]),
    ("LogSoftmax", [f(2, 3, 4)], {}, 17, [FLOAT]),
    ("ArgMax", [f(4, 5)], {"axis": 1, "keepdims": 0}, 17, [INT64]),
    ("ArgMax", [np.array([[1, 3, 3], [2, 2, 1]], F32)], {"axis": 1, "select_last_index": 1}, 17, [INT64]),
    ("ArgMax", [np.array([[1, 3, 3], [2, 2, 1]], F32)], {"axis": -1}, 17, [INT64]),
    ("Shape", [f(2, 3, 4, 5)], {}, 17, [INT64]),
    ("Shape", [f(2, 3, 4, 5)], {"start": 1, "end": -1}, 17, [INT64]),
    ("Size", [f(2, 3, 4)], {}, 17, [INT64]),
    ("Gather", [f(5, 4), i64([0, -1], [2, 3])], {}, 17, [FLOAT]),
    ("Gather", [f(5, 4), np.array(-2, np.int64)], {"axis": 1}, 17, [FLOAT]),
    ("Cast", [f(3, 4) * 3], {"to": INT64}, 17, [INT64]),
    ("Cast", [np.array([0.0, 1.5, -2.0], F32)], {"to": BOOL}, 17, [BOOL]),
    ("Cast", [i64(1, -2, 3)], {"to": FLOAT}, 17, [FLOAT]),
    ("ConstantOfShape", [i64(2, 3)], {"value": numpy_helper.from_array(np.array([1.5], F32))}, 17, [FLOAT]),
    ("ConstantOfShape", [i64(2)], {}, 17, [FLOAT]),
    ("Equal", [i64(1, 2, 3), i64(1, 0, 3)], {}, 17, [BOOL]),
    ("Less", [f(3, 4), f(4)], {}, 17, [BOOL]),
    ("Greater", [f(3, 4), f(4)], {}, 17, [BOOL]),
    ("Not", [np.array([True, False])], {}, 17, [BOOL]),
    ("Where", [np.array([[True, False, True]]), f(2, 3), f(3)], {}, 17, [FLOAT]),
    ("Expand", [f(3, 1), i64(2, 1, 4)], {}, 17, [FLOAT]),
    ("ReduceMean", [f(2, 3, 4)], {"axes": [1], "keepdims": 0}, 17, [FLOAT]),
    ("ReduceMean", [f(2, 3, 4), i64(-1, 0)], {}, 18, [FLOAT]),
    ("ReduceMean", [f(2, 3, 4)], {}, 17, [FLOAT]),
    ("ReduceSum", [f(2, 3, 4), i64(1)], {"keepdims": 0}, 17, [FLOAT]),
    ("ReduceMax", [f(2, 3, 4)], {"axes": [2]}, 17, [FLOAT]),
    ("Range", [np.array(0.5, F32), np.array(3.7, F32), np.array(0.5, F32)], {}, 17, [FLOAT]),
    ("Range", [np.array(10, np.int64), np.array(1, np.int64), np.array(-3, np.int64)], {}, 17, [INT64]),
    ("Tile", [f(2, 3), i64(2, 1)], {}, 17, [FLOAT]),
]  # fmt: skip


def _case_id(case: Any) -> str:
    op, _, attrs, opset, _ = case
    return f"{op}-{'-'.join(sorted(attrs)) or 'plain'}-op{opset}"


@pytest.mark.parametrize("case", OP_CASES, ids=[f"{k}-{_case_id(c)}" for k, c in enumerate(OP_CASES)])
def test_run_ann_single_op_matches_onnxruntime(case: Any) -> None:
    op, inputs, attrs, opset, out_types = case
    names = ["" if a is None else f"in{k}" for k, a in enumerate(inputs)]
    outs = [f"out{k}" for k in range(len(out_types))]
    node = helper.make_node(op, names, outs, **attrs)
    inits = {n: a for n, a in zip(names[1:], inputs[1:]) if a is not None}
    model = make_model([node], (names[0], inputs[0]), inits, list(zip(outs, out_types)), opset)
    expected = run_ort(model, {names[0]: inputs[0]})
    graph = from_onnx(model)
    for name, want in zip(outs, expected):
        got = run_ann(graph, inputs[0], name)
        assert got.dtype == want.dtype, name
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)


SEQUENCE_CASES = [
    (k, c) for k, c in enumerate(OP_CASES) if c[1][0].dtype == F32 and c[1][0].ndim >= 1 and c[0] != "Range"
]


@pytest.mark.parametrize(
    "case", [c for _, c in SEQUENCE_CASES], ids=[f"{k}-{_case_id(c)}" for k, c in SEQUENCE_CASES]
)
def test_op_on_a_time_sequence_equals_the_op_at_each_step(case: Any) -> None:
    # x -> Relu (a neuron site) -> op: the op sees a time sequence; compare with run_ann at each step,
    # the neuron's output plugged in by hand.
    op, inputs, attrs, opset, out_types = case
    names = ["a", *("" if a is None else f"in{k}" for k, a in enumerate(inputs) if k > 0)]
    outs = [f"out{k}" for k in range(len(out_types))]
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node(op, names, outs, **attrs)]
    inits = {n: a for n, a in zip(names[1:], inputs[1:]) if a is not None}
    model = make_model(nodes, ("x", inputs[0]), inits, list(zip(outs, out_types)), opset)
    graph = from_onnx(model)
    x, theta, tau, T = inputs[0] * F32(2), 0.5, 2, 3
    neuron_out, _, _ = if_neuron(np.broadcast_to(x, (tau + T, *x.shape)), theta, tau)
    for name in outs:
        res = simulate(graph, [RefSite("x", "a", theta)], x, T=T, tau=tau, output=name)
        for t in range(T):
            want = run_ann(graph, x, name, overrides={"a": lambda _, t=t: neuron_out[tau + t]})
            np.testing.assert_allclose(res.logits[t], want, rtol=1e-6, atol=1e-6, err_msg=f"{name} t={t}")


def test_unsupported_op_raises_not_implemented_naming_it() -> None:
    node = helper.make_node("HardSwish", ["x"], ["y"], name="hs1")
    model = make_model([node], ("x", f(2, 3)), {}, [("y", FLOAT)])
    with pytest.raises(NotImplementedError, match="HardSwish.*hs1"):
        run_ann(from_onnx(model), f(2, 3), "y")


# -- small networks -------------------------------------------------------------------


def conv_net(rng: np.random.Generator, exact: bool = False) -> tuple[onnx.ModelProto, list[RefSite]]:
    """conv-relu-avgpool-conv-relu-flatten-gemm-relu-gemm; ``exact``: dyadic weights (float32-exact sums)."""

    def w(*shape: int) -> np.ndarray:
        return dyadic(rng, shape, 16, 6) if exact else (rng.standard_normal(shape) * 0.4).astype(F32)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("AveragePool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Flatten", ["r2"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["g1"], transB=1),
        helper.make_node("Relu", ["g1"], ["r3"]),
        helper.make_node("Gemm", ["r3", "w4", "b4"], ["logits"], transB=1),
    ]
    inits = {"w1": w(4, 3, 3, 3), "b1": w(4), "w2": w(6, 4, 3, 3), "b2": w(6), "w3": w(10, 6 * 4 * 4),
             "b3": w(10), "w4": w(5, 10), "b4": w(5)}  # fmt: skip
    model = make_model(nodes, ("x", np.zeros((2, 3, 8, 8), F32)), inits, [("logits", FLOAT)])
    sites = [RefSite("c1", "r1", 1.0), RefSite("c2", "r2", 2.0), RefSite("g1", "r3", 4.0)]
    return model, sites


def residual_net(rng: np.random.Generator, exact: bool = False) -> tuple[onnx.ModelProto, list[RefSite]]:
    """A BasicBlock: conv-relu-conv + identity shortcut, add, relu; then global pool and a classifier."""

    def w(*shape: int) -> np.ndarray:
        return dyadic(rng, shape, 16, 6) if exact else (rng.standard_normal(shape) * 0.4).astype(F32)

    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["a0"]),
        helper.make_node("Conv", ["a0", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["a1"]),
        helper.make_node("Conv", ["a1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "a0"], ["s"]),
        helper.make_node("Relu", ["s"], ["a2"]),
        helper.make_node("GlobalAveragePool", ["a2"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1),
    ]
    inits = {"w0": w(4, 3, 3, 3), "b0": w(4), "w1": w(4, 4, 3, 3), "b1": w(4), "w2": w(4, 4, 3, 3),
             "b2": w(4), "wf": w(3, 4), "bf": w(3)}  # fmt: skip
    model = make_model(nodes, ("x", np.zeros((2, 3, 4, 4), F32)), inits, [("logits", FLOAT)])
    sites = [RefSite("c0", "a0", 1.0), RefSite("c1", "a1", 0.5), RefSite("s", "a2", 2.0)]
    return model, sites


def qcfs_nodes(x: str, y: str, lam: str, levels: str, tag: str) -> list[onnx.NodeProto]:
    """TorchScript-style QCFS: y = clip(floor(x / lam * L + 0.5) / L, 0, 1) * lam."""
    t = [f"{tag}_{k}" for k in range(6)]
    return [
        helper.make_node("Div", [x, lam], [t[0]]),
        helper.make_node("Mul", [t[0], levels], [t[1]]),
        helper.make_node("Add", [t[1], "half"], [t[2]]),
        helper.make_node("Floor", [t[2]], [t[3]]),
        helper.make_node("Div", [t[3], levels], [t[4]]),
        helper.make_node("Clip", [t[4], "zero", "one"], [t[5]]),
        helper.make_node("Mul", [t[5], lam], [y]),
    ]


def qcfs_net(rng: np.random.Generator) -> tuple[onnx.ModelProto, list[RefSite]]:
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        *qcfs_nodes("c1", "q1", "lam1", "L", "qa"),
        helper.make_node("AveragePool", ["q1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p1"], ["f"]),
        helper.make_node("Gemm", ["f", "w2", "b2"], ["g"], transB=1),
        *qcfs_nodes("g", "q2", "lam2", "L", "qb"),
        helper.make_node("Gemm", ["q2", "w3", "b3"], ["logits"], transB=1),
    ]

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.5).astype(F32)

    inits = {"w1": w(4, 3, 3, 3), "b1": w(4), "w2": w(8, 4 * 3 * 3), "b2": w(8), "w3": w(5, 8), "b3": w(5),
             "lam1": np.array(1.5, F32), "lam2": np.array(2.5, F32), "L": np.array(4.0, F32),
             "half": np.array(0.5, F32), "zero": np.array(0.0, F32), "one": np.array(1.0, F32)}  # fmt: skip
    model = make_model(nodes, ("x", np.zeros((3, 3, 6, 6), F32)), inits, [("logits", FLOAT)])
    return model, [RefSite("c1", "q1", 1.5), RefSite("g", "q2", 2.5)]


NETS = {"conv": conv_net, "residual": residual_net, "qcfs": qcfs_net}


def net_input(model: onnx.ModelProto, rng: np.random.Generator, exact: bool = False) -> np.ndarray:
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return dyadic(rng, shape, 16, 24) if exact else rng.standard_normal(shape).astype(F32)


@pytest.mark.parametrize("net", sorted(NETS))
def test_run_ann_small_networks_match_onnxruntime(net: str) -> None:
    rng = np.random.default_rng(7)
    model, _ = NETS[net](rng)
    x = net_input(model, rng)
    (expected,) = run_ort(model, {"x": x})
    np.testing.assert_allclose(run_ann(from_onnx(model), x, "logits"), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("net", sorted(NETS))
def test_first_step_logits_equal_ann_with_l1_activations(net: str) -> None:
    """Section 6: with tau = 0 and v0 = 0.5 a neuron fires at step 1 iff x >= theta / 2."""
    rng = np.random.default_rng(11)
    model, sites = NETS[net](rng)
    graph = from_onnx(model)
    x = net_input(model, rng) * F32(2)
    res = simulate(graph, sites, x, T=3, tau=0, output="logits")
    ann_l1 = run_ann(graph, x, "logits", overrides={s: l1_activation(s.theta) for s in sites})
    np.testing.assert_allclose(res.logits[0], ann_l1, rtol=1e-5, atol=1e-5)
    assert res.logits.shape == (3, *ann_l1.shape) and res.logits.dtype == np.float32
    for s in sites:
        assert res.presim_spikes[s.output].sum() == 0
        np.testing.assert_array_equal(res.masks[s.output], np.ones_like(res.masks[s.output]))


def lockstep(graph: Graph, sites: Sequence[RefSite], x: np.ndarray, T: int, tau: int, output: str,
             rule: str = "srp", c: float = 0.0) -> Any:
    """Independent oracle: step the whole network in lockstep, one ``run_ann`` per time step.

    Each site is replaced by a stateful closure that charges, fires and resets its neurons
    (``if_step``), applies the mask after pre-simulation (``end_of_presimulation``, from the
    spikes it counted there), and counts the emitted spikes.
    """
    v: dict[str, np.ndarray] = {}
    mask: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    presim: dict[str, np.ndarray] = {}
    logits = []
    for t in range(tau + T):

        def neuron(site: RefSite, t: int = t) -> Callable[[np.ndarray], np.ndarray]:
            def fn(current: np.ndarray) -> np.ndarray:
                key = site.output
                if key not in v:
                    v[key] = np.full(current.shape, 0.5, F32)
                    mask[key] = np.ones(current.shape, F32)
                    counts[key] = np.zeros(current.shape, np.int64)
                    presim[key] = np.zeros(current.shape, np.int64)
                s, v[key] = if_step(v[key], current, site.theta)
                emitted = s.astype(F32) * (mask[key] if t >= tau else F32(1))
                if t >= tau:
                    counts[key] += emitted.astype(np.int64)
                else:
                    presim[key] += s
                if t == tau - 1:
                    mask[key], v[key] = end_of_presimulation(v[key], presim[key], tau, rule, c)
                return emitted * F32(site.theta)

            return fn

        y = run_ann(graph, x, output, overrides={s: neuron(s) for s in sites})
        if t >= tau:
            logits.append(y)
    return np.stack(logits), counts, mask


@pytest.mark.parametrize("net", ["conv", "residual"])
@pytest.mark.parametrize(("tau", "rule", "c"), [(0, "srp", 0.0), (3, "srp", 0.0), (3, "deadzone", 0.125),
                                                (4, "both", 0.0625), (3, "burnin", 0.0)])
def test_layer_by_layer_simulation_equals_lockstep_stepping(net: str, tau: int, rule: str, c: float) -> None:
    # Dyadic weights and inputs: every sum is exact in float32, whatever the order, so spikes agree exactly.
    rng = np.random.default_rng(3)
    model, sites = NETS[net](rng, exact=True)
    graph = from_onnx(model)
    x = net_input(model, rng, exact=True)
    T = 6
    res = simulate(graph, sites, x, T=T, tau=tau, output="logits", rule=rule, c=c)
    logits, counts, masks = lockstep(graph, sites, x, T, tau, "logits", rule, c)
    np.testing.assert_array_equal(res.logits, logits)
    for s in sites:
        np.testing.assert_array_equal(res.spikes[s.output], counts[s.output])
        np.testing.assert_array_equal(res.masks[s.output], masks[s.output])
        assert res.spikes[s.output].dtype == np.int64 and res.masks[s.output].dtype == np.float32
    total = sum(int(c.sum()) for c in res.spikes.values())
    assert total > 0


def test_spike_counts_split_into_presimulation_and_masked_post_steps() -> None:
    rng = np.random.default_rng(5)
    model, sites = conv_net(rng)
    graph = from_onnx(model)
    x = net_input(model, rng)
    tau, T = 4, 5
    res = simulate(graph, sites, x, T=T, tau=tau, output="logits")
    # the first site sees the static image: its current is constant, so the count formula applies
    current = run_ann(graph, x, sites[0].input)
    ratio = current.astype(np.float64) / sites[0].theta
    np.testing.assert_array_equal(res.presim_spikes["r1"], spike_count_formula(tau, ratio))
    np.testing.assert_array_equal(res.spikes["r1"], res.masks["r1"] * spike_count_formula(T, ratio))
    for s in sites:
        assert res.spikes[s.output].shape == res.masks[s.output].shape == res.presim_spikes[s.output].shape
        assert (res.spikes[s.output] <= T * res.masks[s.output]).all()


def test_shape_ops_on_time_sequences_see_the_per_step_shape() -> None:
    # torch.onnx-style flatten (Shape -> Gather -> Unsqueeze -> Concat -> Reshape) after a neuron
    # must give the same logits as Flatten.
    rng = np.random.default_rng(9)
    model, sites = conv_net(rng, exact=True)
    torch_style = onnx.ModelProto()
    torch_style.CopyFrom(model)
    g = torch_style.graph
    k = next(i for i, n in enumerate(g.node) if n.op_type == "Flatten")
    del g.node[k]
    flatten = [
        helper.make_node("Shape", ["r2"], ["shp"]),
        helper.make_node("Gather", ["shp", "zero_i"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "zero_1d"], ["batch1"]),
        helper.make_node("Concat", ["batch1", "minus1"], ["newshape"], axis=0),
        helper.make_node("Reshape", ["r2", "newshape"], ["f"]),
    ]
    for j, n in enumerate(flatten):
        g.node.insert(k + j, n)
    for name, v in {"zero_i": np.array(0, np.int64), "zero_1d": i64(0), "minus1": i64(-1)}.items():
        g.initializer.append(numpy_helper.from_array(v, name))
    onnx.checker.check_model(torch_style)
    x = net_input(model, rng, exact=True)
    ref = simulate(from_onnx(model), sites, x, T=4, tau=2, output="logits")
    got = simulate(from_onnx(torch_style), sites, x, T=4, tau=2, output="logits")
    np.testing.assert_array_equal(got.logits, ref.logits)
    assert got.logits.shape == (4, 2, 5)


def test_qcfs_site_replaces_the_value_at_the_chains_last_node() -> None:
    rng = np.random.default_rng(13)
    model, sites = qcfs_net(rng)
    graph = from_onnx(model)
    x = net_input(model, rng)
    res = simulate(graph, sites, x, T=5, tau=2, output="logits")
    # with the neurons plugged in by hand (lockstep) the result is the same
    logits, counts, _ = lockstep(graph, sites, x, 5, 2, "logits")
    np.testing.assert_allclose(res.logits, logits, rtol=1e-5, atol=1e-5)
    for s in sites:
        np.testing.assert_array_equal(res.spikes[s.output], counts[s.output])


def test_network_without_sites_repeats_the_ann_output_at_every_step() -> None:
    rng = np.random.default_rng(17)
    model, _ = conv_net(rng)
    graph = from_onnx(model)
    x = net_input(model, rng)
    res = simulate(graph, [], x, T=3, tau=1, output="logits")
    ann = run_ann(graph, x, "logits")
    for t in range(3):
        np.testing.assert_array_equal(res.logits[t], ann)
    assert res.spikes == {} and res.masks == {}


def test_run_ann_string_override_replaces_a_tensor_by_a_function_of_itself() -> None:
    rng = np.random.default_rng(19)
    model, _ = conv_net(rng)
    graph = from_onnx(model)
    x = net_input(model, rng)
    zeroed = run_ann(graph, x, "logits", overrides={"r3": np.zeros_like})
    np.testing.assert_allclose(zeroed, np.broadcast_to(graph.consts["b4"], zeroed.shape))


def test_unknown_site_and_ambiguous_input_are_reported() -> None:
    rng = np.random.default_rng(23)
    model, _ = conv_net(rng)
    graph = from_onnx(model)
    x = net_input(model, rng)
    with pytest.raises(ValueError, match="nope"):
        simulate(graph, [RefSite("c1", "nope", 1.0)], x, T=1, tau=0, output="logits")
    graph.inputs.append(type(graph.inputs[0])("other", None))
    with pytest.raises(ValueError, match="input="):
        run_ann(graph, x, "logits")
    assert run_ann(graph, x, "logits", input="x").shape == (2, 5)
