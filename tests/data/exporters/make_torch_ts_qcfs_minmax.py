"""torch_ts_qcfs_minmax: QCFS CNN whose QCFS is spelled with minimum/maximum and reciprocal muls.

Pattern-robustness fixture: same function as QCFS, different ONNX ops/op order:
    x * (1/up) -> floor(x*L + 0.5) * (1/L) -> minimum(maximum(x, 0), 1) -> up * x
Run from the repo root in a venv with torch, onnx, onnxruntime, scikit-learn:
    python tests/data/exporters/make_torch_ts_qcfs_minmax.py
"""

import _common
import _torch_common as tc
import torch

NAME = "torch_ts_qcfs_minmax"


def main():
    tc.setup()
    model = tc.SmallCNN("qcfs_minmax")
    acc = tc.train(model, "NCHW", up_lr=0.05)
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
        qcfs={
            **tc.qcfs_info(model),
            "spelling": "x * (1/up) -> floor(x*L + 0.5) * (1/L) -> minimum(maximum(x, 0), 1) -> up * x",
        },
        n_activation_layers=tc.n_act(model),
        has_residual_add=False,
        source_has_batchnorm=True,
        source_has_maxpool=False,
        framework_accuracy=acc,
        note="Same architecture as torch_ts_qcfs_cnn (trained separately, so different weights/lambdas); "
        "QCFS written with torch.minimum/torch.maximum against scalar tensors, reciprocal multiplies "
        "instead of divisions, and up * x with up as the first operand.",
        graph=(
            "Per QCFS: Reciprocal(up) -> Mul(., 1.0) -> Mul(x, .) -> Mul(4) -> Add(0.5) -> Floor -> Mul(0.25) -> Max(., 0) -> Min(., 1) -> Mul(up, .) (up is the first operand). The Reciprocal of the up initializer is not constant-folded. BN folded into the Convs."
        ),
    )


if __name__ == "__main__":
    main()
