"""Small VGG- and ResNet-style QCFS networks for the parity tests (torch, test-only).

``dyadic=True`` draws every weight, bias, BN parameter and threshold from
short binary fractions (and sets BN eps = 0, var = 1), so that every sum the
ANN and the SNN compute is exact in float32 whatever the summation order:
onnxruntime and the numpy reference must then agree bit for bit, and spike
counts can be compared exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn


class QCFS(nn.Module):
    """The paper's activation: up * clip(floor(x / up * L + 0.5) / L, 0, 1)."""

    def __init__(self, up: float = 8.0, L: int = 4):
        super().__init__()
        self.up = nn.Parameter(torch.tensor([up]))
        self.t = L

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x / self.up
        x = torch.floor(x * self.t + 0.5) / self.t
        x = torch.clamp(x, 0, 1)
        return x * self.up


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c)


class VGGish(nn.Module):
    """conv-BN-QCFS x2, avgpool, conv-BN-QCFS x2, avgpool, flatten, linear-QCFS, linear."""

    def __init__(self, in_ch: int = 3, size: int = 8, classes: int = 10, ch: int = 8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_ch, ch, 3, padding=1), _bn(ch), QCFS(),
            nn.Conv2d(ch, ch, 3, padding=1), _bn(ch), QCFS(), nn.AvgPool2d(2),
            nn.Conv2d(ch, 2 * ch, 3, padding=1), _bn(2 * ch), QCFS(),
            nn.Conv2d(2 * ch, 2 * ch, 3, padding=1), _bn(2 * ch), QCFS(), nn.AvgPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(2 * ch * (size // 4) ** 2, 32), QCFS(),
                                        nn.Linear(32, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.residual_function = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), _bn(cout), QCFS(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), _bn(cout))
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _bn(cout))
        self.act = QCFS()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.residual_function(x) + self.shortcut(x))


class ResNetish(nn.Module):
    """Stem, an identity-shortcut block, a 1x1-conv-shortcut block (stride 2), GAP, linear."""

    def __init__(self, in_ch: int = 3, classes: int = 10, ch: int = 8):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_ch, ch, 3, 1, 1, bias=False), _bn(ch), QCFS())
        self.conv2_x = BasicBlock(ch, ch, 1)
        self.conv3_x = BasicBlock(ch, 2 * ch, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * ch, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3_x(self.conv2_x(self.conv1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def dyadic_(model: nn.Module, seed: int, bits: int = 4) -> nn.Module:
    """Overwrite every parameter with exact binary fractions (see module docstring)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                scale = 2.0 ** -max(0, int(np.ceil(np.log2(np.sqrt(fan_in)))) - 1)
                w = torch.randint(-2 ** bits, 2 ** bits + 1, m.weight.shape, generator=g) / 2 ** bits
                m.weight.copy_(w * scale)
                if m.bias is not None:
                    m.bias.copy_(torch.randint(-4, 5, m.bias.shape, generator=g) / 16)
            elif isinstance(m, nn.BatchNorm2d):
                m.eps = 0.0
                m.running_var.fill_(1.0)
                m.running_mean.copy_(torch.randint(-4, 5, m.running_mean.shape, generator=g) / 16)
                m.weight.copy_(torch.randint(2, 7, m.weight.shape, generator=g) / 4)
                m.bias.copy_(torch.randint(-4, 5, m.bias.shape, generator=g) / 16)
            elif isinstance(m, QCFS):
                m.up.fill_(float(2.0 ** int(torch.randint(-1, 2, (1,), generator=g))))
    return model.eval()


def export(model: nn.Module, path: Path, shape: tuple[int, ...], *, dynamo: bool = False) -> Path:
    x = torch.zeros(2, *shape)
    model.eval()
    if dynamo:
        prog = torch.onnx.export(model, (x,), dynamo=True, input_names=["input"], output_names=["logits"],
                                 dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, verbose=False)
        prog.save(str(path))
    else:
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    m = onnx.load(str(path))
    m.ir_version = min(m.ir_version, 10)
    onnx.save(m, str(path))
    return path


def dyadic_input(shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.integers(-16, 17, size=shape) / 8).astype(np.float32)


def thetas(model: nn.Module) -> list[float]:
    return [float(m.up.detach()[0]) for m in model.modules() if isinstance(m, QCFS)]


def dyadic_net(kind: str, seed: int, folder: Path, shape: tuple[int, ...]) -> Path:
    """A dyadic 'vgg' (VGGish) or 'resnet' (ResNetish) net exported to ``folder/m.onnx`` (the parity fixtures)."""
    torch.manual_seed(0)
    model = VGGish() if kind == "vgg" else ResNetish()
    dyadic_(model, seed=seed)
    return export(model, folder / "m.onnx", shape)
