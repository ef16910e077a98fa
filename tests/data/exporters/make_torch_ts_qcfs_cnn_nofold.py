"""torch_ts_qcfs_cnn_nofold: torch_ts_qcfs_cnn (same weights), TorchScript with do_constant_folding=False.

Without constant folding the exporter keeps real BatchNormalization nodes (with folding it fuses them
into the Convs), so this is the fixture with BatchNormalization in the graph.
Run from the repo root in a venv with torch, onnx, onnxruntime, scikit-learn:
    python tests/data/exporters/make_torch_ts_qcfs_cnn_nofold.py
"""

import _common
import _torch_common as tc
import torch
from make_torch_ts_qcfs_cnn import build_and_train

NAME = "torch_ts_qcfs_cnn_nofold"


def main():
    model, acc = build_and_train()
    proto = tc.export_torchscript(model, tc.example_input("NCHW"), opset=17, do_constant_folding=False)
    _common.finalize(
        proto,
        NAME,
        layout="NCHW",
        exporter="torch.onnx.export(dynamo=False, do_constant_folding=False) (TorchScript)",
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
        note="Same architecture and weights as torch_ts_qcfs_cnn, exported without constant folding.",
        graph=(
            "Conv -> BatchNormalization(epsilon 1e-5, momentum 0.9, training_mode 0; scale/B/mean/var are "
            "initializers 'bn1.weight', ...) -> QCFS for both convs. QCFS as in torch_ts_qcfs_cnn except the "
            "Clip bounds: int64 Constant nodes 0 and 1 each passed through a Cast(to float) per layer (the "
            "int64 1 is a single Constant '/conv1/Constant_output_0' shared by all three QCFS), so the bounds "
            "are constants only after folding Cast."
        ),
    )


if __name__ == "__main__":
    main()
