"""--method auto: the neuron rule and tau are chosen on the calibration split only, and reported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from srp_onnx_cli.main import main

from srp_onnx import evaluate as ev
from srp_onnx import pipeline
from srp_onnx.convert import ConvertOptions, convert
from srp_onnx.data.base import Dataset
from srp_onnx.errors import UsageError
from srp_onnx.neuron import SRP, Method

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "mnist_qcfs.onnx"


def _batches(n: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, n)
    return lambda: iter([(x[:12], y[:12]), (x[12:], y[12:])])


@pytest.fixture(scope="module")
def snn():
    model, _ = convert(SAMPLE, ConvertOptions(tau=4))
    return model


def test_choice_reads_only_the_calibration_split_and_its_row_comes_last(tmp_path, monkeypatch):
    consumed: list[tuple[str, bool]] = []  # (split, during the choice)
    choosing = [False]
    real_batches, real_choose = pipeline.model_batches, ev.choose_method

    def spy_batches(ds: Dataset, *a, **k):
        for item in real_batches(ds, *a, **k):
            consumed.append((ds.split, choosing[0]))
            yield item

    def spy_choose(*a, **k):
        choosing[0] = True
        try:
            return real_choose(*a, **k)
        finally:
            choosing[0] = False

    monkeypatch.setattr(pipeline, "model_batches", spy_batches)
    monkeypatch.setattr(ev, "choose_method", spy_choose)
    out = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["eval", str(SAMPLE), "--data", "mnist", "--T", "2", "--limit", "10",
                                  "--calib-limit", "8", "--compare-baseline", "--method", "auto", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert {s for s, during in consumed if during} == {"calib"}  # the choice saw calibration images only
    assert {s for s, during in consumed if not during} == {"test"}  # the table: the test split
    rows = json.loads(out.read_text())["rows"]
    assert [r["name"].split(" (")[0] for r in rows[:3]] == ["ANN", "QCFS", "SRP"]
    assert rows[-1]["name"].startswith("auto: ")
    assert all("method" in r and "tau" in r for r in rows)
    assert rows[1]["method"] == {"rule": "srp", "c": 0.0} and rows[1]["tau"] == 0
    settings = json.loads(out.read_text())["settings"]["method_auto"]
    assert (settings["tau"], settings["method"]) == (rows[-1]["tau"], rows[-1]["method"])
    assert len(settings["candidates"]) == 35 and settings["images"] == 8
    for row in rows[1:]:
        for step in row["accuracy"]:
            assert step["total_steps"] == row["tau"] + step["t"]
    assert "method auto (safe" in r.output and "total steps" in r.output


def test_method_auto_refuses_tau_auto_and_a_criterion_without_its_number():
    r = CliRunner().invoke(main, ["eval", str(SAMPLE), "--data", "mnist", "--method", "auto", "--tau", "auto"])
    assert r.exit_code == 2 and "leave out --tau auto" in r.output
    r = CliRunner().invoke(main, ["eval", str(SAMPLE), "--data", "mnist", "--method", "auto", "--method-criterion",
                                  "budget", "--limit", "4", "--calib-limit", "4"])
    assert r.exit_code == 2 and "--latency-budget" in r.output
    r = CliRunner().invoke(main, ["eval", str(SAMPLE), "--data", "mnist", "--method", "release", "--limit", "4"])
    assert r.exit_code == 2 and "choose one of srp, deadzone, both, burnin" in r.output


def test_criteria_choose_by_what_they_say(snn):
    methods = [SRP, Method("deadzone", 0.125)]
    for criterion, kw in (("safe", {}), ("margin", {}), ("target", {"target": 2}), ("budget", {"budget": 7})):
        c = ev.choose_method(snn, _batches(), T=3, criterion=criterion, taus=(2, 4), methods=methods, device="cpu",
                             **kw)
        acc = {(x.method, x.tau): np.asarray(x.correct) for x in c.candidates}
        plain = np.asarray(c.plain)
        assert c.n == 24 and len(c.candidates) == 4
        if criterion == "safe" and c.tau:
            ok = {k: v for k, v in acc.items() if (plain - v).max() <= ev.SAFE_SLACK}
            assert acc[c.method, c.tau].mean() == max(v.mean() for v in ok.values())
        if criterion == "margin":
            assert (plain - acc[c.method, c.tau]).max() == min((plain - v).max() for v in acc.values())
        if criterion == "target":
            assert acc[c.method, c.tau][1] == max(v[1] for v in acc.values())
        if criterion == "budget":
            assert acc[c.method, c.tau][7 - c.tau - 1] == max(v[7 - t - 1] for (_, t), v in acc.items())
        assert criterion in c.format() and json.dumps(c.to_json())


def test_safe_keeps_plain_conversion_when_every_candidate_loses(snn, monkeypatch):
    real = ev._correct_per_step
    calls = [0]

    def rigged(logits, y):  # the first call of each batch is plain conversion: make it unbeatable
        calls[0] += 1
        got = real(logits, y)
        return got + 10 if calls[0] % 3 == 1 else got

    monkeypatch.setattr(ev, "_correct_per_step", rigged)
    c = ev.choose_method(snn, _batches(), T=2, taus=(2, 3), methods=[SRP], device="cpu")
    assert (c.method, c.tau) == (SRP, 0) and "plain conversion is kept" in c.criterion


def test_bad_criterion_is_refused(snn):
    with pytest.raises(UsageError, match="choose one of"):
        ev.choose_method(snn, _batches(), T=2, criterion="best")
    with pytest.raises(UsageError, match="needs a target t"):
        ev.choose_method(snn, _batches(), T=2, criterion="target")


def test_convert_records_the_rule_and_eval_runs_it(tmp_path):
    import onnx

    from srp_onnx import fileformat

    out = tmp_path / "m.snn.onnx"
    r = CliRunner().invoke(main, ["convert", str(SAMPLE), "--method", "deadzone", "--dead-zone", "0.125",
                                  "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "neuron rule deadzone c=0.125" in r.output
    assert fileformat.read(onnx.load(str(out))).method == Method("deadzone", 0.125)
    res = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["eval", str(out), "--data", "mnist", "--T", "2", "--limit", "8",
                                  "--compare-baseline", "--json", str(res)])
    assert r.exit_code == 0, r.output
    rows = json.loads(res.read_text())["rows"]
    assert [(x["name"], x["method"]) for x in rows[1:]] == [
        ("QCFS (tau=0)", {"rule": "srp", "c": 0.0}), ("SRP (tau=4)", {"rule": "srp", "c": 0.0}),
        ("deadzone c=0.125 (tau=4)", {"rule": "deadzone", "c": 0.125})]


def test_convert_method_auto_writes_the_choice_into_the_file(tmp_path):
    import onnx

    from srp_onnx import fileformat

    out = tmp_path / "m.snn.onnx"
    r = CliRunner().invoke(main, ["convert", str(SAMPLE), "--method", "auto", "--tau-data", "mnist",
                                  "--calib-limit", "8", "--tau-target", "2", "-o", str(out)])
    assert r.exit_code == 0, r.output
    sf = fileformat.read(onnx.load(str(out)))
    assert "method auto (target: best accuracy at t = 2)" in r.output
    assert f"tau = {sf.tau}, neuron rule {sf.method.label()}" in r.output and sf.tau in (4, 8, 12, 16, 24)


def test_the_plot_shows_both_latency_conventions():
    pytest.importorskip("matplotlib")
    from srp_onnx.evaluate import EvalReport, Row
    from srp_onnx.plot import accuracy_figure

    rows = [Row("ANN", None, [98.0], [99.0]), Row("QCFS (tau=0)", 0, [50.0, 60.0, 70.0], [0.0] * 3, SRP),
            Row("deadzone c=0.125 (tau=4)", 4, [70.0, 80.0, 90.0], [0.0] * 3, Method("deadzone", 0.125))]
    fig = accuracy_figure(EvalReport(3, 10, rows, {}, "cpu"))
    by_t, by_total = fig.axes
    assert "after pre-simulation" in by_t.get_xlabel() and "tau + t" in by_total.get_xlabel()
    assert [list(line.get_xdata()) for line in by_t.get_lines()[1:]] == [[1, 2, 3], [1, 2, 3]]
    assert [list(line.get_xdata()) for line in by_total.get_lines()[1:]] == [[1, 2, 3], [5, 6, 7]]
