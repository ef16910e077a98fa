"""skl2onnx_mlp: sklearn MLPClassifier((64, 32), relu), skl2onnx.to_onnx with default options (ZipMap).

Outputs: 'output_label' (int64 [N]) and 'output_probability' (sequence<map<int64, float>>, from ZipMap).
Run from the repo root in a venv with scikit-learn, skl2onnx, onnx, onnxruntime:
    python tests/data/exporters/make_skl2onnx_mlp.py
"""

import _common
import _skl_common as sc
import numpy as np
from skl2onnx import to_onnx

NAME = "skl2onnx_mlp"


def main():
    clf, x_tr, acc = sc.train()
    proto = to_onnx(clf, x_tr[:1].astype(np.float32), target_opset=17)
    v = sc.versions()
    _common.finalize(
        proto,
        NAME,
        layout="flat",
        exporter="skl2onnx.to_onnx(clf, X[:1], target_opset=17) (default options)",
        exporter_version=v["skl2onnx"],
        framework="scikit-learn",
        framework_version=v["sklearn"],
        output="output_probability",
        output_kind="probabilities (ZipMap: sequence<map<int64,float>>)",
        heads_after_last_linear=[
            "Softmax",
            "ArgMax -> ArrayFeatureExtractor(classes) -> 'output_label'",
            "ZipMap -> 'output_probability'",
        ],
        activation="relu",
        n_activation_layers=2,
        has_residual_add=False,
        source_has_batchnorm=False,
        source_has_maxpool=False,
        framework_accuracy=acc,
        note="MLPClassifier(hidden_layer_sizes=(64, 32), activation='relu', random_state=0), max_iter=200 "
        "(default; a ConvergenceWarning, if any, is ignored). Flat [N,64] input named by skl2onnx. "
        "Heads after the last linear layer: Softmax, then the label via ArgMax and the probabilities "
        "via ZipMap (ai.onnx.ml domain); the ZipMap output is a non-tensor.",
        graph=(
            "Input 'X' has an unnamed batch dim (neither dim_value nor dim_param). Cast(X to float) first; Linear = MatMul + Add; Softmax; ArgMax -> ArrayFeatureExtractor(classes) -> Reshape -> Cast -> Cast -> 'output_label'; ZipMap(classlabels_int64s 0..9) -> 'output_probability'."
        ),
        extra={
            "label_output": "output_label",
            "accuracy_output_label": sc.label_accuracy(proto, "output_label"),
        },
    )


if __name__ == "__main__":
    main()
