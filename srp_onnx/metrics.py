"""Accuracy per time step (srp-algorithm.md section 3).

The prediction at step t is the argmax of the running sum of the logits of
post-pre-simulation steps 1..t. The running sum is kept in float64; ties go
to the lowest class index (numpy's argmax), for the SNN and the ANN alike.
"""

from __future__ import annotations

import numpy as np


def running_sum(logits: np.ndarray) -> np.ndarray:
    """[T, B, K] per-step logits -> [T, B, K] float64 running sums."""
    return np.cumsum(logits.astype(np.float64), axis=0)


def topk_correct(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """scores [..., B, K], labels [B] -> number correct per leading index (top-k, ties to lower index)."""
    K = scores.shape[-1]
    if k <= 1 or K <= 1:
        return (scores.argmax(-1) == labels).sum(-1)
    k = min(k, K)
    # stable ordering: rank by (-score, index) so ties resolve to the lower class index, as argmax does
    order = np.argsort(-scores, axis=-1, kind="stable")[..., :k]
    return (order == labels[:, None]).any(-1).sum(-1)


class StepAccuracy:
    """Accumulates correct counts per step over batches."""

    def __init__(self, T: int):
        self.T = T
        self.n = 0
        self.top1 = np.zeros(T, dtype=np.int64)
        self.top5 = np.zeros(T, dtype=np.int64)

    def update(self, logits: np.ndarray, labels: np.ndarray) -> None:
        acc = running_sum(logits)
        self.top1 += topk_correct(acc, labels, 1)
        self.top5 += topk_correct(acc, labels, 5)
        self.n += len(labels)

    def percent(self, which: str = "top1") -> np.ndarray:
        return 100.0 * getattr(self, which) / max(self.n, 1)
