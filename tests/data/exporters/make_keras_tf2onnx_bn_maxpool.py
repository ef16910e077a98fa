"""keras_tf2onnx_bn_maxpool: Keras CNN with BatchNormalization and MaxPooling2D, NHWC, tf2onnx (opset 17).

Conv2D(8)-BN-ReLU-MaxPooling2D(2)-Conv2D(16)-BN-ReLU-Flatten-Dense(64, relu)-Dense(10, softmax).
Run from the repo root in a venv with tensorflow-cpu, keras, tf2onnx, onnx, onnxruntime, scikit-learn:
    python tests/data/exporters/make_keras_tf2onnx_bn_maxpool.py
"""

import _common
import _keras_common as kc  # sets KERAS_BACKEND etc. before keras is imported
import tf2onnx
from make_keras_tf2onnx_cnn import convert

NAME = "keras_tf2onnx_bn_maxpool"


def main():
    kc.setup()
    model = kc.cnn(bn=True, pool="max", name="digits_cnn_bn_maxpool")
    acc = kc.train(model)
    proto, how = convert(model)
    v = kc.versions()
    _common.finalize(
        proto,
        NAME,
        layout="NHWC",
        exporter=how,
        exporter_version=tf2onnx.__version__,
        framework="keras (tensorflow backend)",
        framework_version=f"keras {v['keras']}, tensorflow {v['tensorflow']}",
        output=proto.graph.output[0].name,
        output_kind="probabilities",
        heads_after_last_linear=["Softmax"],
        activation="relu",
        n_activation_layers=3,
        has_residual_add=False,
        source_has_batchnorm=True,
        source_has_maxpool=True,
        framework_accuracy=acc,
        note="Keras Sequential on NHWC [N,8,8,1] with BatchNormalization after each Conv2D (conv without "
        "activation, BN, then keras.layers.ReLU) and MaxPooling2D; last Dense has softmax.",
        graph=(
            "BatchNormalization is NOT an ONNX BatchNormalization node: tf2onnx writes it as Mul by a [1, C, 1, 1] scale then Add of a [1, C, 1, 1] shift after the Conv. Input C=1 Transpose is a Reshape; Transpose(0,2,3,1) + run-time flatten shape as in keras_tf2onnx_cnn; Dense = MatMul + Add."
        ),
    )


if __name__ == "__main__":
    main()
