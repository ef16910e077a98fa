"""Shared helpers for the make_*.py fixture scripts in this folder.

Only numpy, onnx, onnxruntime and scikit-learn are needed here, so every
exporter venv (torch, tensorflow, jax) can import it. The make_*.py scripts
are run from the repository root (``python tests/data/exporters/make_X.py``);
Python puts this folder on sys.path, so ``import _common`` works.

What ``finalize`` does for every fixture:
  1. load the exported ModelProto, set ``ir_version = 10`` (onnxruntime 1.31
     reads IR <= 13, onnx 1.23 writes IR 14 by default), ``onnx.checker``;
  2. save it next to this file as ``<name>.onnx`` (weights inline, no
     external data);
  3. run the 360 held-out digits through onnxruntime (CPUExecutionProvider)
     from the saved file and compute top-1 accuracy;
  4. write/replace the entry ``<name>`` in ``manifest.json``.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "manifest.json"
IR_VERSION = 10
N_TEST = 360


def seed_everything(seed: int = 0) -> None:
    random.seed(seed)
    np.random.seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def load_digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """sklearn digits, images/16 as float32 in [0, 1], shape (N, 8, 8).

    Split: ``perm = default_rng(0).permutation(1797)``; test = last 360 of
    perm, train = the other 1437.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images / 16.0).astype(np.float32)
    labels = d.target.astype(np.int64)
    assert images.shape == (1797, 8, 8)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(images))
    tr, te = perm[:-N_TEST], perm[-N_TEST:]
    return images[tr], labels[tr], images[te], labels[te]


LAYOUTS = {
    "NCHW": lambda x: x[:, None, :, :],
    "NHWC": lambda x: x[:, :, :, None],
    "flat": lambda x: x.reshape(len(x), 64),
    "NTC": lambda x: x,  # sequence of 8 rows, 8 features each
}


def to_layout(x: np.ndarray, layout: str) -> np.ndarray:
    return np.ascontiguousarray(LAYOUTS[layout](x), dtype=np.float32)


def _dims(vi) -> list[Any]:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    out: list[Any] = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def _value_info_desc(vi) -> dict[str, Any]:
    import onnx

    kind = vi.type.WhichOneof("value")
    desc: dict[str, Any] = {"name": vi.name, "type": kind}
    if kind == "tensor_type":
        desc["dtype"] = onnx.TensorProto.DataType.Name(vi.type.tensor_type.elem_type).lower()
        desc["shape"] = _dims(vi)
    elif kind == "sequence_type":
        desc["type"] = "sequence(map)" if vi.type.sequence_type.elem_type.HasField("map_type") else "sequence"
    return desc


def accuracy_from_output(out: Any, y: np.ndarray) -> float:
    if isinstance(out, list):  # ZipMap: list of {label: prob}
        keys = sorted(out[0].keys())
        out = np.array([[row[k] for k in keys] for row in out], dtype=np.float32)
        pred = np.asarray(keys)[out.argmax(1)]
    else:
        out = np.asarray(out)
        pred = out.argmax(-1) if out.ndim >= 2 else out
    return float((np.asarray(pred).astype(np.int64) == y).mean())


