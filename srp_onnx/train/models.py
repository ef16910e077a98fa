"""QCFS networks: VGG-16, ResNet-18/20/34, a small ResNet-8 and a small CNN.

Every activation is a :class:`~srp_onnx.train.qcfs.QCFS` and every pooling
layer is average pooling, so the exported graph converts to an SNN as is.

Module names follow the SRP paper's public code (github.com/hzc1208/ANN2SNN_SRP,
which builds on the QCFS code, github.com/putshua/SNN_conversion_QCFS) so that
``load_checkpoint`` reads its state_dicts without renaming. That code builds
the nets with ``nn.ReLU`` and ``replace_activation_by_floor`` swaps each one in
place for its ``QCFS`` module (``modules.py``: parameter ``up``, shape ``[1]``;
L is the plain attribute ``t``, so a saved state_dict does not hold L), so the
QCFS modules sit at the index or attribute name of the ReLU they replaced:

VGG-16 (``layer1``..``layer5``: ``[Conv, BN, act, Dropout] * n + pool``)::

    layer1.0.weight  layer1.0.bias          conv 3x3 (with bias)
    layer1.1.weight  layer1.1.bias  layer1.1.running_mean  layer1.1.running_var
    layer1.1.num_batches_tracked             BN
    layer1.2.up                              QCFS (Dropout at 3, next conv at 4)
    ...
    layer5.8.weight ... layer5.10.up         (third conv of stage 5; pool at 12)
    classifier.1.weight  classifier.1.bias   Linear 512*s*s -> 4096 (0 is Flatten)
    classifier.2.up                          QCFS (Dropout at 3)
    classifier.4.weight  classifier.5.up     Linear 4096 -> 4096, QCFS (Dropout at 6)
    classifier.7.weight  classifier.7.bias   Linear 4096 -> classes

ResNet-18/34 (stem 64 ch) and ResNet-20 (stem 16 ch, stages conv2_x..conv4_x; ResNet-8 is
ResNet-20 with one BasicBlock per stage, a residual net small enough to train on a CPU)::

    conv1.0.weight  conv1.1.{weight,bias,running_mean,...}  conv1.2.up
    conv2_x.0.residual_function.0.weight        conv 3x3 (no bias)
    conv2_x.0.residual_function.1.*             BN
    conv2_x.0.residual_function.2.up            QCFS
    conv2_x.0.residual_function.3.weight        conv 3x3
    conv2_x.0.residual_function.4.*             BN
    conv3_x.0.shortcut.0.weight  conv3_x.0.shortcut.1.*   conv1x1 + BN (when the shape changes)
    conv2_x.0.relu.up                           QCFS after the add
    fc.weight  fc.bias

``s`` is ``image_size // 32``: 1 on CIFAR (Linear 512 -> 4096) and 7 on
ImageNet (512*7*7 -> 4096), as in the paper code. The small ``cnn`` has no
paper counterpart (``features.*``, ``classifier.*``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from srp_onnx.errors import UsageError
from srp_onnx.train.qcfs import QCFS

ARCHS: tuple[str, ...] = ("cnn", "vgg16", "resnet8", "resnet18", "resnet20", "resnet34")

_VGG16_STAGES: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512),
                                              (512, 512, 512))


def _init_weights(model: nn.Module) -> None:
    """The paper code's init: Kaiming-normal convs, BN = identity, zero Linear biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


class VGG16(nn.Module):
    """VGG-16 with BN, QCFS and 2x2 average pooling after each of five stages."""

    def __init__(self, num_classes: int, L: int = 4, in_channels: int = 3, image_size: int = 32,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if image_size < 32 or image_size % 32:
            raise UsageError(f"vgg16 needs an input size that is a multiple of 32, got {image_size}; "
                             "use 32 (CIFAR) or 224 (ImageNet), or pick another --arch.")
        channels = in_channels
        stages: list[nn.Sequential] = []
        for widths in _VGG16_STAGES:
            layers: list[nn.Module] = []
            for width in widths:
                layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1), nn.BatchNorm2d(width),
                           QCFS(L), nn.Dropout(dropout)]
                channels = width
            layers.append(nn.AvgPool2d(kernel_size=2, stride=2))
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4, self.layer5 = stages
        side = image_size // 32
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(512 * side * side, 4096), QCFS(L), nn.Dropout(dropout),
            nn.Linear(4096, 4096), QCFS(L), nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.layer5(x)
        return self.classifier(x)


