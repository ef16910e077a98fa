"""Real exporters' graphs (torch TorchScript + dynamo, tf2onnx, Keras 3, jax2onnx, skl2onnx).

The graphs in tests/data/exporters were trained on sklearn digits and written by each
exporter (scripts beside them; the exporters are needed only to regenerate them). Each
converts with no flag beyond --calib, its SNN matches the numpy reference spike for
spike, and ReLU networks keep their accuracy within 2 points at T = 32.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import reference
from click.testing import CliRunner
from srp_onnx_cli.main import main

from srp_onnx.convert import ann_from_snn
from srp_onnx.graph import from_onnx
from srp_onnx.runtime import SpikingModel

DATA = Path(__file__).parent / "data" / "exporters"
MANIFEST = json.loads((DATA / "manifest.json").read_text())["models"]
SUPPORTED = sorted(k for k, v in MANIFEST.items() if v.get("supported") and not v.get("has_maxpool"))
REFUSED = {"torch_ts_lstm": "LSTM", "torch_ts_sigmoid_mlp": "Sigmoid", "torch_ts_maxpool_cnn": "MaxPool",
           "keras_tf2onnx_bn_maxpool": "MaxPool"}


def digits(shape: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Digits split of the manifest, laid out as the model's input: (calib x, test x, test y)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    perm = np.random.default_rng(0).permutation(len(d.target))
    x = (d.images / 16.0).astype(np.float32)
    if len(shape) == 2:
        x = x.reshape(len(x), -1)
    elif shape[-1] == 1:
        x = x[..., None]
    else:
        x = x[:, None]
    return x[perm[:500]], x[perm[-360:]], d.target[perm[-360:]].astype(np.int64)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = {}
    tmp = tmp_path_factory.mktemp("exp")
    for name in SUPPORTED:
        dst = tmp / f"{name}.snn.onnx"
        result = CliRunner().invoke(main, ["convert", str(DATA / f"{name}.onnx"), "--calib", "digits", "-o", str(dst)])
        out[name] = (result, dst)
    return out


@pytest.mark.parametrize("name", SUPPORTED)
def test_converts_without_flags_beyond_calib(converted, name):
    result, dst = converted[name]
    assert result.exit_code == 0, result.output
    assert dst.exists()
    expect = MANIFEST[name]["n_activation_layers"]
    assert len(SpikingModel(str(dst), device="cpu").layers) == expect


@pytest.mark.parametrize("name", SUPPORTED)
def test_snn_matches_reference_spike_for_spike(converted, name):
    _, dst = converted[name]
    snn = onnx.load(str(dst))
    sim = SpikingModel(snn, device="cpu", record_spikes=True)
    graph = from_onnx(onnx.load(str(DATA / f"{name}.onnx")))
    _, x, _ = digits(MANIFEST[name]["input_shape"])
    x = x[:24]
    sites = [reference.RefSite(s.input, s.output, float(s.theta)) for s in sim.layers]
    meta = {m.key: m.value for m in snn.metadata_props}
    # The oracle reads the file as exported: one image at a time where its batch is fixed (at 1).
    step = 1 if MANIFEST[name].get("fixed_batch") else len(x)
    refs = [reference.simulate(graph, sites, x[i:i + step], T=8, tau=4, output=meta["srp_onnx.logits"])
            for i in range(0, len(x), step)]
    got = sim.simulate(x, 8, 4)  # the whole batch at once: the SNN's batch is dynamic
    np.testing.assert_allclose(got.logits, np.concatenate([r.logits for r in refs], axis=1), rtol=1e-5, atol=1e-5)
    for s in sim.layers:
        ref_spikes = np.concatenate([r.spikes[s.output] for r in refs])
        np.testing.assert_array_equal(got.spikes[s.name], ref_spikes, err_msg=s.name)


@pytest.mark.parametrize("name", SUPPORTED)
def test_snn_accuracy_at_T32_within_two_points_of_ann(converted, name):
    _, dst = converted[name]
    snn = onnx.load(str(dst))
    _, x, y = digits(MANIFEST[name]["input_shape"])
    ann = ort.InferenceSession(ann_from_snn(snn).SerializeToString(), providers=["CPUExecutionProvider"])
    ann_acc = (ann.run(None, {ann.get_inputs()[0].name: x})[0].argmax(-1) == y).mean()
    # the ANN rebuilt from the spiking graph is the exported one (manifest: the file's own accuracy)
    assert abs(ann_acc - MANIFEST[name]["accuracy_test"]) < 1e-5
    logits = SpikingModel(snn, device="cpu").simulate(x, 32, 4).logits
    snn_acc = (logits.astype(np.float64).sum(0).argmax(-1) == y).mean()
    assert snn_acc >= ann_acc - 0.02, (snn_acc, ann_acc)


def test_nhwc_keras_model_evaluates_on_nhwc_data_as_exported(converted, tmp_path):
    name = "keras_tf2onnx_cnn"
    _, dst = converted[name]
    _, x, y = digits(MANIFEST[name]["input_shape"])
    assert x.shape[1:] == (8, 8, 1)
    np.savez(tmp_path / "nhwc.npz", x=x, y=y)
    out = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["eval", str(dst), "--data", str(tmp_path / "nhwc.npz"), "--T", "32",
                                  "--json", str(out)])
    assert r.exit_code == 0, r.output
    rows = json.loads(out.read_text())["rows"]
    ann = next(rw for rw in rows if rw["name"] == "ANN")["accuracy"]["top1"]
    snn = next(rw for rw in rows if rw["tau"] is not None)["accuracy"][-1]["top1"]
    assert ann > 90 and snn >= ann - 2


@pytest.mark.parametrize("name", sorted(REFUSED))
@pytest.mark.parametrize("command", ["inspect", "convert"])
def test_unsupported_graph_is_refused_naming_the_node(name, command, tmp_path):
    out = tmp_path / "x.snn.onnx"
    args = [command, str(DATA / f"{name}.onnx")]
    if command == "convert":
        args += ["--calib", "digits", "-o", str(out)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    assert REFUSED[name] in r.stderr and "node '" in r.stderr
    assert not out.exists()


def test_maxpool_avg_opt_in_converts_and_reports_the_swap(tmp_path):
    out = tmp_path / "m.snn.onnx"
    r = CliRunner().invoke(main, ["convert", str(DATA / "torch_ts_maxpool_cnn.onnx"), "--calib", "digits",
                                  "--maxpool", "avg", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "AveragePool" in r.stderr and "--maxpool avg" in r.stderr
    assert out.exists()


@pytest.mark.parametrize("name", ["skl2onnx_mlp", "keras_tf2onnx_cnn", "keras3_export_cnn"])
def test_output_heads_are_dropped_and_reported(name):
    r = CliRunner().invoke(main, ["inspect", str(DATA / f"{name}.onnx")])
    assert r.exit_code == 0, r.output
    assert "dropped output head" in r.output


def test_logits_keep_their_source_name_through_the_opset_upgrade(tmp_path):
    """Where shapes are unknown, onnx's opset 11 -> 13 Softmax adapter wraps it as Flatten(axis=1) ->
    Softmax -> Reshape (tf2onnx's Keras graphs at opset 11 get this); the logits are still the Gemm's output."""
    import graphs
    from onnx import helper

    from srp_onnx.convert import plan

    m = graphs.mlp("Clip")
    m.graph.output[0].name = "probs"
    m.graph.node.extend([
        helper.make_node("Shape", ["logits"], ["logits_shape"], name=""),
        helper.make_node("Flatten", ["logits"], ["flat"], name="", axis=1),
        helper.make_node("Softmax", ["flat"], ["soft"], name="softmax", axis=-1),
        helper.make_node("Reshape", ["soft", "logits_shape"], ["probs"], name=""),
    ])
    p = plan(graphs.save(m, tmp_path / "upgraded.onnx"))
    assert p.logits == "logits"
    assert any("softmax" in n.text and "accumulating 'logits'" in n.text for n in p.notes), p.notes


def test_inspect_of_a_refused_model_still_shows_the_shapes():
    r = CliRunner().invoke(main, ["inspect", str(DATA / "torch_ts_maxpool_cnn.onnx")])
    assert r.exit_code == 2 and "MaxPool" in r.stderr
    assert "logits 'logits' [10]" in r.output and "8x8x8" in r.output


def test_a_converted_avg_swap_keeps_saying_so(tmp_path):
    """inspect of the .snn.onnx lists its layers and the swap; eval of it labels the ANN rows by pooling."""
    src = DATA / "torch_ts_maxpool_cnn.onnx"
    out = tmp_path / "m.snn.onnx"
    r = CliRunner().invoke(main, ["convert", str(src), "--calib", "digits", "--maxpool", "avg", "-o", str(out)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["inspect", str(out)])
    assert r.exit_code == 0, r.output
    assert "spiking model" in r.output and "--maxpool avg" in r.output
    assert all(s.name in r.output for s in SpikingModel(str(out), device="cpu").layers)
    rows = {}
    for args in ([], ["--ann", str(src)]):
        j = tmp_path / f"r{len(args)}.json"
        r = CliRunner().invoke(main, ["eval", str(out), "--data", "digits", "--T", "2", "--json", str(j), *args])
        assert r.exit_code == 0, r.output
        rows[len(args)] = {row["name"]: row for row in json.loads(j.read_text())["rows"] if row["tau"] is None}
    assert list(rows[0]) == ["ANN (AvgPool)"]
    assert list(rows[2]) == ["ANN (MaxPool)", "ANN (AvgPool)"]
    assert rows[2]["ANN (AvgPool)"] == rows[0]["ANN (AvgPool)"]
    assert rows[2]["ANN (MaxPool)"] != rows[2]["ANN (AvgPool)"]


def test_dynamo_adaptive_pool_gathernd_where_converts_and_matches_the_reference(tmp_path):
    """torch's dynamo exporter writes AdaptiveAvgPool2d(3) over a 2x2 map as GatherND + Where + Gathers:
    routing with constant indices and conditions, which the SNN passes through like the ANN."""
    import collections

    torch = pytest.importorskip("torch")
    from torch import nn

    from srp_onnx.calibrate import calibrate
    from srp_onnx.convert import ConvertOptions, convert

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.pool = nn.Conv2d(1, 4, 3, padding=1), nn.AvgPool2d(4)
            self.adapt, self.fc = nn.AdaptiveAvgPool2d(3), nn.Linear(36, 10)

        def forward(self, x):
            return self.fc(torch.flatten(self.adapt(self.pool(torch.relu(self.conv(x)))), 1))

    torch.manual_seed(0)
    prog = torch.onnx.export(Net().eval(), (torch.zeros(2, 1, 8, 8),), dynamo=True, opset_version=18,
                             input_names=["x"], output_names=["logits"], external_data=False,
                             dynamic_shapes=({0: torch.export.Dim("N", min=1, max=4096)},))
    path = tmp_path / "adaptive.onnx"
    onnx.save(prog.model_proto, str(path))
    ops = collections.Counter(n.op_type for n in prog.model_proto.graph.node)
    assert ops["GatherND"] and ops["Where"]
    calib_x, x, _ = digits([None, 1, 8, 8])
    snn, plan = convert(path, ConvertOptions(tau=4), calib=lambda p: calibrate(p, [calib_x]))
    x = x[:16]
    sites = [reference.RefSite(s.input, s.output, float(s.theta)) for s in plan.sites]
    ref = reference.simulate(from_onnx(onnx.load(str(path))), sites, x, T=8, tau=4, output=plan.logits)
    got = SpikingModel(snn, device="cpu", record_spikes=True).simulate(x, 8, 4)
    np.testing.assert_allclose(got.logits, ref.logits, rtol=1e-5, atol=1e-5)
    for s in plan.sites:
        np.testing.assert_array_equal(got.spikes[s.name], ref.spikes[s.output], err_msg=s.name)
