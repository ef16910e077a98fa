"""torch_ts_qcfs_resnet: tiny QCFS ResNet (identity + conv1x1-BN/stride-2 shortcuts), TorchScript, opset 17.

Run from the repo root in a venv with torch, onnx, onnxruntime, scikit-learn:
    python tests/data/exporters/make_torch_ts_qcfs_resnet.py
"""

import _common
import _torch_common as tc
import torch

NAME = "torch_ts_qcfs_resnet"
NOTE = (
    "stem conv(1->16)-BN-QCFS; BasicBlock(16->16, identity shortcut): conv-BN-QCFS-conv-BN, +x, QCFS; "
    "BasicBlock(16->32, stride 2): conv-BN-QCFS-conv-BN, + conv1x1(s2)-BN(x), QCFS; "
    "AdaptiveAvgPool2d(1), flatten, linear(32->10). Convs have no bias (BN does). "
    "2 residual Adds; the QCFS after each Add is a neuron site fed by the sum."
)


def build_and_train():
    tc.setup()
    model = tc.TinyResNet("qcfs")
    acc = tc.train(model, "NCHW", up_lr=0.05)
    return model, acc


def main():
    model, acc = build_and_train()
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
        activation="qcfs",
        qcfs=tc.qcfs_info(model),
        n_activation_layers=tc.n_act(model),
        has_residual_add=True,
        source_has_batchnorm=True,
        source_has_maxpool=False,
        framework_accuracy=acc,
        note=NOTE + " Same weights as torch_dynamo_qcfs_resnet.",
        graph=(
            "BatchNorm folded into all 6 Convs (bias-free convs gain a bias). 7 Add nodes: 5 are QCFS's +0.5, 2 are residual: Add(conv2 out, stem QCFS out) and Add(conv2 out, shortcut conv out); the stem QCFS output feeds both layer1.conv1 and the identity Add, layer1's output feeds both layer2.conv1 and the shortcut Conv. Global pool = GlobalAveragePool + Flatten."
        ),
    )


if __name__ == "__main__":
    main()
