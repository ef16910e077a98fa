"""analyze vs eval on the bundled sample: both on the runtime, the same images, T = 8.

    python bench/bench_analyze.py [--limit N] [--reps R]

eval runs plain conversion (tau = 0) and SRP (tau = 4) with the ANN beside them
(``eval --T 8 --compare-baseline``); analyze runs the same two simulations and records, at
every step, each weight layer's input (for synaptic operations) and, per batch, spike counts
and the SRP mask. The ratio analyze / eval (median of R paired runs) is written into
bench/RESULTS.md under its own heading; the target is at most 1.5.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parent / "samples" / "mnist_qcfs.onnx"
HEADING = "## analyze vs eval (the sample, T = 8)"
BEGIN, END = "<!-- bench_analyze: begin -->", "<!-- bench_analyze: end -->"  # bench.py keeps what is between


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md as it is")
    args = ap.parse_args()

    from srp_onnx.analysis import analyze
    from srp_onnx.convert import ConvertOptions
    from srp_onnx.evaluate import evaluate
    from srp_onnx.pipeline import CalibOptions, model_batches, open_data, open_model

    loaded = open_model(SAMPLE, ConvertOptions(tau=4), CalibOptions())
    ds = open_data("mnist", loaded, split="test", limit=args.limit)
    batches = list(model_batches(ds, 64, loaded.input_shape))  # read once: time the simulations only

    def run_eval() -> None:
        evaluate(loaded.snn, lambda: iter(batches), total=len(ds), T=8, tau=4, ann=loaded.ann,
                 compare_baseline=True, device="cpu")

    def run_analyze() -> None:
        analyze(loaded.snn, (x for x, _ in batches), T=8, tau=4, device="cpu")

    run_eval(), run_analyze()  # warm-up: sessions, lowering, caches
    pairs = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        run_eval()
        t1 = time.perf_counter()
        run_analyze()
        t2 = time.perf_counter()
        pairs.append((t1 - t0, t2 - t1))
    ev = statistics.median(p[0] for p in pairs)
    an = statistics.median(p[1] for p in pairs)
    ratio = statistics.median(p[1] / p[0] for p in pairs)
    text = (f"{BEGIN}\n{HEADING}\n\n`python bench/bench_analyze.py` ({len(ds)} test images, batch 64, CPU, both on the "
            f"runtime, data read once beforehand; median of {args.reps} paired runs): eval --compare-baseline "
            f"{ev:.2f} s, analyze {an:.2f} s, analyze / eval = **{ratio:.2f}** (target: at most 1.5). Both run "
            "tau = 0 and tau = 4 with T = 8; analyze also copies every dynamic weight layer's input out at each "
            "step to count synaptic operations.\n{END}\n")
    print(text)
    if not args.no_write:
        results = HERE / "RESULTS.md"
        old = results.read_text() if results.exists() else ""
        if BEGIN in old and END in old:
            old = old[:old.index(BEGIN)] + text.rstrip("\n") + old[old.index(END) + len(END):]
        elif HEADING in old:  # written before the markers
            old = re.sub(re.escape(HEADING) + r".*?(?=\n## |\n<!-- |\Z)", text.rstrip("\n"), old, flags=re.S)
        else:
            old = old.rstrip("\n") + "\n\n" + text
        results.write_text(old)


if __name__ == "__main__":
    main()
