"""The onnxruntime spiking graph equals the independent numpy reference.

VGG- and ResNet-style QCFS networks, both torch exporters, tau in {0, 4},
T in {1, 2, 4, 8, 32}: spike counts of every neuron equal exactly and the
logits equal to float precision. With dyadic weights every sum is exact, so
the logits must agree bit for bit.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

import nets
import reference

from srp_onnx.convert import ConvertOptions, convert
from srp_onnx.graph import from_onnx
from srp_onnx.runtime import SpikingModel

SHAPE = (3, 8, 8)
TS = (1, 2, 4, 8, 32)


def _ref_sites(plan):
    return [reference.RefSite(s.input, s.output, float(s.theta)) for s in plan.sites]


@pytest.fixture(scope="module", params=["vgg-ts", "vgg-dynamo", "resnet-ts", "resnet-dynamo"])
def converted(request, tmp_path_factory):
    arch, exporter = request.param.split("-")
    torch.manual_seed(0)
    model = nets.VGGish() if arch == "vgg" else nets.ResNetish()
    nets.dyadic_(model, seed=1 if arch == "vgg" else 2)
    path = nets.export(model, tmp_path_factory.mktemp(arch) / f"{request.param}.onnx", SHAPE,
                       dynamo=exporter == "dynamo")
    snn, plan = convert(path, ConvertOptions(tau=4))
    return model, path, snn, plan


def test_thetas_are_the_qcfs_lambdas_exactly(converted):
    model, _, _, plan = converted
    assert all(s.kind == "qcfs" and s.levels == 4 for s in plan.sites)
    assert sorted(s.theta for s in plan.sites) == sorted(nets.thetas(model))


@pytest.mark.parametrize("tau", [0, 4])
def test_spike_counts_and_logits_equal_reference(converted, tau):
    _, path, snn, plan = converted
    graph = from_onnx(onnx.load(str(path)))
    x = nets.dyadic_input((4, *SHAPE), seed=3)
    sim = SpikingModel(snn, device="cpu", record_spikes=True)
    total_spikes = 0
    for T in TS:
        ref = reference.simulate(graph, _ref_sites(plan), x, T=T, tau=tau, output=plan.logits)
        got = sim.simulate(x, T, tau)
        np.testing.assert_array_equal(got.logits, ref.logits)
        for s in plan.sites:
            np.testing.assert_array_equal(got.spikes[s.name], ref.spikes[s.output], err_msg=f"{s.name} T={T}")
            total_spikes += int(got.spikes[s.name].sum())
    assert total_spikes > 0  # the comparison saw activity


def test_both_exporters_give_identical_snn(tmp_path):
    torch.manual_seed(0)
    model = nets.dyadic_(nets.ResNetish(), seed=5)
    x = nets.dyadic_input((6, *SHAPE), seed=6)
    outs = []
    for dynamo in (False, True):
        path = nets.export(model, tmp_path / f"m{int(dynamo)}.onnx", SHAPE, dynamo=dynamo)
        snn, plan = convert(path, ConvertOptions(tau=4))
        outs.append((sorted(s.theta for s in plan.sites),
                     SpikingModel(snn, device="cpu").simulate(x, 8).logits))
    assert outs[0][0] == outs[1][0]
    np.testing.assert_array_equal(outs[0][1], outs[1][1])


def test_step_one_without_presim_equals_the_L1_ann(converted):
    """srp-algorithm.md section 6: tau = 0, t = 1 is the ANN with theta*clip(floor(x/theta+0.5),0,1)."""
    _, path, snn, plan = converted
    graph = from_onnx(onnx.load(str(path)))
    x = nets.dyadic_input((4, *SHAPE), seed=7)
    overrides = {site: (lambda v, th=np.float32(site.theta): th * np.clip(np.floor(v / th + 0.5), 0, 1))
                 for site in _ref_sites(plan)}
    ann_l1 = reference.run_ann(graph, x, plan.logits, overrides=overrides)
    got = SpikingModel(snn, device="cpu").simulate(x, 1, 0).logits[0]
    np.testing.assert_allclose(got, ann_l1, rtol=1e-6, atol=1e-6)


def test_random_float_weights_match_reference_within_tolerance(tmp_path):
    torch.manual_seed(11)
    model = nets.VGGish().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nets.QCFS):
                m.up.fill_(1.5)
    path = nets.export(model, tmp_path / "f.onnx", SHAPE)
    snn, plan = convert(path, ConvertOptions(tau=4))
    graph = from_onnx(onnx.load(str(path)))
    x = np.random.default_rng(0).standard_normal((8, *SHAPE)).astype(np.float32)
    ref = reference.simulate(graph, _ref_sites(plan), x, T=8, tau=4, output=plan.logits)
    got = SpikingModel(snn, device="cpu", record_spikes=True).simulate(x, 8, 4)
    np.testing.assert_allclose(got.logits, ref.logits, rtol=1e-4, atol=1e-4)
    n = sum(v.size for v in ref.spikes.values())
    diff = sum(int((got.spikes[s.name] != ref.spikes[s.output]).sum()) for s in plan.sites)
    assert diff == 0, f"{diff} of {n} neurons differ in spike count"
