"""Render bench.py's measurements as bench/RESULTS.md: tables, then each target met or missed."""

from __future__ import annotations

LEVERS = ["lever 0: saved graph as is", "lever 1: + mask in v, bound once", "lever 2: + theta folded",
          "SNN step", "SNN unrolled"]
LEVER_TEXT = {
    "lever 1: + mask in v, bound once": "lowered runtime, theta not folded, no static head: SRP mask "
                                        "as v = -inf (no mask Mul in any step), membranes bound once and "
                                        "updated in place, each neuron's reset scheduled right after its "
                                        "fire, no arena",
    "lever 2: + theta folded": "1/theta folded into the weights producing each neuron's current, theta into "
                               "the weights reading its spikes: no Div, no Mul by theta; the neuron compares "
                               "with 1",
    "SNN step": "+ static head: the first conv (it sees the same input every step) once per batch",
    "SNN unrolled": "instead of one call per step: tau + T steps in one graph, one call per batch "
                    "(compared with SNN step)",
}
BOUND = "bound: neuron = one Add (timing only)"  # bench.py's timing-only variant
LINEAR = ("Conv", "Gemm", "MatMul", "FusedConv")
NEURON = ("Add", "Sub", "GreaterOrEqual", "Cast", "Mul", "Div", "Floor", "Clip", "Where")
LAYOUT = ("ReorderInput", "ReorderOutput")


GPU_TRAINING_NOTE = (
    "Not run: this task was not lent a GPU machine (the device tool reported it was not drawn for one), so "
    "one epoch of VGG-16 on CIFAR-shaped data was not timed on a GPU. To measure it on a CUDA machine: "
    "`srp-onnx train --dataset cifar10 --data-dir DIR --arch vgg16 --epochs 1 --out runs/vgg16-epoch`; its "
    "progress bar shows batches/s (times the batch size, 128, for images/s)."
)


