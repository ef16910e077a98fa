"""Images/s of the sample eval at T = 32: one process, and Ray with 1 and 2 local workers.

    python bench/bench_ray.py            # writes its section of bench/RESULTS.md (between markers)
    python bench/bench_ray.py --limit 200 --no-write

The sample (srp_onnx/samples/mnist_qcfs.onnx, converted here) is evaluated on the built-in MNIST test
split as `srp-onnx eval` does it (the ANN row and the SRP row, tau = 4, batch 64). Each
distributed run reports:
  * start: making the Cluster (Ray is up already): worker processes started and imported;
  * setup: a run over one batch, i.e. what every worker pays once per job (it unpickles the
    model, lowers it, creates its onnxruntime sessions, opens the dataset) plus one batch;
  * eval: the whole run (setup included, as a user sees it), and images/s = images / eval.
Ray gets the machine's CPUs (ray.init(num_cpus=os.cpu_count())); a worker gets
cpus // workers onnxruntime threads, the single process onnxruntime's default.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BEGIN, END = "<!-- bench_ray: begin -->", "<!-- bench_ray: end -->"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=None, help="images (default: the whole MNIST test split)")
    ap.add_argument("--T", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", default="1,2", help="worker counts to run (comma-separated)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = ap.parse_args()

    import onnxruntime
    import ray

    from srp_onnx.convert import ConvertOptions
    from srp_onnx.demo import SAMPLE
    from srp_onnx.distributed import Cluster
    from srp_onnx.evaluate import evaluate
    from srp_onnx.pipeline import CalibOptions, DataSource, open_data, open_model

    loaded = open_model(SAMPLE, ConvertOptions(tau=4), CalibOptions())
    ds = open_data("mnist", loaded, limit=args.limit)
    src = DataSource.of(ds, "mnist", args.batch_size, loaded.input_shape, args.limit)
    one = DataSource.of(open_data("mnist", loaded, limit=args.batch_size), "mnist", args.batch_size,
                        loaded.input_shape, args.batch_size)
    how = dict(T=args.T, tau=4, ann=loaded.ann)
    n = len(ds)
    load0 = os.getloadavg()
    rows = []

    t = time.perf_counter()
    base = evaluate(loaded.snn, lambda: src.batches(), total=n, device="cpu", **how)
    single = time.perf_counter() - t
    rows.append(("one process (no Ray)", None, None, single, n / single))
    print(f"one process: {single:.1f} s, {n / single:.1f} images/s", file=sys.stderr)

    t = time.perf_counter()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    ray_init = time.perf_counter() - t
    try:
        for w in (int(v) for v in args.workers.split(",")):
            t = time.perf_counter()
            with Cluster("auto", workers=w, device="cpu") as c:
                start = time.perf_counter() - t
                t = time.perf_counter()
                c.evaluate(loaded.snn, one, **how)
                setup = time.perf_counter() - t
                t = time.perf_counter()
                rep = c.evaluate(loaded.snn, src, **how)
                run = time.perf_counter() - t
            assert rep.to_json()["rows"] == base.to_json()["rows"], "distributed numbers differ"
            rows.append((f"Ray, {w} worker{'s' if w > 1 else ''}", start, setup, run, n / run))
            print(f"{w} workers: start {start:.1f} s, setup {setup:.1f} s, eval {run:.1f} s, {n / run:.1f} images/s",
                  file=sys.stderr)
    finally:
        ray.shutdown()
    load1 = os.getloadavg()

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        BEGIN,
        "## Distributed eval on Ray (issue 14)",
        "",
        f"Produced by `python bench/bench_ray.py` on {stamp}: the sample (`srp_onnx/samples/mnist_qcfs.onnx`) on "
        f"{n} MNIST test images, T = {args.T}, tau = 4, batch {args.batch_size}, the ANN and SRP rows as "
        f"`srp-onnx eval` runs them. {os.cpu_count()} CPUs visible; Python {platform.python_version()}, "
        f"onnxruntime {onnxruntime.__version__}, ray {ray.__version__}. Load average "
        f"{load0[0]:.1f} at start, {load1[0]:.1f} at end (the machine is shared: other processes took CPU time). "
        f"`ray.init` took {ray_init:.1f} s. Every distributed run gave the single process's numbers exactly.",
        "",
        "| run | start workers (s) | per-job setup + 1 batch (s) | eval wall (s) | images/s |",
        "|---|---|---|---|---|",
    ]
    for name, start, setup, run, ips in rows:
        cells = ["-" if v is None else f"{v:.1f}" for v in (start, setup)]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {run:.1f} | {ips:.1f} |")
    cpus = os.cpu_count() or 1
    here = ("On this 2-core machine 2 workers split the same cores that one process's onnxruntime already uses "
            "with 2 threads, so on an idle machine no speed-up is possible here and the table shows the overhead. ")
    if max(load0[0], load1[0]) > cpus:
        here += (f"But the load average ({load0[0]:.0f} to {load1[0]:.0f} on {cpus} cores) says other tenants' "
                 "processes competed for the cores during these runs: the scheduler shares time per process, so "
                 "more worker processes win a larger share, and runs at different moments saw different load. "
                 "The ratios between rows are therefore not a scaling measurement; the fixed costs are upper bounds. ")
    lines += [
        "",
        "What scales and what does not: a worker pays a fixed cost once per job: the 'start' column (the actor "
        "created and answering; Ray may hand it a pre-started Python process) and the 'setup' column less one "
        "batch (importing srp-onnx and onnxruntime on a fresh worker, unpickling the model, lowering it, "
        "creating its onnxruntime sessions, opening the dataset). After that each image costs the same on "
        "every worker, and shards are whole batches handed out as workers free up, so the eval time on N "
        "workers is about fixed + (images x steps x per-image cost) / N. " + here +
        "On a node with N GPUs (one worker per GPU, `--ray auto`) or on N nodes, the compute part divides by "
        "N: an ImageNet evaluation (50,000 images x (tau + T) steps of a ResNet-34, minutes to hours per "
        "setting) is dominated by it, while the fixed part is seconds per worker (lowering and session "
        "creation grow with the model's size, not with the data), so the speed-up approaches N; with few "
        "images per worker (fewer than a few shards each) the fixed part dominates and adding workers stops "
        "paying.",
        END,
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        path = HERE / "RESULTS.md"
        old = path.read_text()
        if BEGIN in old and END in old:
            new = old[:old.index(BEGIN)] + text + old[old.index(END) + len(END) + 1:]
        else:
            new = old.rstrip("\n") + "\n\n" + text
        path.write_text(new)


if __name__ == "__main__":
    main()
