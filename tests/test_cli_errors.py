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


def test_a_batch_constant_the_converter_cannot_fix_is_named_with_the_fix(tmp_path):
    """Batch fixed at 1 and folded into a Reshape to [64, 1] (then transposed): no target entry to free."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((4, 64), 0.1, np.float32), "w")
    w2 = numpy_helper.from_array(np.full((3, 4), 0.1, np.float32), "w2")
    target = numpy_helper.from_array(np.array([64, 1], np.int64), "target")
    nodes = [helper.make_node("Reshape", ["x", "target"], ["col"], name="to_column"),
             helper.make_node("Transpose", ["col"], ["row"], perm=[1, 0]),
             helper.make_node("Gemm", ["row", "w"], ["h"], transB=1),
             helper.make_node("Clip", ["h", "zero", "six"], ["a"]),
             helper.make_node("Gemm", ["a", "w2"], ["y"], transB=1)]
    six = numpy_helper.from_array(np.array(6, np.float32), "six")
    zero = numpy_helper.from_array(np.array(0, np.float32), "zero")
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], [w, w2, target, six, zero])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    path = tmp_path / "fixed.onnx"
    onnx.save(m, str(path))
    line = assert_refused(tmp_path, ["convert", str(path)], "'to_column' (Reshape)",
                          "re-export it with a dynamic batch")
    assert "onnxruntime_src" not in line and "was false" not in line


def test_click_usage_errors_are_one_line_too(tmp_path):
    p = save(mlp("Clip"), tmp_path / "m.onnx")
    for args, needle in ((["eval", str(p), "--data", "digits", "--T", "0"], "--T"),
                         (["eval", str(p), "--data", "digits", "--batch-size", "0"], "--batch-size"),
                         (["convert"], "Missing argument"),
                         (["nosuch"], "No such command")):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2, args
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("srp-onnx: error:") and needle in lines[0], r.stderr


def test_convert_refuses_to_overwrite_its_input(tmp_path):
    p = save(mlp("Clip"), tmp_path / "m.onnx")
    before = p.read_bytes()
    code, _, stderr = run(["convert", str(p), "-o", str(p)])
    assert code == 2 and "same file as the model" in stderr
    assert p.read_bytes() == before


def test_outputs_get_the_usual_file_mode(tmp_path):
    import os

    p = save(mlp("Clip"), tmp_path / "m.onnx")
    out, js = tmp_path / "m.snn.onnx", tmp_path / "r.json"
    old = os.umask(0o022)
    try:
        assert run(["convert", str(p), "-o", str(out)])[0] == 0
        np.savez(tmp_path / "d.npz", x=np.zeros((4, 16), np.float32), y=np.zeros(4, np.int64))
        assert run(["eval", str(out), "--data", str(tmp_path / "d.npz"), "--T", "1", "--json", str(js)])[0] == 0
    finally:
        os.umask(old)
    assert oct(out.stat().st_mode & 0o777) == oct(0o644) and oct(js.stat().st_mode & 0o777) == oct(0o644)


def test_analyze_checks_its_output_folders_before_working(tmp_path):
    p = save(mlp("Clip"), tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 16), np.float32), y=np.zeros(4, np.int64))
    assert_refused(tmp_path, ["analyze", str(p), "--data", str(tmp_path / "d.npz"),
                              "--plot", str(tmp_path / "nodir" / "x.png")], "--plot", "does not exist")


def test_a_network_whose_output_never_changes_is_flagged(tmp_path):
    """Clip(0, 1000) over activations near 1: no neuron reaches half its threshold in 2 steps."""
    import json

    p = save(mlp("Clip", clip_max=1000.0), tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(16) % 4)
    out = tmp_path / "r.json"
    code, _, stderr = run(["eval", str(p), "--data", str(tmp_path / "d.npz"), "--T", "2", "--json", str(out)])
    assert code == 0 and "warning: SRP (tau=4): the logits are the same for every image" in stderr
    assert json.loads(out.read_text())["warnings"]
    p6 = save(mlp("Clip", clip_max=6.0), tmp_path / "m6.onnx")  # thresholds that do fire: no warning
    code, _, stderr = run(["eval", str(p6), "--data", str(tmp_path / "d.npz"), "--T", "8"])
    assert code == 0 and "logits are the same" not in stderr
