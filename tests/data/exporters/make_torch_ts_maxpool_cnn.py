"""torch_ts_maxpool_cnn: ReLU CNN with MaxPool2d(2), TorchScript exporter, opset 17.

conv(1->8)-BN-ReLU, MaxPool2d(2), conv(8->16)-ReLU, flatten, linear(256->64)-ReLU, linear(64->10).
Run from the repo root in a venv with torch, onnx, onnxruntime, scikit-learn:
    python tests/data/exporters/make_torch_ts_maxpool_cnn.py
"""

import _common
import _torch_common as tc
import torch

NAME = "torch_ts_maxpool_cnn"


def main():
    tc.setup()
    model = tc.SmallCNN("relu", bn2=False, pool="max")
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
        activation="relu",
        n_activation_layers=tc.n_act(model),
        has_residual_add=False,
        source_has_batchnorm=True,
        source_has_maxpool=True,
        framework_accuracy=acc,
        note="As torch_ts_relu_cnn but MaxPool2d(2) instead of AvgPool2d(2); the MaxPool follows a ReLU.",
        graph=("MaxPool(kernel 2, stride 2) between Relu and the second Conv; BN folded."),
    )


if __name__ == "__main__":
    main()
