"""The evaluation protocol: accuracy of the running logit sum at every step.

Rows, as in the paper's table: the ANN, plain QCFS conversion (tau = 0,
with ``compare_baseline``) and SRP (tau = the model's or the user's). Each
SNN row reports top-1 and top-5 for t = 1..T, where t counts steps after
the pre-simulation (the paper's latency); tau + t is the total latency.
Every row sees the same batches, so memory is bounded by the batch.
"""

from __future__ import annotations

import dataclasses
import platform
import sys
import time
from collections.abc import Callable, Iterable

import numpy as np
import onnx

from srp_onnx import __version__, ort
from srp_onnx.errors import DataError, UsageError
from srp_onnx.metrics import StepAccuracy, topk_correct
from srp_onnx.neuron import MAX_T, MAX_TAU
from srp_onnx.notes import Note, NoteKind
from srp_onnx.runtime import SpikingModel


class EvalInterrupted(KeyboardInterrupt):
    """Ctrl-C during evaluation; says how far it got."""

    def __init__(self, done: int, total: int):
        super().__init__(f"interrupted after {done} of {total} images; no results were written")
        self.done, self.total = done, total


@dataclasses.dataclass
class Row:
    name: str
    tau: int | None  # None for the ANN
    top1: list[float]  # per t = 1..T (one value for the ANN)
    top5: list[float]


@dataclasses.dataclass
class EvalReport:
    T: int
    n: int
    rows: list[Row]
    settings: dict
    provider: str
    warnings: list[Note] = dataclasses.field(default_factory=list)
    distributed: dict | None = None  # how a distributed run shared the work (workers, devices, images each)

    def to_json(self) -> dict:
        import onnxruntime

        return {
            "srp_onnx_version": __version__,
            "onnxruntime_version": onnxruntime.__version__,
            "onnx_version": onnx.__version__,
            "python": platform.python_version(),
            "execution_provider": self.provider,
            "settings": self.settings,
            "warnings": [w.to_json() for w in self.warnings],
            "images": self.n,
            "T": self.T,
            "latency_note": "t counts steps after the tau pre-simulation steps (the paper's T); "
                            "total steps = tau + t",
            "rows": [
                {"name": r.name, "tau": r.tau,
                 "accuracy": ({"top1": r.top1[0], "top5": r.top5[0]} if r.tau is None else
                              [{"t": t + 1, "total_steps": r.tau + t + 1, "top1": a1, "top5": a5}
                               for t, (a1, a5) in enumerate(zip(r.top1, r.top5))])}
                for r in self.rows
            ],
            **({"distributed": self.distributed} if self.distributed is not None else {}),
        }


def report_steps(T: int) -> list[int]:
    """t = 1, 2, 4, ..., and T itself."""
    steps, t = [], 1
    while t < T:
        steps.append(t)
        t *= 2
    return steps + [T]


class Progress:
    """A one-line progress indicator with images/s on stderr."""

    def __init__(self, total: int, label: str = "eval", enabled: bool = True):
        self.total, self.label, self.enabled = total, label, enabled
        self.done, self.start, self.last = 0, time.perf_counter(), 0.0
        self.tty = sys.stderr.isatty()

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if self.enabled and (now - self.last > (0.2 if self.tty else 5.0) or self.done >= self.total):
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            width = 30
            filled = int(width * self.done / max(self.total, 1))
            line = (f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} images, "
                    f"{rate:.1f} img/s")
            print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=sys.stderr)


def _ann_models(ann: onnx.ModelProto | dict[str, onnx.ModelProto] | None) -> dict[str, onnx.ModelProto]:
    return {"ANN": ann} if isinstance(ann, onnx.ModelProto) else dict(ann or {})


