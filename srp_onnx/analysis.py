"""Why SRP works, per layer: unevenness-error cases, firing rates, synaptic operations, energy.

For every neuron layer, for tau = 0 (plain QCFS conversion) and for SRP:

* **firing rate**: emitted spikes per neuron per step over the T counted steps;
  **silenced**: the share of neurons whose SRP mask is 0.
* **unevenness-error cases** (srp-algorithm.md section 4), comparing each neuron's
  ANN activation ``a`` with its SNN mean output over the T steps
  ``r = theta * spikes / T``. Two values count as *equal* when they differ by at most
  ``EQ_TOL * theta`` (1e-4 of the threshold: far below the output resolution
  theta / T of any T < 10^4, and far above float32 rounding), and as *zero* when at most
  that. Each neuron falls in exactly one of: ``equal``; (1) ``a = 0, r > 0``;
  (2) ``a > 0, r = 0``; (3) ``a > r > 0``; (4) ``r > a > 0``. Shares are of all neurons
  of the layer (times images).
* **MAE**: mean |a - r|.
* **Synaptic operations (SOPs)**: a weight layer (Conv, ConvTranspose, Gemm, MatMul) does
  one accumulate per nonzero input element per outgoing connection at every step, so
  SOPs = sum over steps and input elements of [input != 0] x fan-out(element). Fan-outs
  are exact (border effects of padded convolutions included). The first weight layer
  sees the analog image at every step: its operations are multiply-accumulates, counted
  as MACs. All tau + T steps count (the pre-simulation is paid for too).
* **Energy**: E_SNN = 0.9 pJ x SOPs + 4.6 pJ x MACs(first layer) and E_ANN = 4.6 pJ x
  MACs, the 45 nm CMOS figures of Horowitz (ISSCC 2014) for 32-bit float add (0.9 pJ)
  and multiply + add (3.7 + 0.9 pJ), as used across the SNN literature.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import numpy as np
import onnx

from srp_onnx import fileformat, ort
from srp_onnx.convert import ann_from_snn
from srp_onnx.errors import DataError, safe
from srp_onnx.graph import Graph, from_onnx
from srp_onnx.neuron import is_neuron
from srp_onnx.progress import NULL_PROGRESS, Progress
from srp_onnx.runtime import SpikingModel

EQ_TOL = 1e-4
E_AC_PJ = 0.9
E_MAC_PJ = 4.6
CASES = ("equal", "a=0,r>0", "a>0,r=0", "a>r>0", "r>a>0")
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


# -- fan-out ---------------------------------------------------------------------------

def _conv_cover_1d(n_in: int, k: int, s: int, d: int, pad_begin: int, n_out: int) -> np.ndarray:
    """For each input index, how many output positions read it (one spatial dim)."""
    cover = np.zeros(n_in, dtype=np.int64)
    for o in range(n_out):
        for j in range(k):
            i = o * s - pad_begin + j * d
            if 0 <= i < n_in:
                cover[i] += 1
    return cover


def fanout(node, w: np.ndarray, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> np.ndarray:
    """Connections leaving each input element of a weight layer, shaped like one input sample."""
    if node.op in ("Gemm", "MatMul"):
        trans_b = int(node.attrs.get("transB", 0)) if node.op == "Gemm" else 0
        nz = (w != 0).sum(axis=0 if trans_b else -1)  # per input feature: its nonzero weights
        return np.broadcast_to(nz.astype(np.int64), in_shape).copy()
    # Conv / ConvTranspose: channel part x spatial cover
    group = int(node.attrs.get("group", 1))
    spatial = in_shape[1:]
    ks = w.shape[2:]
    strides = node.attrs.get("strides", [1] * len(ks))
    dil = node.attrs.get("dilations", [1] * len(ks))
    pads = node.attrs.get("pads", [0] * 2 * len(ks))
    if node.op == "ConvTranspose":  # each input element writes k positions per output channel
        c_out = w.shape[1] * group
        per_channel = c_out // group * int(np.prod(ks))
        return np.full(in_shape, per_channel, dtype=np.int64)
    c_out = w.shape[0]
    cover = np.ones((), dtype=np.int64)
    for ax, (n_in, k, s, d) in enumerate(zip(spatial, ks, strides, dil)):
        if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
            total = max((out_shape[1 + ax] - 1) * s + (k - 1) * d + 1 - n_in, 0)
            pb = total // 2 if node.attrs.get("auto_pad") in ("SAME_UPPER", b"SAME_UPPER") else total - total // 2
            if node.attrs.get("auto_pad") in ("VALID", b"VALID"):
                pb = 0
        else:
            pb = pads[ax]
        c = _conv_cover_1d(n_in, k, s, d, pb, out_shape[1 + ax])
        cover = np.multiply.outer(cover, c) if cover.ndim else c
    return np.broadcast_to(cover * (c_out // group), in_shape).astype(np.int64)


def mac_count(node, w: np.ndarray, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one sample through a weight layer."""
    if node.op in ("Gemm", "MatMul"):
        return int(w.size * int(np.prod(out_shape[:-1])))
    if node.op == "ConvTranspose":  # every input element is multiplied into C_out/g x k positions
        return int(np.prod(in_shape)) * int(w.shape[1]) * int(np.prod(w.shape[2:]))
    return int(np.prod(out_shape)) * int(w.shape[1]) * int(np.prod(w.shape[2:]))


