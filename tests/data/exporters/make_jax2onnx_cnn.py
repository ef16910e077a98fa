"""jax2onnx_cnn: Flax NNX CNN on NHWC [N, 8, 8, 1] input, converted with jax2onnx (opset 17).

nnx.Conv(1->8, SAME)-relu, nnx.avg_pool 2x2/2, nnx.Conv(8->16, SAME)-relu, reshape(B, -1),
nnx.Linear(256->64)-relu, nnx.Linear(64->10).
Run from the repo root in a venv with jax, flax, optax, jax2onnx, onnx, onnxruntime, scikit-learn:
    python tests/data/exporters/make_jax2onnx_cnn.py
"""

from importlib.metadata import version

import _common
import _jax_common as jc  # sets JAX_PLATFORMS=cpu before jax is imported
from flax import nnx
from jax2onnx import to_onnx

NAME = "jax2onnx_cnn"


def main():
    model = jc.CNN(rngs=nnx.Rngs(0))
    acc = jc.train(model, "NHWC")
    proto = to_onnx(model, [("B", 8, 8, 1)], model_name=NAME, opset=17, input_names=["input"], output_names=["logits"])
    v = jc.versions()
    _common.finalize(
        proto,
        NAME,
        layout="NHWC",
        exporter='jax2onnx.to_onnx(model, [("B", 8, 8, 1)], opset=17)',
        exporter_version=version("jax2onnx"),
        framework="flax.nnx (jax)",
        framework_version=f"flax {v['flax']}, jax {v['jax']}",
        output="logits",
        output_kind="logits",
        heads_after_last_linear=[],
        activation="relu",
        n_activation_layers=3,
        has_residual_add=False,
        source_has_batchnorm=False,
        source_has_maxpool=False,
        framework_accuracy=acc,
        note="Flax NNX CNN on NHWC [B,8,8,1]; jax2onnx wraps the NCHW ONNX Conv/AveragePool in Transposes; "
        "flatten is x.reshape(B, -1) in NHWC order.",
        graph=(
            "Transpose(0,3,1,2) -> Conv -> Relu -> AveragePool(auto_pad=VALID) -> Conv -> Transpose(0,2,3,1) -> Relu (the Relu sits after the Transpose) -> run-time flatten shape (Shape -> Gather[0] -> Squeeze -> Unsqueeze -> Concat(., [256]) -> Reshape) -> Gemm(transB=0) -> Relu -> Gemm. value_info is filled in."
        ),
    )


if __name__ == "__main__":
    main()