@dataclasses.dataclass
class EvalCounts:
    """Exact integer counts over some images: what one process (or one shard) returns.

    Counts of disjoint shards add up (:meth:`merge`) to those of one pass over all of them,
    so a distributed evaluation reports the same numbers as a single process.
    """

    T: int
    runs: list[tuple[str, int]]  # (row name, tau) of the SNN rows, in report order
    snn: dict[str, StepAccuracy]  # run name -> correct top-1/top-5 counts per step
    ann: dict[str, list[int]]  # ANN row name -> [top-1 correct, top-5 correct]
    varies: set[str] = dataclasses.field(default_factory=set)  # runs whose logits differ between images
    n: int = 0

    def merge(self, other: EvalCounts) -> EvalCounts:
        """The counts of both (disjoint) image sets; neither input changes."""
        if (self.T, self.runs, list(self.ann)) != (other.T, other.runs, list(other.ann)):
            raise ValueError("cannot merge counts of different evaluations")
        snn = {}
        for name in self.snn:
            a = StepAccuracy(self.T)
            for part in (self.snn[name], other.snn[name]):
                a.top1 += part.top1
                a.top5 += part.top5
                a.n += part.n
            snn[name] = a
        ann = {name: [c + d for c, d in zip(self.ann[name], other.ann[name])] for name in self.ann}
        return EvalCounts(self.T, list(self.runs), snn, ann, self.varies | other.varies, self.n + other.n)


class Evaluator:
    """The models of one evaluation in this process: the spiking model's session and the ANNs'.

    :meth:`count` runs batches and returns exact counts; :func:`evaluate` and the distributed
    workers (srp_onnx.distributed) both count with it, so they cannot disagree.
    """

    def __init__(self, snn: onnx.ModelProto, *, T: int, tau: int | None = None,
                 ann: onnx.ModelProto | dict[str, onnx.ModelProto] | None = None, compare_baseline: bool = False,
                 device: str = "auto", threads: int | None = None):
        self.T = T
        self.model = SpikingModel(snn, device=device, threads=threads)
        tau = self.model.default_tau if tau is None else tau
        self.runs = [("SRP" if tau > 0 else "QCFS", tau)]
        if compare_baseline and tau > 0:
            self.runs.insert(0, ("QCFS", 0))
        self.ann_sessions = {name: ort.session(m, self.model.providers, threads=threads)
                             for name, m in _ann_models(ann).items()}

    @property
    def provider(self) -> str:
        return self.model.provider

    def count(self, batches: Iterable[tuple[np.ndarray, np.ndarray]],
              on_batch: Callable[[int], None] | None = None) -> EvalCounts:
        """Correct counts over ``batches``; ``on_batch(images)`` after each batch (progress)."""
        c = EvalCounts(self.T, list(self.runs), {name: StepAccuracy(self.T) for name, _ in self.runs},
                       {name: [0, 0] for name in self.ann_sessions})
        for x, y in batches:
            y = np.asarray(y, dtype=np.int64)
            for name, t in self.runs:
                logits = self.model.simulate(x, self.T, t).logits
                if name not in c.varies and len(x) > 1 and np.ptp(logits, axis=1).max() > 0:
                    c.varies.add(name)
                K = logits.shape[-1]
                if c.n == 0 and (y.min() < 0 or y.max() >= K):
                    raise DataError(f"labels range over {int(y.min())}..{int(y.max())} but the model has {K} "
                                    "outputs. Check that the data matches the model.", param="data")
                if y.max() >= K:
                    raise DataError(f"label {int(y.max())} is out of range for a model with {K} outputs.")
                c.snn[name].update(logits, y)
            for name, sess in self.ann_sessions.items():
                out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
                c.ann[name][0] += int(topk_correct(out, y, 1))
                c.ann[name][1] += int(topk_correct(out, y, 5))
            c.n += len(y)
            if on_batch is not None:
                on_batch(len(y))
        return c


