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
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from srp_onnx.errors import DataError

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
                c = self.counts[r]
                self.counts[r] = np.concatenate([c.reshape(-1, 2).sum(1), np.zeros(self.bins // 2, np.int64)])
                self.hi[r] *= 2
            idx = np.minimum((v / self.hi[r] * self.bins).astype(np.int64), self.bins - 1)
            self.counts[r] += np.bincount(idx, minlength=self.bins)

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


def calibrate(plan, batches: Iterable[np.ndarray], *, rule: str = "percentile", percentile: float = 99.99,
              per_channel: bool = False, sites: list | None = None) -> None:
    """Set ``theta`` of the plan's ReLU sites (or of ``sites``) from the ANN's activations."""
    from srp_onnx.ort import cpu_session

    todo = sites if sites is not None else [s for s in plan.sites if s.theta is None]
    if not todo:
        return
    sess = cpu_session(plan.ann_model([s.output for s in todo]))
    hists: list[StreamingHistogram | None] = [None] * len(todo)
    seen = 0
    # The activations of every calibrated layer come back at once: bound them to ~MAX_ACTIVATIONS floats per
    # run whatever the batch size (VGG-11 at 224 x 224 holds ~13 M per image; a batch of 64 took 9 GB).
    per_sample = sum(int(np.prod(s.shape)) for s in todo if s.shape) or 1
    step = max(1, MAX_ACTIVATIONS // per_sample)
    for x in (xb[i:i + step] for xb in batches for i in range(0, len(xb), step)):
        outs = sess.run(None, {plan.input.name: np.asarray(x, dtype=np.float32)})[1:]
        seen += len(x)
        bad = next((s.name for s, a in zip(todo, outs) if not np.isfinite(a).all()), None)
        if bad is not None:
            raise DataError(f"site '{bad}': the ANN's activations are NaN or Inf on the calibration data. "
                            "Check the data (NaN/Inf inputs?) and the model.")
        for k, a in enumerate(outs):
            rows = a.shape[1] if per_channel and a.ndim >= 2 else 1
            v = np.moveaxis(a, 1, 0).reshape(rows, -1) if rows > 1 else a.reshape(1, -1)
            if hists[k] is None:
                hists[k] = StreamingHistogram(rows)
            hists[k].add(np.maximum(v, 0))
    if seen == 0:
        raise DataError("the calibration data holds no samples. Give a non-empty --calib dataset.")
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
