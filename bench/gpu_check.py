#!/usr/bin/env python
"""GPU readiness of the CUDA path (issue 15): parity and speed on onnxruntime's CUDA provider.

    python bench/gpu_check.py                       # on a GPU machine, < 5 min: writes bench/GPU_RESULTS.md
    python bench/gpu_check.py --out $OUT/GPU_RESULTS.md
    python bench/gpu_check.py --dry-run             # the CPU provider and a tiny net, seconds (CI)

For the sample (srp_onnx/samples/mnist_qcfs.onnx) and the bench's CIFAR-sized VGG-16 and ResNet-20
(bench/bench.py's builders: random *dyadic* weights, so every sum is exact in float32):

1. Parity: the SNN on the CUDA provider in step mode, unrolled mode, and unrolled mode with
   a CUDA graph, tau 4, T 8 and 32, against the CPU provider: logits at batch 1, 32 and 256,
   and every neuron's spike count at batch 32, bit for bit on the dyadic nets (the sample's
   weights are not dyadic: its differences are reported, not judged).
2. Speed: images/s of each mode, of the ANN on the CUDA provider and of the bench's PyTorch
   eager SNN (the paper code's way: the whole net once per step, state in the modules) moved
   to CUDA; and the ANN at batch B * (tau + T), the floor under a time-folded layer-wise mode.
3. The decision (``DECISION_RULE``): launch overhead or occupancy, and whether a time-folded
   mode is worth building, applied to the measurements.

A dyadic net's logits or spike counts that differ on the CUDA provider are a finding either way: a
runtime bug, or cuDNN's choice of a convolution algorithm whose arithmetic is not exact on short
binary fractions (Winograd's transforms, FFT); the check reports them and does not hide them.
Where the CUDA provider does not load, one line says why, and the PyTorch-on-CUDA half still
runs. ``--dry-run`` runs every step on the CPU provider (standing in for CUDA) with a tiny
dyadic net and the PyTorch SNN on the CPU, and checks parity the same way.
Exit 0; 1 if a dyadic net's parity check failed; 2 bad usage.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (ROOT, HERE):  # srp_onnx from this checkout (the GPU machine has it uninstalled), bench.py's builders
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import bench  # noqa: E402  (bench/bench.py: build, dyadic_input, torch_snn, run_torch_snn, time_variants)
from srp_onnx.demo import SAMPLE  # noqa: E402  (package data: srp_onnx/samples/mnist_qcfs.onnx)

TAU = 4
FULL = {"Ts": (8, 32), "batches": (1, 32, 256), "spike_batch": 32, "reps": 10, "budget_s": 3.0}
DRY = {"Ts": (8,), "batches": (1, 4), "spike_batch": 4, "reps": 3, "budget_s": 0.5}
MODES = {  # label -> the user-facing SpikingModel arguments
    "step": {"mode": "step"},
    "unrolled": {"mode": "unrolled"},
    "unrolled + CUDA graph": {"mode": "unrolled", "cuda_graph": True},
}
ANN, TORCH = "ANN (onnxruntime)", "PyTorch eager SNN"
LAUNCH_RATIO, OCCUPANCY_RATIO, FOLD_BUILD, FOLD_SKIP = 1.5, 2.0, 1.5, 1.2

DECISION_RULE = f"""\
The rule gpu_check.py applies to its measurements (per net, tau = {TAU}):

1. **Per-step launch overhead** dominates at batch B when step mode (one onnxruntime run,
   one logits copy and the kernel launches of a whole step, tau + T times) takes at least
   {LAUNCH_RATIO}x the time of the same work replayed as one CUDA graph (unrolled + CUDA graph),
   read at B = 1 and B = 32.
2. **Small-batch occupancy** dominates when, in the fastest SNN mode, an image costs at least
   {OCCUPANCY_RATIO}x more at B = 1 or B = 32 than at B = 256 (the GPU is not kept busy by one
   step of a small batch; replaying the launches faster cannot fix that).