@dataclasses.dataclass
class _WeightLayer:
    name: str
    input: str
    output: str
    weight: np.ndarray
    node: object
    fan: np.ndarray | None = None
    macs: int = 0
    first: bool = False  # reads only the input image: multiply-accumulates at every step


def _weight_layers(g: Graph) -> list[_WeightLayer]:
    """The weight layers of a saved step graph; ``first`` where the input is analog (no neuron upstream)."""
    dynamic = set()
    for n in g.nodes:  # topological order: a tensor is dynamic when a neuron layer is upstream of it
        if is_neuron(n) or any(i in dynamic for i in n.inputs):
            dynamic.update(o for o in n.outputs if o)
    return [_WeightLayer(n.name, n.inputs[0], n.outputs[0], g.consts[n.inputs[1]], n, first=n.inputs[0] not in dynamic)
            for n in g.nodes if n.op in WEIGHT_OPS and len(n.inputs) > 1 and g.is_const(n.inputs[1])]


def _shape_weight_layers(wl: list[_WeightLayer], outs: dict[str, np.ndarray]) -> None:
    """Fan-outs and MACs from the tensors' per-sample shapes (one ANN run)."""
    for w in wl:
        in_shape, out_shape = outs[w.input].shape[1:], outs[w.output].shape[1:]
        w.fan = fanout(w.node, w.weight, in_shape, out_shape)
        w.macs = mac_count(w.node, w.weight, in_shape, out_shape)


# -- the run ---------------------------------------------------------------------------

@dataclasses.dataclass
class LayerStats:
    name: str
    neurons: int
    firing_rate: float
    silenced: float
    cases: dict[str, float]
    mae: float


@dataclasses.dataclass
class RunStats:
    tau: int
    layers: list[LayerStats]
    cases: dict[str, float]  # over all neurons
    sops: float  # per image, all tau + T steps
    first_layer_macs: float  # per image, all steps
    energy_uj: float  # per image


@dataclasses.dataclass
class Analysis:
    T: int
    images: int
    ann_macs: float
    ann_energy_uj: float
    runs: list[RunStats]
    distributed: dict | None = None  # how a distributed run shared the work (workers, devices, images each)

    def to_json(self) -> dict:
        return {"T": self.T, "images": self.images, "ann_macs": self.ann_macs, "ann_energy_uJ": self.ann_energy_uj,
                "energy_pJ": {"accumulate": E_AC_PJ, "multiply_accumulate": E_MAC_PJ,
                              "source": "Horowitz, ISSCC 2014, 45 nm, 32-bit float"},
                "equal_tolerance_theta": EQ_TOL,
                "runs": [dataclasses.asdict(r) for r in self.runs],
                **({"distributed": self.distributed} if self.distributed is not None else {})}


@dataclasses.dataclass
class AnalysisCounts:
    """The sums behind an Analysis over some images; disjoint shards merge exactly (srp_onnx.distributed).

    Everything is a count except the absolute errors, kept per batch in order so that the total is
    summed in the same order however the batches were shared out.
    """

    T: int
    names: list[str]
    taus: list[int]
    ann_macs: float = 0.0
    images: int = 0
    neurons: dict = dataclasses.field(default_factory=dict)  # (tau, layer) -> neuron x image count
    spikes: dict = dataclasses.field(default_factory=dict)  # (tau, layer) -> spikes (integer-valued)
    silenced: dict = dataclasses.field(default_factory=dict)  # (tau, layer) -> masked neurons
    cases: dict = dataclasses.field(default_factory=dict)  # (tau, layer) -> {case: count}
    abs_err: dict = dataclasses.field(default_factory=dict)  # (tau, layer) -> [sum |a - r| of each batch]
    sops: dict = dataclasses.field(default_factory=dict)  # tau -> synaptic operations (integer-valued)
    macs: dict = dataclasses.field(default_factory=dict)  # tau -> first-layer MACs

    def __post_init__(self) -> None:
        for t in self.taus:
            self.sops.setdefault(t, 0.0)
            self.macs.setdefault(t, 0.0)
            for n in self.names:
                key = (t, n)
                self.neurons.setdefault(key, 0)
                self.spikes.setdefault(key, 0.0)
                self.silenced.setdefault(key, 0.0)
                self.cases.setdefault(key, dict.fromkeys(CASES, 0))
                self.abs_err.setdefault(key, [])

    def merge(self, other: AnalysisCounts) -> AnalysisCounts:
        """Both image sets (``other``'s batches after ``self``'s)."""
        if (self.T, self.names, self.taus) != (other.T, other.names, other.taus):
            raise ValueError("cannot merge analyses of different models or settings")
        keys = list(self.neurons)
        return AnalysisCounts(
            self.T, list(self.names), list(self.taus), self.ann_macs or other.ann_macs, self.images + other.images,
            {k: self.neurons[k] + other.neurons[k] for k in keys}, {k: self.spikes[k] + other.spikes[k] for k in keys},
            {k: self.silenced[k] + other.silenced[k] for k in keys},
            {k: {c: self.cases[k][c] + other.cases[k][c] for c in CASES} for k in keys},
            {k: self.abs_err[k] + other.abs_err[k] for k in keys},
            {t: self.sops[t] + other.sops[t] for t in self.taus}, {t: self.macs[t] + other.macs[t] for t in self.taus})


