"""The saved-file contract and the one schedule (issue: one neuron, one schedule).

* a neuron layer is one ``srp.IF`` node, found by op type and layer record, never by name;
* the tau / reset / T schedule is written once (schedule.run), everything else drives it;
* files of another format version are refused in one line; analyze honours --device.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from srp_onnx_cli.main import main
from test_maxpool_gate import _pool_before_relu

from srp_onnx import fileformat, schedule
from srp_onnx.convert import ConvertOptions, convert
from srp_onnx.errors import ModelError
from srp_onnx.neuron import DOMAIN, OP
from srp_onnx.ort import CudaStatus, cuda_status
from srp_onnx.runtime import SpikingModel

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "mnist_qcfs.onnx"


@pytest.fixture(scope="module")
def sample_snn():
    snn, plan = convert(SAMPLE, ConvertOptions(tau=4))
    return snn, plan


def _x(n=6, seed=0):
    return np.random.default_rng(seed).random((n, 1, 28, 28)).astype(np.float32)


def test_each_neuron_layer_is_one_if_node_calling_a_model_local_function(sample_snn):
    snn, plan = sample_snn
    ifs = [n for n in snn.graph.node if n.op_type == OP and n.domain == DOMAIN]
    assert len(ifs) == len(plan.sites)
    assert [f.name for f in snn.functions] == [OP] and snn.functions[0].domain == DOMAIN
    assert {n.output[0] for n in ifs} == {s.output for s in plan.sites}
    onnx.checker.check_model(snn, full_check=True)


def test_the_inlined_function_free_graph_computes_the_same_step(sample_snn):
    """What README says for runtimes without model-local functions: onnx's inliner."""
    import onnxruntime as ort
    from onnx.inliner import inline_local_functions

    snn, _ = sample_snn
    flat = inline_local_functions(snn)
    assert not flat.functions and not any(n.domain == DOMAIN for n in flat.graph.node)
    sf = fileformat.read(snn)
    x = _x(3)
    feeds = {sf.input: x}
    for layer in sf.layers:
        shape = (3, *layer.site.shape)
        feeds[layer.state.v] = np.random.default_rng(1).random(shape).astype(np.float32) * 2 - 0.5
        feeds[layer.state.mask] = (np.random.default_rng(2).random(shape) > 0.3).astype(np.float32)
    a = ort.InferenceSession(snn.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    b = ort.InferenceSession(flat.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


def test_renamed_nodes_and_state_tensors_evaluate_to_the_same_logits(sample_snn, tmp_path):
    """Identity does not come from names: rename every node, and every state tensor, of the saved file."""
    snn, _ = sample_snn
    m = onnx.ModelProto()
    m.CopyFrom(snn)
    for k, n in enumerate(m.graph.node):
        n.name = f"renamed_{k}"
    sf = fileformat.read(snn)
    new = {}
    for k, layer in enumerate(sf.layers):
        for what in ("v", "mask", "v_next"):
            new[getattr(layer.state, what)] = f"state_{k}_{what}__x__y"
    for n in m.graph.node:
        n.input[:] = [new.get(i, i) for i in n.input]
        n.output[:] = [new.get(o, o) for o in n.output]
    for vi in [*m.graph.input, *m.graph.output]:
        vi.name = new.get(vi.name, vi.name)
    onnx.checker.check_model(m, full_check=True)
    path = tmp_path / "renamed.snn.onnx"
    onnx.save(m, str(path))
    x = _x()
    for mode in ("step", "unrolled"):
        want = SpikingModel(snn, device="cpu", mode=mode).simulate(x, 6, 4).logits
        got = SpikingModel(str(path), device="cpu", mode=mode).simulate(x, 6, 4).logits
        np.testing.assert_array_equal(got, want)
    r = CliRunner().invoke(main, ["analyze", str(path), "--data", "mnist", "--limit", "20", "--T", "2",
                                  "--device", "cpu"])
    assert r.exit_code == 0, r.output


def test_a_gated_model_with_a_moved_activation_evaluates_and_analyzes_from_its_file(tmp_path):
    """The gate pass names the moved site '<name>__before_pool': nothing may split names on '__'."""
    path = _pool_before_relu(tmp_path)
    out = tmp_path / "gated.snn.onnx"
    r = CliRunner().invoke(main, ["convert", str(path), "--calib", "digits", "--maxpool", "gate", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert any("__" in s.name for s in fileformat.read(onnx.load(str(out))).sites)
    for cmd in ("eval", "analyze"):
        r = CliRunner().invoke(main, [cmd, str(out), "--data", "digits", "--limit", "60", "--T", "4",
                                      "--device", "cpu"])
        assert r.exit_code == 0, (cmd, r.output)
    r = CliRunner().invoke(main, ["eval", str(out), "--data", "digits", "--limit", "60", "--T", "4", "--ann",
                                  str(path), "--device", "cpu"])
    assert r.exit_code == 0, r.output


@pytest.mark.skipif(cuda_status() is CudaStatus.OK, reason="this machine has CUDA")
def test_analyze_on_cuda_without_cuda_is_refused_in_one_line(tmp_path):
    r = CliRunner().invoke(main, ["analyze", str(SAMPLE), "--data", "mnist", "--limit", "10", "--T", "2",
                                  "--device", "cuda"])
    assert r.exit_code == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "cuda" in lines[0].lower() and "Traceback" not in r.output, r.stderr


def test_a_format_1_file_is_refused_saying_to_convert_again(sample_snn, tmp_path):
    snn, _ = sample_snn
    m = onnx.ModelProto()
    m.CopyFrom(snn)
    for p in m.metadata_props:
        if p.key == fileformat.Key.FORMAT_VERSION:
            p.value = "1"
        if p.key == fileformat.Key.VERSION:
            p.value = "0.1.0"
    with pytest.raises(ModelError, match="0.1.0.*format 1.*Convert the ANN again"):
        SpikingModel(m, device="cpu")
    path = tmp_path / "old.snn.onnx"
    onnx.save(m, str(path))
    r = CliRunner().invoke(main, ["eval", str(path), "--data", "mnist", "--limit", "10", "--T", "2"])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_an_if_node_without_its_layer_record_is_refused(sample_snn):
    snn, _ = sample_snn
    m = onnx.ModelProto()
    m.CopyFrom(snn)
    node = next(n for n in m.graph.node if n.op_type == OP)
    node.output[0] = node.output[0] + "_elsewhere"
    with pytest.raises(ModelError, match="no IF node"):
        fileformat.read(m)


class _Trace:
    def __init__(self):
        self.events = []

    def start(self):
        self.events.append("start")

    def step(self, counted):
        self.events.append(counted)

    def end_presim(self):
        self.events.append("reset")


@pytest.mark.parametrize("tau, T", [(0, 3), (2, 3), (1, 1)])
def test_the_schedule_is_presimulation_then_reset_then_counted_steps(tau, T):
    trace = _Trace()
    schedule.run(trace, tau, T)
    want = ["start"] + [None] * tau + (["reset"] if tau else []) + list(range(T))
    assert trace.events == want


def test_the_schedule_is_written_once():
    """No other code in the package or bench/ loops over the pre-simulation (the oracle in tests/ may)."""
    loop = re.compile(r"range\([^)]*\btau\b[^)]*\)|==\s*tau\s*-\s*1|>=\s*tau\b")
    hits = []
    for folder in ("srp_onnx", "bench", "cli"):
        for path in (ROOT / folder).rglob("*.py"):
            for k, line in enumerate(path.read_text().splitlines(), 1):
                if loop.search(line):
                    hits.append(f"{path.relative_to(ROOT)}:{k}: {line.strip()}")
    assert hits and all(h.startswith("srp_onnx/schedule.py") for h in hits), hits


def test_a_layer_name_with_a_newline_cannot_forge_a_row_of_the_analysis_table():
    from srp_onnx.analysis import Analysis, LayerStats, RunStats, format_analysis

    cases = dict.fromkeys(("equal", "a=0,r>0", "a>0,r=0", "a>r>0", "r>a>0"), 0.2)
    layer = LayerStats("conv\nSRP (tau=9)\x1b[2J", 10, 0.1, 0.0, cases, 0.0)
    text = format_analysis(Analysis(4, 1, 10.0, 1.0, [RunStats(0, [layer], cases, 1.0, 1.0, 1.0)]))
    assert "\x1b" not in text and not any(ln.startswith("SRP (tau=9)") for ln in text.splitlines())
    assert "conv\\nSRP (tau=9)" in text
