#!/usr/bin/env python
"""Benchmark the SRP spiking runtime (issue 6): SNN vs ANN vs a PyTorch eager simulation.

    python bench/bench.py            # full run (< 15 min on 2 cores), writes bench/RESULTS.md
    python bench/bench.py --quick    # smoke run (< 2 min), prints the tables, writes nothing

1. Builds CIFAR-sized VGG-16 and ResNet-20 QCFS nets (srp_onnx.train.models) and an
   ImageNet-sized ResNet-34 with random *dyadic* weights: every weight, BN parameter and
   input is a short binary fraction and every threshold a power of two, so that every
   sum the ANN and the SNN compute is exact in float32. All variants must then agree
   bit for bit, which makes "gives the same outputs" a strict check.
2. Exports them with torch.onnx (TorchScript exporter) and converts them (timed).
3. Checks: ANN in onnxruntime = ANN in torch = numpy reference (tests/reference.py);
   every SNN runtime mode = numpy reference simulation = the PyTorch eager simulation
   (logits and, in the full run, every neuron's spike count). A float-weight ResNet-20
   measures what theta folding does to rounding when the weights are not dyadic.
4. Times, interleaved (each repeat runs every variant once, in a rotating order), with one
   thread everywhere: ANN inference, each SNN runtime mode and lever ablation, and the
   PyTorch eager simulation written the way the paper's code does it.
5. Peak memory: one subprocess per variant (VmHWM), ANN vs SNN.
6. Profile: onnxruntime per-op times of one ANN pass and one SNN step.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from srp_onnx.lower import LowerOptions

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BATCH, TAU, T = 32, 4, 8
STEPS = TAU + T
MMAP_THRESHOLD = 65536  # the memory runs "+mmap": glibc's mmap threshold fixed (no dynamic raise)
TARGETS = {"vgg16": {"ratio": 1.10, "torch": 1.15}, "resnet20": {"ratio": 1.6, "torch": 2.0}}
MEM_FACTOR = 1.3
CONVERT_TARGET_S = 3.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- models ------------------------------------------------------------------------------------------


def dyadic_(model, seed: int, bits: int = 4):
    """Overwrite every parameter with short binary fractions; BN with eps = 0 and var = 1."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                scale = 2.0 ** -max(0, int(np.ceil(np.log2(np.sqrt(fan_in)))) - 1)
                w = torch.randint(-2 ** bits, 2 ** bits + 1, m.weight.shape, generator=g) / 2 ** bits
                m.weight.copy_(w * scale)
                if m.bias is not None:
                    m.bias.copy_(torch.randint(-4, 5, m.bias.shape, generator=g) / 16)
            elif isinstance(m, nn.BatchNorm2d):
                m.eps = 0.0
                m.running_var.fill_(1.0)
                m.running_mean.copy_(torch.randint(-4, 5, m.running_mean.shape, generator=g) / 16)
                m.weight.copy_(torch.randint(2, 7, m.weight.shape, generator=g) / 4)
                m.bias.copy_(torch.randint(-4, 5, m.bias.shape, generator=g) / 16)
    return model.eval()


def dyadic_input(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).integers(-16, 17, size=shape) / 8).astype(np.float32)


def set_thresholds(model, x, *, dyadic: bool) -> None:
    """One forward pass; each QCFS gets up = the 99th percentile of its input (a power of two if dyadic)."""
    import torch

    from srp_onnx.train.qcfs import QCFS

    def hook(mod, inputs):
        a = inputs[0].detach().flatten()[:200_000]
        q = float(torch.quantile(a, 0.99).clamp(min=2.0 ** -6))
        mod.up.fill_(2.0 ** round(np.log2(q)) if dyadic else q)

    hooks = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, QCFS)]
    with torch.no_grad():
        model(torch.from_numpy(x))
    for h in hooks:
        h.remove()