def build_report(counts: EvalCounts, *, compare_baseline: bool, device: str, provider: str,
                 settings: dict | None = None, distributed: dict | None = None) -> EvalReport:
    """The report of (merged) counts: rows, percentages and warnings, the same however they were counted."""
    n, T = counts.n, counts.T
    if n == 0:
        raise DataError("the dataset yielded no images. Check the data and the image limit.", param="data")
    rows = []
    for name, (c1, c5) in counts.ann.items():
        rows.append(Row(name, None, [100.0 * c1 / n], [100.0 * c5 / n]))
    for name, t in counts.runs:
        a = counts.snn[name]
        rows.append(Row(f"{name} (tau={t})", t, [float(v) for v in a.percent("top1")],
                        [float(v) for v in a.percent("top5")]))
    s = dict(settings or {})
    s.update(T=T, tau=counts.runs[-1][1], compare_baseline=compare_baseline, device=device)
    warnings = [Note(NoteKind.OUTPUT_CONSTANT,
                     f"{name} (tau={t}): the logits are the same for every image at every step up to T = {T}: no spike "
                "reaches the output layer, so its accuracy is that of a constant guess. The thresholds are too "
                "high for this network's activations (say, ReLU6's 6 over activations far below it); try a larger "
                "T, or a QCFS-trained network or calibrated ReLU thresholds.")
                for name, t in counts.runs if n > 1 and name not in counts.varies]
    return EvalReport(T, n, rows, s, provider, warnings, distributed)


def evaluate(snn: onnx.ModelProto, batches: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]], *, total: int,
             T: int, tau: int | None = None, ann: onnx.ModelProto | dict[str, onnx.ModelProto] | None = None,
             compare_baseline: bool = False,
             device: str = "auto", num_classes: int | None = None, progress: bool = True,
             settings: dict | None = None) -> EvalReport:
    """Accuracy per step of the spiking model (rows: the ANNs, then tau = 0 if asked, then tau) in this process.

    srp_onnx.distributed.Cluster.evaluate is the same over Ray workers, with the same result.
    """
    ev = Evaluator(snn, T=T, tau=tau, ann=ann, compare_baseline=compare_baseline, device=device)
    bar = Progress(total, enabled=progress)
    try:
        counts = ev.count(batches(), bar.update)
    except KeyboardInterrupt:
        raise EvalInterrupted(bar.done, total) from None
    finally:
        bar.close()
    return build_report(counts, compare_baseline=compare_baseline, device=device, provider=ev.provider,
                        settings=settings)


def format_table(report: EvalReport, metric: str = "top1") -> str:
    steps = report_steps(report.T)
    head = f"{'row':<16}" + "".join(f"{'t=' + str(t):>9}" for t in steps)
    lines = [f"accuracy ({metric}, %) on {report.n} images; t = steps after pre-simulation "
             "(total steps = tau + t)", head]
    for r in report.rows:
        vals = getattr(r, metric)
        if r.tau is None:
            lines.append(f"{r.name:<16}" + f"{vals[0]:>9.2f}" + "  (no time steps)")
        else:
            lines.append(f"{r.name:<16}" + "".join(f"{vals[t - 1]:>9.2f}" for t in steps))
            if r.tau:
                lines.append(f"{'  total steps':<16}" + "".join(f"{r.tau + t:>9d}" for t in steps))
    return "\n".join(lines)


@dataclasses.dataclass
class TauChoice:
    tau: int
    curve: list[tuple[int, int, float]]  # (tau, t, top-1 %) seen on the calibration split
    criterion: str

    @property
    def flat(self) -> bool:
        """Every tau scored the same: the data cannot tell them apart."""
        return len({acc for _, _, acc in self.curve}) == 1

    def to_json(self) -> dict:
        return {"tau": self.tau, "criterion": self.criterion,
                "curve": [{"tau": a, "t": t, "top1": acc} for a, t, acc in self.curve]}

    def format(self) -> str:
        rows = "  ".join(f"tau={a}: {acc:.2f}" for a, _, acc in self.curve)
        return f"tau auto ({self.criterion}), calibration-split top-1: {rows} -> tau = {self.tau}"


