#!/usr/bin/env bash
# Regenerate every fixture in this folder (and manifest.json). Run from the repository root:
#   TORCH_PY=/path/to/venv-torch/bin/python TF_PY=/path/to/venv-tf/bin/python \
#   JAX_PY=/path/to/venv-jax/bin/python bash tests/data/exporters/regenerate.sh
# Each *_PY defaults to `python`; see README.md for the venv contents.
set -euo pipefail
cd "$(dirname "$0")/../../.."
D=tests/data/exporters
TORCH_PY=${TORCH_PY:-python}
TF_PY=${TF_PY:-python}
JAX_PY=${JAX_PY:-python}
for n in torch_ts_qcfs_cnn torch_ts_qcfs_cnn_nofold torch_dynamo_qcfs_cnn torch_dynamo_relu6_cnn_b1 torch_ts_qcfs_resnet torch_dynamo_qcfs_resnet \
         torch_ts_qcfs_minmax torch_ts_relu_cnn torch_ts_relu6_cnn torch_ts_maxpool_cnn \
         torch_ts_lstm torch_ts_sigmoid_mlp skl2onnx_mlp skl2onnx_mlp_nozipmap; do
  "$TORCH_PY" "$D/make_$n.py"
done
for n in keras_tf2onnx_cnn keras_tf2onnx_bn_maxpool keras3_export_cnn; do
  "$TF_PY" "$D/make_$n.py"
done
for n in jax2onnx_mlp jax2onnx_cnn; do
  "$JAX_PY" "$D/make_$n.py"
done
