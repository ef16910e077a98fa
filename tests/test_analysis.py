"""analyze: unevenness-error cases against brute force, SOPs and energy against a hand count."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import reference
from onnx import TensorProto, helper, numpy_helper

from srp_onnx.analysis import E_AC_PJ, E_MAC_PJ, analyze, classify_cases
from srp_onnx.convert import ConvertOptions, convert
from srp_onnx.graph import from_onnx


def _tiny(tmp_path):
    """x[1,4] -> Gemm W1 -> Clip(0, 1) -> Gemm W2 -> logits[2]."""
    w1 = np.array([[1, 0, 0, 0], [0.5, 0, 0, 0], [0, 0, 0, 0]], np.float32)
    w2 = np.array([[1, 1, 2], [1, 0, 0]], np.float32)
    g = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1"], ["h"], transB=1, name="fc1"),
         helper.make_node("Clip", ["h", "lo", "hi"], ["a"], name="act"),
         helper.make_node("Gemm", ["a", "w2"], ["logits"], transB=1, name="fc2")],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
         numpy_helper.from_array(np.array(0, np.float32), "lo"),
         numpy_helper.from_array(np.array(1, np.float32), "hi")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    onnx.save(m, str(tmp_path / "tiny.onnx"))
    return tmp_path / "tiny.onnx"


def test_sops_and_energy_equal_a_hand_count(tmp_path):
    snn, _ = convert(_tiny(tmp_path), ConvertOptions(tau=2))
    x = np.array([[1, 0, 0, 0]], np.float32)
    an = analyze(snn, [x], T=4, tau=2)
    base, srp = an.runs
    # Hidden currents are [1, 0.5, 0] (theta 1, v0 0.5): neuron 0 fires every step, neuron 1 every
    # other step starting with the first (v: 1 -> 0 -> 0.5 -> 1 ...), neuron 2 never.
    # Fan-outs (nonzero weights of W2 per column): 2, 1, 1. tau = 0, T = 4: 4*2 + 2*1 = 10 SOPs.
    assert base.sops == 10
    assert base.first_layer_macs == 12 * 4  # fc1 is dense 4x3, sees the analog input each step
    assert base.energy_uj == pytest.approx((E_AC_PJ * 10 + E_MAC_PJ * 48) * 1e-6)
    # SRP, tau = 2: presim steps 1-2: neuron 0 fires twice (2*2 SOPs), neuron 1 once (1); after
    # presim neuron 0 has v = 0.5 (mask 1), neuron 1 has v = 0.5 (mask 1), neuron 2 v = 0.5 (mask 1,
    # never fires): the T = 4 steps repeat the tau = 0 count. Total 4 + 1 + 10 = 15.
    assert srp.sops == 15
    assert srp.first_layer_macs == 12 * 6
    assert an.ann_macs == 12 + 6
    assert an.ann_energy_uj == pytest.approx(E_MAC_PJ * 18 * 1e-6)
    rates = [s.firing_rate for s in base.layers]
    assert rates == [pytest.approx((4 + 2 + 0) / (3 * 4))]


def _brute_cases(a: np.ndarray, r: np.ndarray, theta: float) -> dict[str, int]:
    out = {"equal": 0, "a=0,r>0": 0, "a>0,r=0": 0, "a>r>0": 0, "r>a>0": 0}
    tol = 1e-4 * theta
    for ai, ri in zip(a.reshape(-1).tolist(), r.reshape(-1).tolist()):
        if abs(ai - ri) <= tol:
            out["equal"] += 1
        elif ai <= tol:
            out["a=0,r>0"] += 1
        elif ri <= tol:
            out["a>0,r=0"] += 1
        elif ai > ri:
            out["a>r>0"] += 1
        else:
            out["r>a>0"] += 1
    return out


def test_case_shares_match_brute_force_with_the_reference(tmp_path):
    torch = pytest.importorskip("torch")
    import nets

    torch.manual_seed(3)
    model = nets.VGGish(in_ch=1, size=8)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nets.QCFS):
                m.up.fill_(1.0)
    path = nets.export(model, tmp_path / "v.onnx", (1, 8, 8))
    snn, plan = convert(path, ConvertOptions(tau=4))
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    T = 8
    an = analyze(snn, [x[:3], x[3:]], T=T, tau=4)
    graph = from_onnx(onnx.load(str(path)))
    sites = [reference.RefSite(s.input, s.output, float(s.theta)) for s in plan.sites]
    for run in an.runs:
        ref = reference.simulate(graph, sites, x, T=T, tau=run.tau, output=plan.logits)
        for site, stats in zip(plan.sites, run.layers):
            a = reference.run_ann(graph, x, site.output)
            r = ref.spikes[site.output] * np.float64(site.theta) / T
            brute = _brute_cases(a, r, site.theta)
            n = a.size
            assert {k: v / n for k, v in brute.items()} == pytest.approx(stats.cases), (run.tau, site.name)
            assert stats.firing_rate == pytest.approx(ref.spikes[site.output].sum() / (n * T))


def test_classify_cases_boundaries():
    a = np.array([0.0, 0.0, 0.5, 0.5, 0.25, 0.5])
    r = np.array([0.0, 0.125, 0.0, 0.25, 0.5, 0.5 + 1e-5])
    assert classify_cases(a, r, 1.0) == {"equal": 2, "a=0,r>0": 1, "a>0,r=0": 1, "a>r>0": 1, "r>a>0": 1}
