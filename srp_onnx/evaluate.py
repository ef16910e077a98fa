"""The evaluation protocol: accuracy of the running logit sum at every step.

Rows, as in the paper's table: the ANN, plain QCFS conversion (tau = 0,
with ``compare_baseline``) and SRP (tau = the model's or the user's), then,
when another neuron rule was asked for (``chosen``, e.g. by
:func:`choose_method`), that rule's row last. Each
SNN row reports top-1 and top-5 for t = 1..T, where t counts steps after
the pre-simulation (the paper's latency); tau + t is the total latency.
Every row sees the same batches, so memory is bounded by the batch.
"""

from __future__ import annotations

import dataclasses
import platform
from collections.abc import Callable, Iterable

import numpy as np
import onnx

from srp_onnx import __version__, fileformat, ort
from srp_onnx.errors import DataError, UsageError
from srp_onnx.metrics import StepAccuracy, topk_correct
from srp_onnx.neuron import MAX_T, MAX_TAU, SRP, Method
from srp_onnx.notes import Note, NoteKind
from srp_onnx.progress import NULL_PROGRESS, Progress
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
    method: Method | None = None  # the neuron rule (None for the ANN)


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
                {"name": r.name, "tau": r.tau, "method": None if r.method is None else r.method.to_json(),
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


def _ann_models(ann: onnx.ModelProto | dict[str, onnx.ModelProto] | None) -> dict[str, onnx.ModelProto]:
    return {"ANN": ann} if isinstance(ann, onnx.ModelProto) else dict(ann or {})


@dataclasses.dataclass
class EvalCounts:
    """Exact integer counts over some images: what one process (or one shard) returns.

    Counts of disjoint shards add up (:meth:`merge`) to those of one pass over all of them,
    so a distributed evaluation reports the same numbers as a single process.
    """

    T: int
    runs: list[tuple[str, int, Method]]  # (row name, tau, neuron rule) of the SNN rows, in report order
    snn: dict[str, StepAccuracy]  # run name -> correct top-1/top-5 counts per step
    ann: dict[str, list[int]]  # ANN row name -> [top-1 correct, top-5 correct]
    varies: set[str] = dataclasses.field(default_factory=set)  # runs whose logits differ between images
    n: int = 0
    tau: int | None = None  # the model's (or the user's) tau: the settings' ``tau``

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
        return EvalCounts(self.T, list(self.runs), snn, ann, self.varies | other.varies, self.n + other.n, self.tau)


class Evaluator:
    """The models of one evaluation in this process: the spiking model's session and the ANNs'.

    :meth:`count` runs batches and returns exact counts; :func:`evaluate` and the distributed
    workers (srp_onnx.distributed) both count with it, so they cannot disagree.
    """

    def __init__(self, snn: onnx.ModelProto, *, T: int, tau: int | None = None,
                 ann: onnx.ModelProto | dict[str, onnx.ModelProto] | None = None, compare_baseline: bool = False,
                 chosen: tuple[Method, int] | None = None, chosen_label: str = "",
                 device: str = "auto", threads: int | None = None):
        self.T = T
        counting = chosen[0] if chosen is not None and chosen[0].spec.counts else None
        self.model = SpikingModel(snn, device=device, threads=threads, method=counting)
        tau = self.model.default_tau if tau is None else tau
        self.tau = tau
        own = self.model.method if counting is None else fileformat.read(snn).method  # the file's rule
        self.runs = [(_row_name(own, tau), tau, own)]
        if compare_baseline and tau > 0:
            self.runs.insert(0, ("QCFS", 0, SRP))
            if own != SRP:  # the paper's setting beside the file's rule
                self.runs.insert(1, ("SRP", tau, SRP))
        if chosen is not None and (chosen_label or (chosen[0], chosen[1]) not in {(m, t) for _, t, m in self.runs}):
            name = _row_name(*chosen)
            self.runs.append((f"{chosen_label}: {name}" if chosen_label else name, chosen[1], chosen[0]))
        self.ann_sessions = {name: ort.session(m, self.model.providers, threads=threads)
                             for name, m in _ann_models(ann).items()}

    @property
    def provider(self) -> str:
        return self.model.provider

    def count(self, batches: Iterable[tuple[np.ndarray, np.ndarray]],
              on_batch: Callable[[int], None] | None = None) -> EvalCounts:
        """Correct counts over ``batches``; ``on_batch(images)`` after each batch (progress)."""
        c = EvalCounts(self.T, list(self.runs), {name: StepAccuracy(self.T) for name, _, _ in self.runs},
                       {name: [0, 0] for name in self.ann_sessions}, tau=self.tau)
        for x, y in batches:
            y = np.asarray(y, dtype=np.int64)
            for name, t, method in self.runs:
                logits = self.model.simulate(x, self.T, t, method=method).logits
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
    for name, t, method in counts.runs:
        a = counts.snn[name]
        rows.append(Row(f"{name} (tau={t})", t, [float(v) for v in a.percent("top1")],
                        [float(v) for v in a.percent("top5")], method))
    s = dict(settings or {})
    s.update(T=T, tau=counts.tau if counts.tau is not None else counts.runs[-1][1],
             compare_baseline=compare_baseline, device=device)
    warnings = [Note(NoteKind.OUTPUT_CONSTANT,
                     f"{name} (tau={t}): the logits are the same for every image at every step up to T = {T}: no spike "
                "reaches the output layer, so its accuracy is that of a constant guess. The thresholds are too "
                "high for this network's activations (say, ReLU6's 6 over activations far below it); try a larger "
                "T, or a QCFS-trained network or calibrated ReLU thresholds.")
                for name, t, _ in counts.runs if n > 1 and name not in counts.varies]
    return EvalReport(T, n, rows, s, provider, warnings, distributed)


def evaluate(snn: onnx.ModelProto, batches: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]], *, total: int,
             T: int, tau: int | None = None, ann: onnx.ModelProto | dict[str, onnx.ModelProto] | None = None,
             compare_baseline: bool = False, chosen: tuple[Method, int] | None = None, chosen_label: str = "",
             device: str = "auto", num_classes: int | None = None, progress: Progress = NULL_PROGRESS,
             settings: dict | None = None) -> EvalReport:
    """Accuracy per step of the spiking model (rows: the ANNs, then tau = 0 if asked, then tau) in this process.

    srp_onnx.distributed.Cluster.evaluate is the same over Ray workers, with the same result.
    ``progress`` counts image-steps: each image through every row's tau + T steps, and one per ANN.
    """
    ev = Evaluator(snn, T=T, tau=tau, ann=ann, compare_baseline=compare_baseline, chosen=chosen,
                   chosen_label=chosen_label, device=device)
    per_image = sum(run[1] + T for run in ev.runs) + len(ev.ann_sessions)
    done = [0]

    def on_batch(images: int) -> None:
        done[0] += images
        progress.update(images * per_image)

    progress.start(total * per_image, "image-steps", "eval")
    try:
        counts = ev.count(batches(), on_batch)
    except KeyboardInterrupt:
        raise EvalInterrupted(done[0], total) from None
    finally:
        progress.close()
    return build_report(counts, compare_baseline=compare_baseline, device=device, provider=ev.provider,
                        settings=settings)


