"""--tau auto chooses on the calibration split and never reads the test split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from srp_onnx_cli.main import main

import srp_onnx.evaluate as evaluate_mod
from srp_onnx import pipeline

MODEL = Path(__file__).parent / "data" / "exporters" / "torch_ts_qcfs_cnn.onnx"


def test_tau_auto_reads_only_the_calibration_split(monkeypatch, tmp_path):
    reads: list[tuple[str, bool, bytes]] = []
    state = {"choosing": False}
    real_open = pipeline.open_dataset

    def recording_open(spec, *, split="test", preprocessing=None, limit=None):
        ds = real_open(spec, split=split, preprocessing=preprocessing, limit=limit)
        real_batches = ds.batches

        def batches(batch_size, start=0, stop=None):
            for x, y in real_batches(batch_size, start, stop):
                for xi in x:
                    reads.append((split, state["choosing"], xi.tobytes()))
                yield x, y

        ds.batches = batches
        return ds

    real_choose = evaluate_mod.choose_tau

    def recording_choose(*a, **kw):
        state["choosing"] = True
        try:
            return real_choose(*a, **kw)
        finally:
            state["choosing"] = False

    monkeypatch.setattr(pipeline, "open_dataset", recording_open)
    monkeypatch.setattr(evaluate_mod, "choose_tau", recording_choose)
    out = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["eval", str(MODEL), "--data", "digits", "--tau", "auto", "--T", "4",
                                  "--tau-max", "6", "--json", str(out)])
    assert r.exit_code == 0, r.output
    chosen = [rd for rd in reads if rd[1]]
    assert chosen and {rd[0] for rd in chosen} == {"calib"}
    tested = {rd[2] for rd in reads if not rd[1]}
    assert {rd[0] for rd in reads if not rd[1]} == {"test"}
    assert not tested & {rd[2] for rd in chosen}, "an image of the test split was used to choose tau"
    res = json.loads(out.read_text())
    curve = res["settings"]["tau_auto"]["curve"]
    assert [c["tau"] for c in curve] == list(range(7))
    best = max(c["top1"] for c in curve)
    assert res["settings"]["tau"] == res["settings"]["tau_auto"]["tau"]
    assert next(c for c in curve if c["tau"] == res["settings"]["tau"])["top1"] == best
    assert "tau auto" in r.stderr


def test_tau_auto_refuses_a_single_split_npz(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 1, 8, 8), np.float32), y=np.zeros(4, np.int64))
    r = CliRunner().invoke(main, ["eval", str(MODEL), "--data", str(tmp_path / "d.npz"), "--tau", "auto"])
    assert r.exit_code == 2 and "--tau-data" in r.stderr


def test_tau_auto_takes_a_separate_npz(tmp_path):
    """A held-out .npz given with --tau-data is what tau is chosen on; the --data .npz is only tested."""
    from srp_onnx.data import open_dataset
    from srp_onnx.pipeline import resolve_preprocessing

    pre = resolve_preprocessing({}, (1, 8, 8), "digits")
    xc, yc = next(open_dataset("digits", split="calib", preprocessing=pre, limit=100).batches(100))
    xt, yt = next(open_dataset("digits", split="test", preprocessing=pre, limit=60).batches(60))
    np.savez(tmp_path / "calib.npz", x=xc, y=yc)
    np.savez(tmp_path / "test.npz", x=xt, y=yt)
    out = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["eval", str(MODEL), "--data", str(tmp_path / "test.npz"), "--tau", "auto",
                                  "--tau-data", str(tmp_path / "calib.npz"), "--tau-max", "3", "--T", "2",
                                  "--json", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["images"] == 60 and len(res["settings"]["tau_auto"]["curve"]) == 4
    assert res["settings"]["preprocessing"].startswith("none")  # float .npz: used as it is, no /255
    # convert: --tau-data is never the test set there
    snn = tmp_path / "m.snn.onnx"
    r = CliRunner().invoke(main, ["convert", str(MODEL), "--tau", "auto", "--tau-data", str(tmp_path / "calib.npz"),
                                  "--tau-max", "2", "-o", str(snn)])
    assert r.exit_code == 0, r.output
    assert "tau auto" in r.stderr


def test_a_flat_curve_keeps_the_default_tau(monkeypatch):
    """Every tau scoring the same says nothing: the tie rule alone would pick tau = 0 (no SRP at all)."""

    class SameForEveryTau:
        def __init__(self, *a, **kw):
            pass

        def simulate(self, x, T, tau):
            logits = np.zeros((T, len(x), 3), np.float32)
            logits[..., 1] = 1.0
            return type("R", (), {"logits": logits})()

    monkeypatch.setattr(evaluate_mod, "SpikingModel", SameForEveryTau)
    batches = lambda: [(np.zeros((4, 2), np.float32), np.array([1, 1, 0, 2]))]  # noqa: E731
    flat = evaluate_mod.choose_tau(None, batches, T=2, max_tau=5, default=4)
    assert flat.tau == 4 and "default is kept" in flat.criterion
    assert [c[2] for c in flat.curve] == [50.0] * 6
    assert evaluate_mod.choose_tau(None, batches, T=2, max_tau=5).tau == 0  # no default: the smallest


def test_options_that_cannot_apply_are_named_on_stderr(tmp_path):
    snn = tmp_path / "m.snn.onnx"
    assert CliRunner().invoke(main, ["convert", str(MODEL), "-o", str(snn)]).exit_code == 0
    r = CliRunner().invoke(main, ["eval", str(snn), "--data", "digits", "--T", "1", "--percentile", "50"])
    assert r.exit_code == 0 and "warning: --percentile ignored" in r.stderr
    np.savez(tmp_path / "f.npz", x=np.zeros((4, 1, 8, 8), np.float32), y=np.zeros(4, np.int64))
    r = CliRunner().invoke(main, ["eval", str(snn), "--data", str(tmp_path / "f.npz"), "--T", "1", "--mean", "0.5"])
    assert r.exit_code == 0 and "warning: --mean ignored" in r.stderr
    r = CliRunner().invoke(main, ["eval", str(snn), "--data", "digits", "--T", "1"])
    assert r.exit_code == 0 and "warning" not in r.stderr
    r = CliRunner().invoke(main, ["convert", str(MODEL), "--calib-limit", "0", "-o", str(snn)])
    assert r.exit_code == 2 and "--calib-limit" in r.output
