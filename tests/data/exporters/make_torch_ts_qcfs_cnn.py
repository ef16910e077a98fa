"""torch_ts_qcfs_cnn: small QCFS CNN (L=4, learnable per-layer lambda), TorchScript exporter, opset 17.

Run from the repo root in a venv with torch, onnx, onnxruntime, scikit-learn:
    python tests/data/exporters/make_torch_ts_qcfs_cnn.py
"""

import _common
import _torch_common as tc
import torch

NAME = "torch_ts_qcfs_cnn"


def build_and_train():
    tc.setup()
    model = tc.SmallCNN("qcfs")
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
        has_residual_add=False,
        source_has_batchnorm=True,
        source_has_maxpool=False,
        framework_accuracy=acc,
        note="conv(1->8)-BN-QCFS, AvgPool2d(2), conv(8->16)-BN-QCFS, flatten, linear(256->64)-QCFS, "
        "linear(64->10). QCFS spelled x/up -> floor(x*4+0.5)/4 -> clamp(0,1) -> *up. "
        "Same weights as torch_dynamo_qcfs_cnn (deterministic training).",
        graph=(
            "BatchNorm is folded into the Convs by the TorchScript exporter (no BatchNormalization node; the conv weights become 'onnx::Conv_NN' initializers). Each lambda is a float [1] initializer ('act1.up', ...) used by the first Div and the last Mul of its QCFS; L and the 0.5/0/1 constants are per-layer Constant nodes holding 0-d tensors. QCFS = Div, Mul(4), Add(0.5), Floor, Div(4), Clip(0, 1) with min/max inputs, Mul(up). Flatten(axis=1); Linear = Gemm(transB=1)."
        ),
    )


if __name__ == "__main__":
    main()
