"""sklearn MLPClassifier training + skl2onnx conversion for make_skl2onnx_*.py."""

from __future__ import annotations

import warnings

import _common
import numpy as np
import onnxruntime as ort
import skl2onnx
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits


def train() -> tuple[MLPClassifier, np.ndarray, float]:
    _common.seed_everything(0)
    x_tr, y_tr, x_te, y_te = _common.load_digits_split()
    x_tr, x_te = _common.to_layout(x_tr, "flat"), _common.to_layout(x_te, "flat")
    clf = MLPClassifier(hidden_layer_sizes=(64, 32), activation="relu", random_state=0)
    with warnings.catch_warnings(), threadpool_limits(limits=1):  # 1 BLAS thread: reproducible weights
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_tr, y_tr)
    return clf, x_tr, float((clf.predict(x_te) == y_te).mean())


def label_accuracy(proto, label_output: str) -> float:
    """Top-1 accuracy of the label output (cross-check of the probabilities output)."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(proto)
    m.ir_version = _common.IR_VERSION
    _, _, x_te, y_te = _common.load_digits_split()
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    label = sess.run([label_output], {m.graph.input[0].name: _common.to_layout(x_te, "flat")})[0]
    return float((np.asarray(label) == y_te).mean())


def versions() -> dict[str, str]:
    return {"skl2onnx": skl2onnx.__version__, "sklearn": sklearn.__version__}