def classify_cases(a: np.ndarray, r: np.ndarray, theta: float | np.ndarray) -> dict[str, int]:
    """Count neurons per unevenness-error case (see the module docstring for the boundaries)."""
    tol = EQ_TOL * np.asarray(theta, dtype=np.float64)
    a = a.astype(np.float64)
    r = r.astype(np.float64)
    eq = np.abs(a - r) <= tol
    a0, r0 = a <= tol, r <= tol
    c1 = ~eq & a0 & ~r0
    c2 = ~eq & ~a0 & r0
    both = ~eq & ~a0 & ~r0
    return {"equal": int(eq.sum()), "a=0,r>0": int(c1.sum()), "a>0,r=0": int(c2.sum()),
            "a>r>0": int((both & (a > r)).sum()), "r>a>0": int((both & (r > a)).sum())}


class _SopCounter:
    """``on_step`` hook: synaptic operations of the dynamic weight layers, MACs of the analog ones."""

    def __init__(self, wl: list[_WeightLayer], batch: int):
        self.dynamic = [w for w in wl if not w.first]
        self.macs_per_step = sum(w.macs for w in wl if w.first) * batch
        self.sops = 0.0
        self.macs = 0.0

    def __call__(self, step: int, counted: int | None, recorded: dict[str, np.ndarray]) -> None:
        self.macs += self.macs_per_step
        for w in self.dynamic:  # sum over images and elements of [x != 0] * fan-out, as one dot product
            active = np.count_nonzero(recorded[w.input], axis=0)
            self.sops += float(np.dot(active.ravel(), w.fan.ravel()))


class Analyzer:
    """The sessions of an analysis in this process; :meth:`count` returns the sums over some batches."""

    def __init__(self, step: onnx.ModelProto, *, T: int, tau: int, device: str = "auto",
                 threads: int | None = None):
        sf = fileformat.read(step)
        self.T, self.layers = T, sf.sites
        self.wl = _weight_layers(from_onnx(step))
        self.sim = SpikingModel(step, device=device, threads=threads, record_spikes=True,
                                record=tuple(w.input for w in self.wl if not w.first))
        ann_probe = ann_from_snn(step)
        self.extra = [*(s.output for s in self.layers), *dict.fromkeys(t for w in self.wl for t in (w.input, w.output))]
        for t in self.extra:
            ann_probe.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
        self.ann_sess = ort.session(ann_probe, self.sim.providers, threads=threads)
        self.taus = [0, tau] if tau > 0 else [0]
        self.shaped = False

    @property
    def provider(self) -> str:
        return self.sim.provider

    def count(self, batches: Iterable, on_batch: Callable[[int], None] | None = None) -> AnalysisCounts:
        """Sums over ``batches`` (model-input arrays)."""
        T = self.T
        acc = AnalysisCounts(T, [s.name for s in self.layers], list(self.taus))
        for x in batches:
            x = np.asarray(x, np.float32)
            outs = dict(zip(self.extra, self.ann_sess.run(None, {self.ann_sess.get_inputs()[0].name: x})[1:]))
            if not self.shaped:
                _shape_weight_layers(self.wl, outs)
                self.shaped = True
            for t_pre in self.taus:
                sops = _SopCounter(self.wl, len(x))
                res = self.sim.simulate(x, T, t_pre, on_step=sops)
                acc.sops[t_pre] += sops.sops
                acc.macs[t_pre] += sops.macs
                for s in self.layers:
                    a, counts = outs[s.output], res.spikes[s.name]
                    theta = _theta(s)
                    r = counts * theta / T
                    key = (t_pre, s.name)
                    acc.neurons[key] += a.size
                    acc.spikes[key] += float(counts.sum())
                    acc.silenced[key] += float(res.silenced[s.name].sum()) if t_pre else 0.0
                    for k, v in classify_cases(a, r, theta).items():
                        acc.cases[key][k] += v
                    acc.abs_err[key].append(float(np.abs(a.astype(np.float64) - r).sum()))
            acc.images += len(x)
            if on_batch is not None:
                on_batch(len(x))
        acc.ann_macs = float(sum(w.macs for w in self.wl))
        return acc


