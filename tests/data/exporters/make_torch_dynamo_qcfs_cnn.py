"""torch_dynamo_qcfs_cnn: the torch_ts_qcfs_cnn model (same weights), exported with dynamo=True, opset 18.

Run from the repo root in a venv with torch, onnxscript, onnx, onnxruntime, scikit-learn:
    python tests/data/exporters/make_torch_dynamo_qcfs_cnn.py
"""

import _common
import _torch_common as tc
import onnxscript
import torch
from make_torch_ts_qcfs_cnn import build_and_train

NAME = "torch_dynamo_qcfs_cnn"


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
        has_residual_add=False,
        source_has_batchnorm=True,
        source_has_maxpool=False,
        framework_accuracy=acc,
        note="Same architecture and weights as torch_ts_qcfs_cnn, dynamo exporter (opset 18). "
        "QCFS spelled x/up -> floor(x*4+0.5)/4 -> clamp(0,1) -> *up.",
        graph=(
            "BatchNorm is folded into the Convs here too (by the onnxscript optimizer). No Constant nodes: the 0-d constants are initializers shared by all three QCFS (scalar_tensor_default=4, val_10=0.5, div_1_min=0, div_1_max=1); lambdas are the [1] initializers 'act1.up', .... flatten = Reshape(x, [-1, 256], allowzero=1); Linear = Gemm(transB=1); value_info is filled in for every intermediate."
        ),
    )


if __name__ == "__main__":
    main()