def build(arch: str, size: int, classes: int, work: Path, *, dyadic: bool = True, seed: int = 1):
    import torch

    from srp_onnx.train.export import export_onnx
    from srp_onnx.train.models import build_model

    torch.manual_seed(seed)
    model = build_model(arch, classes, 4, image_size=size).eval()
    if dyadic:
        dyadic_(model, seed)
    else:  # float weights: kaiming init (build_model's) and random float BN statistics
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.normal_(0, 0.1, generator=g)
                    m.running_var.uniform_(0.5, 1.5, generator=g)
                    m.weight.uniform_(0.5, 1.5, generator=g)
                    m.bias.normal_(0, 0.1, generator=g)
    set_thresholds(model, dyadic_input((4, 3, size, size), seed + 100), dyadic=dyadic)
    path = work / f"{arch}{'' if dyadic else '-float'}.onnx"
    export_onnx(model, path, input_shape=(1, 3, size, size), metadata={})
    return model, path


# -- the PyTorch eager simulation, the way the paper's code does it -------------------------------------


def torch_snn(model):
    """A copy of ``model`` whose QCFS modules are stateful IF neurons; returns (net, neurons).

    The neuron is the paper lineage's: QCFS's ``ScaledNeuron`` (putshua/SNN_conversion_QCFS,
    modules.py) around spikingjelly's ``IFNode(v_reset=None)``, with SRP's mask: per step
    ``x / scale``, charge ``v + x``, fire ``heaviside(v - 1)``, soft reset ``v - spike * 1``,
    ``spike * scale``, and after the pre-simulation ``* mask``; the membrane starts by
    charging 0.5. One call of the whole network per time step, state kept in the modules.
    """
    import torch
    from torch import nn

    from srp_onnx.neuron import MASK_EPS
    from srp_onnx.train.qcfs import QCFS

    class ScaledIFNeuron(nn.Module):
        def __init__(self, scale: float):
            super().__init__()
            self.scale = scale
            self.v_threshold = 1.0
            self.v: torch.Tensor | float = 0.0
            self.mask: torch.Tensor | None = None
            self.t = 0

        def reset(self) -> None:
            self.v, self.mask, self.t = 0.0, None, 0

        def end_presim(self) -> None:  # SRP: silence the neurons without residual potential, restart at 0.5
            self.mask = (self.v > MASK_EPS).float()
            self.v = 0.0
            self.if_node(torch.ones_like(self.mask) * 0.5)

        def if_node(self, x: torch.Tensor) -> torch.Tensor:
            self.v = self.v + x  # neuronal_charge
            spike = (self.v - self.v_threshold >= 0).to(x.dtype)  # neuronal_fire (heaviside)
            self.v = self.v - spike * self.v_threshold  # neuronal_reset, soft
            return spike

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x / self.scale
            if self.t == 0:
                self.if_node(torch.ones_like(x) * 0.5)
            x = self.if_node(x)
            self.t += 1
            out = x * self.scale
            return out if self.mask is None else out * self.mask

    net = copy.deepcopy(model).eval()
    neurons = []
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, QCFS):
                n = ScaledIFNeuron(float(child.up.detach()[0]))
                setattr(parent, name, n)
                neurons.append(n)
    return net, neurons


def torch_linear_ms(model, x: np.ndarray, reps: int = 5) -> float:
    """PyTorch's linear part alone (convs, BN, pooling, Linear): the net with its activations removed."""
    import torch
    from torch import nn

    from srp_onnx.train.qcfs import QCFS

    net = copy.deepcopy(model).eval()
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, QCFS):
                setattr(parent, name, nn.Identity())
    ts = []
    with torch.no_grad():
        xt = torch.from_numpy(x)
        net(xt)
        for _ in range(reps):
            t0 = time.perf_counter()
            net(xt)
            ts.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(ts))


class TorchSNNRun:
    """The PyTorch network as a schedule.Simulator: the whole network once per time step."""

    def __init__(self, net, neurons, x: np.ndarray):
        import torch

        device = next(net.parameters()).device  # CPU here; CUDA in bench/gpu_check.py
        self.net, self.neurons, self.x, self.out = net, neurons, torch.from_numpy(x).to(device), []

    def start(self) -> None:
        for n in self.neurons:
            n.reset()

    def step(self, counted: int | None) -> None:
        y = self.net(self.x)
        if counted is not None:
            self.out.append(y)  # stays on the net's device

    def end_presim(self) -> None:
        for n in self.neurons:
            n.end_presim()