def _f(v: float | None, fmt: str = ".3f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def _close(value: float, limit: float, share: float = 0.03) -> str:
    """A warning when ``value`` is within ``share`` of ``limit``: then run-to-run noise decides."""
    return " (borderline: within 3 % of the limit)" if abs(value / limit - 1) < share else ""


def _groups(ops: dict[str, float]) -> dict[str, float]:
    g = {"linear": 0.0, "elementwise": 0.0, "layout": 0.0, "other": 0.0}
    for op, ms in ops.items():
        key = ("linear" if op in LINEAR else "elementwise" if op in NEURON
               else "layout" if op in LAYOUT else "other")
        g[key] += ms
    return g


def _mem(m: dict, kind: str) -> tuple[float, float]:
    """(raw peak, peak net of the post-import base) in bytes."""
    v = m[kind]
    return v["peak_kb"] * 1024.0, (v["peak_kb"] - v["base_kb"]) * 1024.0


def render(info: dict, nets: list[dict], conv: dict, rounding: dict | None, quick: bool, cfg: dict) -> str:
    B, tau, T = cfg["batch"], cfg["tau"], cfg["T"]
    S = tau + T
    MiB = 2.0 ** 20
    L: list[str] = []
    add = L.append
    add("# srp-onnx runtime benchmark (issue 6)")
    add("")
    add(f"Produced by `python bench/bench.py{' --quick' if quick else ''}` on {info['date']} "
        f"({info['wall_s']:.0f} s wall). Do not edit by hand; rerun the script.")
    add("")
    add(f"- Machine: {info['cpu']} ({info['flags']}), {info['cores']} cores visible, {info['memory']} RAM; "
        f"{info['os']}")
    add(f"- Versions: Python {info['python']}, numpy {info['numpy']}, onnx {info['onnx']}, "
        f"onnxruntime {info['onnxruntime']} (CPUExecutionProvider), torch {info['torch']}")
    ls, le = info["load_start"], info["load_end"]
    add(f"- Load average at start {ls[0]:.1f} / {ls[1]:.1f} / {ls[2]:.1f}, at end {le[0]:.1f} / "
        f"{le[1]:.1f} / {le[2]:.1f} (1/5/15 min). The machine is shared: a load above ~1 means other "
        "processes took CPU time during the run, which is why every ratio below is taken *within* one "
        "repeat (paired) and "
        "also from the minimums.")
    add(f"- Setting: batch {B}, tau = {tau}, T = {T} ({S} steps), one thread everywhere "
        "(`intra_op_num_threads = 1`, `torch.set_num_threads(1)`). Nets: CIFAR-sized (32x32, 100 classes) "
        "VGG-16 and ResNet-20 of `srp_onnx.train.models` with random dyadic weights and power-of-two "
        "thresholds (so every variant must agree bit for bit); ImageNet-sized ResNet-34 for the convert "
        "time.")
    add("- Timing: each repeat runs every variant once, in a rotating order, after one warm-up call each. "
        f"`SNN/({S} ANN)` is the median over repeats of (variant time) / ({S} x the same repeat's ANN time); "
        "`min-based` divides the minimums. ANN = the exported QCFS ANN in onnxruntime (ORT_ENABLE_ALL).")
    add("- PyTorch eager SNN: the paper lineage's way (QCFS `ScaledNeuron` around spikingjelly's "
        "`IFNode(v_reset=None)`, plus SRP's mask): the QCFS modules replaced by stateful neuron modules "
        "(`x / scale`, charge, heaviside fire, soft reset, `* scale`, `* mask` after pre-simulation), BN "
        "modules as they are, the whole network called once per step in a Python loop under "
        "`torch.no_grad()`.")
    add("")

    # -- targets ---------------------------------------------------------------------------------------
    add("## Targets")
    add("")
    add("| target | VGG-16 | ResNet-20 | verdict |")
    add("|---|---|---|---|")
    by = {n["arch"]: n for n in nets}
    verdicts: list[tuple[str, str]] = []

    def ratio_row(key: str, label: str, tkey: str, better_low: bool) -> None:
        cells, oks, per_net = [], [], []
        for arch in ("vgg16", "resnet20"):
            n = by.get(arch)
            if n is None or key not in n["summary"]:
                cells.append("n/a")
                continue
            tgt = cfg["targets"][arch][tkey]
            if tkey == "ratio":
                s = n["summary"][key]
                v, vmin = s["ratio_paired"], s["ratio_min"]
            else:
                sp = n["torch_speedup"][key]
                v, vmin = sp["paired"], sp["min"]
            ok = v <= tgt if better_low else v >= tgt
            oks.append(ok)
            cells.append(f"{v:.3f} (min-based {vmin:.3f}); target {'<=' if better_low else '>='} {tgt} "
                         f"{_verdict(ok)}{_close(v, tgt)}")
            per_net.append(f"{n['name']} {v:.3f} vs {tgt}: {'met' if ok else 'missed'}{_close(v, tgt)}")
        verdict = _verdict(all(oks)) if oks else "n/a"
        verdicts.append((label, f"{verdict} ({'; '.join(per_net)})"))
        add(f"| {label} | {cells[0]} | {cells[1]} | {verdict} |")

    ratio_row("SNN step", f"SNN step mode / ({S} x ANN)", "ratio", True)
    ratio_row("SNN unrolled", f"SNN unrolled mode / ({S} x ANN)", "ratio", True)
    ratio_row("SNN step", "PyTorch eager / SNN step mode", "torch", False)
    ratio_row("SNN unrolled", "PyTorch eager / SNN unrolled mode", "torch", False)
    cells, raw_ok, net_ok = [], [], []
    for arch in ("vgg16", "resnet20"):
        n = by.get(arch)
        m = n["memory"] if n else None
        if not m:
            cells.append("n/a")
            continue
        state = m["step"]["state_bytes"]
        a_raw, a_net = _mem(m, "ann")
        s_raw, s_net = _mem(m, "step")
        r_ok = s_raw <= cfg["mem_factor"] * a_raw + state
        n_ok = s_net <= cfg["mem_factor"] * a_net + state
        raw_ok.append(r_ok)
        net_ok.append(n_ok)
        lim_raw = (cfg["mem_factor"] * a_raw + state) / MiB
        lim_net = (cfg["mem_factor"] * a_net + state) / MiB
        cells.append(f"process peak {s_raw / MiB:.0f} MiB vs limit {lim_raw:.0f} {_verdict(r_ok)}"
                     f"{_close(s_raw / MiB, lim_raw)}; net of imports {s_net / MiB:.0f} vs {lim_net:.0f} "
                     f"({cfg['mem_factor']} x ANN {a_net / MiB:.0f} + state {state / MiB:.0f}) "
                     f"{_verdict(n_ok)}{_close(s_net / MiB, lim_net)}")
    mv = (f"{_verdict(all(raw_ok))} (process peak); {_verdict(all(net_ok))} net of imports"
          if raw_ok else "n/a")
    verdicts.append(("peak memory (step mode)", mv))
    add(f"| peak memory of eval (step mode) <= {cfg['mem_factor']} x ANN peak + neuron state | {cells[0]} | "
        f"{cells[1]} | {mv} |")
    ok = conv["median_total"] < cfg["convert_target"]
    verdicts.append(("convert ResNet-34", _verdict(ok) + _close(conv["median_total"], cfg["convert_target"],
                                                                0.1).replace("3 %", "10 %")))
    cli = conv.get("cli_wall_s")
    add(f"| `convert` ResNet-34 (ImageNet, random weights) < {cfg['convert_target']:.0f} s | "
        f"library `convert()` + save: {conv['median_total']:.2f} s (median of {len(conv['runs'])}; best "
        f"{conv['best']['total']:.2f} s) | `srp-onnx convert` CLI wall, incl. interpreter start and imports: "
        f"{_f(cli, '.2f')} s | {verdicts[-1][1]} |")
    add("")

    # -- why: the gaps, from the profile -----------------------------------------------------------------
    add("## Where the time goes, and what explains each miss")
    add("")
    for n in nets:
        arch = n["arch"]
        p = n["profile"]
        ga, gs = _groups(p["ANN pass"]), _groups(p["SNN step"])
        med = {k: v["median_ms"] for k, v in n["summary"].items()}
        ann = med["ANN"]
        step = med["SNN step"] / S
        tstep = med["PyTorch eager SNN"] / S
        need = tstep / cfg["targets"][arch]["torch"]
        add(f"**{n['name']}.** Per time step: SNN step mode {step:.1f} ms, one ANN pass {ann:.1f} ms, "
            f"PyTorch eager {tstep:.1f} ms. onnxruntime kernel time (profile below) of one SNN step: "
            f"linear layers {gs['linear']:.1f} ms (ANN pass: {ga['linear']:.1f}), elementwise "
            f"{gs['elementwise']:.1f} ms "
            f"(the neuron: Add, GreaterOrEqual, Cast, Sub; the ANN's QCFS chain: {ga['elementwise']:.1f}), "
            f"NCHWc reorders {gs['layout']:.1f} ms ({ga['layout']:.1f}), other {gs['other']:.1f} ms "
            f"({ga['other']:.1f}).")
        sp = n["torch_speedup"]["SNN step"]["paired"]
        tlin = n.get("torch_linear_ms")
        if tlin is not None:
            add(f"PyTorch's own linear part (the same network with its activations removed: convs, BN, "
                f"pooling, Linear) takes {tlin:.1f} ms per step, so its neuron modules and Python loop cost "
                f"about {tstep - tlin:.1f} ms per step.")
        if sp < cfg["targets"][arch]["torch"]:
            bound = tstep / gs["linear"] if gs["linear"] else float("nan")
            budget = need - gs["linear"]
            add(f"The PyTorch target asks for at most {need:.1f} ms per step, {step - need:.1f} ms less than "
                f"now. onnxruntime's convolutions and Gemms alone take {gs['linear']:.1f} ms per step, as in "
                f"the ANN, so even a step with free neurons and no layout changes would be only "
                f"{bound:.2f}x faster than PyTorch eager; the target leaves {budget:.1f} ms per step for "
                f"everything else, where the neuron's four memory-bound passes over every membrane (charge, "
                f"fire, cast, reset) and the NCHWc reorders around each convolution take "
                f"{gs['elementwise'] + gs['layout']:.1f} ms. These are the fewest stock onnxruntime "
                "operators that compute the neuron exactly; closing the gap needs a fused neuron kernel (one "
                "pass reading v and x, writing v and s) or a convolution that accumulates into the membrane, "
                "i.e. a custom operator.")
            b = n["summary"].get(BOUND)
            if b is not None:
                bsp = n["torch_speedup"][BOUND]["paired"]
                reached = bsp >= cfg["targets"][arch]["torch"]
                verdict = ("reaches the target, so a fused neuron kernel (a custom operator) could close the gap"
                           if reached else "does not reach the target, so on these convolutions no neuron "
                           "implementation, however fused, can")
                add(f"Measured bound: the same step with every neuron replaced by a single Add (`v' = v + x`, "
                    f"spikes = v'; wrong outputs, timed only) takes {b['median_ms'] / S:.1f} ms per step, "
                    f"PyTorch eager / bound = {bsp:.2f} (paired median). An exact neuron does at least that "
                    "Add's work (it reads v and x and writes v') and fires too, so any neuron kernel lands "
                    f"between this bound and the SNN step mode. The bound {verdict}.")
        add("")

    # -- per-net timings ---------------------------------------------------------------------------------
    for n in nets:
        add(f"## {n['name']} ({n['params'] / 1e6:.1f} M parameters, {n['sites']} neuron layers)")
        add("")
        add(f"| variant | median ms | min ms | repeats | SNN/({S} ANN) | min-based | PyTorch eager / "
            "variant |")
        add("|---|---|---|---|---|---|---|")
        for k, s in n["summary"].items():
            sp = n["torch_speedup"].get(k)
            ratio = "-" if k == "ANN" else f"{s['ratio_paired']:.3f}"
            rmin = "-" if k == "ANN" else f"{s['ratio_min']:.3f}"
            tsp = f"{sp['paired']:.2f} (min {sp['min']:.2f})" if sp else "-"
            add(f"| {k} | {s['median_ms']:.1f} | {s['min_ms']:.1f} | {s['n']} | {ratio} | {rmin} | {tsp} |")
        add("")
        chain = [k for k in LEVERS if k in n["summary"]]
        if len(chain) > 2:
            add("What each lever gave (median time of the previous row minus this row, and as a share of the "
                "previous row; repeats are interleaved, so the machine's load hits every row alike):")
            add("")
            add("| lever | what it does | saves |")
            add("|---|---|---|")
            prev = None
            for k in chain:
                cur = n["summary"][k]["median_ms"]
                if k == "SNN unrolled":
                    ref = n["summary"]["SNN step"]["median_ms"]
                elif prev is None:
                    prev = cur
                    continue
                else:
                    ref = prev
                gain = ref - cur
                add(f"| {k} | {LEVER_TEXT.get(k, '')} | {gain:+.1f} ms ({100 * gain / ref:+.1f} %) |")
                if k != "SNN unrolled":
                    prev = cur
            add("")
        add("Outputs of the timed calls at batch 32 (max |difference| of logits against the step mode; "
            "0 = bit-identical): " + ", ".join(f"{k}: {v:.3g}" for k, v in n["agree"].items()))
        add("")

    # -- checks ----------------------------------------------------------------------------------------
    add("## Checks (a few images, against the numpy reference simulator `tests/reference.py`)")
    add("")
    add("| net | comparison | max abs diff of logits | spike counts differing / neurons (spikes) |")
    add("|---|---|---|---|")
    for n in nets:
        for c in n["checks"]:
            sp = (f"{c['spike_mismatch']} / {c['neurons']} ({c['spikes']} spikes)" if "spike_mismatch" in c
                  else "-")
            add(f"| {c['net']} | {c['what']} | {c['diff']:.3g} | {sp} |")
    add("")
    if rounding:
        add("### Float rounding on non-dyadic nets (theta folding)")
        add("")
        add("A ResNet-20 with float (kaiming) weights, float BN statistics and non-power-of-two thresholds, "
            f"8 Gaussian images, tau = {tau}, T = {T}, against the numpy reference "
            f"({rounding['neurons']} neurons):")
        add("")
        add("| runtime | spike counts differing | max abs logit diff (max abs logit) | summed-logit argmax "
            "changed |")
        add("|---|---|---|---|")
        for k, label in (("saved", "the saved graph run as is (lever 0)"),
                         ("nofold", "lowered, fold_theta=False (divides by theta like the saved graph)"),
                         ("fold", "lowered, fold_theta=True (default)")):
            r = rounding[k]
            add(f"| {label} | {_f(r['spike_mismatch'], 'd')} | {r['logit_diff']:.3g} "
                f"({r['logit_scale']:.3g}) | {r['argmax_changed']} / 8 |")
        add("")
        add("Folding multiplies each weight by theta_in / theta_out in float64 and rounds it to float32 once "
            "(relative error <= 6e-8 per weight), and rescales a residual shortcut by a rounded factor, so a "
            "neuron's membrane can move by a few ulp; a spike flips only when the membrane lands within that "
            "distance of 1 (or of the 1e-3 mask edge), and the flip then propagates. onnxruntime's own "
            "kernels already sum in another order than numpy (and fuse a conv with a residual Add), so even "
            "the unfolded graph is not bit-exact against the reference on float weights. With power-of-two "
            "thresholds every factor is exact: the parity tests (tests/test_parity.py, "
            "tests/test_runtime.py) stay bit for bit, spike counts included. "
            "`SpikingModel(..., fold_theta=False)` divides by theta as the saved graph does (onnxruntime "
            "may still fold that division into the convolution, with its own rounding).")
        f_mm, n_mm = rounding["fold"]["spike_mismatch"], rounding["nofold"]["spike_mismatch"]
        add(f"In this run folding changed {f_mm} spike counts against the reference where the unfolded "
            f"graph changed {n_mm}: " + ("the folded weights, rounded once from float64, land closer to the "
                                         "reference's `x / theta` than onnxruntime's own handling of the "
                                         "division." if f_mm <= n_mm else "folding costs some exactness on "
                                         "float weights; use fold_theta=False where that matters."))
        add("")

    # -- memory ----------------------------------------------------------------------------------------
    add("## Peak memory")
    add("")
    add("Each variant runs in a fresh interpreter that imports numpy, onnx, onnxruntime and srp_onnx (not "
        f"torch), loads the model from its file, runs one batch of {B} ({S} steps for the SNN) and reports "
        "the peak resident set (`VmHWM`; not `ru_maxrss`, which Linux carries over `exec` from the forking "
        "parent). *base* is the peak after the imports, *net* = peak - base; each variant runs three "
        "times (identical runs differ by up to ~10 %, with the heap's layout) and the median run is "
        "shown. The neuron state is one membrane per neuron (float32, batch 32): the step mode keeps "
        "exactly that, updated in place.")
    add("")
    add("| net | variant | peak MiB | base MiB | net MiB (min..max over runs) | neuron state MiB | "
        "net / ANN net |")
    add("|---|---|---|---|---|---|---|")
    for n in nets:
        m = n["memory"]
        for k, v in m.items():
            a = m["ann+mmap"] if k.endswith("+mmap") and "ann+mmap" in m else m["ann"]  # same allocator
            ann_net = a["peak_kb"] - a["base_kb"]
            net = v["peak_kb"] - v["base_kb"]
            spread = (f" ({v['net_kb_min'] / 1024:.0f}..{v['net_kb_max'] / 1024:.0f})"
                      if v.get("runs", 1) > 1 else "")
            add(f"| {n['name']} | {k} | {v['peak_kb'] / 1024:.0f} | {v['base_kb'] / 1024:.0f} | "
                f"{net / 1024:.0f}{spread} | {v['state_bytes'] / MiB:.0f} | {net / max(ann_net, 1):.2f} |")
    add("")
    add("How the SNN stays near the ANN: the runtime reads the step graph, lowers it (folding rewrites each "
        "weight in place of the old one), frees the protobuf, hands the weights to onnxruntime as external "
        "initializers (no serialized copy) and, once onnxruntime holds its own copy (checked at run time: "
        "onnxruntime 1.31 copies them), drops its arrays, so one copy of the weights remains, split between "
        "the head and the step session. The sessions run without a memory arena (the arena grows by powers "
        "of two and keeps what it took; the speed is the same). What remains above the ANN: the neuron "
        "state, the head's output (the first layer's current, kept for all steps) and the per-step "
        "temporaries. For ResNet-20 the weights are 1 MiB, so these fixed costs are the whole difference; "
        "the unrolled mode holds all steps' temporaries of one graph and needs more.")
    add("")
    for n in nets:
        m = n["memory"]
        if "step+mmap" not in m or "ann+mmap" not in m:
            continue
        a_net, s_net = (m[k]["peak_kb"] - m[k]["base_kb"] for k in ("ann+mmap", "step+mmap"))
        a_def, s_def = (m[k]["peak_kb"] - m[k]["base_kb"] for k in ("ann", "step"))
        state = m["step"]["state_bytes"] / MiB
        lim = cfg["mem_factor"] * a_net / 1024 + state
        add(f"*Allocator, {n['name']}.* The rows `+mmap` run with glibc's mmap threshold fixed at 64 KiB "
            "(`MALLOC_MMAP_THRESHOLD_=65536`: every block of 64 KiB or more is mapped on allocation and "
            "unmapped on free). By default glibc raises that threshold after the first large free, so later "
            "temporaries come from the heap, which fragments and keeps its peak. Step mode net "
            f"{s_def / 1024:.0f} -> {s_net / 1024:.0f} MiB, ANN net {a_def / 1024:.0f} -> {a_net / 1024:.0f} "
            f"MiB; against the limit {cfg['mem_factor']} x ANN + state = {lim:.0f} MiB the step mode is then "
            f"{_verdict(s_net / 1024 <= lim)}"
            + (". So the default run's excess over the limit is the heap's layout, not live tensors"
               if s_net / 1024 <= lim else ": the heap's layout explains part of the excess, not all")
            + ". The runtime does not set it: with it, every step maps and zeroes fresh pages for its "
            "temporaries, which costs time.")
        add("")

    # -- profile ---------------------------------------------------------------------------------------
    add("## Profile (onnxruntime kernel time per op type, ms, minimum over runs)")
    add("")
    for n in nets:
        p = n["profile"]
        ops = sorted(set(p["ANN pass"]) | set(p["SNN step"]),
                     key=lambda o: -(p["ANN pass"].get(o, 0) + p["SNN step"].get(o, 0)))
        add(f"{n['name']}: one ANN pass vs one SNN step (batch {B}). Totals: ANN "
            f"{sum(p['ANN pass'].values()):.1f} ms, SNN step {sum(p['SNN step'].values()):.1f} ms.")
        add("")
        add("| op | ANN pass | SNN step |")
        add("|---|---|---|")
        for o in ops:
            add(f"| {o} | {p['ANN pass'].get(o, 0):.2f} | {p['SNN step'].get(o, 0):.2f} |")
        add("")

    # -- convert ---------------------------------------------------------------------------------------
    add(f"## Convert time, ResNet-34 (224x224, 1000 classes, {conv['params'] / 1e6:.1f} M parameters)")
    add("")
    add("| run | plan (load, normalize, sites) | probe_shapes (onnxruntime, batch 1 and 2) | emit step "
        "graph | save | total |")
    add("|---|---|---|---|---|---|")
    for k, r in enumerate(conv["runs"]):
        add(f"| {k + 1} | {r['plan']:.2f} | {r['probe_shapes']:.2f} | {r['emit']:.2f} | {r['save']:.2f} | "
            f"{r['total']:.2f} |")
    add("")
    best = conv["best"]
    parts = ("plan", "probe_shapes", "emit", "save")
    shares = ", ".join(f"{k} {100 * best[k] / best['total']:.0f} %" for k in parts)
    add(f"Shares of the best run: {shares}. `emit_step_graph` (this issue's part of convert) writes the "
        "saved format unchanged; `plan` and `probe_shapes` (site shapes from ONNX shape inference where "
        "complete, onnxruntime otherwise) belong to convert.py's other functions.")
    add("")

    # -- verdicts --------------------------------------------------------------------------------------
    add("## Verdict")
    add("")
    for label, v in verdicts:
        add(f"- {label}: {v}")
    add("")
    add("A verdict marked borderline can flip between runs: the machine is shared (2 cores, other "
        "tenants), and a few percent is the spread of the paired medians from one full run to the next "
        "(the convert time, which uses onnxruntime's default thread count, varies more).")
    add("")
    add("## GPU training throughput (issue 3)")
    add("")
    add(GPU_TRAINING_NOTE)
    add("")
    return "\n".join(L) + "\n"
