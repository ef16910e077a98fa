"""keras3_export_cnn: Keras 3 CNN exported with Keras' own model.export(path, format="onnx").

Backend: TensorFlow (KERAS_BACKEND=tensorflow), under which Keras 3 calls
tf2onnx.convert.from_function on a traced tf.function (keras/src/export/onnx.py).
Opset left at the exporter's default. NHWC input [N, 8, 8, 1].
Run from the repo root in a venv with tensorflow-cpu, keras, tf2onnx, onnx, onnxruntime, scikit-learn:
    python tests/data/exporters/make_keras3_export_cnn.py
"""

import tempfile
from pathlib import Path

import _common
import _keras_common as kc  # sets KERAS_BACKEND etc. before keras is imported
import keras
import onnx
import tf2onnx

NAME = "keras3_export_cnn"


def main():
    kc.setup()
    model = kc.cnn(bn=False, pool="avg", name="keras3_export_cnn")
    acc = kc.train(model)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "model.onnx"
        model.export(str(path), format="onnx", verbose=False)
        proto = onnx.load(str(path))
    v = kc.versions()
    _common.finalize(
        proto,
        NAME,
        layout="NHWC",
        exporter=f'keras Model.export(format="onnx"), backend {keras.backend.backend()} '
        f"-> tf2onnx.convert.from_function (default opset)",
        exporter_version=f"keras {v['keras']}, tf2onnx {tf2onnx.__version__}",
        framework="keras (tensorflow backend)",
        framework_version=f"keras {v['keras']}, tensorflow {v['tensorflow']}",
        output=proto.graph.output[0].name,
        output_kind="probabilities",
        heads_after_last_linear=["Softmax"],
        activation="relu",
        n_activation_layers=3,
        has_residual_add=False,
        source_has_batchnorm=False,
        source_has_maxpool=False,
        framework_accuracy=acc,
        note="Same architecture as keras_tf2onnx_cnn (Conv2D(8,relu)-AvgPool-Conv2D(16,relu)-Flatten-"
        "Dense(64,relu)-Dense(10,softmax)), trained separately with the same seed (so the weights equal "
        "keras_tf2onnx_cnn's), exported by Keras 3 itself; the output is named 'Identity:0' and the "
        "default tf2onnx opset (15) is used.",
        graph=(
            "Same structure as keras_tf2onnx_cnn (Reshape in, Transpose + run-time-shape Reshape for flatten, MatMul + Add, Softmax) but opset 15 and output name 'Identity:0'."
        ),
    )


if __name__ == "__main__":
    main()