def run_torch_snn(net, neurons, x, T: int, tau: int) -> np.ndarray:
    """The PyTorch eager SNN's counted steps' logits [T, B, K], driven by the one schedule."""
    import torch

    from srp_onnx import schedule

    run = TorchSNNRun(net, neurons, x)
    with torch.no_grad():
        schedule.run(run, tau, T)
    return torch.stack(run.out).cpu().numpy()  # one copy out at the end (the paper's code sums on the device)


# -- a lower bound: the step with a neuron that costs one Add ------------------------------------------

BOUND = "bound: neuron = one Add (timing only)"
# lower.LowerOptions(timing_bound=True): every neuron is ``v' = v + x; s = v'``. Any exact neuron reads v
# and x and writes v' (at least this Add's work) and also fires, so a step of this graph bounds from below
# what any neuron kernel, however fused, could achieve on the same convolutions and layout.


# -- the saved step graph run as it is (the runtime before the lowering) -------------------------------


class SavedGraphRunner:
    """Baseline: the saved graph (Div by theta, mask input, Mul by mask and theta), rebound every step."""

    def __init__(self, snn, threads: int = 1):
        import onnxruntime as ort
        from onnx import TensorProto, helper

        from srp_onnx import fileformat
        from srp_onnx.neuron import MASK_EPS, V_INIT

        sf = fileformat.read(snn)
        self.layers, self.states = sf.sites, [layer.state for layer in sf.layers]
        self.input, self.logits = sf.input, sf.logits
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
        self.session = ort.InferenceSession(snn.SerializeToString(), so, providers=["CPUExecutionProvider"])
        nodes, ins, outs = [], [], []
        for k, n in enumerate(self.states):
            ins.append(helper.make_tensor_value_info(n.v, TensorProto.FLOAT, None))
            outs += [helper.make_tensor_value_info(n.mask, TensorProto.FLOAT, None),
                     helper.make_tensor_value_info(n.v_next, TensorProto.FLOAT, None)]
            nodes += [helper.make_node("Greater", [n.v, "eps"], [f"layer{k}__gt"]),
                      helper.make_node("Cast", [f"layer{k}__gt"], [n.mask], to=TensorProto.FLOAT),
                      helper.make_node("Shape", [n.v], [f"layer{k}__shape"]),
                      helper.make_node("Expand", ["half", f"layer{k}__shape"], [n.v_next])]
        g = helper.make_graph(nodes, "reset", ins, outs, [helper.make_tensor("eps", 1, [], [MASK_EPS]),
                                                           helper.make_tensor("half", 1, [], [V_INIT])])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 10
        self.reset = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        self.v_init = V_INIT

    def simulate(self, x: np.ndarray, T: int, tau: int) -> np.ndarray:
        from srp_onnx import schedule

        self._x = x
        self._out = []
        schedule.run(self, tau, T)
        return np.stack(self._out)

    # schedule.Simulator: each step rebinds the state, as a runner without IOBinding reuse would

    def _full(self, shape, value):
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_numpy(np.full(shape, value, np.float32))

    def start(self) -> None:
        import onnxruntime as ort

        B = self._x.shape[0]
        self._io = self.session.io_binding()
        self._io.bind_ortvalue_input(self.input, ort.OrtValue.ortvalue_from_numpy(self._x))
        self._shapes = [(B, *s.shape) for s in self.layers]
        self._cur = [self._full(sh, self.v_init) for sh in self._shapes]
        self._nxt = [self._full(sh, self.v_init) for sh in self._shapes]
        self._masks = [self._full(sh, 1.0) for sh in self._shapes]

    def step(self, counted: int | None) -> None:
        io = self._io
        io.clear_binding_outputs()
        io.bind_output(self.logits, "cpu")
        for n, v, m, v2 in zip(self.states, self._cur, self._masks, self._nxt):
            io.bind_ortvalue_input(n.v, v)
            io.bind_ortvalue_input(n.mask, m)
            io.bind_ortvalue_output(n.v_next, v2)
        self.session.run_with_iobinding(io)
        self._cur, self._nxt = self._nxt, self._cur
        if counted is not None:
            self._out.append(np.array(io.get_outputs()[0].numpy(), copy=True))

    def end_presim(self) -> None:
        self._masks = [self._full(sh, 1.0) for sh in self._shapes]
        rio = self.reset.io_binding()
        for n, v, m, v2 in zip(self.states, self._cur, self._masks, self._nxt):
            rio.bind_ortvalue_input(n.v, v)
            rio.bind_ortvalue_output(n.mask, m)
            rio.bind_ortvalue_output(n.v_next, v2)
        self.reset.run_with_iobinding(rio)
        self._cur, self._nxt = self._nxt, self._cur


