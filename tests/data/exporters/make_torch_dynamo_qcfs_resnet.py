"""torch_dynamo_qcfs_resnet: the torch_ts_qcfs_resnet model (same weights), dynamo=True, opset 18.

Run from the repo root in a venv with torch, onnxscript, onnx, onnxruntime, scikit-learn:
    python tests/data/exporters/make_torch_dynamo_qcfs_resnet.py
"""

import _common
import _torch_common as tc
import onnxscript
import torch
from make_torch_ts_qcfs_resnet import NOTE, build_and_train

NAME = "torch_dynamo_qcfs_resnet"


def main():
    model, acc = build_and_train()
    proto = tc.export_dynamo(model, tc.example_input("NCHW"), opset=18)
    _common.finalize(
        proto,
        NAME,
        layout="NCHW",
        exporter="torch.onnx.export(dynamo=True) (torch.export + onnxscript)",
        exporter_version=f"torch {torch.__version__.split('+')[0]}, onnxscript {onnxscript.__version__}",
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
        note=NOTE + " Same weights as torch_ts_qcfs_resnet, dynamo exporter (opset 18).",
        graph=(
            "BatchNorm folded into all 6 Convs. 7 Add nodes (5 QCFS +0.5, 2 residual). Global pool = ReduceMean(axes=[-1, -2] as input, keepdims=1) + Reshape([-1, 32]). Shared 0-d constant initializers."
        ),
    )


if __name__ == "__main__":
    main()
