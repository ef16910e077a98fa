"""torch_dynamo_relu6_cnn_b1: the torch_ts_relu6_cnn model (same weights), exported with dynamo=True and
no dynamic_shapes, torch's default: the batch is fixed at 1, in the input and in the flatten's Reshape target.

Run from the repo root in a venv with torch, onnxscript, onnx, onnxruntime, scikit-learn:
    python tests/data/exporters/make_torch_dynamo_relu6_cnn_b1.py
"""

import _common
import _torch_common as tc
import onnxscript
import torch

NAME = "torch_dynamo_relu6_cnn_b1"


def main():
    tc.setup()
    model = tc.SmallCNN("relu6", bn2=False, pool="avg")
    acc = tc.train(model, "NCHW")
    model.eval()
    prog = torch.onnx.export(model, (tc.example_input("NCHW", n=1),), dynamo=True, opset_version=18,
                             input_names=["input"], output_names=["logits"], external_data=False)
    _common.finalize(
        prog.model_proto,
        NAME,
        layout="NCHW",
        exporter="torch.onnx.export(dynamo=True), no dynamic_shapes (batch fixed at 1)",
        exporter_version=f"torch {torch.__version__.split('+')[0]}, onnxscript {onnxscript.__version__}",
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
        fixed_batch=True,
        note="Same architecture and weights as torch_ts_relu6_cnn, dynamo exporter with its default static "
        "shapes: what a user gets from torch.onnx.export(model, (x,), dynamo=True) with a single example.",
        graph="Input [1, 1, 8, 8]; flatten = Reshape(x, [1, 256], allowzero=1): the batch is a constant there too.",
    )


if __name__ == "__main__":
    main()