def build_analysis(acc: AnalysisCounts) -> Analysis:
    """Rates, shares and energy from the (merged) sums."""
    n_img, T, names = acc.images, acc.T, acc.names
    if not n_img:
        raise DataError("the dataset yielded no images to analyze.")
    runs = []
    for t_pre in acc.taus:
        stats = []
        total = dict.fromkeys(CASES, 0)
        for n in names:
            key = (t_pre, n)
            N = acc.neurons[key]
            for k in CASES:
                total[k] += acc.cases[key][k]
            abs_err = 0.0
            for v in acc.abs_err[key]:  # in batch order: the sum one pass makes
                abs_err += v
            stats.append(LayerStats(n, N // max(n_img, 1), acc.spikes[key] / (N * T), acc.silenced[key] / N,
                                    {k: acc.cases[key][k] / N for k in CASES}, abs_err / N))
        all_n = sum(acc.neurons[(t_pre, n)] for n in names)
        sops, macs = acc.sops[t_pre] / n_img, acc.macs[t_pre] / n_img
        runs.append(RunStats(t_pre, stats, {k: v / all_n for k, v in total.items()}, sops, macs,
                             (E_AC_PJ * sops + E_MAC_PJ * macs) * 1e-6))
    return Analysis(T, n_img, acc.ann_macs, E_MAC_PJ * acc.ann_macs * 1e-6, runs)


def analyze(step: onnx.ModelProto, batches: Iterable[np.ndarray], *, T: int, tau: int,
            device: str = "auto", total: int | None = None, progress: Progress = NULL_PROGRESS) -> Analysis:
    """Per-layer statistics of tau = 0 and of SRP (tau) over ``batches``, on the runtime (``device``).

    srp_onnx.distributed.Cluster.analyze is the same over Ray workers, with the same result.
    ``progress`` counts image-steps (each of the ``total`` images through tau = 0's T and SRP's tau + T steps).
    """
    analyzer = Analyzer(step, T=T, tau=tau, device=device)
    per_image = sum(t + T for t in analyzer.taus)
    progress.start(None if total is None else total * per_image, "image-steps", "analyze")
    try:
        counts = analyzer.count(batches, lambda images: progress.update(images * per_image))
    finally:
        progress.close()
    return build_analysis(counts)


def _theta(s) -> np.ndarray | float:
    if s.per_channel:
        t = np.asarray(s.per_channel, np.float64)
        return t.reshape(-1, *([1] * (len(s.shape) - 1)))
    return float(s.theta)


def format_analysis(an: Analysis) -> str:
    lines = [f"analysis on {an.images} images, T = {an.T} (cases compare ANN activation a with SNN mean output r)"]
    # Layer names come from a stranger's file: escaped cell by cell (a newline must not forge a row).
    w = max([len("all layers")] + [len(safe(s.name)) for run in an.runs for s in run.layers]) + 2  # names in full
    for run in an.runs:
        label = "QCFS (tau=0)" if run.tau == 0 else f"SRP (tau={run.tau})"
        lines.append(f"\n{label}")
        head = f"  {'layer':<{w}}{'rate':>7}{'silenced':>9}" + "".join(f"{c:>10}" for c in CASES) + f"{'MAE':>9}"
        lines.append(head)
        for s in run.layers:
            lines.append(f"  {safe(s.name):<{w}}{s.firing_rate:>7.3f}{s.silenced:>9.1%}"
                         + "".join(f"{s.cases[c]:>10.1%}" for c in CASES) + f"{s.mae:>9.4f}")
        lines.append(f"  {'all layers':<{w}}{'':>7}{'':>9}" + "".join(f"{run.cases[c]:>10.1%}" for c in CASES))
        lines.append(f"  SOPs/image {run.sops:,.0f} + first-layer MACs {run.first_layer_macs:,.0f} "
                     f"over {run.tau + an.T} steps -> {run.energy_uj:.3f} uJ")
    lines.append(f"\nANN: {an.ann_macs:,.0f} MACs/image -> {an.ann_energy_uj:.3f} uJ "
                 f"({E_MAC_PJ} pJ/MAC, {E_AC_PJ} pJ/AC, Horowitz 2014, 45 nm)")
    return "\n".join(lines)
