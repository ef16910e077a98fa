"""skl2onnx_mlp_nozipmap: same MLPClassifier as skl2onnx_mlp, converted with options={id(clf): {"zipmap": False}}.

Outputs: 'label' (int64 [N]) and 'probabilities' (float [N, 10]) -- note: without ZipMap skl2onnx
also renames the outputs (with ZipMap they are 'output_label' / 'output_probability').
Run from the repo root in a venv with scikit-learn, skl2onnx, onnx, onnxruntime:
    python tests/data/exporters/make_skl2onnx_mlp_nozipmap.py
"""

import _common
import _skl_common as sc
import numpy as np
from skl2onnx import to_onnx

NAME = "skl2onnx_mlp_nozipmap"


def main():
    clf, x_tr, acc = sc.train()
    proto = to_onnx(clf, x_tr[:1].astype(np.float32), target_opset=17, options={id(clf): {"zipmap": False}})
    v = sc.versions()
    label, prob = (o.name for o in proto.graph.output)
    _common.finalize(
        proto,
        NAME,
        layout="flat",
        exporter='skl2onnx.to_onnx(clf, X[:1], target_opset=17, options={id(clf): {"zipmap": False}})',
        exporter_version=v["skl2onnx"],
        framework="scikit-learn",
        framework_version=v["sklearn"],
        output=prob,
        output_kind="probabilities",
        heads_after_last_linear=[
            "Softmax -> probabilities",
            f"ArgMax -> ArrayFeatureExtractor(classes) -> '{label}'",
        ],
        activation="relu",
        n_activation_layers=2,
        has_residual_add=False,
        source_has_batchnorm=False,
        source_has_maxpool=False,
        framework_accuracy=acc,
        note="Same trained MLPClassifier as skl2onnx_mlp (deterministic), ZipMap disabled: the probabilities "
        "are a float tensor [N,10]; the label output is still there. Output names differ from the "
        "ZipMap variant ('label'/'probabilities' instead of 'output_label'/'output_probability').",
        graph=(
            "As skl2onnx_mlp but Softmax -> Identity -> 'probabilities' (float [N, 10]); the label branch hangs off 'probabilities'."
        ),
        extra={"label_output": label, "accuracy_output_label": sc.label_accuracy(proto, label)},
    )


if __name__ == "__main__":
    main()