def tau_candidates(*, T: int | None = None, budget: int | None = None, max_tau: int = 16
                   ) -> tuple[list[tuple[int, int]], str]:
    """The (tau, t) pairs --tau auto scores, and its criterion: accuracy at step T, or at tau + t = budget."""
    if (T is None) == (budget is None):
        raise ValueError("give exactly one of T and budget")
    if not 0 <= max_tau <= MAX_TAU or not 1 <= (T if T is not None else budget) <= MAX_T + MAX_TAU:
        raise UsageError(f"choosing tau: the largest tau must be 0 to {MAX_TAU}, the target T 1 to {MAX_T} and "
                         f"the latency budget at most {MAX_T + MAX_TAU}.")
    if budget is not None:
        return [(a, budget - a) for a in range(min(max_tau, budget - 1) + 1)], f"latency budget tau + T = {budget}"
    return [(a, T) for a in range(max_tau + 1)], f"accuracy at T = {T}"


@dataclasses.dataclass
class TauCounts:
    """Top-1 correct at each candidate (tau, t) over some images; disjoint shards add up."""

    taus: list[tuple[int, int]]
    correct: np.ndarray  # int64, one per candidate
    n: int = 0

    def merge(self, other: TauCounts) -> TauCounts:
        if self.taus != other.taus:
            raise ValueError("cannot merge counts of different tau candidates")
        return TauCounts(list(self.taus), self.correct + other.correct, self.n + other.n)


def count_tau(model: SpikingModel, taus: list[tuple[int, int]], batches: Iterable[tuple[np.ndarray, np.ndarray]],
              on_batch: Callable[[int], None] | None = None) -> TauCounts:
    """Top-1 correct of the running sum at step t after tau pre-simulation steps, for each (tau, t)."""
    c = TauCounts(list(taus), np.zeros(len(taus), np.int64))
    for x, y in batches:
        y = np.asarray(y, np.int64)
        for k, (a, t) in enumerate(taus):
            logits = model.simulate(x, t, a).logits
            c.correct[k] += int(topk_correct(logits.astype(np.float64).sum(0), y, 1))
        c.n += len(y)
        if on_batch is not None:
            on_batch(len(y))
    return c


def pick_tau(counts: TauCounts, criterion: str, default: int | None = None) -> TauChoice:
    """The best tau of the counts; ties go to the smaller tau, a flat curve to ``default`` (if given)."""
    if counts.n == 0:
        raise DataError("the calibration split holds no images; tau cannot be chosen.")
    taus = counts.taus
    acc = 100.0 * counts.correct / counts.n
    curve = [(a, t, float(v)) for (a, t), v in zip(taus, acc)]
    if default is not None and acc.min() == acc.max():
        # No signal (say, data the model fits perfectly): the smallest tau would win by the tie rule alone.
        return TauChoice(default, curve, f"{criterion}; every tau scored the same, so the default is kept")
    best = int(np.flatnonzero(acc == acc.max())[0])
    return TauChoice(taus[best][0], curve, criterion)


def choose_tau(snn: onnx.ModelProto, batches: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]], *,
               T: int | None = None, budget: int | None = None, max_tau: int = 16,
               device: str = "auto", default: int | None = None) -> TauChoice:
    """Pick tau on *calibration* batches: best accuracy at step T, or at tau + t = budget.

    Ties go to the smaller tau (lower latency); when every tau ties, ``default`` (if given)
    is kept instead. The caller must pass batches of a split that is not the test split.
    srp_onnx.distributed.Cluster.choose_tau is the same over Ray workers.
    """
    taus, criterion = tau_candidates(T=T, budget=budget, max_tau=max_tau)
    model = SpikingModel(snn, device=device)
    return pick_tau(count_tau(model, taus, batches()), criterion, default)