# -- helpers -----------------------------------------------------------------------------------------


def ort_session(path_or_bytes, threads: int = 1, profile: Path | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile is not None:
        so.enable_profiling = True
        so.profile_file_prefix = str(profile)
    src = str(path_or_bytes) if isinstance(path_or_bytes, Path) else path_or_bytes
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def machine() -> dict:
    import onnx
    import onnxruntime
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = ""
    try:
        txt = Path("/proc/cpuinfo").read_text()
        flags = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f" {f} " in txt)
    except OSError:
        pass
    mem = ""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
        kb = int(next(ln for ln in lines if ln.startswith("MemTotal")).split()[1])
        mem = f"{kb / 2 ** 20:.1f} GiB"
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu, "flags": flags, "cores": os.cpu_count(), "memory": mem, "os": platform.platform(),
        "python": platform.python_version(), "numpy": np.__version__, "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_start": os.getloadavg(),
    }


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if a.size else 0.0


# -- checks ------------------------------------------------------------------------------------------


def check_net(name: str, model, ann_path: Path, snn, plan, quick: bool) -> list[dict]:
    """Every variant on a few images against the numpy reference and each other."""
    import onnx
    import reference  # tests/reference.py: the oracle is test code
    import torch

    from srp_onnx.graph import from_onnx
    from srp_onnx.runtime import SpikingModel

    rows = []
    n = 1 if quick else 2
    x = dyadic_input((n, *plan.input_shape()), seed=7)
    graph = from_onnx(onnx.load(str(ann_path)))
    sites = [reference.RefSite(s.input, s.output, float(s.theta)) for s in plan.sites]
    ann_ref = reference.run_ann(graph, x, plan.logits)
    ann_ort = ort_session(ann_path).run(None, {plan.input.name: x})[0]
    with torch.no_grad():
        ann_torch = model(torch.from_numpy(x)).numpy()
    rows.append(dict(net=name, what="ANN: onnxruntime vs numpy reference", diff=max_diff(ann_ort, ann_ref)))
    rows.append(dict(net=name, what="ANN: torch vs numpy reference", diff=max_diff(ann_torch, ann_ref)))
    t0 = time.perf_counter()
    ref = reference.simulate(graph, sites, x, T=T, tau=TAU, output=plan.logits)
    log(f"{name}: numpy reference simulation of {n} image(s) took {time.perf_counter() - t0:.1f} s")
    modes = {"step": {}, "unrolled": {"mode": "unrolled"}}
    if not quick:
        modes.update({"step, fold_theta=False": {"lowering": LowerOptions(fold_theta=False)},
                      "step, hoist_static=False": {"lowering": LowerOptions(hoist_static=False)},
                      "unrolled, fixed batch (the CUDA-graph path)": {"mode": "unrolled",
                                                                      "cuda_graph": True}})
    for label, kw in modes.items():
        sim = SpikingModel(snn, device="cpu", threads=1, record_spikes=not quick, **kw)
        got = sim.simulate(x, T, TAU)
        row = dict(net=name, what=f"SNN {label} vs numpy reference", diff=max_diff(got.logits, ref.logits))
        if not quick:
            row["spike_mismatch"] = _mismatch(got.spikes, ref.spikes, plan.sites)
            row["neurons"] = sum(int(ref.spikes[s.output].size) for s in plan.sites)
            row["spikes"] = sum(int(ref.spikes[s.output].sum()) for s in plan.sites)
        rows.append(row)
    net, neurons = torch_snn(model)
    rows.append(dict(net=name, what="PyTorch eager SNN vs numpy reference",
                     diff=max_diff(run_torch_snn(net, neurons, x, T, TAU), ref.logits)))
    return rows