def _row_name(method: Method, tau: int) -> str:
    if tau == 0:
        return "QCFS"
    return "SRP" if method == SRP else method.label()


def format_table(report: EvalReport, metric: str = "top1") -> str:
    """The paper's table: a column per t = 1, 2, 4, ..., T; the ANN, which has no time steps, on its own line
    above the header (never under a t column); under each SRP row, the total steps tau + t."""
    steps = report_steps(report.T)
    label = {"top1": "top-1", "top5": "top-5"}[metric]
    width = max([16] + [len(r.name) + 2 for r in report.rows])
    lines = [f"accuracy ({label}, %) on {report.n} images; t = steps after pre-simulation "
             "(total steps = tau + t)"]
    lines += [f"{r.name}: {getattr(r, metric)[0]:.2f} (one pass, no time steps)" for r in report.rows
              if r.tau is None]
    lines.append(f"{'':<{width}}" + "".join(f"{'t=' + str(t):>9}" for t in steps))
    for r in report.rows:
        if r.tau is None:
            continue
        vals = getattr(r, metric)
        lines.append(f"{r.name:<{width}}" + "".join(f"{vals[t - 1]:>9.2f}" for t in steps))
        if r.tau:
            lines.append(f"{'  total steps':<{width}}" + "".join(f"{r.tau + t:>9d}" for t in steps))
    return "\n".join(lines)


CSV_COLUMNS = ("method", "tau", "t", "total_steps", "top1", "top5")


def csv_rows(report: EvalReport) -> list[dict]:
    """One record per method and t (every t = 1..T); the ANN once, with no tau, t or total steps."""
    rows = []
    for r in report.rows:
        if r.tau is None:
            rows.append({"method": r.name, "tau": "", "t": "", "total_steps": "", "top1": r.top1[0],
                         "top5": r.top5[0]})
        else:
            rows += [{"method": r.name, "tau": r.tau, "t": t + 1, "total_steps": r.tau + t + 1, "top1": a1, "top5": a5}
                     for t, (a1, a5) in enumerate(zip(r.top1, r.top5))]
    return rows