class BasicBlock(nn.Module):
    """conv3x3-BN-act-conv3x3-BN, plus identity or conv1x1-BN shortcut, added, then act."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, L: int) -> None:
        super().__init__()
        self.residual_function = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            QCFS(L),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.relu = QCFS(L)  # the paper code's name for the activation after the add

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.residual_function(x) + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet of BasicBlocks with a conv3x3 stride-1 stem, as in the paper code.

    ``widths`` gives one stage per entry (``conv2_x``, ``conv3_x``, ...); the
    first stage has stride 1, the others stride 2.
    """

    def __init__(self, blocks: tuple[int, ...], widths: tuple[int, ...], num_classes: int, L: int = 4,
                 in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            QCFS(L),
        )
        channels = widths[0]
        for index, (count, width) in enumerate(zip(blocks, widths, strict=True)):
            stage: list[nn.Module] = []
            for block in range(count):
                stride = 2 if index > 0 and block == 0 else 1
                stage.append(BasicBlock(channels, width, stride, L))
                channels = width
            self.add_module(f"conv{index + 2}_x", nn.Sequential(*stage))
        self.num_stages = len(blocks)
        self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for index in range(self.num_stages):
            x = getattr(self, f"conv{index + 2}_x")(x)
        x = self.avg_pool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


class SmallCNN(nn.Module):
    """A small CNN for quick runs: (conv-BN-act-avgpool) x 2, Linear-act-Linear."""

    def __init__(self, num_classes: int, L: int = 4, in_channels: int = 3, image_size: int = 32,
                 width: int = 32, hidden: int = 128) -> None:
        super().__init__()
        if image_size < 4:
            raise UsageError(f"cnn needs inputs of at least 4x4 pixels, got {image_size}.")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            QCFS(L),
            nn.AvgPool2d(kernel_size=2, stride=2),
            nn.Conv2d(width, 2 * width, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            QCFS(L),
            nn.AvgPool2d(kernel_size=2, stride=2),
        )
        side = image_size // 4
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * side * side, hidden),
            QCFS(L),
            nn.Linear(hidden, num_classes),
        )
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _resnet8(num_classes: int, L: int, in_channels: int, image_size: int, dropout: float) -> nn.Module:
    return ResNet((1, 1, 1), (16, 32, 64), num_classes, L, in_channels)


def _resnet18(num_classes: int, L: int, in_channels: int, image_size: int, dropout: float) -> nn.Module:
    return ResNet((2, 2, 2, 2), (64, 128, 256, 512), num_classes, L, in_channels)


def _resnet20(num_classes: int, L: int, in_channels: int, image_size: int, dropout: float) -> nn.Module:
    return ResNet((3, 3, 3), (16, 32, 64), num_classes, L, in_channels)


def _resnet34(num_classes: int, L: int, in_channels: int, image_size: int, dropout: float) -> nn.Module:
    return ResNet((3, 4, 6, 3), (64, 128, 256, 512), num_classes, L, in_channels)


def _vgg16(num_classes: int, L: int, in_channels: int, image_size: int, dropout: float) -> nn.Module:
    return VGG16(num_classes, L, in_channels, image_size, dropout)


def _cnn(num_classes: int, L: int, in_channels: int, image_size: int, dropout: float) -> nn.Module:
    return SmallCNN(num_classes, L, in_channels, image_size)


_BUILDERS: dict[str, Callable[[int, int, int, int, float], nn.Module]] = {
    "cnn": _cnn,
    "vgg16": _vgg16,
    "resnet8": _resnet8,
    "resnet18": _resnet18,
    "resnet20": _resnet20,
    "resnet34": _resnet34,
}


def build_model(arch: str, num_classes: int, L: int = 4, *, in_channels: int = 3, image_size: int = 32,
                dropout: float = 0.0) -> nn.Module:
    """Build a QCFS network by name (one of :data:`ARCHS`).

    ``image_size`` (square input side) only shapes ``vgg16``'s first Linear and
    ``cnn``'s; the ResNets end in global average pooling.
    """
    if arch not in _BUILDERS:
        raise UsageError(f"Unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}.")
    if num_classes < 1:
        raise UsageError(f"num_classes must be positive, got {num_classes}.")
    return _BUILDERS[arch](num_classes, L, in_channels, image_size, dropout)


def qcfs_modules(model: nn.Module) -> dict[str, QCFS]:
    """All QCFS activations of ``model`` by qualified module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, QCFS)}
