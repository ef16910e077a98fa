"""`eval --ann`: the ANN row comes from the ANN's logits, whatever heads and batch size it was exported with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from click.testing import CliRunner
from srp_onnx_cli.main import main

from srp_onnx.data import open_dataset
from srp_onnx.pipeline import resolve_preprocessing

EXPORTERS = Path(__file__).parent / "data" / "exporters"
SKL = EXPORTERS / "skl2onnx_mlp.onnx"  # outputs: label first (ArgMax -> classes), then ZipMap probabilities
SKL_NOZIPMAP = EXPORTERS / "skl2onnx_mlp_nozipmap.onnx"  # label, then a probability tensor
CNN = EXPORTERS / "torch_ts_qcfs_cnn.onnx"


def _run(args: list[str]):
    return CliRunner().invoke(main, args)


def _ann_row(path: Path) -> float:
    rows = json.loads(path.read_text())["rows"]
    return next(r for r in rows if r["name"] == "ANN")["accuracy"]["top1"]


def _digits_test(model: Path) -> tuple[np.ndarray, np.ndarray]:
    """The digits test split as eval feeds it to ``model`` (flat for the MLP)."""
    m = onnx.load(str(model))
    shape = tuple(d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim[1:])
    ds = open_dataset("digits", split="test", preprocessing=resolve_preprocessing({}, shape, "digits"))
    xs, ys = zip(*ds.batches(512))
    x = np.concatenate(xs).reshape(-1, *shape).astype(np.float32)
    return x, np.concatenate(ys)


def test_ann_row_of_a_sklearn_model_is_its_accuracy(tmp_path):
    # Independent value: onnxruntime on the exporter's own probability output, argmax against the labels.
    x, y = _digits_test(SKL_NOZIPMAP)
    sess = ort.InferenceSession(str(SKL_NOZIPMAP), providers=["CPUExecutionProvider"])
    probs = sess.run(["probabilities"], {sess.get_inputs()[0].name: x})[0]
    expected = 100.0 * float(np.mean(probs.argmax(1) == y))
    assert expected > 90
    snn = tmp_path / "skl.snn.onnx"
    r = _run(["convert", str(SKL), "--calib", "digits", "-o", str(snn)])
    assert r.exit_code == 0, r.output
    out = tmp_path / "r.json"
    r = _run(["eval", str(snn), "--data", "digits", "--T", "2", "--ann", str(SKL), "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "warning" not in r.stderr
    assert abs(_ann_row(out) - expected) < 1e-9  # the label output would not even be logits


def test_ann_exported_with_batch_1_runs_any_batch(tmp_path):
    m = onnx.load(str(CNN))
    for v in list(m.graph.input) + list(m.graph.output):
        v.type.tensor_type.shape.dim[0].dim_value = 1  # as torch.onnx.export writes without dynamic axes
    fixed = tmp_path / "batch1.onnx"
    onnx.save(m, str(fixed))
    snn = tmp_path / "cnn.snn.onnx"
    assert _run(["convert", str(fixed), "-o", str(snn)]).exit_code == 0
    out_fixed, out_orig = tmp_path / "a.json", tmp_path / "b.json"
    r = _run(["eval", str(snn), "--data", "digits", "--T", "2", "--batch-size", "64", "--ann", str(fixed),
              "--json", str(out_fixed)])
    assert r.exit_code == 0, r.output
    assert "warning" not in r.stderr
    # The same weights with a dynamic batch: the same ANN accuracy, and a warning that it is another file.
    r = _run(["eval", str(snn), "--data", "digits", "--T", "2", "--ann", str(CNN), "--json", str(out_orig)])
    assert r.exit_code == 0, r.output
    assert "not the file this spiking model was converted from" in r.stderr
    assert _ann_row(out_fixed) == _ann_row(out_orig) > 50


def test_ann_with_another_input_is_refused(tmp_path):
    snn = tmp_path / "cnn.snn.onnx"
    assert _run(["convert", str(CNN), "-o", str(snn)]).exit_code == 0
    r = _run(["eval", str(snn), "--data", "digits", "--T", "2", "--ann", str(SKL)])
    assert r.exit_code == 2
    assert "--ann" in r.stderr and "per-sample shape" in r.stderr
    assert "Traceback" not in r.output