def _mismatch(got: dict, ref: dict, sites) -> int:
    """Neurons whose spike count differs (runtime dict by site name, reference dict by output tensor)."""
    return sum(int((got[s.name] != ref[s.output]).sum()) for s in sites)


def rounding_experiment(work: Path) -> dict:
    """Float (non-dyadic) ResNet-20: how often does theta folding change a spike count?"""
    import onnx
    import reference  # tests/reference.py: the oracle is test code

    from srp_onnx.convert import ConvertOptions, convert
    from srp_onnx.graph import from_onnx
    from srp_onnx.runtime import SpikingModel

    _, path = build("resnet20", 32, 100, work, dyadic=False, seed=3)
    snn, plan = convert(path, ConvertOptions(tau=TAU))
    x = np.random.default_rng(5).standard_normal((8, 3, 32, 32)).astype(np.float32)
    graph = from_onnx(onnx.load(str(path)))
    sites = [reference.RefSite(s.input, s.output, float(s.theta)) for s in plan.sites]
    ref = reference.simulate(graph, sites, x, T=T, tau=TAU, output=plan.logits)
    res = {"neurons": sum(int(ref.spikes[s.output].size) for s in plan.sites)}
    saved = SavedGraphRunner(snn).simulate(x, T, TAU)
    res["saved"] = {"spike_mismatch": None, "logit_diff": max_diff(saved, ref.logits),
                    "logit_scale": float(np.abs(ref.logits).max()),
                    "argmax_changed": int((saved.sum(0).argmax(-1) != ref.logits.sum(0).argmax(-1)).sum())}
    for label, kw in (("fold", {}), ("nofold", {"lowering": LowerOptions(fold_theta=False)})):
        sim = SpikingModel(snn, device="cpu", threads=1, record_spikes=True, **kw)
        got = sim.simulate(x, T, TAU)
        res[label] = {
            "spike_mismatch": _mismatch(got.spikes, ref.spikes, plan.sites),
            "logit_diff": max_diff(got.logits, ref.logits),
            "logit_scale": float(np.abs(ref.logits).max()),
            "argmax_changed": int((got.logits.sum(0).argmax(-1) != ref.logits.sum(0).argmax(-1)).sum()),
        }
    return res


# -- timing ------------------------------------------------------------------------------------------


def time_variants(variants: dict, reps: int, budget_s: float) -> tuple[dict[str, list[float]], dict]:
    """Interleaved: each repeat runs every variant once, starting one further along each time."""
    names = list(variants)
    first = {k: variants[k]() for k in names}  # warm-up (first-run allocations, lazy sessions)
    times: dict[str, list[float]] = {k: [] for k in names}
    start = time.perf_counter()
    for r in range(reps):
        for k in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            variants[k]()
            times[k].append(time.perf_counter() - t0)
        if r >= 2 and time.perf_counter() - start > budget_s:
            log(f"time budget reached after {r + 1} repeats")
            break
    return times, first


def summarize(times: dict[str, list[float]], ann: str = "ANN") -> dict:
    out = {}
    a = np.asarray(times[ann])
    for k, v in times.items():
        v = np.asarray(v)
        out[k] = {"median_ms": 1e3 * float(np.median(v)), "min_ms": 1e3 * float(v.min()), "n": len(v),
                  "ratio_paired": float(np.median(v / (STEPS * a))),
                  "ratio_min": float(v.min() / (STEPS * a.min()))}
    return out


# -- memory (one subprocess per variant) --------------------------------------------------------------