3. **A time-folded layer-wise mode** (each layer's linear part once on all tau + T steps folded
   into the batch, the neuron recurrence over time) runs its linear parts at batch B * (tau + T).
   Its cost cannot fall below the ANN's at that batch, which the check measures ("fold floor").
   Build it only if, at B = 32 and T = 8 (the bench's setting), the fastest SNN mode takes at
   least {FOLD_BUILD}x the fold floor on VGG-16 or ResNet-20 (a gain of that much is on the table
   before the recurrence's own memory traffic is paid); do not build it below {FOLD_SKIP}x; in
   between, time a one-layer prototype first. On the CPU the same floor is 0.95x to 1.21x of
   the step (bench/RESULTS.md), which is why it was not built there."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"


# -- environment -------------------------------------------------------------------------------------


def environment(dry_run: bool) -> dict:
    import onnxruntime as ort

    from srp_onnx.ort import CudaStatus, cuda_status

    info = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "python": platform.python_version(), "onnxruntime": ort.__version__,
            "onnxruntime_from": str(Path(ort.__file__).parent), "providers": ort.get_available_providers(),
            "dry_run": dry_run}
    if dry_run:
        info["ort_device"], info["ort_why"] = "cpu", "dry run: the CPU provider stands in for CUDA"
    else:
        status = cuda_status()
        info["ort_cuda_status"] = status.value
        info["ort_device"], info["ort_why"] = ("cuda", "") if status is CudaStatus.OK else (None, status.describe())
    try:
        import torch

        if dry_run:  # two busy CPUs in CI: torch's and onnxruntime's spinning thread pools would fight
            torch.set_num_threads(1)
        info["torch"] = torch.__version__
        cuda = torch.cuda.is_available() and not dry_run
        info["torch_device"] = "cuda" if cuda else "cpu" if dry_run else None  # no eager SNN on a GPU run's CPU
        info["gpu"] = torch.cuda.get_device_name(0) if cuda else None
        if not cuda and not dry_run:
            info["torch_why"] = "torch sees no CUDA device"
    except ImportError:
        info["torch"], info["torch_device"] = None, None
        info["torch_why"] = "torch is not installed"
    return info


# -- nets --------------------------------------------------------------------------------------------


def nets(dry_run: bool, work: Path) -> list[dict]:
    """(name, ANN path, torch model or None, dyadic) of each net the check runs."""
    if dry_run:
        model, path = bench.build("cnn", 8, 10, work, seed=3)
        return [{"name": "tiny CNN (dyadic)", "path": path, "model": model, "dyadic": True}]
    out = [{"name": "sample (MNIST QCFS)", "path": SAMPLE, "model": None, "dyadic": False}]
    for name, arch in (("ResNet-20", "resnet20"), ("VGG-16", "vgg16")):
        model, path = bench.build(arch, 32, 100, work)
        out.append({"name": name, "path": path, "model": model, "dyadic": True})
    return out


def ann_session(path: Path, device: str):
    from srp_onnx.ort import select_providers, session

    return session(Path(path).read_bytes(), select_providers(device))


# -- one net -----------------------------------------------------------------------------------------


def parity(got, ref, B: int, sites, spikes: bool) -> dict:
    logits = ref.logits[:, :B]
    row = {"logits_equal": bool(np.array_equal(got.logits, logits)), "logit_diff": bench.max_diff(got.logits, logits)}
    if spikes:
        row["spike_mismatch"] = sum(int((got.spikes[s] != ref.spikes[s][:B]).sum()) for s in sites)
        row["neurons"] = sum(int(ref.spikes[s][:B].size) for s in sites)
    return row


def check_net(net: dict, info: dict, cfg: dict, deadline: float) -> dict:
    """Parity and timings of one net; every failure is kept as a one-line note, the rest goes on."""
    import onnx

    from srp_onnx.convert import ConvertOptions, convert
    from srp_onnx.runtime import SpikingModel

    name = net["name"]
    snn, plan = convert(net["path"], ConvertOptions(tau=TAU))
    shape = tuple(plan.input_shape())
    sites = [s.name for s in plan.sites]
    bmax = max(cfg["batches"])
    x = bench.dyadic_input((bmax, *shape), seed=11)
    res: dict = {"name": name, "dyadic": net["dyadic"], "sites": len(sites), "parity": [], "timing": [],
                 "fold_floor": [], "notes": [],
                 "params": sum(int(np.prod(t.dims)) for t in onnx.load(str(net["path"])).graph.initializer)}

    t0 = time.perf_counter()
    cpu = SpikingModel(snn, device="cpu", record_spikes=True)
    ref = {T: cpu.simulate(x, T, TAU) for T in cfg["Ts"]}
    del cpu
    log(f"{name}: CPU-provider reference, batch {bmax}, T {cfg['Ts']}: {time.perf_counter() - t0:.1f} s")

    dev = info["ort_device"]
    if dev is None:
        res["notes"].append(f"onnxruntime CUDA half skipped: {info['ort_why']}")
    sims: dict = {}
    if dev is not None:
        for label, kw in MODES.items():  # spike counts: their own sessions (counting adds graph outputs)
            try:
                sim = SpikingModel(snn, device=dev, record_spikes=True, **kw)
                B = cfg["spike_batch"]
                for T in cfg["Ts"]:
                    got = sim.simulate(x[:B], T, TAU)
                    res["parity"].append({"mode": label, "T": T, "B": B, "spikes": True,
                                          **parity(got, ref[T], B, sites, True)})
                del sim
            except Exception as e:  # noqa: BLE001 - a failing mode is a finding, reported in one line
                res["notes"].append(f"{label}, spike counts: {one_line(e)}")
            try:
                sims[label] = SpikingModel(snn, device=dev, **kw)
            except Exception as e:  # noqa: BLE001
                res["notes"].append(f"{label}: {one_line(e)}")
        ann = ann_session(net["path"], dev)
        inp = ann.get_inputs()[0].name
    torch_net = None
    if net["model"] is not None and info.get("torch_device"):
        torch_net, neurons = bench.torch_snn(net["model"])
        torch_net.to(info["torch_device"])
    elif net["model"] is None:
        res["notes"].append("PyTorch eager SNN: none (the sample is an ONNX file, not a torch model)")
    else:
        res["notes"].append(f"PyTorch eager SNN: not run ({info.get('torch_why')})")

    for T in cfg["Ts"]:
        for B in cfg["batches"]:
            if time.perf_counter() > deadline:
                res["notes"].append(f"T {T}, batch {B}: skipped (time budget)")
                continue
            xb = x[:B]
            variants = {}
            if dev is not None:
                variants[ANN] = lambda xb=xb: ann.run(None, {inp: xb})[0]
                for label, sim in sims.items():
                    variants[label] = lambda sim=sim, xb=xb, T=T: sim.simulate(xb, T, TAU).logits
            if torch_net is not None:
                variants[TORCH] = lambda xb=xb, T=T: bench.run_torch_snn(torch_net, neurons, xb, T, TAU)
            first = {}
            for k, f in list(variants.items()):  # first call: parity; a failure drops the variant
                try:
                    first[k] = f()
                except Exception as e:  # noqa: BLE001
                    res["notes"].append(f"{k}, T {T}, batch {B}: {one_line(e)}")
                    del variants[k]
            for k, got in first.items():
                if k != ANN:
                    logits = ref[T].logits[:, :B]
                    res["parity"].append({"mode": k, "T": T, "B": B, "spikes": False,
                                          "logits_equal": bool(np.array_equal(got, logits)),
                                          "logit_diff": bench.max_diff(got, logits)})
            if not variants:
                continue
            times, _ = bench.time_variants(variants, cfg["reps"], cfg["budget_s"])
            row = {"T": T, "B": B, "s": {k: float(np.median(v)) for k, v in times.items()}}
            res["timing"].append(row)
            log(f"{name}: T {T} batch {B}: " + ", ".join(f"{k} {1e3 * v:.2f} ms" for k, v in row["s"].items()))
            if dev is not None and ANN in variants:  # the floor under a time-folded mode: ANN at B * (tau + T)
                xf = np.ascontiguousarray(np.tile(xb, (TAU + T, 1, 1, 1)))
                try:
                    ft, _ = bench.time_variants({"fold": lambda xf=xf: ann.run(None, {inp: xf})[0]},
                                                cfg["reps"], cfg["budget_s"])
                    res["fold_floor"].append({"T": T, "B": B, "batch": int(xf.shape[0]),
                                              "s": float(np.median(ft["fold"]))})
                except Exception as e:  # noqa: BLE001
                    res["notes"].append(f"fold floor, T {T}, batch {B}: {one_line(e)}")
    return res


def parity_failures(results: list[dict]) -> list[str]:
    """The dyadic nets' parity rows that are not bit for bit (the PyTorch SNN on CUDA excepted: TF32)."""
    bad = []
    for r in results:
        for p in r["parity"]:
            if not r["dyadic"] or (p["mode"] == TORCH and r.get("torch_on_cuda")):
                continue
            if not p["logits_equal"] or p.get("spike_mismatch", 0):
                bad.append(f"{r['name']}: {p['mode']}, T {p['T']}, batch {p['B']}: logits differ by up to "
                           f"{p['logit_diff']:.3g}" + (f", {p['spike_mismatch']} spike counts differ"
                                                       if p.get("spike_mismatch") else ""))
    return bad


# -- the decision -------------------------------------------------------------------------------------


def _snn_modes(row: dict) -> dict[str, float]:
    return {k: v for k, v in row["s"].items() if k in MODES}


def decide(results: list[dict]) -> list[str]:
    """The verdicts of ``DECISION_RULE`` on the measurements (one line each; none without CUDA timings)."""
    lines = []
    for r in results:
        rows = {(t["T"], t["B"]): t for t in r["timing"] if _snn_modes(t)}
        if not rows:
            continue
        name = r["name"]
        for B in (1, 32):
            ratios = [rows[k]["s"]["step"] / rows[k]["s"]["unrolled + CUDA graph"] for k in rows
                      if k[1] == B and {"step", "unrolled + CUDA graph"} <= set(rows[k]["s"])]
            if ratios:
                worst = max(ratios)
                lines.append(f"{name}, batch {B}: step / CUDA graph = {worst:.2f}x (max over T): launch overhead "
                             + ("dominates" if worst >= LAUNCH_RATIO else "does not dominate"))
        for T in sorted({k[0] for k in rows}):
            if (T, 256) not in rows:
                continue
            per256 = min(_snn_modes(rows[(T, 256)]).values()) / 256
            for B in (1, 32):
                if (T, B) in rows:
                    occ = min(_snn_modes(rows[(T, B)]).values()) / B / per256
                    lines.append(f"{name}, T {T}: an image at batch {B} costs {occ:.1f}x one at batch 256 "
                                 f"(fastest mode): occupancy " + ("dominates" if occ >= OCCUPANCY_RATIO
                                                                  else "does not dominate"))
        floors = {(f["T"], f["B"]): f["s"] for f in r["fold_floor"]}
        if (8, 32) in floors and (8, 32) in rows and r["dyadic"]:
            gain = min(_snn_modes(rows[(8, 32)]).values()) / floors[(8, 32)]
            verdict = ("worth building" if gain >= FOLD_BUILD else "not worth building" if gain < FOLD_SKIP
                       else "undecided: time a one-layer prototype first")
            lines.append(f"{name}, T 8, batch 32: fastest SNN mode / fold floor = {gain:.2f}x: a time-folded "
                         f"layer-wise mode is {verdict}")
    return lines


# -- report ------------------------------------------------------------------------------------------


def _ips(seconds: float | None, B: int) -> str:
    if not seconds:
        return "-"
    v = B / seconds
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def render(info: dict, results: list[dict], wall_s: float) -> str:
    dev = info["ort_device"]
    out = ["# GPU check (bench/gpu_check.py)" + (" -- dry run, CPU provider" if info["dry_run"] else ""), ""]
    out.append(f"{info['date']}; Python {info['python']}; onnxruntime {info['onnxruntime']} from "
               f"`{info['onnxruntime_from']}`; torch {info['torch']} on {info['torch_device'] or 'nothing (not run)'}"
               + (f" ({info['gpu']})" if info.get("gpu") else "") + f"; {wall_s:.0f} s in all.")
    out.append("")
    out.append(f"- onnxruntime CUDA provider: {'loads' if dev == 'cuda' else 'not used: ' + info['ort_why']}")
    if info.get("torch_why"):
        out.append(f"- PyTorch on CUDA: not run: {info['torch_why']}")
    out.append(f"- tau {TAU}; every SNN mode's logits against the CPU provider's at each T and batch, spike "
               "counts at one batch (bit for bit expected on the dyadic nets).")
    bad = parity_failures(results)
    out += ["", "## Parity against the CPU provider", ""]
    out.append("All dyadic checks bit for bit." if not bad else f"**{len(bad)} check(s) not bit for bit:**")
    out += [f"- {b}" for b in bad]
    out += ["", "| net | mode | T | batch | logits | max diff | spike counts differing |",
            "| --- | --- | ---: | ---: | --- | ---: | ---: |"]
    for r in results:
        for p in r["parity"]:
            sp = f"{p['spike_mismatch']} of {p['neurons']}" if p["spikes"] else ""
            out.append(f"| {r['name']} | {p['mode']} | {p['T']} | {p['B']} | "
                       f"{'equal' if p['logits_equal'] else 'differ'} | {p['logit_diff']:.3g} | {sp} |")
    out += ["", "## Speed (images/s, median)", ""]
    cols = [ANN, *MODES, TORCH]
    for r in results:
        if not r["timing"]:
            continue
        out += [f"### {r['name']} ({r['sites']} neuron layers, {r['params']:,} weights)", "",
                "| T | batch | " + " | ".join(cols) + " | fastest SNN / ((tau+T) x ANN) | fastest SNN vs PyTorch |",
                "| ---: | ---: |" + " ---: |" * (len(cols) + 2)]
        for t in r["timing"]:
            s, B = t["s"], t["B"]
            best = min(_snn_modes(t).values()) if _snn_modes(t) else None
            ratio = f"{best / ((TAU + t['T']) * s[ANN]):.2f}" if best and ANN in s else "-"
            vs = f"{s[TORCH] / best:.2f}x" if best and TORCH in s else "-"
            out.append(f"| {t['T']} | {B} | " + " | ".join(_ips(s.get(c), B) for c in cols) + f" | {ratio} | {vs} |")
        if r["fold_floor"]:
            out += ["", "Fold floor (the ANN at batch B x (tau + T), the least a time-folded mode's linear parts "
                    "cost), images/s of the SNN batch:", ""]
            out += [f"- T {f['T']}, batch {f['B']} (ANN batch {f['batch']}): {_ips(f['s'], f['B'])}"
                    for f in r["fold_floor"]]
        out.append("")
    notes = [f"{r['name']}: {n}" for r in results for n in r["notes"]]
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    verdicts = decide(results)
    out += ["## Decision", "", DECISION_RULE, "", "Verdicts:", ""]
    out += [f"- {v}" for v in verdicts] or ["- none: no onnxruntime CUDA timings in this run."]
    return "\n".join(out) + "\n"


def render_not_run() -> str:
    """What bench/GPU_RESULTS.md says until the check has run on a GPU."""
    return "\n".join([
        "# GPU check (bench/gpu_check.py): not run yet", "",
        "No session with a GPU has run `bench/gpu_check.py` yet, so nothing about the CUDA path is measured:",
        "not the CUDA provider loading, not IOBinding state on the device, not unrolled mode or CUDA graph",
        "capture, not parity with the CPU provider, not speed. bench/README.md gives the sequence of device",
        "calls that brings onnxruntime-gpu onto a lent GPU machine and runs the check; the check then",
        "overwrites this file with its tables and applies the rule below.", "",
        "## Decision", "", DECISION_RULE, ""])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU provider, a tiny net, parity only: seconds")
    ap.add_argument("--out", type=Path, default=None,
                    help="results markdown (+ .json beside it); default bench/GPU_RESULTS.md, none for --dry-run")
    ap.add_argument("--budget", type=float, default=270.0, help="seconds after which timings are skipped")
    ap.add_argument("--work", type=Path, default=None, help="keep the built models here")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    cfg = DRY if args.dry_run else FULL
    out = args.out if args.out is not None or args.dry_run else HERE / "GPU_RESULTS.md"
    info = environment(args.dry_run)
    if info["ort_device"] is None:
        print(f"gpu_check: onnxruntime's CUDA provider is not available: {info['ort_why']}", file=sys.stderr)
    if info.get("torch_why"):
        print(f"gpu_check: PyTorch on CUDA not run: {info['torch_why']}", file=sys.stderr)
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="srp-gpu-check-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for net in nets(args.dry_run, work):
            try:
                r = check_net(net, info, cfg, t_start + args.budget)
            except Exception as e:  # noqa: BLE001 - one net's failure must not lose the others' results
                log(traceback.format_exc())
                r = {"name": net["name"], "dyadic": net["dyadic"], "sites": 0, "params": 0, "parity": [],
                     "timing": [], "fold_floor": [], "notes": [f"failed: {one_line(e)}"]}
            r["torch_on_cuda"] = info.get("torch_device") == "cuda"
            results.append(r)
            if out is not None:  # after every net, so that a run cut short still leaves its results
                write(out, render(info, results, time.perf_counter() - t_start), info, results)
    text = render(info, results, time.perf_counter() - t_start)
    if out is not None:
        write(out, text, info, results)
        log(f"wrote {out}")
    print(text)
    bad = parity_failures(results)
    return 1 if bad else 0


def write(out: Path, text: str, info: dict, results: list[dict]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    out.with_suffix(".json").write_text(json.dumps({"machine": info, "nets": results}, indent=1, default=float))


if __name__ == "__main__":
    sys.exit(main())
