"""torch_ts_sigmoid_mlp (UNSUPPORTED, for refusal tests): Linear(64->64)-Sigmoid-Linear(64->10), TorchScript.

Flat input [N, 64]. Run from the repo root in a venv with torch, onnx, onnxruntime, scikit-learn:
    python tests/data/exporters/make_torch_ts_sigmoid_mlp.py
"""

import _common
import _torch_common as tc
import torch

NAME = "torch_ts_sigmoid_mlp"


def main():
    tc.setup()
    model = tc.SigmoidMLP()
    acc = tc.train(model, "flat", epochs=60, lr=1e-2)
    proto = tc.export_torchscript(model, tc.example_input("flat"), opset=17)
    _common.finalize(
        proto,
        NAME,
        layout="flat",
        exporter="torch.onnx.export(dynamo=False) (TorchScript)",
        exporter_version=torch.__version__.split("+")[0],
        framework="torch",
        framework_version=torch.__version__.split("+")[0],
        output="logits",
        output_kind="logits",
        heads_after_last_linear=[],
        activation="sigmoid",
        n_activation_layers=1,
        has_residual_add=False,
        source_has_batchnorm=False,
        source_has_maxpool=False,
        supported=False,
        framework_accuracy=acc,
        note="UNSUPPORTED fixture: the only hidden activation is Sigmoid (not ReLU-like).",
        graph=("Gemm -> Sigmoid -> Gemm."),
    )


if __name__ == "__main__":
    main()
