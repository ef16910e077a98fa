"""A plain-ReLU CNN trained on MNIST 5k keeps its accuracy after calibrated conversion (T = 32)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from srp_onnx_cli.main import main

MODEL = Path(__file__).parent / "data" / "mnist" / "torch_relu_mnist.onnx"


def test_relu_mnist_snn_within_two_points_of_ann_at_T32(tmp_path):
    out = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["eval", str(MODEL), "--data", "mnist", "--calib", "mnist", "--T", "32",
                                  "--batch-size", "200", "--json", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    ann = next(x for x in res["rows"] if x["name"] == "ANN")["accuracy"]["top1"]
    snn = next(x for x in res["rows"] if x["tau"] is not None)["accuracy"][-1]["top1"]
    assert res["images"] == 1000
    assert ann >= 97.0
    assert snn >= ann - 2.0, (snn, ann)
