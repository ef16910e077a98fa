"""Thresholds for ReLU sites from calibration data.

The ANN runs on the calibration batches with onnxruntime, each ReLU site's
activations a = max(x, 0) are streamed into a histogram, and theta is
1. ``percentile`` (default 99.99): that percentile of the *positive*
   activations of the layer (Rueckauer et al. 2017's robust normalisation);
2. ``max``: their maximum.
``per_channel`` keeps one histogram per channel (axis 1) instead of one per
layer.

Streaming: each histogram has a fixed number of bins over [0, hi], hi a power
of two above the first batch's maximum; when a batch brings a value at or
above hi, hi is doubled (adjacent bins merged) until it is above. hi ends as
the smallest power of two strictly above the data's maximum however the data
is batched, so the thresholds do not depend on the batch size. Memory is
O(bins x channels) whatever the dataset size, and the percentile is exact up
to one bin width, hi / BINS <= 2 * max / BINS
(BINS = 8192: 0.025 % of the layer's maximum).

Because the final grid depends on the data's maximum only, histograms of disjoint
shards merge exactly (:meth:`StreamingHistogram.merge`: coarsen the finer range to the
coarser one, add the bins): distributed calibration (srp_onnx.distributed) gives the
thresholds of one process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import numpy as np
import onnx

from srp_onnx.errors import DataError
from srp_onnx.progress import NULL_PROGRESS, Progress

BINS = 8192
MAX_ACTIVATIONS = 1 << 25  # floats of site activations per onnxruntime run (128 MiB)


class StreamingHistogram:
    """Histograms of non-negative values, one per row (channel), with a doubling range."""

    def __init__(self, rows: int, bins: int = BINS):
        self.bins = bins
        self.counts = np.zeros((rows, bins), dtype=np.int64)
        self.hi = np.zeros(rows, dtype=np.float64)
        self.max = np.zeros(rows, dtype=np.float64)

    def add(self, values: np.ndarray) -> None:
        """values: [rows, n] non-negative (zeros are ignored)."""
        for r in range(values.shape[0]):
            v = values[r]
            v = v[v > 0].astype(np.float64)
            if v.size == 0:
                continue
            m = float(v.max())
            self.max[r] = max(self.max[r], m)
            if self.hi[r] == 0:  # the smallest power of two above m (m < hi <= 2 m)
                self.hi[r] = 2.0 ** np.frexp(m)[1]
            while m >= self.hi[r]:
                self.counts[r] = _coarsen(self.counts[r])
                self.hi[r] *= 2
            idx = np.minimum((v / self.hi[r] * self.bins).astype(np.int64), self.bins - 1)
            self.counts[r] += np.bincount(idx, minlength=self.bins)

    def merge(self, other: StreamingHistogram) -> StreamingHistogram:
        """The histogram of both value sets (exact: each row ends on the grid one pass would end on)."""
        if self.counts.shape != other.counts.shape:
            raise ValueError("cannot merge histograms of different shapes")
        out = StreamingHistogram(self.counts.shape[0], self.bins)
        for r in range(self.counts.shape[0]):
            hi = max(self.hi[r], other.hi[r])
            for h in (self, other):
                if h.hi[r] == 0:
                    continue
                c, h_hi = h.counts[r], h.hi[r]
                while h_hi < hi:
                    c, h_hi = _coarsen(c), h_hi * 2
                out.counts[r] += c
            out.hi[r] = hi
            out.max[r] = max(self.max[r], other.max[r])
        return out

    def percentile(self, p: float) -> np.ndarray:
        out = np.zeros(self.counts.shape[0])
        for r, c in enumerate(self.counts):
            total = c.sum()
            if total == 0:
                continue
            cum = np.cumsum(c)
            k = p / 100.0 * total
            b = int(np.searchsorted(cum, k))
            b = min(b, self.bins - 1)
            before = cum[b - 1] if b > 0 else 0
            frac = (k - before) / max(c[b], 1)
            out[r] = min((b + frac) / self.bins * self.hi[r], self.max[r])
        return out


def _coarsen(counts: np.ndarray) -> np.ndarray:
    """Bins over [0, 2 hi] from bins over [0, hi]: adjacent pairs merged, the upper half empty."""
    return np.concatenate([counts.reshape(-1, 2).sum(1), np.zeros(len(counts) // 2, np.int64)])


@dataclasses.dataclass
class CalibStats:
    """The activation histograms of the calibrated sites over some samples; disjoint shards merge exactly."""

    hists: list[StreamingHistogram | None]  # one per site; None until a sample was seen
    seen: int = 0

    def merge(self, other: CalibStats) -> CalibStats:
        hists = [b if a is None else a if b is None else a.merge(b) for a, b in zip(self.hists, other.hists)]
        return CalibStats(hists, self.seen + other.seen)


class HistogramCollector:
    """The ANN (exposing the sites' activations) in an onnxruntime CPU session; :meth:`count` streams batches."""

    def __init__(self, model: onnx.ModelProto, input_name: str, sites: list, *, per_channel: bool = False,
                 threads: int | None = None):
        from srp_onnx.ort import cpu_session

        self.session = cpu_session(model, threads)
        self.input_name, self.sites, self.per_channel = input_name, sites, per_channel

    def count(self, batches: Iterable[np.ndarray], on_batch: Callable[[int], None] | None = None) -> CalibStats:
        stats = CalibStats([None] * len(self.sites))
        # The activations of every calibrated layer come back at once: bound them to ~MAX_ACTIVATIONS floats per
        # run whatever the batch size (VGG-11 at 224 x 224 holds ~13 M per image; a batch of 64 took 9 GB).
        per_sample = sum(int(np.prod(s.shape)) for s in self.sites if s.shape) or 1
        step = max(1, MAX_ACTIVATIONS // per_sample)
        for xb in batches:
            for i in range(0, len(xb), step):
                self._add(stats, xb[i:i + step])
            if on_batch is not None:
                on_batch(len(xb))
        return stats

    def _add(self, stats: CalibStats, x: np.ndarray) -> None:
        outs = self.session.run(None, {self.input_name: np.asarray(x, dtype=np.float32)})[1:]
        stats.seen += len(x)
        bad = next((s.name for s, a in zip(self.sites, outs) if not np.isfinite(a).all()), None)
        if bad is not None:
            raise DataError(f"site '{bad}': the ANN's activations are NaN or Inf on the calibration data. "
                            "Check the data (NaN/Inf inputs?) and the model.")
        for k, a in enumerate(outs):
            rows = a.shape[1] if self.per_channel and a.ndim >= 2 else 1
            v = np.moveaxis(a, 1, 0).reshape(rows, -1) if rows > 1 else a.reshape(1, -1)
            if stats.hists[k] is None:
                stats.hists[k] = StreamingHistogram(rows)
            stats.hists[k].add(np.maximum(v, 0))


def calibrate(plan, batches: Iterable[np.ndarray] | None, *, rule: str = "percentile", percentile: float = 99.99,
              per_channel: bool = False, sites: list | None = None,
              collect: Callable[[onnx.ModelProto, list], CalibStats] | None = None, total: int | None = None,
              progress: Progress = NULL_PROGRESS) -> None:
    """Set ``theta`` of the plan's ReLU sites (or of ``sites``) from the ANN's activations.

    ``collect(model, sites)`` returns the histograms instead of streaming ``batches`` here
    (srp_onnx.distributed collects them on Ray workers and merges them). ``progress`` counts the
    calibration images streamed here (``total`` of them, if known).
    """
    todo = sites if sites is not None else [s for s in plan.sites if s.theta is None]
    if not todo:
        return
    model = plan.ann_model([s.output for s in todo])
    if collect is not None:
        stats = collect(model, todo)
    else:
        progress.start(total, "images", "calibration")
        try:
            stats = HistogramCollector(model, plan.input.name, todo, per_channel=per_channel).count(
                batches, on_batch=progress.update)
        finally:
            progress.close()
    hists, seen = stats.hists, stats.seen
    if seen == 0:
        raise DataError("the calibration data holds no samples. Give a non-empty dataset.", param="calib")
    for s, h in zip(todo, hists):
        assert h is not None
        theta = h.max.copy() if rule == "max" else h.percentile(percentile)
        if np.any(theta <= 0):
            theta = np.where(theta <= 0, max(float(theta.max()), 1e-3), theta)
            if float(h.max.max()) == 0:
                raise DataError(f"site '{s.name}': no positive activation in {seen} calibration samples, so no "
                                "threshold can be set. Use more or other calibration data.")
        how = "max" if rule == "max" else f"p{percentile:g}"
        if per_channel and theta.size > 1:
            s.per_channel = [float(t) for t in theta]
            s.theta = float(theta.max())
            s.source = f"calibration {how} per channel, {seen} samples"
        else:
            s.theta = float(theta[0])
            s.source = f"calibration {how}, {seen} samples"
