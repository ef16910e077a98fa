"""Distributed runs on Ray give the numbers of one process (eval, --tau auto, calibration), also when a worker fails.

One local Ray instance (2 CPUs, no dashboard) serves the whole module; the CLI joins it with
--ray auto and leaves it running. The library tests share one Cluster of 2 workers.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from srp_onnx_cli.main import main

from srp_onnx.convert import ConvertOptions
from srp_onnx.demo import SAMPLE
from srp_onnx.errors import DataError
from srp_onnx.evaluate import EvalInterrupted, choose_tau, evaluate
from srp_onnx.pipeline import CalibOptions, DataSource, open_data, open_model

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
RELU = ROOT / "tests" / "data" / "exporters" / "torch_ts_relu_cnn.onnx"  # ReLU: thresholds from --calib


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    # address="local": a fresh instance of our own, even where a `ray start` cluster runs
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    # The failing sources below are defined here: ship them to the workers by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def _clusters():
    made = []
    yield made
    for c in made:
        c.close()


@pytest.fixture
def cluster(_clusters):
    """One Cluster of 2 workers shared by the library tests (made again if a test closed it)."""
    from srp_onnx.distributed import Cluster

    if not _clusters or not _clusters[-1].workers:
        _clusters.append(Cluster("auto", workers=2))
    return _clusters[-1]


def _eval_json(tmp_path: Path, name: str, args: list[str]) -> dict:
    out = tmp_path / f"{name}.json"
    r = CliRunner().invoke(main, ["eval", *args, "--json", str(out)])
    assert r.exit_code == 0, r.output
    return json.loads(out.read_text())


@pytest.mark.parametrize("model, args", [
    (SAMPLE, ["--data", "mnist", "--limit", "160"]),
    (RELU, ["--data", "digits", "--calib", "digits", "--calib-limit", "300", "--per-channel"]),
], ids=["sample", "relu-exporter"])
def test_eval_with_ray_reports_what_one_process_reports(tmp_path, model, args):
    """tau 0 and 4 rows (--compare-baseline), the ANN row, warnings: identical; the ReLU net calibrates on Ray too."""
    common = [str(model), *args, "--T", "4", "--tau", "4", "--compare-baseline", "--batch-size", "32"]
    alone = _eval_json(tmp_path, "alone", common)
    spread = _eval_json(tmp_path, "ray", [*common, "--ray", "auto", "--workers", "2"])
    assert [r["tau"] for r in alone["rows"]] == [None, 0, 4]
    for key in ("rows", "warnings", "images", "T", "settings", "execution_provider"):
        assert spread[key] == alone[key], key
    block = spread["distributed"]
    assert "distributed" not in alone
    assert [w["worker"] for w in block["workers"]] == [0, 1]
    assert sum(w["images"] for w in block["workers"]) == alone["images"]
    assert sum(w["shards"] for w in block["workers"]) == block["shards"] > 2 and block["retried_shards"] == 0


def test_analyze_with_ray_reports_what_one_process_reports(tmp_path):
    """Per-layer cases, rates, MAE (a float sum, kept in batch order), SOPs and energy: identical."""
    args = [str(SAMPLE), "--data", "mnist", "--limit", "96", "--T", "4", "--tau", "2", "--batch-size", "32"]
    got = {}
    for name, extra in (("alone", []), ("ray", ["--ray", "auto", "--workers", "2"])):
        out = tmp_path / f"{name}.json"
        r = CliRunner().invoke(main, ["analyze", *args, *extra, "--json", str(out)])
        assert r.exit_code == 0, r.output
        got[name] = json.loads(out.read_text())
    block = got["ray"].pop("distributed")
    assert got["ray"] == got["alone"] and [run["tau"] for run in got["alone"]["runs"]] == [0, 2]
    assert sum(w["images"] for w in block["workers"]) == 96 and block["shards"] == 3


def _mnist(loaded, split: str, limit: int | None = None, batch_size: int = 32) -> DataSource:
    return DataSource.of(open_data("mnist", loaded, split=split, limit=limit), "mnist", batch_size,
                         loaded.input_shape, limit)


@pytest.fixture(scope="module")
def sample():
    return open_model(SAMPLE, ConvertOptions(tau=4), CalibOptions())


def test_tau_auto_on_ray_scores_every_tau_as_one_process(cluster, sample):
    src = _mnist(sample, "calib", limit=96)
    here = choose_tau(sample.snn, lambda: src.batches(), budget=5, max_tau=3, device="cpu", default=4)
    there = cluster.choose_tau(sample.snn, src, budget=5, max_tau=3, default=4)
    assert there.curve == here.curve and there.tau == here.tau and len(here.curve) == 4


def test_calibration_on_ray_merges_to_the_same_thresholds(cluster):
    """Shards of a few batches each, per-channel histograms: the merged thresholds equal one pass's bit for bit."""
    opts = dict(per_channel=True, percentile=99.9)
    calib = CalibOptions("digits", 400, 32)
    here = open_model(RELU, ConvertOptions(tau=4, **opts), calib)
    there = open_model(RELU, ConvertOptions(tau=4, **opts), calib, cluster=cluster)
    got = [(s.name, s.theta, s.per_channel, s.source) for s in there.plan.sites]
    assert got == [(s.name, s.theta, s.per_channel, s.source) for s in here.plan.sites]
    assert sum(s.source.startswith("calibration") for s in here.plan.sites) >= 2
    assert len({t for s in here.plan.sites for t in s.per_channel}) > 4  # real per-channel values, not one


