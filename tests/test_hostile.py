"""Hostile and broken models and data: refused clearly (exit 2, one line), nothing half-written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from graphs import mlp, save
from onnx import external_data_helper
from srp_onnx_cli.main import main

from srp_onnx.convert import convert
from srp_onnx.runtime import SpikingModel


def _invoke(args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _refused(args, *needles, leftovers: Path | None = None):
    r = _invoke(args)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("srp-onnx: error:")]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    for n in needles:
        assert n in lines[0], lines[0]
    if leftovers is not None:
        assert not any(p.name.startswith(".") or p.suffix == ".tmp" for p in leftovers.rglob("*"))
    return lines[0]


def _external(tmp_path: Path, location: str | None = None) -> Path:
    model = mlp("Clip")
    d = tmp_path / "m"
    d.mkdir()
    external_data_helper.convert_model_to_external_data(model, all_tensors_to_one_file=True, location="weights.bin",
                                                         size_threshold=0)
    path = d / "model.onnx"
    onnx.save(model, str(path))
    if location is not None:
        m = onnx.load(str(path), load_external_data=False)
        for t in m.graph.initializer:
            for e in t.external_data:
                if e.key == "location":
                    e.value = location
        onnx.save(m, str(path))
    return path


def test_external_data_inside_the_model_folder_converts(tmp_path):
    path = _external(tmp_path)
    assert (path.parent / "weights.bin").exists()
    out = tmp_path / "out.snn.onnx"
    r = _invoke(["convert", path, "-o", out])
    assert r.exit_code == 0, r.output
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    ref, _ = convert(save(mlp("Clip"), tmp_path / "inline.onnx"))
    np.testing.assert_array_equal(SpikingModel(str(out), device="cpu").simulate(x, 4).logits,
                                  SpikingModel(ref, device="cpu").simulate(x, 4).logits)


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "sub/../../weights.bin"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path, location):
    path = _external(tmp_path, location)
    _refused(["convert", path, "-o", tmp_path / "o.onnx"], "outside the model's folder", "w1")
    assert not (tmp_path / "o.onnx").exists()


def test_missing_external_data_file_is_refused(tmp_path):
    path = _external(tmp_path)
    (path.parent / "weights.bin").unlink()
    _refused(["convert", path, "-o", tmp_path / "o.onnx"], "does not exist")


def test_absurd_input_shape_is_refused_before_allocation(tmp_path):
    m = mlp("Clip")
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 1 << 40
    _refused(["convert", save(m, tmp_path / "huge.onnx"), "-o", tmp_path / "o.onnx"], "huge.onnx")


def test_tensor_size_disagreeing_with_its_data_is_refused(tmp_path):
    m = mlp("Clip")
    m.graph.initializer[0].dims[0] = 9  # 9 x 16 declared, 8 x 16 stored
    _refused(["convert", save(m, tmp_path / "lie.onnx"), "-o", tmp_path / "o.onnx"], "'w1'", "corrupt")


def test_negative_dimension_is_refused(tmp_path):
    m = mlp("Clip")
    m.graph.initializer[0].dims[0] = -8
    _refused(["convert", save(m, tmp_path / "neg.onnx"), "-o", tmp_path / "o.onnx"], "'w1'", "negative")


@pytest.fixture()
def clip_model(tmp_path):
    return save(mlp("Clip"), tmp_path / "clip.onnx")


def test_nan_inputs_are_refused(clip_model, tmp_path):
    x = np.zeros((4, 16), np.float32)
    x[2, 3] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.zeros(4, np.int64))
    _refused(["eval", clip_model, "--data", tmp_path / "nan.npz"], "NaN")


def test_wrong_dtype_is_refused(clip_model, tmp_path):
    np.savez(tmp_path / "s.npz", x=np.array([["a"] * 16] * 4), y=np.zeros(4, np.int64))
    _refused(["eval", clip_model, "--data", tmp_path / "s.npz"], "s.npz")


def test_wrong_layout_is_refused(tmp_path):
    nchw = Path(__file__).parent / "data" / "exporters" / "torch_ts_qcfs_cnn.onnx"
    np.savez(tmp_path / "l.npz", x=np.zeros((4, 8, 8, 1), np.float32), y=np.zeros(4, np.int64))
    _refused(["eval", nchw, "--data", tmp_path / "l.npz"], "(8, 8, 1)", "(1, 8, 8)")


def test_empty_dataset_is_refused(clip_model, tmp_path):
    np.savez(tmp_path / "e.npz", x=np.zeros((0, 16), np.float32), y=np.zeros(0, np.int64))
    _refused(["eval", clip_model, "--data", tmp_path / "e.npz"], "empty")


def test_ctrl_c_during_eval_leaves_no_json_and_says_how_far_it_got(clip_model, tmp_path, monkeypatch):
    x = np.random.default_rng(0).standard_normal((40, 16)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(40, np.int64))
    calls = {"n": 0}
    real = SpikingModel.simulate

    def interrupted(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, *a, **kw)

    monkeypatch.setattr(SpikingModel, "simulate", interrupted)
    out = tmp_path / "r.json"
    r = _invoke(["eval", clip_model, "--data", tmp_path / "d.npz", "--batch-size", "10", "--json", out])
    assert r.exit_code == 130
    assert "interrupted after 20 of 40 images" in r.stderr
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.onnx", "d.npz"]
