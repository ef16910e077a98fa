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
from collections.abc import Iterable

import numpy as np
import onnx

from srp_onnx.convert import ann_from_snn, read_layers
from srp_onnx.graph import Graph, from_onnx
from srp_onnx.neuron import MASK_EPS, V_INIT, state_names
from srp_onnx.runtime import cpu_session

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
    fan: np.ndarray
    macs: int
    first: bool


def _weight_layers(step: onnx.ModelProto, x: np.ndarray) -> list[_WeightLayer]:
    """Weight layers of the step graph, with exact fan-outs, from one probe run."""
    g: Graph = from_onnx(step)
    layers = read_layers(step)
    ins = [n for n in g.nodes if n.op in WEIGHT_OPS and len(n.inputs) > 1 and g.is_const(n.inputs[1])]
    probe = onnx.ModelProto()
    probe.CopyFrom(step)
    for n in ins:
        for t in (n.inputs[0], n.outputs[0]):
            probe.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    feeds = _initial_state(layers, x[:1], step)
    outs = dict(zip([o.name for o in probe.graph.output], cpu_session(probe).run(None, feeds)))
    static = _static_tensors(g, layers)
    res = []
    for n in ins:
        w = g.consts[n.inputs[1]]
        in_shape, out_shape = outs[n.inputs[0]].shape[1:], outs[n.outputs[0]].shape[1:]
        res.append(_WeightLayer(n.name, n.inputs[0], fanout(n, w, in_shape, out_shape),
                                mac_count(n, w, in_shape, out_shape), n.inputs[0] in static))
    return res


def _static_tensors(g: Graph, layers) -> set[str]:
    """Tensors that do not depend on any neuron state (the analog part before the first neuron)."""
    dynamic = {state_names(s.name)[k] for s in layers for k in ("v", "mask")}
    for n in g.nodes:
        if any(i in dynamic for i in n.inputs):
            dynamic.update(n.outputs)
    return {t for n in g.nodes for t in [*n.inputs, *n.outputs]} - dynamic


def _initial_state(layers, x: np.ndarray, step: onnx.ModelProto) -> dict[str, np.ndarray]:
    meta = {m.key: m.value for m in step.metadata_props}
    feeds = {meta["srp_onnx.input"]: x}
    for s in layers:
        n = state_names(s.name)
        feeds[n["v"]] = np.full((len(x), *s.shape), V_INIT, np.float32)
        feeds[n["mask"]] = np.ones((len(x), *s.shape), np.float32)
    return feeds


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

    def to_json(self) -> dict:
        return {"T": self.T, "images": self.images, "ann_macs": self.ann_macs, "ann_energy_uJ": self.ann_energy_uj,
                "energy_pJ": {"accumulate": E_AC_PJ, "multiply_accumulate": E_MAC_PJ,
                              "source": "Horowitz, ISSCC 2014, 45 nm, 32-bit float"},
                "equal_tolerance_theta": EQ_TOL,
                "runs": [dataclasses.asdict(r) for r in self.runs]}


class _Acc:
    def __init__(self, names):
        self.neurons = dict.fromkeys(names, 0)
        self.spikes = dict.fromkeys(names, 0.0)
        self.silenced = dict.fromkeys(names, 0.0)
        self.cases = {n: dict.fromkeys(CASES, 0) for n in names}
        self.abs_err = dict.fromkeys(names, 0.0)
        self.sops = 0.0
        self.macs = 0.0


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


