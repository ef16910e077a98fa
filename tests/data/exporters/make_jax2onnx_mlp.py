"""jax2onnx_mlp: Flax NNX MLP 64-64-relu-10 on flat [N, 64] input, converted with jax2onnx (opset 17).

Run from the repo root in a venv with jax, flax, optax, jax2onnx, onnx, onnxruntime, scikit-learn:
    python tests/data/exporters/make_jax2onnx_mlp.py
"""

from importlib.metadata import version

import _common
import _jax_common as jc  # sets JAX_PLATFORMS=cpu before jax is imported
from flax import nnx
from jax2onnx import to_onnx

NAME = "jax2onnx_mlp"


def main():
    model = jc.MLP(rngs=nnx.Rngs(0))
    acc = jc.train(model, "flat")
    proto = to_onnx(model, [("B", 64)], model_name=NAME, opset=17, input_names=["input"], output_names=["logits"])
    v = jc.versions()
    _common.finalize(
        proto,
        NAME,
        layout="flat",
        exporter='jax2onnx.to_onnx(model, [("B", 64)], opset=17)',
        exporter_version=version("jax2onnx"),
        framework="flax.nnx (jax)",
        framework_version=f"flax {v['flax']}, jax {v['jax']}",
        output="logits",
        output_kind="logits",
        heads_after_last_linear=[],
        activation="relu",
        n_activation_layers=1,
        has_residual_add=False,
        source_has_batchnorm=False,
        source_has_maxpool=False,
        framework_accuracy=acc,
        note="nnx.Linear(64,64)-nnx.relu-nnx.Linear(64,10) on flat [B, 64]; symbolic batch dim 'B'.",
        graph=("Gemm(transB=0, weights [in, out]) -> Relu -> Gemm."),
    )


if __name__ == "__main__":
    main()
