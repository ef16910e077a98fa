"""The bundled MNIST QCFS sample: demo, eval vs the reference, convergence, the SRP effect."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import reference
from click.testing import CliRunner
from srp_onnx_cli.main import main

from srp_onnx.analysis import analyze
from srp_onnx.convert import ConvertOptions, convert
from srp_onnx.data import METADATA_KEY, Preprocessing, open_dataset
from srp_onnx.demo import SAMPLE
from srp_onnx.graph import from_onnx
from srp_onnx.runtime import SpikingModel

ROOT = Path(__file__).resolve().parent.parent
DIGITS_QCFS = ROOT / "tests" / "data" / "exporters"


def _mnist_test(model: onnx.ModelProto, n: int) -> tuple[np.ndarray, np.ndarray]:
    meta = {p.key: p.value for p in model.metadata_props}
    pre = Preprocessing.from_json(meta[METADATA_KEY])
    return next(open_dataset("mnist", split="test", preprocessing=pre, limit=n).batches(n))


def test_sample_is_small_and_accurate():
    assert SAMPLE.stat().st_size <= 5 * 1024 * 1024
    m = onnx.load(str(SAMPLE))
    meta = {p.key: p.value for p in m.metadata_props}
    assert float(meta["srp_onnx.ann_accuracy"]) >= 97.0
    x, y = _mnist_test(m, 1000)
    import onnxruntime as ort

    s = ort.InferenceSession(str(SAMPLE), providers=["CPUExecutionProvider"])
    assert (s.run(None, {s.get_inputs()[0].name: x})[0].argmax(-1) == y).mean() >= 0.97


def test_demo_prints_the_three_rows():
    r = CliRunner().invoke(main, ["demo", "--T", "8"])
    assert r.exit_code == 0, r.output
    for row in ("ANN", "QCFS (tau=0)", "SRP (tau=4)"):
        assert row in r.output
    assert "t=1" in r.output and "t=8" in r.output


def test_eval_per_step_accuracies_equal_the_reference_simulator(tmp_path):
    n, T, tau = 100, 8, 4
    out = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["eval", str(SAMPLE), "--data", "mnist", "--limit", str(n), "--T", str(T),
                                  "--tau", str(tau), "--compare-baseline", "--json", str(out)])
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(out.read_text())["rows"]}
    model = onnx.load(str(SAMPLE))
    x, y = _mnist_test(model, n)
    _, plan = convert(SAMPLE, ConvertOptions(tau=tau))
    graph = from_onnx(model)
    sites = [reference.RefSite(s.input, s.output, float(s.theta)) for s in plan.sites]
    for name, t_pre in (("QCFS (tau=0)", 0), (f"SRP (tau={tau})", tau)):
        ref = reference.simulate(graph, sites, x, T=T, tau=t_pre, output=plan.logits)
        acc = 100.0 * (np.cumsum(ref.logits.astype(np.float64), 0).argmax(-1) == y).mean(-1)
        assert [a["top1"] for a in rows[name]["accuracy"]] == pytest.approx(acc.tolist(), abs=1e-9), name


@pytest.mark.parametrize("name", ["torch_ts_qcfs_cnn", "torch_ts_qcfs_resnet"])
def test_trained_qcfs_snn_approaches_the_ann_as_T_grows(name):
    from sklearn.datasets import load_digits

    d = load_digits()
    perm = np.random.default_rng(0).permutation(len(d.target))[-360:]
    x, y = (d.images[perm] / 16.0).astype(np.float32)[:, None], d.target[perm]
    snn, plan = convert(DIGITS_QCFS / f"{name}.onnx", ConvertOptions(tau=4))
    import onnxruntime as ort

    s = ort.InferenceSession(plan.ann_model().SerializeToString(), providers=["CPUExecutionProvider"])
    ann = 100 * (s.run(None, {plan.input.name: x})[0].argmax(-1) == y).mean()
    logits = SpikingModel(snn, device="cpu").simulate(x, 64).logits
    acc = 100 * (np.cumsum(logits.astype(np.float64), 0).argmax(-1) == y).mean(-1)
    assert acc[63] >= ann - 1.0, (acc[63], ann)
    assert acc[63] >= acc[0] and acc[63] >= acc[3]


def test_srp_reduces_the_share_of_neurons_that_fire_without_ann_activity():
    model = onnx.load(str(SAMPLE))
    x, _ = _mnist_test(model, 40)
    snn, _ = convert(SAMPLE, ConvertOptions(tau=4))
    an = analyze(snn, [x[:20], x[20:]], T=4, tau=4)
    base, srp = an.runs
    assert srp.cases["a=0,r>0"] < base.cases["a=0,r>0"]
    assert any(s.silenced > 0 for s in srp.layers)


@pytest.mark.parametrize("tau", [0, 4])
def test_trained_sample_spike_counts_equal_the_reference(tau):
    model = onnx.load(str(SAMPLE))
    x, _ = _mnist_test(model, 50)
    snn, plan = convert(SAMPLE, ConvertOptions(tau=tau))
    sites = [reference.RefSite(s.input, s.output, float(s.theta)) for s in plan.sites]
    ref = reference.simulate(from_onnx(model), sites, x, T=8, tau=tau, output=plan.logits)
    got = SpikingModel(snn, device="cpu", record_spikes=True).simulate(x, 8, tau)
    for s in plan.sites:
        np.testing.assert_array_equal(got.spikes[s.name], ref.spikes[s.output], err_msg=s.name)
    np.testing.assert_allclose(got.logits, ref.logits, rtol=1e-5, atol=1e-5)
