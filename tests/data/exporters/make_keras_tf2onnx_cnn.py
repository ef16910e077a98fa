"""keras_tf2onnx_cnn: Keras 3 (TF backend) Sequential CNN, NHWC input, converted with tf2onnx (opset 17).

Conv2D(8, relu)-AveragePooling2D(2)-Conv2D(16, relu)-Flatten-Dense(64, relu)-Dense(10, softmax).
Run from the repo root in a venv with tensorflow-cpu, keras, tf2onnx, onnx, onnxruntime, scikit-learn:
    python tests/data/exporters/make_keras_tf2onnx_cnn.py
"""

import _common
import _keras_common as kc  # sets KERAS_BACKEND etc. before keras is imported
import tensorflow as tf
import tf2onnx

NAME = "keras_tf2onnx_cnn"


def convert(model):
    """tf2onnx.convert.from_keras; on Keras 3 that raises KeyError('keras_tensor_N'), so fall back
    to tf2onnx.convert.from_function on a tf.function wrapping model(x, training=False).

    Returns (proto, exporter_description).
    """
    spec = (tf.TensorSpec((None, 8, 8, 1), tf.float32, name="input"),)
    try:
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
        return proto, "tf2onnx.convert.from_keras"
    except KeyError as e:
        err = f"{type(e).__name__}: {e}"

    @tf.function(input_signature=spec)
    def forward(x):
        return {"probs": model(x, training=False)}

    proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=17)
    return proto, (
        f"tf2onnx.convert.from_function (tf.function around model(x, training=False)); "
        f"tf2onnx.convert.from_keras failed on Keras 3 with {err}"
    )


def main():
    kc.setup()
    model = kc.cnn(bn=False, pool="avg")
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
        source_has_batchnorm=False,
        source_has_maxpool=False,
        framework_accuracy=acc,
        note="Keras Sequential on NHWC [N,8,8,1]; tf2onnx inserts Transposes around the NCHW ONNX Conv; "
        "Dense = MatMul + Add; the last Dense has softmax (probabilities out).",
        graph=(
            "Because C=1 the NHWC->NCHW input Transpose is a Reshape(input, [-1, 1, 8, 8]); one Transpose(0,2,3,1) back to NHWC before the flatten, whose target shape is computed at run time (Shape -> Gather(perm 0,2,3,1) -> Cast -> Slice[0:1] -> Concat(., [256]) -> Cast -> Reshape). Dense = MatMul + Add (weights [in, out]). Batch dim_param is tf2onnx's 'unk__NN'. Opset import also lists ai.onnx.ml although no ml op is used."
        ),
    )


if __name__ == "__main__":
    main()
