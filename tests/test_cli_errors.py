"""Bad input: one line on stderr naming the file or node and the fix, exit code 2, nothing written."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner
from graphs import mlp, save
from srp_onnx_cli.main import main


def run(args):
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output, result.stderr if hasattr(result, "stderr") else result.output


def assert_refused(tmp_path, args, *needles):
    out = tmp_path / "out.snn.onnx"
    code, stdout, stderr = run([*args, "-o", str(out)] if args[0] == "convert" else args)
    assert code == 2, stdout + stderr
    lines = [ln for ln in stderr.strip().splitlines() if ln.startswith("srp-onnx: error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stdout + stderr
    for n in needles:
        assert n in lines[0], lines[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], "temporary file left behind"
    return lines[0]


def test_not_onnx_is_refused(tmp_path):
    p = tmp_path / "model.onnx"
    p.write_text("this is not a protobuf at all\n" * 10)
    assert_refused(tmp_path, ["convert", str(p)], "model.onnx", "not an ONNX model")


def test_truncated_file_is_refused(tmp_path):
    p = save(mlp("Clip"), tmp_path / "full.onnx")
    data = p.read_bytes()
    q = tmp_path / "cut.onnx"
    q.write_bytes(data[: len(data) // 2])
    assert_refused(tmp_path, ["convert", str(q)], "cut.onnx")


def test_missing_file_is_refused(tmp_path):
    assert_refused(tmp_path, ["convert", str(tmp_path / "nope.onnx")], "nope.onnx", "no such file")


def test_sigmoid_between_layers_names_the_node(tmp_path):
    p = save(mlp("Sigmoid"), tmp_path / "sig.onnx")
    assert_refused(tmp_path, ["convert", str(p)], "act1", "Sigmoid", "no spiking equivalent")


def test_weights_as_graph_inputs_are_refused(tmp_path):
    p = save(mlp("Clip", weights_as_inputs=True), tmp_path / "w.onnx")
    assert_refused(tmp_path, ["convert", str(p)], "fc1", "'w1' is a graph input", "export_params=True")


def test_relu_without_calibration_data_is_refused(tmp_path):
    p = save(mlp("Relu"), tmp_path / "relu.onnx")
    assert_refused(tmp_path, ["convert", str(p)], "--calib")


def test_negative_tau_is_refused(tmp_path):
    p = save(mlp("Clip"), tmp_path / "clip.onnx")
    assert_refused(tmp_path, ["convert", str(p), "--tau", "-1"], "--tau -1")


def test_clip_model_converts_and_writes_atomically(tmp_path):
    p = save(mlp("Clip"), tmp_path / "clip.onnx")
    out = tmp_path / "clip.snn.onnx"
    code, stdout, _ = run(["convert", str(p), "-o", str(out)])
    assert code == 0, stdout
    assert out.exists() and "clip" in stdout and "theta" in stdout
    assert sorted(x.name for x in tmp_path.iterdir()) == ["clip.onnx", "clip.snn.onnx"]


def test_relu_model_converts_with_calibration_npz(tmp_path):
    p = save(mlp("Relu"), tmp_path / "relu.onnx")
    x = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x, y=np.zeros(64, np.int64))
    code, stdout, _ = run(["convert", str(p), "--calib", str(tmp_path / "calib.npz"), "-o", str(tmp_path / "r.onnx")])
    assert code == 0, stdout
    assert "calibration p99.99, 64 samples" in stdout
