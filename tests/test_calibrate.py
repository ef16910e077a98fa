"""Calibrated ReLU thresholds: the streamed percentile against numpy's, and memory-bounded runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import srp_onnx.calibrate as calibrate_mod
from srp_onnx.convert import ConvertOptions, plan, probe_shapes

MODEL = Path(__file__).parent / "data" / "exporters" / "torch_ts_relu_cnn.onnx"


def _digits(n: int) -> np.ndarray:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images[:n] / 16.0).astype(np.float32)[:, None]


def _plan():
    p = plan(MODEL, ConvertOptions())
    probe_shapes(p)
    return p


@pytest.mark.parametrize("percentile", [99.99, 99.0, 50.0])
def test_streamed_percentile_is_numpys_within_one_bin(percentile):
    x = _digits(300)
    p = _plan()
    calibrate_mod.calibrate(p, [x[:100], x[100:200], x[200:]], percentile=percentile)
    sess = ort.InferenceSession(p.ann_model([s.output for s in p.sites]).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    acts = sess.run(None, {p.input.name: x})[1:]
    for s, a in zip(p.sites, acts):
        pos = a[a > 0].astype(np.float64)
        bin_width = 2 * pos.max() / calibrate_mod.BINS  # the range is below 2 max, so a bin is at most this wide
        # The histogram counts ranks (the inverse CDF); numpy's default interpolates between two order statistics,
        # which in a sparse tail can lie far apart.
        assert abs(s.theta - np.percentile(pos, percentile, method="inverted_cdf")) <= bin_width, s.name


def test_runs_are_split_to_bound_memory_without_changing_thresholds(monkeypatch):
    x = _digits(200)
    whole = _plan()
    calibrate_mod.calibrate(whole, [x])
    runs = []
    import srp_onnx.ort as runtime_mod  # calibrate() takes its session from here; count its runs

    make = runtime_mod.cpu_session

    def counting_session(*a, **kw):
        sess = make(*a, **kw)

        class Counting:
            def run(self, names, feed):
                runs.append(len(next(iter(feed.values()))))
                return sess.run(names, feed)

        return Counting()

    per_sample = sum(int(np.prod(s.shape)) for s in whole.sites)
    monkeypatch.setattr(calibrate_mod, "MAX_ACTIVATIONS", per_sample * 16)
    monkeypatch.setattr(runtime_mod, "cpu_session", counting_session)
    split = _plan()
    calibrate_mod.calibrate(split, [x])
    assert runs and max(runs) == 16 and sum(runs) == 200
    assert [s.theta for s in split.sites] == [s.theta for s in whole.sites]


def test_histograms_of_shards_merge_into_the_one_pass_histogram():
    """Any split of the values, batched any way: merged counts, range and maximum equal one pass's exactly."""
    rng = np.random.default_rng(7)
    values = np.abs(rng.standard_normal((3, 5000))) * np.array([[0.5], [3.0], [40.0]])
    values[1, :2500] = 0  # a row with no positive value in the first shard
    whole = calibrate_mod.StreamingHistogram(3)
    whole.add(values)
    merged = None
    for a, b in [(0, 2500), (2500, 2600), (2600, 5000)]:
        part = calibrate_mod.StreamingHistogram(3)
        for i in range(a, b, 333):  # batches of another size inside each shard
            part.add(values[:, i:min(i + 333, b)])
        merged = part if merged is None else merged.merge(part)
    np.testing.assert_array_equal(merged.counts, whole.counts)
    np.testing.assert_array_equal(merged.hi, whole.hi)
    np.testing.assert_array_equal(merged.max, whole.max)
    assert len(set(whole.hi)) == 3  # the rows' ranges differ, so merging had to align them