def _vm_kb(field: str) -> int:
    """VmHWM (peak) or VmRSS of this process in KiB. Not ru_maxrss: Linux carries that over exec from the
    forking parent, so a child of a big parent would report the parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def mem_child(kind: str, path: str) -> None:
    """Runs in a fresh interpreter: load ``path`` as ``kind``, run one batch, print peak RSS."""
    import onnxruntime  # noqa: F401  (imported code is part of both variants' base, not model memory)

    import srp_onnx.convert  # noqa: F401
    import srp_onnx.lower  # noqa: F401
    from srp_onnx.runtime import SpikingModel

    base = _vm_kb("VmHWM")
    state = 0
    if kind == "ann":
        s = ort_session(Path(path))
        shape = [d if isinstance(d, int) else BATCH for d in s.get_inputs()[0].shape]
        shape[0] = BATCH
        s.run(None, {s.get_inputs()[0].name: dyadic_input(tuple(shape), 1)})
    else:
        m = SpikingModel(path, device="cpu", threads=1, mode=kind)
        m.simulate(dyadic_input((BATCH, *m.input_shape), 1), T, TAU)
        state = sum(4 * BATCH * int(np.prod(s.shape)) for s in m.layers)  # one membrane per neuron
    peak = _vm_kb("VmHWM")
    print(json.dumps({"base_kb": base, "peak_kb": peak, "state_bytes": state}))


def measure_memory(ann: Path, snn: Path, kinds: list[str], runs: int) -> dict:
    """Per variant, the run with the median net peak of ``runs`` fresh interpreters (and the spread).

    Identical runs differ by up to ~10 % (heap layout under address-space randomization), hence several.
    """
    out = {}
    for kind in kinds:
        base_kind, _, alloc = kind.partition("+")
        path = ann if base_kind == "ann" else snn
        env = dict(os.environ)
        if alloc == "mmap":  # glibc: every block >= 64 KiB mapped and unmapped, none kept in the heap
            env["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
        got = []
        for _ in range(runs):
            cmd = [sys.executable, str(Path(__file__).resolve()), "--mem-child", base_kind, str(path)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT, env=env)
            got.append(json.loads(res.stdout.strip().splitlines()[-1]))
        got.sort(key=lambda r: r["peak_kb"] - r["base_kb"])
        nets = [r["peak_kb"] - r["base_kb"] for r in got]
        out[kind] = dict(got[len(got) // 2], net_kb_min=nets[0], net_kb_max=nets[-1], runs=runs)
    return out


# -- profile -----------------------------------------------------------------------------------------


def _op_times(path: str, keep: int | None = None) -> list[Counter]:
    """Per run (``model_run``) of one onnxruntime profile: kernel ms by op type."""
    events = json.loads(Path(path).read_text())
    Path(path).unlink()
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")
    per_run = [Counter() for _ in runs]
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            k = next((i for i, (a, b) in enumerate(runs) if a <= e["ts"] <= b), None)
            if k is not None:
                per_run[k][e["args"]["op_name"]] += e["dur"] / 1e3
    return per_run


def profile_ops(ann_path: Path, snn, input_name: str, work: Path, reps: int = 4) -> dict[str, dict]:
    """Per-op-type kernel time (ms, minimum over runs) of one ANN pass and one SNN step (batch 32).

    The minimum, because memory-bound kernels are the first to slow down when another process on
    the machine competes for memory bandwidth. The first ANN run and simulation are left out.
    """
    from srp_onnx.runtime import SpikingModel

    m = SpikingModel(snn, device="cpu", threads=1, profile=str(work / "prof"))
    x = dyadic_input((BATCH, *m.input_shape), 2)
    ann = ort_session(ann_path, profile=work / "prof_ann")
    for _ in range(reps):
        ann.run(None, {input_name: x})
        m.simulate(x, T, TAU)
    res = {}
    steps = [r for f in m.end_profiling() if "srp_head" not in f for r in _op_times(f)][STEPS:]
    for label, runs in (("ANN pass", _op_times(ann.end_profiling())[1:]), ("SNN step", steps)):
        ops = set().union(*runs)
        res[label] = {op: float(np.min([r.get(op, 0.0) for r in runs])) for op in ops}
    return res


# -- convert time ------------------------------------------------------------------------------------


def convert_time(path: Path, reps: int, work: Path) -> dict:
    from srp_onnx.convert import ConvertOptions, emit_step_graph, plan, probe_shapes, save_model

    rows = []
    for _ in range(reps):
        t0 = time.perf_counter()
        p = plan(path, ConvertOptions(tau=TAU))
        t1 = time.perf_counter()
        probe_shapes(p)
        t2 = time.perf_counter()
        snn = emit_step_graph(p, TAU)
        t3 = time.perf_counter()
        save_model(snn, work / "resnet34.snn.onnx")
        t4 = time.perf_counter()
        rows.append({"plan": t1 - t0, "probe_shapes": t2 - t1, "emit": t3 - t2, "save": t4 - t3,
                     "total": t4 - t0})
    t0 = time.perf_counter()
    cli = subprocess.run([sys.executable, "-c", "import sys; from srp_onnx_cli.main import main; main()",
                          "convert", str(path), "-o", str(work / "resnet34.cli.snn.onnx")],
                         capture_output=True, text=True, cwd=ROOT)
    cli_s = time.perf_counter() - t0
    best = min(rows, key=lambda r: r["total"])
    med = float(np.median([r["total"] for r in rows]))
    return {"runs": rows, "best": best, "median_total": med,
            "cli_wall_s": cli_s if cli.returncode == 0 else None,
            "cli_error": None if cli.returncode == 0 else cli.stderr.strip().splitlines()[-1:]}


# -- main --------------------------------------------------------------------------------------------


def bench_net(name: str, arch: str, work: Path, quick: bool, reps: int, budget_s: float) -> dict:
    import onnx
    import torch

    from srp_onnx.convert import ConvertOptions, convert, save_model
    from srp_onnx.runtime import SpikingModel

    t0 = time.perf_counter()
    model, ann_path = build(arch, 32, 100, work)
    log(f"{name}: built and exported in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    snn, plan = convert(ann_path, ConvertOptions(tau=TAU))
    snn_path = work / f"{arch}.snn.onnx"
    save_model(snn, snn_path)
    conv_s = time.perf_counter() - t0
    log(f"{name}: converted in {conv_s:.1f} s ({len(plan.sites)} neuron layers)")
    checks = check_net(name, model, ann_path, snn, plan, quick)
    log(f"{name}: checks done")

    x = dyadic_input((BATCH, 3, 32, 32), seed=11)
    ann = ort_session(ann_path)
    inp = plan.input.name
    sims = {"SNN step": SpikingModel(snn, device="cpu", threads=1),
            "SNN unrolled": SpikingModel(snn, device="cpu", threads=1, mode="unrolled")}
    if not quick:
        sims["lever 0: saved graph as is"] = SavedGraphRunner(snn)
        sims["lever 1: + mask in v, bound once"] = SpikingModel(
            snn, device="cpu", threads=1, lowering=LowerOptions(fold_theta=False, hoist_static=False))
        sims["lever 2: + theta folded"] = SpikingModel(snn, device="cpu", threads=1,
                                                       lowering=LowerOptions(hoist_static=False))
        sims[BOUND] = SpikingModel(snn, device="cpu", threads=1, lowering=LowerOptions(timing_bound=True))
    net, neurons = torch_snn(model)
    variants = {"ANN": lambda: ann.run(None, {inp: x})[0]}
    for k, sim in sims.items():
        if isinstance(sim, SavedGraphRunner):
            variants[k] = lambda sim=sim: sim.simulate(x, T, TAU)
        else:
            variants[k] = lambda sim=sim: sim.simulate(x, T, TAU).logits
    variants["PyTorch eager SNN"] = lambda: run_torch_snn(net, neurons, x, T, TAU)
    log(f"{name}: timing {len(variants)} variants, {reps} repeats")
    times, first = time_variants(variants, reps, budget_s)
    # The same outputs at batch 32 too (from the warm-up calls): every SNN variant equals the step mode.
    agree = {k: max_diff(v, first["SNN step"]) for k, v in first.items() if k not in ("ANN", BOUND)}
    with torch.no_grad():
        agree["ANN (ort) vs torch ANN"] = max_diff(first["ANN"], model(torch.from_numpy(x)).numpy())
    summary = summarize(times)
    for k, v in summary.items():
        log(f"  {k:36s} median {v['median_ms']:9.1f} ms  min {v['min_ms']:9.1f} ms  "
            f"SNN/(12 ANN) {v['ratio_paired']:.3f}")
    torch_t = np.asarray(times["PyTorch eager SNN"])
    speed = {k: {"paired": float(np.median(torch_t / np.asarray(times[k]))),
                 "min": float(torch_t.min() / min(times[k]))} for k in times if k.startswith("SNN") or k == BOUND}
    torch_linear = torch_linear_ms(model, x)
    prof = profile_ops(ann_path, snn, inp, work)
    kinds = ["ann", "step"] + ([] if quick else ["unrolled", "ann+mmap", "step+mmap"])
    mem = measure_memory(ann_path, snn_path, kinds, 1 if quick else 3)
    log(f"{name}: memory {mem}")
    n_params = sum(int(np.prod(t.dims)) for t in onnx.load(str(ann_path)).graph.initializer)
    return {"name": name, "arch": arch, "convert_s": conv_s, "checks": checks, "agree": agree, "times": times,
            "summary": summary, "torch_speedup": speed, "profile": prof, "memory": mem, "params": n_params,
            "torch_linear_ms": torch_linear,
            "sites": len(plan.sites)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer variants and repeats (< 2 min)")
    ap.add_argument("--out", type=Path, default=None, help="results file (default: bench/RESULTS.md; "
                                                              "--quick writes none unless given)")
    ap.add_argument("--work", type=Path, default=None, help="keep the models here (default: a temp folder)")
    ap.add_argument("--mem-child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    ap.add_argument("--render", type=Path, metavar="JSON", help="only re-render a results JSON as markdown")
    args = ap.parse_args()
    if args.mem_child:
        mem_child(*args.mem_child)
        return
    if args.render:
        d = json.loads(args.render.read_text())
        for k in ("load_start", "load_end"):
            d["machine"][k] = tuple(d["machine"][k])
        text = report(d["machine"], d["nets"], d["convert"], d["rounding"], d.get("quick", False))
        print(text)
        if args.out is not None:
            args.out.write_text(text)
        return
    import onnx
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    t_start = time.perf_counter()
    info = machine()
    out = args.out if args.out is not None else (None if args.quick else HERE / "RESULTS.md")
    with tempfile.TemporaryDirectory(prefix="srp-bench-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        nets = []
        plan_ = (("ResNet-20", "resnet20", 3, 25, 25, 200), ("VGG-16", "vgg16", 2, 30, 15, 420))
        for name, arch, q_reps, q_budget, reps, budget in plan_:
            nets.append(bench_net(name, arch, work, args.quick, q_reps if args.quick else reps,
                                  q_budget if args.quick else budget))
        t0 = time.perf_counter()
        _, r34 = build("resnet34", 224, 1000, work, seed=4)
        log(f"ResNet-34: built and exported in {time.perf_counter() - t0:.1f} s")
        conv = convert_time(r34, 1 if args.quick else 3, work)
        conv["params"] = sum(int(np.prod(t.dims)) for t in onnx.load(str(r34)).graph.initializer)
        log(f"ResNet-34: convert {conv['median_total']:.2f} s (median), CLI {conv['cli_wall_s']}")
        rounding = None if args.quick else rounding_experiment(work)
    info["load_end"] = os.getloadavg()
    info["wall_s"] = time.perf_counter() - t_start
    text = report(info, nets, conv, rounding, args.quick)
    print(text)
    if out is not None:
        # Sections other scripts own (between their <!-- NAME: begin/end --> markers) stay as they are.
        old = out.read_text() if out.exists() else ""
        for owned in re.finditer(r"<!-- ([\w-]+): begin -->.*?<!-- \1: end -->", old, flags=re.S):
            text = text.rstrip("\n") + "\n\n" + owned.group(0) + "\n"
        tmp_out = out.with_suffix(".tmp")
        tmp_out.write_text(text)
        os.replace(tmp_out, out)
        results = {"machine": info, "nets": nets, "convert": conv, "rounding": rounding, "quick": args.quick}
        out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=float))
        log(f"wrote {out}")
    log(f"total {info['wall_s']:.0f} s")


# -- report ------------------------------------------------------------------------------------------


def report(info: dict, nets: list[dict], conv: dict, rounding: dict | None, quick: bool) -> str:
    from report import render  # bench/report.py: the tables and the verdicts

    return render(info, nets, conv, rounding, quick, dict(
        batch=BATCH, tau=TAU, T=T, targets=TARGETS, mem_factor=MEM_FACTOR, convert_target=CONVERT_TARGET_S))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.path.insert(1, str(HERE.parent / "tests"))  # the numpy oracle lives with the tests
    main()
