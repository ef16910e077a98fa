"""The onnxruntime runtime: every mode equals the numpy reference, and the runtime keeps no stale state.

Dyadic nets (tests/nets.py): every sum is exact in float32, so the runtime modes, the
lowering levers (theta folded or not, static head or not) and the reference must agree
bit for bit, spike counts included.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

import nets
import reference

from srp_onnx import fileformat
from srp_onnx.convert import ConvertOptions, convert
from srp_onnx.graph import from_onnx
from srp_onnx.lower import LowerOptions, lower
from srp_onnx.neuron import NeuronState, reset_graph
from srp_onnx.ort import cpu_session
from srp_onnx.runtime import SpikingModel

SHAPE = (3, 8, 8)
VARIANTS = {
    "step": {},
    "unrolled": {"mode": "unrolled"},
    "unrolled-fixed-batch": {"mode": "unrolled", "cuda_graph": True},  # the CUDA-graph path, minus capture
    "unfolded": {"lowering": LowerOptions(fold_theta=False)},
    "no-head": {"lowering": LowerOptions(hoist_static=False)},
}


@pytest.fixture(scope="module", params=["vgg", "resnet"])
def net(request, tmp_path_factory):
    path = nets.dyadic_net(request.param, 21 if request.param == "vgg" else 22, tmp_path_factory.mktemp(request.param),
                           SHAPE)
    snn, plan = convert(path, ConvertOptions(tau=3))
    return path, snn, plan


def _reference(path, plan, x, T, tau):
    sites = [reference.RefSite(s.input, s.output, float(s.theta)) for s in plan.sites]
    return reference.simulate(from_onnx(onnx.load(str(path))), sites, x, T=T, tau=tau, output=plan.logits)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_mode_equals_the_reference_bit_for_bit(net, variant):
    path, snn, plan = net
    x = nets.dyadic_input((4, *SHAPE), seed=5)
    ref = _reference(path, plan, x, T=5, tau=3)
    sim = SpikingModel(snn, device="cpu", record_spikes=True, **VARIANTS[variant])
    got = sim.simulate(x, 5, 3)
    np.testing.assert_array_equal(got.logits, ref.logits)
    for s in plan.sites:
        np.testing.assert_array_equal(got.spikes[s.name], ref.spikes[s.output], err_msg=s.name)
    assert sum(int(v.sum()) for v in got.spikes.values()) > 0


@pytest.mark.parametrize("variant", ["step", "unrolled"])
def test_state_does_not_leak_between_batches(net, variant):
    _, snn, _ = net
    sim = SpikingModel(snn, device="cpu", **VARIANTS[variant])
    a, b = nets.dyadic_input((4, *SHAPE), seed=6), nets.dyadic_input((4, *SHAPE), seed=7)
    first = sim.simulate(a, 4, 3).logits
    sim.simulate(b, 6, 0)  # another input, another T, no pre-simulation
    sim.simulate(b, 2, 5)  # leaves silenced neurons (v = -inf) behind
    np.testing.assert_array_equal(sim.simulate(a, 4, 3).logits, first)


def test_T_is_chosen_at_run_time_and_steps_are_causal(net):
    _, snn, _ = net
    sim = SpikingModel(snn, device="cpu")
    x = nets.dyadic_input((3, *SHAPE), seed=8)
    long = sim.simulate(x, 7, 3).logits
    assert long.shape[0] == 7
    for T in (1, 3, 6):
        np.testing.assert_array_equal(sim.simulate(x, T, 3).logits, long[:T])


@pytest.mark.parametrize("variant", ["step", "unrolled-fixed-batch"])
def test_batch_sizes_1_and_5_in_one_session(net, variant):
    path, snn, plan = net
    sim = SpikingModel(snn, device="cpu", record_spikes=True, **VARIANTS[variant])
    x = nets.dyadic_input((5, *SHAPE), seed=9)
    five = sim.simulate(x, 4, 3)
    one = sim.simulate(x[2:3], 4, 3)
    np.testing.assert_array_equal(one.logits, five.logits[:, 2:3])
    for s in plan.sites:
        np.testing.assert_array_equal(one.spikes[s.name], five.spikes[s.name][2:3])
    np.testing.assert_array_equal(sim.simulate(x, 4, 3).logits, five.logits)  # and back to 5
    np.testing.assert_array_equal(five.logits, _reference(path, plan, x, T=4, tau=3).logits)


def test_lowered_step_has_no_div_no_mask_and_the_first_conv_runs_once(net):
    _, snn, plan = net
    sg = lower(from_onnx(snn), fileformat.read(snn).layers, plan.logits)
    ops = [n.op for n in sg.step.nodes]
    assert "Div" not in ops and "Where" not in ops
    assert not any(i.name.endswith("__mask") for i in sg.step.inputs)
    assert ops.count("GreaterOrEqual") == len(plan.sites)
    assert sg.head is not None and [n.op for n in sg.head.nodes] == ["Conv"]
    convs = sum(n.op == "Conv" for n in from_onnx(snn).nodes)
    assert ops.count("Conv") == convs - 1


def test_unfolded_lowering_keeps_the_saved_division(net):
    _, snn, plan = net
    sg = lower(from_onnx(snn), fileformat.read(snn).layers, plan.logits, LowerOptions(fold_theta=False))
    divs = [n for g in (sg.head, sg.step) for n in g.nodes if n.op == "Div"]
    assert len(divs) == len(plan.sites)


def test_runtime_keeps_working_when_onnxruntime_shares_the_weights(net, monkeypatch):
    """If a future onnxruntime used the weight buffers in place, the runtime must keep them."""
    import srp_onnx.runtime as rt

    _, snn, _ = net
    monkeypatch.setattr(rt.ort, "copies_external_initializers", lambda: False)
    x = nets.dyadic_input((2, *SHAPE), seed=10)
    kept = SpikingModel(snn, device="cpu")
    assert kept._weights and any(v.nbytes >= rt._INLINE_BYTES for v in kept.graphs.step.consts.values())
    monkeypatch.undo()
    np.testing.assert_array_equal(kept.simulate(x, 3, 2).logits,
                                  SpikingModel(snn, device="cpu").simulate(x, 3, 2).logits)


def test_reset_silences_by_a_dead_membrane():
    """v > 1e-3 restarts at 0.5; v <= 1e-3 (the mask edge included) becomes -inf."""
    st = NeuronState("a__v", "a__mask", "a__v_next")
    sess = cpu_session(reset_graph([st]))
    v = np.array([[1e-3, np.nextafter(np.float32(1e-3), np.float32(1)), 0.0, -2.0, 0.7, 5.0]], np.float32)
    (out,) = sess.run(None, {st.v: v})
    np.testing.assert_array_equal(out, [[-np.inf, 0.5, -np.inf, -np.inf, 0.5, 0.5]])


def test_a_dead_neuron_never_fires_even_on_infinite_input():
    from srp_onnx.graph import Graph, ValueInfo
    from srp_onnx.neuron import emit_fast_neuron

    g = Graph([], {}, [ValueInfo("x", (1, 4))], [], 17)
    st = NeuronState("n__v", "n__mask", "n__v_next")
    emit_fast_neuron(g, "n", st, "x", "s")
    g.inputs.append(ValueInfo(st.v, (1, 4)))
    g.outputs = [ValueInfo("s", (1, 4)), ValueInfo(st.v_next, (1, 4))]
    from srp_onnx.graph import to_onnx

    sess = cpu_session(to_onnx(g))
    v = np.full((1, 4), -np.inf, np.float32)
    x = np.array([[0.5, 1e30, np.inf, -np.inf]], np.float32)
    for _ in range(3):
        s, v = sess.run(None, {"x": x, st.v: v})
        np.testing.assert_array_equal(s, 0)


def test_bad_mode_and_cuda_graph_without_unrolled_are_refused(net):
    from srp_onnx.errors import UsageError

    _, snn, _ = net
    with pytest.raises(UsageError, match="mode"):
        SpikingModel(snn, device="cpu", mode="fast")
    with pytest.raises(UsageError, match="unrolled"):
        SpikingModel(snn, device="cpu", cuda_graph=True)
