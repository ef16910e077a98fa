"""torch_ts_relu6_cnn: ReLU6 CNN (nn.ReLU6 == hardtanh(0, 6)), TorchScript exporter, opset 17.

conv(1->8)-BN-ReLU6, AvgPool2d(2), conv(8->16)-ReLU6, flatten, linear(256->64)-ReLU6, linear(64->10).
Run from the repo root in a venv with torch, onnx, onnxruntime, scikit-learn:
    python tests/data/exporters/make_torch_ts_relu6_cnn.py
"""

import _common
import _torch_common as tc
import torch

NAME = "torch_ts_relu6_cnn"


def main():
    tc.setup()
    model = tc.SmallCNN("relu6", bn2=False, pool="avg")
    acc = tc.train(model, "NCHW")
    proto = tc.export_torchscript(model, tc.example_input("NCHW"), opset=17)
    _common.finalize(
        proto,
        NAME,
        layout="NCHW",
        exporter="torch.onnx.export(dynamo=False) (TorchScript)",
        exporter_version=torch.__version__.split("+")[0],
        framework="torch",
        framework_version=torch.__version__.split("+")[0],
        output="logits",
        output_kind="logits",
        heads_after_last_linear=[],
        activation="relu6/clip(0,6)",
        n_activation_layers=tc.n_act(model),
        has_residual_add=False,
        source_has_batchnorm=True,
        source_has_maxpool=False,
        framework_accuracy=acc,
        note="Same architecture as torch_ts_relu_cnn with nn.ReLU6; exported as Clip(min=0, max=6) "
        "with min/max as constant inputs (opset >= 11).",
        graph=("Clip(x, min, max) with 0-d Constant nodes 0 and 6 as inputs (not attributes); BN folded."),
    )


if __name__ == "__main__":
    main()