def analyze(step: onnx.ModelProto, batches: Iterable[np.ndarray], *, T: int, tau: int) -> Analysis:
    layers = read_layers(step)
    names = [s.name for s in layers]
    ann = ann_from_snn(step)
    ann_probe = onnx.ModelProto()
    ann_probe.CopyFrom(ann)
    for s in layers:
        ann_probe.graph.output.append(onnx.helper.make_tensor_value_info(s.output, onnx.TensorProto.FLOAT, None))
    ann_sess = cpu_session(ann_probe)
    taus = [0, tau] if tau > 0 else [0]
    accs = {t: _Acc(names) for t in taus}
    wl: list[_WeightLayer] | None = None
    sess = None
    n_img = 0
    for x in batches:
        x = np.asarray(x, np.float32)
        if wl is None:
            wl = _weight_layers(step, x)
            probe = onnx.ModelProto()
            probe.CopyFrom(step)
            for s in layers:
                probe.graph.output.append(onnx.helper.make_tensor_value_info(
                    state_names(s.name)["spikes"], onnx.TensorProto.FLOAT, None))
            for w in wl:
                probe.graph.output.append(onnx.helper.make_tensor_value_info(w.input, onnx.TensorProto.FLOAT, None))
            sess = cpu_session(probe)
            out_names = [o.name for o in probe.graph.output]
        a_vals = ann_sess.run(None, {ann_sess.get_inputs()[0].name: x})[1:]
        for t_pre in taus:
            acc = accs[t_pre]
            feeds = _initial_state(layers, x, step)
            counts = {n: np.zeros((len(x), *s.shape)) for n, s in zip(names, layers)}
            for t in range(t_pre + T):
                res = dict(zip(out_names, sess.run(None, feeds)))
                for w in wl:
                    nz = (res[w.input] != 0)
                    if w.first:
                        acc.macs += w.macs * len(x)
                    else:
                        acc.sops += float((nz * w.fan).sum())
                for s in layers:
                    n = state_names(s.name)
                    feeds[n["v"]] = res[n["v_next"]]
                    if t >= t_pre:
                        counts[s.name] += res[n["spikes"]]
                if t_pre > 0 and t == t_pre - 1:
                    for s in layers:
                        n = state_names(s.name)
                        feeds[n["mask"]] = (feeds[n["v"]] > np.float32(MASK_EPS)).astype(np.float32)
                        feeds[n["v"]] = np.full_like(feeds[n["v"]], V_INIT)
            for s, a in zip(layers, a_vals):
                theta = _theta(s)
                r = counts[s.name] * theta / T
                acc.neurons[s.name] += a.size
                acc.spikes[s.name] += float(counts[s.name].sum())
                acc.silenced[s.name] += float((feeds[state_names(s.name)["mask"]] == 0).sum()) if t_pre else 0.0
                for k, v in classify_cases(a, r, theta).items():
                    acc.cases[s.name][k] += v
                acc.abs_err[s.name] += float(np.abs(a.astype(np.float64) - r).sum())
        n_img += len(x)
    assert wl is not None, "no data"
    ann_macs = float(sum(w.macs for w in wl))
    runs = []
    for t_pre, acc in accs.items():
        stats = []
        total = dict.fromkeys(CASES, 0)
        for n in names:
            N = acc.neurons[n]
            for k in CASES:
                total[k] += acc.cases[n][k]
            stats.append(LayerStats(n, N // max(n_img, 1), acc.spikes[n] / (N * T), acc.silenced[n] / N,
                                    {k: acc.cases[n][k] / N for k in CASES}, acc.abs_err[n] / N))
        all_n = sum(acc.neurons.values())
        sops, macs = acc.sops / n_img, acc.macs / n_img
        runs.append(RunStats(t_pre, stats, {k: v / all_n for k, v in total.items()}, sops, macs,
                             (E_AC_PJ * sops + E_MAC_PJ * macs) * 1e-6))
    return Analysis(T, n_img, ann_macs, E_MAC_PJ * ann_macs * 1e-6, runs)


def _theta(s) -> np.ndarray | float:
    if s.per_channel:
        t = np.asarray(s.per_channel, np.float64)
        return t.reshape(-1, *([1] * (len(s.shape) - 1)))
    return float(s.theta)


def format_analysis(an: Analysis) -> str:
    lines = [f"analysis on {an.images} images, T = {an.T} (cases compare ANN activation a with SNN mean output r)"]
    w = max([len("all layers")] + [len(s.name) for run in an.runs for s in run.layers]) + 2  # names in full
    for run in an.runs:
        label = "QCFS (tau=0)" if run.tau == 0 else f"SRP (tau={run.tau})"
        lines.append(f"\n{label}")
        head = f"  {'layer':<{w}}{'rate':>7}{'silenced':>9}" + "".join(f"{c:>10}" for c in CASES) + f"{'MAE':>9}"
        lines.append(head)
        for s in run.layers:
            lines.append(f"  {s.name:<{w}}{s.firing_rate:>7.3f}{s.silenced:>9.1%}"
                         + "".join(f"{s.cases[c]:>10.1%}" for c in CASES) + f"{s.mae:>9.4f}")
        lines.append(f"  {'all layers':<{w}}{'':>7}{'':>9}" + "".join(f"{run.cases[c]:>10.1%}" for c in CASES))
        lines.append(f"  SOPs/image {run.sops:,.0f} + first-layer MACs {run.first_layer_macs:,.0f} "
                     f"over {run.tau + an.T} steps -> {run.energy_uj:.3f} uJ")
    lines.append(f"\nANN: {an.ann_macs:,.0f} MACs/image -> {an.ann_energy_uj:.3f} uJ "
                 f"({E_MAC_PJ} pJ/MAC, {E_AC_PJ} pJ/AC, Horowitz 2014, 45 nm)")
    return "\n".join(lines)