def finalize(
    model,
    name: str,
    *,
    layout: str,
    exporter: str,
    exporter_version: str,
    framework: str,
    framework_version: str,
    output: str,
    output_kind: str,
    heads_after_last_linear: list[str],
    activation: str,
    n_activation_layers: int,
    has_residual_add: bool,
    source_has_batchnorm: bool,
    source_has_maxpool: bool,
    note: str,
    graph: str = "",
    supported: bool = True,
    qcfs: dict[str, Any] | None = None,
    framework_accuracy: float | None = None,
    extra: dict[str, Any] | None = None,
    fixed_batch: bool = False,
) -> dict[str, Any]:
    """Save ``model`` (ModelProto or path) as ``<name>.onnx`` and record it.

    ``fixed_batch``: the file runs one image at a time only (an export without dynamic axes).
    """
    import onnx
    import onnxruntime as ort

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    path = HERE / f"{name}.onnx"
    onnx.save(model, str(path))
    size = path.stat().st_size
    assert size < 300_000, f"{path} is {size} bytes (limit 300 KB)"

    model = onnx.load(str(path))
    inits = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in inits]
    assert len(graph_inputs) == 1, [i.name for i in graph_inputs]
    inp = graph_inputs[0]

    _, _, x_te, y_te = load_digits_split()
    x = to_layout(x_te, layout)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out_names = [o.name for o in sess.get_outputs()]
    assert output in out_names, (output, out_names)
    if fixed_batch:
        assert _dims(inp)[0] == 1, _dims(inp)
        runs = [dict(zip(out_names, sess.run(None, {inp.name: x[i : i + 1]}))) for i in range(len(x))]
        outs = {k: np.concatenate([r[k] for r in runs]) for k in out_names}
    else:
        outs = dict(zip(out_names, sess.run(None, {inp.name: x})))
        # the batch dim must really be dynamic: a batch of 1 and of 7 must run too
        for b in (1, 7):
            sess.run(None, {inp.name: x[:b]})
    acc = accuracy_from_output(outs[output], y_te)

    ops = collections.Counter(n.op_type for n in model.graph.node)
    opsets = {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}
    entry: dict[str, Any] = {
        "file": path.name,
        "script": f"make_{name}.py",
        "supported": supported,
        "exporter": exporter,
        "exporter_version": exporter_version,
        "framework": framework,
        "framework_version": framework_version,
        "onnx_version_used": onnx.__version__,
        "ir_version": int(model.ir_version),
        "opset_import": opsets,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "input_name": inp.name,
        "input_shape": _dims(inp),
        "layout": layout,
        "dtype": "float32",
        "input_range": "[0, 1] (digits images / 16, no mean/std)",
        "output": output,
        "output_kind": output_kind,
        "heads_after_last_linear": heads_after_last_linear,
        "outputs": [_value_info_desc(o) for o in model.graph.output],
        "activation": activation,
        "n_activation_layers": n_activation_layers,
        "has_maxpool": bool(ops.get("MaxPool", 0)),
        "has_batchnorm": bool(ops.get("BatchNormalization", 0)),
        "source_has_maxpool": source_has_maxpool,
        "source_has_batchnorm": source_has_batchnorm,
        "has_residual_add": has_residual_add,
        "fixed_batch": fixed_batch,
        "accuracy_test": round(acc, 6),
        "n_test": len(y_te),
        "n_nodes": len(model.graph.node),
        "ops": dict(sorted(ops.items())),
        "size_bytes": size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "note": note,
        "graph": graph,
    }
    if qcfs is not None:
        entry["qcfs"] = qcfs
    if framework_accuracy is not None:
        entry["framework_accuracy_test"] = round(float(framework_accuracy), 6)
    if extra:
        entry.update(extra)

    import fcntl
    import tempfile

    lock_path = Path(tempfile.gettempdir()) / "srp_onnx_exporters_manifest.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # several make_*.py may run at once
        manifest: dict[str, Any] = {}
        if MANIFEST.exists():
            manifest = json.loads(MANIFEST.read_text())
        manifest.setdefault(
            "dataset",
            {
                "name": "sklearn.datasets.load_digits",
                "x": "images / 16.0 as float32, values in [0, 1]",
                "split": "perm = np.random.default_rng(0).permutation(1797); test = perm[-360:], train = perm[:-360]",
                "helper": "_common.load_digits_split()",
            },
        )
        models = manifest.setdefault("models", {})
        models[name] = entry
        manifest["models"] = dict(sorted(models.items()))
        MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
        fcntl.flock(lock, fcntl.LOCK_UN)
    print(f"{name}: acc={acc:.4f} size={size} ops={dict(ops)}")
    return entry