def format_csv(report: EvalReport) -> str:
    """:func:`csv_rows` as CSV text (accuracies in %, full float precision, as in the JSON)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(report))
    return buf.getvalue()


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
               device: str = "auto", default: int | None = None, total: int | None = None,
               progress: Progress = NULL_PROGRESS) -> TauChoice:
    """Pick tau on *calibration* batches: best accuracy at step T, or at tau + t = budget.

    Ties go to the smaller tau (lower latency); when every tau ties, ``default`` (if given)
    is kept instead. The caller must pass batches of a split that is not the test split.
    srp_onnx.distributed.Cluster.choose_tau is the same over Ray workers. ``progress`` counts image-steps
    (``total`` images, if known, through every candidate's tau + t steps).
    """
    taus, criterion = tau_candidates(T=T, budget=budget, max_tau=max_tau)
    model = SpikingModel(snn, device=device)
    per_image = sum(a + t for a, t in taus)
    progress.start(None if total is None else total * per_image, "image-steps", "tau auto")
    try:
        counts = count_tau(model, taus, batches(), lambda images: progress.update(images * per_image))
    finally:
        progress.close()
    return pick_tau(counts, criterion, default)


# -- choosing the neuron rule on calibration data ------------------------------------------------------------

CRITERIA = ("safe", "margin", "target", "budget")
SAFE_SLACK = 2  # calibration images a candidate may lose against plain conversion at any t ("safe")
DEFAULT_TAUS = (4, 8, 12, 16, 24)


def candidate_methods(levels: int = 4) -> list[Method]:
    """The rules tried by ``--method auto``: SRP, and dead-zone and both with c in {0, 1/(4L), 1/(2L)}."""
    levels = max(int(levels), 1)
    cs = (0.0, 1 / (4 * levels), 1 / (2 * levels))
    return [SRP] + [Method(rule, c) for rule in ("deadzone", "both") for c in cs]


@dataclasses.dataclass
class Candidate:
    method: Method
    tau: int
    correct: list[int]  # calibration images right at t = 1..T (running logit sum)


@dataclasses.dataclass
class MethodChoice:
    """What ``--method auto`` saw on the calibration split and what it chose."""

    method: Method
    tau: int
    criterion: str
    n: int  # calibration images
    plain: list[int]  # plain conversion (tau = 0): images right at t = 1..T
    candidates: list[Candidate]

    def score(self, c: Candidate) -> dict:
        acc = np.asarray(c.correct, np.float64)
        deficit = int((np.asarray(self.plain) - acc).max())
        return {"mean": 100.0 * acc.mean() / self.n, "worst_deficit_images": deficit,
                "worst_margin": -100.0 * deficit / self.n}

    def to_json(self) -> dict:
        return {"method": self.method.to_json(), "tau": self.tau, "criterion": self.criterion, "images": self.n,
                "plain": [100.0 * v / self.n for v in self.plain],
                "candidates": [{"method": c.method.to_json(), "tau": c.tau, **self.score(c),
                                "top1": [100.0 * v / self.n for v in c.correct]} for c in self.candidates]}

    def format(self) -> str:
        steps = report_steps(len(self.plain))
        lines = [f"method auto ({self.criterion}), calibration split, {self.n} images, top-1 % at t:",
                 f"{'candidate':<28}" + "".join(f"{'t=' + str(t):>8}" for t in steps) + "    mean  worst vs tau=0"]
        lines.append(f"{'QCFS (tau=0)':<28}" + "".join(f"{100.0 * self.plain[t - 1] / self.n:>8.2f}" for t in steps))
        for c in self.candidates:
            sc = self.score(c)
            lines.append(f"{_row_name(c.method, c.tau) + f' (tau={c.tau})':<28}"
                         + "".join(f"{100.0 * c.correct[t - 1] / self.n:>8.2f}" for t in steps)
                         + f"{sc['mean']:>8.2f}  {-sc['worst_deficit_images']:+d} images")
        lines.append(f"-> {_row_name(self.method, self.tau)} (tau={self.tau})")
        return "\n".join(lines)


def choose_method(snn: onnx.ModelProto, batches: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]], *,
                  T: int, criterion: str = "safe", target: int | None = None, budget: int | None = None,
                  taus: Iterable[int] = DEFAULT_TAUS, methods: list[Method] | None = None,
                  device: str = "auto", total: int | None = None, progress: Progress = NULL_PROGRESS
                  ) -> MethodChoice:
    """Choose the neuron rule and tau on *calibration* batches (never the test split), by ``criterion``:

    * ``safe`` (default): among the candidates that are never more than :data:`SAFE_SLACK`
      calibration images below plain conversion (tau = 0) at any t = 1..T, the best mean
      accuracy over t, then the shorter tau; plain conversion itself when none qualifies;
    * ``margin``: the best worst-case margin over plain conversion across t, then mean, then tau;
    * ``target``: the best accuracy at t = ``target``, then mean, then tau;
    * ``budget``: the best accuracy at total latency tau + t = ``budget`` (candidates with
      tau < budget only), then the shorter tau.

    Every candidate (``methods`` x ``taus``; by default :func:`candidate_methods` of the
    network's L) is simulated for T counted steps on every batch. ``progress`` counts image-steps
    (``total`` images, if known).
    """
    if criterion not in CRITERIA:
        raise UsageError(f"method criterion {criterion!r}: choose one of {', '.join(CRITERIA)}.")
    if criterion == "target" and target is None or criterion == "budget" and budget is None:
        raise UsageError(f"the '{criterion}' criterion needs {'a target t' if target is None else 'a latency budget'}.")
    taus = sorted(set(int(t) for t in taus))
    if criterion == "target":
        T = max(T, int(target))
    if criterion == "budget":
        taus = [t for t in taus if t < budget]
        T = max(T, budget - min(taus, default=0))
    if not 1 <= T <= MAX_T or not taus or not all(0 < t <= MAX_TAU for t in taus):
        raise UsageError(f"choosing the neuron rule: T must be 1 to {MAX_T} and every tau 1 to {MAX_TAU} (and "
                         "below the latency budget).")
    if methods is None:
        levels = max((s.levels or 0 for s in fileformat.read(snn).sites), default=0) or 4
        methods = candidate_methods(levels)
    counting = next((m for m in methods if m.spec.counts), None)
    model = SpikingModel(snn, device=device, method=counting)
    grid = [(m, t) for t in taus for m in methods]
    plain = np.zeros(T, np.int64)
    correct = np.zeros((len(grid), T), np.int64)
    n = 0
    per_image = T + sum(t + T for _, t in grid)
    progress.start(None if total is None else total * per_image, "image-steps", "method auto")
    try:
        for x, y in batches():
            y = np.asarray(y, np.int64)
            plain += _correct_per_step(model.simulate(x, T, 0, method=SRP).logits, y)
            for k, (m, t) in enumerate(grid):
                correct[k] += _correct_per_step(model.simulate(x, T, t, method=m).logits, y)
            n += len(y)
            progress.update(len(y) * per_image)
    finally:
        progress.close()
    if n == 0:
        raise DataError("the calibration split holds no images; the neuron rule cannot be chosen.")
    cands = [Candidate(m, t, [int(v) for v in c]) for (m, t), c in zip(grid, correct)]
    mean = correct.mean(axis=1)
    worst = (plain[None, :] - correct).max(axis=1)  # images below plain conversion at the worst t
    shorter = -np.array([t for _, t in grid], np.float64)
    if criterion == "safe":
        ok = worst <= SAFE_SLACK
        if not ok.any():
            return MethodChoice(SRP, 0, f"safe: no candidate within {SAFE_SLACK} images of plain conversion at "
                                        "every t, so plain conversion is kept", n, [int(v) for v in plain], cands)
        keys = [np.where(ok, mean, -np.inf), shorter]
        text = f"safe: never more than {SAFE_SLACK} calibration images below tau = 0, then best mean over t"
    elif criterion == "margin":
        keys = [-worst.astype(np.float64), mean, shorter]
        text = "margin: best worst-case margin over tau = 0 across t"
    elif criterion == "target":
        keys = [correct[:, int(target) - 1].astype(np.float64), mean, shorter]
        text = f"target: best accuracy at t = {target}"
    else:
        keys = [np.array([correct[k, budget - t - 1] for k, (_, t) in enumerate(grid)], np.float64), shorter]
        text = f"budget: best accuracy at tau + t = {budget}"
    keys.append(-np.arange(len(grid), dtype=np.float64))  # then the first in grid order (SRP first)
    best = int(np.lexsort(list(reversed(keys)))[-1])
    m, t = grid[best]
    return MethodChoice(m, t, text, n, [int(v) for v in plain], cands)


def _correct_per_step(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Images right at each t = 1..T by the running logit sum."""
    pred = np.cumsum(logits.astype(np.float64), axis=0).argmax(axis=-1)
    return (pred == y[None, :]).sum(axis=1)
