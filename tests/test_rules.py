"""Neuron rules beyond SRP (docs/srp-algorithm.md section 3a): the runtime equals the oracle spike for spike.

Each rule of neuron.RULES is held to tests/reference.py the way SRP is in test_runtime.py:
dyadic nets, every runtime mode and lowering lever, logits and spike counts bit for bit.
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
from srp_onnx.errors import ModelError, UsageError
from srp_onnx.graph import from_onnx
from srp_onnx.lower import LowerOptions
from srp_onnx.neuron import RULES, SRP, Method
from srp_onnx.runtime import SpikingModel

SHAPE = (3, 8, 8)
TAU = 4
# c * tau = 0.5 for c = 1/8: exact, so the dead-zone boundary is the same in float32 everywhere.
METHODS = [Method("srp"), Method("deadzone", 0.0), Method("deadzone", 0.125), Method("both", 0.0625),
           Method("burnin")]
VARIANTS = {
    "step": {},
    "unrolled": {"mode": "unrolled"},
    "unfolded": {"lowering": LowerOptions(fold_theta=False)},
    "no-head": {"lowering": LowerOptions(hoist_static=False)},
}


def test_every_rule_of_the_table_is_tested_and_srp_is_the_default():
    assert {m.rule for m in METHODS} == set(RULES)
    assert Method() == SRP and SRP.rule == "srp"


@pytest.fixture(scope="module", params=["vgg", "resnet"])
def net(request, tmp_path_factory):
    path = nets.dyadic_net(request.param, 31 if request.param == "vgg" else 32, tmp_path_factory.mktemp(request.param),
                           SHAPE)
    snn, plan = convert(path, ConvertOptions(tau=TAU))
    return path, snn, plan


def _reference(path, plan, x, T, tau, method):
    sites = [reference.RefSite(s.input, s.output, float(s.theta)) for s in plan.sites]
    return reference.simulate(from_onnx(onnx.load(str(path))), sites, x, T=T, tau=tau, output=plan.logits,
                              rule=method.rule, c=method.c)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_rule_equals_the_reference_spike_for_spike(net, variant):
    path, snn, plan = net
    x = nets.dyadic_input((4, *SHAPE), seed=5)
    seen = []
    # Every rule in the two modes; the lowering levers (which the rules do not touch) with a counting rule.
    for method in METHODS if variant in ("step", "unrolled") else [Method("both", 0.0625)]:
        ref = _reference(path, plan, x, 5, TAU, method)
        sim = SpikingModel(snn, device="cpu", record_spikes=True, method=method, **VARIANTS[variant])
        got = sim.simulate(x, 5, TAU)
        np.testing.assert_array_equal(got.logits, ref.logits, err_msg=method.label())
        for s in plan.sites:
            np.testing.assert_array_equal(got.spikes[s.name], ref.spikes[s.output], err_msg=f"{method} {s.name}")
            if variant == "step":  # silenced = mask 0
                np.testing.assert_array_equal(got.silenced[s.name], ref.masks[s.output] == 0, err_msg=s.name)
        seen.append(sum(int(v.sum()) for v in got.spikes.values()))
    assert min(seen) > 0 and (len(seen) == 1 or len(set(seen)) > 2)  # the rules differ on this input


def test_one_model_runs_every_rule_and_each_call_starts_clean(net):
    path, snn, plan = net
    x = nets.dyadic_input((3, *SHAPE), seed=6)
    sim = SpikingModel(snn, device="cpu", method=Method("deadzone", 0.125))  # counting: any rule can run
    for method in METHODS + METHODS[::-1]:
        np.testing.assert_array_equal(sim.simulate(x, 3, TAU, method=method).logits,
                                      _reference(path, plan, x, 3, TAU, method).logits, err_msg=method.label())
    np.testing.assert_array_equal(sim.simulate(x, 3, 0, method=Method("both", 0.125)).logits,
                                  _reference(path, plan, x, 3, 0, SRP).logits)  # tau = 0: no rule applies


def test_a_model_without_the_counting_step_names_how_to_get_it(net, monkeypatch):
    _, snn, _ = net
    monkeypatch.setattr("srp_onnx.ort.copies_external_initializers", lambda: True)
    sim = SpikingModel(snn, device="cpu")
    with pytest.raises(UsageError, match="method="):
        sim.simulate(nets.dyadic_input((2, *SHAPE), seed=7), 2, TAU, method=Method("deadzone", 0.125))


def test_the_rule_is_recorded_in_the_file_and_is_the_runtime_default(tmp_path, net):
    path, _, plan = net
    method = Method("both", 0.125)
    snn, _ = convert(path, ConvertOptions(tau=TAU, method=method))
    assert fileformat.read(snn).method == method
    x = nets.dyadic_input((2, *SHAPE), seed=8)
    np.testing.assert_array_equal(SpikingModel(snn, device="cpu").simulate(x, 4).logits,
                                  _reference(path, plan, x, 4, TAU, method).logits)
    plain, _ = convert(path, ConvertOptions(tau=TAU))
    assert fileformat.read(plain).method == SRP


def test_bad_rule_records_and_options_are_refused_in_one_line(net):
    _, snn, _ = net
    bad = onnx.ModelProto()
    bad.CopyFrom(snn)
    fileformat.set_method(bad, SRP)
    for m in bad.metadata_props:
        if m.key == fileformat.Key.METHOD:
            m.value = '{"rule": "release"}'
    with pytest.raises(ModelError, match="neuron rule record is malformed"):
        fileformat.read(bad)
    with pytest.raises(UsageError, match="choose one of"):
        Method("release")
    with pytest.raises(UsageError, match=r"\[0, 1\)"):
        Method("deadzone", -0.5)
    with pytest.raises(UsageError, match="takes no dead-zone level"):
        Method("srp", 0.125)


def test_recording_hooks_see_the_same_presimulation_under_every_rule(net):
    # The rules differ only after step tau: the currents recorded in the pre-simulation are the same.
    _, snn, plan = net
    x = nets.dyadic_input((3, *SHAPE), seed=9)
    name = plan.sites[1].input  # the second layer's current: it depends on the first layer's spikes
    seen = {}
    for method in (SRP, Method("deadzone", 0.125)):
        sim = SpikingModel(snn, device="cpu", record=(name,), method=method)
        steps = []
        sim.simulate(x, 3, TAU, on_step=lambda t, k, rec, steps=steps: steps.append((t, k, rec[name].copy())))
        seen[method.rule] = steps
    assert [(t, k) for t, k, _ in seen["srp"]] == [(t, None) for t in range(TAU)] + [(TAU + k, k) for k in range(3)]
    for (t, k, a), (_, _, b) in zip(seen["srp"], seen["deadzone"]):
        if k is None:
            np.testing.assert_array_equal(a, b, err_msg=f"step {t}")
    assert any(not np.array_equal(a, b) for (_, k, a), (_, _, b) in zip(seen["srp"], seen["deadzone"]) if k is not None)