class FailingOnce(DataSource):
    """Reads like its parent, except that the first ``times`` reads of shards past the first fail (any workers)."""

    def __init__(self, *a, how: str, marker: str, times: int = 1, **kw):
        super().__init__(*a, **kw)
        self.how, self.marker, self.times = how, marker, times

    def batches(self, start=0, stop=None):
        for k in range(self.times if start > 0 else 0):
            try:  # one marker file per failure, made atomically: each fails once, whichever worker reads it
                os.close(os.open(f"{self.marker}.{k}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            if self.how == "exit":
                os._exit(1)  # the worker process dies mid-run
            if self.how == "data":
                raise DataError("this shard's data is bad", param="data")
            raise RuntimeError("a transient failure")
        return super().batches(start, stop)


@pytest.mark.parametrize("how, times", [("exit", 2), ("raise", 1)])
def test_a_failing_worker_is_retried_and_every_image_counted_once(cluster, sample, tmp_path, how, times):
    """Both workers die at once (Ray restarts them; their shards wait for them), or a task raises once."""
    ds = open_data("mnist", sample, limit=256)
    marker = str(tmp_path / "failed")
    src = FailingOnce("mnist", split="test", preprocessing=ds.preprocessing, limit=256, batch_size=32,
                      input_shape=sample.input_shape, how=how, marker=marker, times=times)
    plain = DataSource.of(ds, "mnist", 32, sample.input_shape, 256)
    here = evaluate(sample.snn, lambda: plain.batches(), total=len(ds), T=4, tau=4, ann=sample.ann, device="cpu")
    there = cluster.evaluate(sample.snn, src, T=4, tau=4, ann=sample.ann)
    assert len(list(tmp_path.iterdir())) == times
    assert there.to_json()["rows"] == here.to_json()["rows"] and there.n == here.n == 256
    block = there.distributed
    # a shard sent to a worker while Ray restarts it fails too (and is retried as well)
    assert block["retried_shards"] >= times and sum(w["images"] for w in block["workers"]) == 256


def test_a_data_error_on_a_worker_is_raised_as_it_is(cluster, sample, tmp_path):
    ds = open_data("mnist", sample, limit=128)
    src = FailingOnce("mnist", split="test", preprocessing=ds.preprocessing, limit=128, batch_size=32,
                      input_shape=sample.input_shape, how="data", marker=str(tmp_path / "failed"))
    with pytest.raises(DataError) as e:
        cluster.evaluate(sample.snn, src, T=2, tau=0)
    assert str(e.value) == "data: this shard's data is bad"  # the parameter crosses the process boundary as such


def test_ctrl_c_stops_the_workers_and_reports_how_far_it_got(cluster, sample, monkeypatch):
    from srp_onnx.progress import NULL_PROGRESS

    c = cluster
    workers = list(c.workers)

    class Interrupting(type(NULL_PROGRESS)):
        def update(self, n):
            raise KeyboardInterrupt

    monkeypatch.setattr(c, "progress", Interrupting())  # the driver is interrupted after a shard
    with pytest.raises(EvalInterrupted, match="no results were written"):
        c.evaluate(sample.snn, _mnist(sample, "test", limit=96), T=2, tau=0)
    assert c.workers == [] and ray.is_initialized()  # the workers were killed; the test's Ray instance stays
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(workers[0].info.remote(), timeout=60)


def test_without_ray_the_option_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    r = CliRunner().invoke(main, ["eval", str(SAMPLE), "--data", "digits", "--ray", "auto"])
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [
        "srp-onnx: error: distributed runs need Ray, which is not installed: pip install 'srp-onnx[ray]'"]


def test_convert_and_eval_without_ray_import_neither_ray_nor_torch(tmp_path):
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from srp_onnx_cli.main import main\n"
        f"r = CliRunner().invoke(main, ['convert', {str(SAMPLE)!r}, '-o', {str(tmp_path / 'm.snn.onnx')!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        f"r = CliRunner().invoke(main, ['eval', {str(tmp_path / 'm.snn.onnx')!r}, '--data', 'mnist', '--limit', "
        "'40', '--T', '2'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(sorted(m for m in ('ray', 'torch') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_shards_are_whole_batches_covering_every_image_once():
    from srp_onnx.distributed import plan_shards

    for n, bs, w in [(300, 32, 2), (1, 64, 4), (64, 64, 2), (1000, 7, 3)]:
        shards = plan_shards(n, bs, w)
        assert shards[0][0] == 0 and shards[-1][1] == n
        assert all(a % bs == 0 and b == c for (a, b), (c, _) in zip(shards, shards[1:]))
    assert len(plan_shards(300, 32, 2)) == 5  # 10 batches, about 8 shards wanted: two batches each
    assert np.diff([a for a, _ in plan_shards(1000, 7, 3)]).min() == 7 * 12  # 143 batches / 12 -> 12 per shard
