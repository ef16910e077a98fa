"""torch_ts_lstm (UNSUPPORTED, for refusal tests): LSTM over the 8 image rows, TorchScript, opset 17.

Input [N, 8, 8] = (batch, time = row, features = 8 pixels); LSTM(8->32, batch_first), last step -> Linear(32->10).
Run from the repo root in a venv with torch, onnx, onnxruntime, scikit-learn:
    python tests/data/exporters/make_torch_ts_lstm.py
"""

import _common
import _torch_common as tc
import torch

NAME = "torch_ts_lstm"


def main():
    tc.setup()
    model = tc.LSTMClassifier(32)
    acc = tc.train(model, "NTC", epochs=60, lr=1e-2)
    proto = tc.export_torchscript(model, tc.example_input("NTC"), opset=17)
    _common.finalize(
        proto,
        NAME,
        layout="NTC",
        exporter="torch.onnx.export(dynamo=False) (TorchScript)",
        exporter_version=torch.__version__.split("+")[0],
        framework="torch",
        framework_version=torch.__version__.split("+")[0],
        output="logits",
        output_kind="logits",
        heads_after_last_linear=[],
        activation="lstm (sigmoid/tanh gates inside the ONNX LSTM op)",
        n_activation_layers=0,
        has_residual_add=False,
        source_has_batchnorm=False,
        source_has_maxpool=False,
        supported=False,
        framework_accuracy=acc,
        note="UNSUPPORTED fixture: recurrent ONNX LSTM op. Input layout NTC [N, 8, 8] "
        "(rows as time steps, x = images/16 unchanged, no channel axis).",
        graph=(
            "Shape/Gather/Unsqueeze/Concat/ConstantOfShape build zero h0/c0 of shape [1, N, 32]; Transpose(1,0,2) -> LSTM(hidden_size=32) -> Squeeze -> Transpose -> Gather(index -1, axis 1) -> Gemm."
        ),
    )


if __name__ == "__main__":
    main()
