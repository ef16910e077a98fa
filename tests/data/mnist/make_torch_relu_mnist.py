"""A plain-ReLU CNN trained on the built-in MNIST 5k train split, exported with torch.onnx (TorchScript).

Run from the repository root: python tests/data/mnist/make_torch_relu_mnist.py
Writes tests/data/mnist/torch_relu_mnist.onnx with the MNIST preprocessing in its metadata.
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
import torch
import torch.nn as nn

from srp_onnx.data import METADATA_KEY, PRESETS, open_dataset

OUT = Path(__file__).with_name("torch_relu_mnist.onnx")


def main() -> None:
    torch.manual_seed(0)
    pre = PRESETS["mnist"]
    train = list(open_dataset("mnist", split="train", preprocessing=pre).batches(4000))[0]
    test = list(open_dataset("mnist", split="test", preprocessing=pre).batches(1000))[0]
    x, y = torch.from_numpy(train[0]), torch.from_numpy(train[1])
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    epochs = 12
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            xb = torch.roll(x[idx], shifts=(int(torch.randint(-2, 3, ())), int(torch.randint(-2, 3, ()))), dims=(2, 3))
            loss = nn.functional.cross_entropy(net(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    net.eval()
    with torch.no_grad():
        acc = (net(torch.from_numpy(test[0])).argmax(1).numpy() == test[1]).mean()
    print(f"test accuracy {acc:.4f}", file=sys.stderr)
    torch.onnx.export(net, (torch.zeros(1, 1, 28, 28),), str(OUT), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "batch"}})
    m = onnx.load(str(OUT))
    m.ir_version = 10
    m.metadata_props.add(key=METADATA_KEY, value=pre.to_json())
    m.metadata_props.add(key="srp_onnx.ann_accuracy", value=f"{100 * acc:.2f}")
    onnx.save(m, str(OUT))


if __name__ == "__main__":
    main()
