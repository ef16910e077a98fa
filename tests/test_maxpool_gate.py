"""--maxpool gate: a spiking max pool (each window forwards the neuron with the largest input current).

Exact in the ANN (act is non-decreasing, so act(x[argmax x]) = max act(x)); in the SNN it keeps
the network's accuracy where --maxpool avg (which changes the network) loses it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import reference

from srp_onnx.calibrate import calibrate
from srp_onnx.convert import ConvertOptions, convert
from srp_onnx.runtime import SpikingModel

DATA = Path(__file__).parent / "data" / "exporters"
MODELS = ["torch_ts_maxpool_cnn", "keras_tf2onnx_bn_maxpool"]


def _digits(shape_last_is_channel: bool):
    from sklearn.datasets import load_digits

    d = load_digits()
    perm = np.random.default_rng(0).permutation(len(d.target))
    x = (d.images / 16.0).astype(np.float32)
    x = x[..., None] if shape_last_is_channel else x[:, None]
    return x[perm[:500]], x[perm[-360:]], d.target[perm[-360:]]


def _convert(name: str, mode: str):
    nhwc = "keras" in name
    calib_x, x, y = _digits(nhwc)
    snn, plan = convert(DATA / f"{name}.onnx", ConvertOptions(tau=4, maxpool=mode),
                        calib=lambda p: calibrate(p, [calib_x]))
    return snn, plan, x, y


@pytest.mark.parametrize("name", MODELS)
def test_gate_is_exact_in_the_ann(name):
    _, plan, x, _ = _convert(name, "gate")
    gated = ort.InferenceSession(plan.ann_model().SerializeToString(), providers=["CPUExecutionProvider"])
    orig = ort.InferenceSession(str(DATA / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    a = gated.run(None, {plan.input.name: x})[0]
    b = orig.run(None, {orig.get_inputs()[0].name: x})
    logits = next(o for o in b if o.shape == a.shape)
    # the original ends in Softmax for Keras: compare predictions there, values for torch
    if "keras" in name:
        np.testing.assert_array_equal(a.argmax(-1), logits.argmax(-1))
    else:
        np.testing.assert_allclose(a, logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_gated_snn_matches_the_reference_spike_for_spike(name):
    snn, plan, x, _ = _convert(name, "gate")
    _assert_spikes_equal_the_reference(snn, plan, x[:16])


def _assert_spikes_equal_the_reference(snn, plan, x) -> None:
    sites = [reference.RefSite(s.input, s.output, float(s.theta)) for s in plan.sites]
    ref = reference.simulate(plan.graph, sites, x, T=8, tau=4, output=plan.logits)
    got = SpikingModel(snn, device="cpu", record_spikes=True).simulate(x, 8, 4)
    np.testing.assert_allclose(got.logits, ref.logits, rtol=1e-5, atol=1e-5)
    for s in plan.sites:
        np.testing.assert_array_equal(got.spikes[s.name], ref.spikes[s.output], err_msg=s.name)


@pytest.mark.parametrize("name", MODELS)
def test_gate_keeps_the_ann_accuracy_where_avg_loses_it(name):
    acc = {}
    for mode in ("gate", "avg"):
        snn, plan, x, y = _convert(name, mode)
        logits = SpikingModel(snn, device="cpu").simulate(x, 32, 4).logits
        acc[mode] = 100 * (logits.astype(np.float64).sum(0).argmax(-1) == y).mean()
    orig = ort.InferenceSession(str(DATA / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    _, x, y = _digits("keras" in name)
    ann = 100 * (orig.run(None, {orig.get_inputs()[0].name: x})[0].argmax(-1) == y).mean()
    assert acc["gate"] >= ann - 1.0, (acc, ann)
    assert acc["gate"] >= acc["avg"], acc


def _pool_before_relu(tmp_path: Path) -> Path:
    """torch_ts_maxpool_cnn rewired as conv -> MaxPool -> ReLU (F.relu(F.max_pool2d(conv(x), 2)) in torch)."""
    import onnx

    m = onnx.load(str(DATA / "torch_ts_maxpool_cnn.onnx"))
    nodes = {n.name: n for n in m.graph.node}
    pool = next(n for n in m.graph.node if n.op_type == "MaxPool")
    relu = next(n for n in m.graph.node if n.op_type == "Relu" and n.output[0] == pool.input[0])
    conv_out, relu_out, pool_out = relu.input[0], relu.output[0], pool.output[0]
    pool.input[0], pool.output[0] = conv_out, relu_out
    relu.input[0], relu.output[0] = relu_out, pool_out
    order = [n for n in m.graph.node if n.name not in (pool.name, relu.name)]
    k = next(i for i, n in enumerate(order) if n.output[0] == conv_out) + 1
    m.graph.ClearField("node")
    m.graph.node.extend(order[:k] + [nodes[pool.name], nodes[relu.name]] + order[k:])
    onnx.checker.check_model(m)
    path = tmp_path / "pool_before_relu.onnx"
    onnx.save(m, str(path))
    return path


def test_an_activation_after_the_pool_is_moved_before_it_and_gated(tmp_path):
    path = _pool_before_relu(tmp_path)
    calib_x, x, _ = _digits(False)
    snn, plan = convert(path, ConvertOptions(tau=4, maxpool="gate"), calib=lambda p: calibrate(p, [calib_x]))
    assert any("moved activation" in n.text for n in plan.notes) and any("gate" in n.text for n in plan.notes)
    # the ANN is unchanged: relu(max(x)) = max(relu(x))
    gated = ort.InferenceSession(plan.ann_model().SerializeToString(), providers=["CPUExecutionProvider"])
    orig = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(gated.run(None, {plan.input.name: x})[0],
                               orig.run(None, {orig.get_inputs()[0].name: x})[0], rtol=1e-5, atol=1e-5)
    _assert_spikes_equal_the_reference(snn, plan, x[:16])


def test_gate_names_the_pool_it_cannot_gate(tmp_path):
    """A MaxPool on the network input reads no neuron layer: the error says so and offers --maxpool avg."""
    import onnx
    from click.testing import CliRunner
    from onnx import helper
    from srp_onnx_cli.main import main

    m = onnx.load(str(DATA / "torch_ts_relu6_cnn.onnx"))
    first = m.graph.node[0]
    m.graph.node.insert(0, helper.make_node("MaxPool", [first.input[0]], ["pooled_input"], name="input_pool",
                                            kernel_shape=[1, 1]))
    first.input[0] = "pooled_input"
    path = tmp_path / "input_pool.onnx"
    onnx.save(m, str(path))
    r = CliRunner().invoke(main, ["convert", str(path), "--maxpool", "gate", "-o", str(tmp_path / "o.onnx")])
    assert r.exit_code == 2
    assert "'input_pool' (MaxPool" in r.stderr and "--maxpool avg" in r.stderr
    assert "or pass --maxpool gate" not in r.stderr


def test_gate_follows_zero_padding_concat_and_a_second_pool(tmp_path):
    """ReLU branches -> Concat -> zero Pad -> MaxPool -> MaxPool (SqueezeNet, Keras' ZeroPadding2D, GoogLeNet)."""
    torch = pytest.importorskip("torch")
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(1, 4, 3, padding=1)  # so the pooled currents change from step to step
            self.a, self.b = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
            self.pad, self.pool1, self.pool2 = nn.ZeroPad2d(1), nn.MaxPool2d(3, 1), nn.MaxPool2d(2)
            self.fc = nn.Linear(8 * 4 * 4, 10)

        def forward(self, x):
            x = torch.relu(self.stem(x))
            y = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1)
            return self.fc(torch.flatten(self.pool2(self.pool1(self.pad(y))), 1))

    torch.manual_seed(0)
    path = tmp_path / "branches.onnx"
    torch.onnx.export(Net().eval(), (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "N"}})
    calib_x, x, _ = _digits(False)
    snn, plan = convert(path, ConvertOptions(tau=4, maxpool="gate"), calib=lambda p: calibrate(p, [calib_x]))
    assert sum("spiking max-pool gate" in n.text for n in plan.notes) == 2
    gated = ort.InferenceSession(plan.ann_model().SerializeToString(), providers=["CPUExecutionProvider"])
    orig = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(gated.run(None, {plan.input.name: x})[0], orig.run(None, {"x": x})[0],
                               rtol=1e-5, atol=1e-5)
    _assert_spikes_equal_the_reference(snn, plan, x[:16])


def test_gate_declines_a_concat_of_different_clips(tmp_path):
    """max(clip(x1, 0, 2), clip(x2, 0, 6)) has no single current to rank by: refused, --maxpool avg offered."""
    torch = pytest.importorskip("torch")
    from click.testing import CliRunner
    from srp_onnx_cli.main import main
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(1, 4, 3, padding=1)
            self.fc = nn.Linear(8 * 4 * 4, 10)

        def forward(self, x):
            y = torch.cat([torch.clamp(self.a(x), 0, 2), torch.clamp(self.b(x), 0, 6)], 1)
            return self.fc(torch.flatten(nn.functional.max_pool2d(y, 2), 1))

    path = tmp_path / "clips.onnx"
    torch.onnx.export(Net().eval(), (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "N"}})
    r = CliRunner().invoke(main, ["convert", str(path), "--maxpool", "gate", "-o", str(tmp_path / "o.onnx")])
    assert r.exit_code == 2 and "MaxPool" in r.stderr and "--maxpool avg" in r.stderr
