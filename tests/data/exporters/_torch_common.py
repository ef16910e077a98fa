"""Torch models, QCFS activations, training and export helpers for make_torch_*.py.

Training is deterministic (seeded, single thread), so two scripts that build
the same architecture (e.g. make_torch_ts_qcfs_cnn.py and
make_torch_dynamo_qcfs_cnn.py) get bit-identical weights.
"""

from __future__ import annotations

import io
from typing import Any

import _common
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

L_QCFS = 4


# --------------------------------------------------------------------------- QCFS
class QCFS(nn.Module):
    """Quantization-clip-floor-shift activation (Bu et al. 2022), L = 4.

    forward: x / up -> floor(x * L + 0.5) / L -> clamp(0, 1) -> * up.
    In training the floor is straight-through (identity gradient).
    """

    def __init__(self, up: float = 8.0, L: int = L_QCFS):
        super().__init__()
        self.up = nn.Parameter(torch.tensor([up]))
        self.L = L

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x / self.up
        y = x * self.L + 0.5
        if self.training:
            y = y + (torch.floor(y) - y).detach()
        else:
            y = torch.floor(y)
        x = y / self.L
        x = torch.clamp(x, 0, 1)
        x = x * self.up
        return x


class QCFSMinMax(QCFS):
    """Same function as QCFS, spelled differently (pattern-robustness fixture).

    x * (1/up) -> floor(x*L + 0.5) * (1/L) -> minimum(maximum(x, 0), 1) -> up * x
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * (1.0 / self.up)
        y = x * self.L + 0.5
        if self.training:
            y = y + (torch.floor(y) - y).detach()
        else:
            y = torch.floor(y)
        x = y * (1.0 / self.L)
        zero = torch.zeros((), dtype=x.dtype)
        one = torch.ones((), dtype=x.dtype)
        x = torch.minimum(torch.maximum(x, zero), one)
        x = self.up * x
        return x


def act_factory(kind: str):
    return {
        "qcfs": lambda: QCFS(),
        "qcfs_minmax": lambda: QCFSMinMax(),
        "relu": lambda: nn.ReLU(),
        "relu6": lambda: nn.ReLU6(),
        "sigmoid": lambda: nn.Sigmoid(),
    }[kind]


# --------------------------------------------------------------------------- models
class SmallCNN(nn.Module):
    """conv(1->8)-BN-act, pool 2, conv(8->16)[-BN]-act, flatten, linear(256->64)-act, linear(64->10).

    NCHW input [N, 1, 8, 8].
    """

    def __init__(self, act: str, bn2: bool = True, pool: str = "avg"):
        super().__init__()
        A = act_factory(act)
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.act1 = A()
        self.pool = nn.AvgPool2d(2) if pool == "avg" else nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16) if bn2 else nn.Identity()
        self.act2 = A()
        self.fc1 = nn.Linear(16 * 4 * 4, 64)
        self.act3 = A()
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.pool(x)
        x = self.act2(self.bn2(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = self.act3(self.fc1(x))
        return self.fc2(x)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, act: str):
        super().__init__()
        A = act_factory(act)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = A()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        else:
            self.shortcut = nn.Identity()
        self.act2 = A()

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class TinyResNet(nn.Module):
    """stem conv(1->16)-BN-act; block(16->16, identity); block(16->32, s2, conv1x1-BN shortcut); GAP; linear."""

    def __init__(self, act: str = "qcfs"):
        super().__init__()
        A = act_factory(act)
        self.conv = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.act = A()
        self.layer1 = BasicBlock(16, 16, 1, act)
        self.layer2 = BasicBlock(16, 32, 2, act)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.act(self.bn(self.conv(x)))
        x = self.layer2(self.layer1(x))
        x = torch.flatten(self.pool(x), 1)
        return self.fc(x)


class SigmoidMLP(nn.Module):
    """Linear(64->64)-Sigmoid-Linear(64->10) on flat [N, 64] input."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 64)
        self.act = nn.Sigmoid()
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class LSTMClassifier(nn.Module):
    """LSTM over the 8 image rows (8 features each, batch_first), last hidden -> Linear."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.lstm = nn.LSTM(8, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, 10)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(out[:, -1, :])


# --------------------------------------------------------------------------- training
def torch_layout_data(layout: str):
    x_tr, y_tr, x_te, y_te = _common.load_digits_split()
    return (
        torch.from_numpy(_common.to_layout(x_tr, layout)),
        torch.from_numpy(y_tr),
        torch.from_numpy(_common.to_layout(x_te, layout)),
        torch.from_numpy(y_te),
    )


def train(
    model: nn.Module,
    layout: str,
    epochs: int = 40,
    lr: float = 3e-3,
    seed: int = 0,
    batch: int = 64,
    up_lr: float | None = None,
) -> float:
    """Adam + cosine LR on the 1437 training digits; returns torch test accuracy (eval mode)."""
    torch.manual_seed(seed)
    xtr, ytr, xte, yte = torch_layout_data(layout)
    ups = [p for n, p in model.named_parameters() if n.endswith(".up") or n == "up"]
    others = [p for n, p in model.named_parameters() if not (n.endswith(".up") or n == "up")]
    groups = [{"params": others}]
    if ups:
        groups.append({"params": ups, "lr": up_lr or lr, "weight_decay": 0.0})
    opt = torch.optim.Adam(groups, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(xtr), batch):
            idx = perm[i : i + batch]
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        return float((model(xte).argmax(1) == yte).float().mean())


def qcfs_info(model: nn.Module) -> dict[str, Any]:
    ups = [(n, float(m.up.detach().reshape(-1)[0])) for n, m in model.named_modules() if isinstance(m, QCFS)]
    return {
        "L": L_QCFS,
        "formula": "up * clip(floor(x / up * L + 0.5) / L, 0, 1)",
        "lambdas": [round(v, 6) for _, v in ups],
        "lambda_modules": [n for n, _ in ups],
    }


def n_act(model: nn.Module) -> int:
    kinds = (QCFS, nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Hardtanh)
    return sum(isinstance(m, kinds) for m in model.modules())


# --------------------------------------------------------------------------- export
def export_torchscript(model: nn.Module, example: torch.Tensor, opset: int = 17, **kwargs):
    import onnx

    model.eval()
    f = io.BytesIO()
    torch.onnx.export(
        model,
        (example,),
        f,
        dynamo=False,
        opset_version=opset,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
        **kwargs,
    )
    return onnx.load_from_string(f.getvalue())


def export_dynamo(model: nn.Module, example: torch.Tensor, opset: int = 18):
    model.eval()
    batch = torch.export.Dim("N", min=1, max=4096)
    prog = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        opset_version=opset,
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
        external_data=False,
    )
    return prog.model_proto


def example_input(layout: str, n: int = 4) -> torch.Tensor:
    _, _, xte, _ = torch_layout_data(layout)
    return xte[:n].clone()


def setup() -> None:
    _common.seed_everything(0)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def versions() -> dict[str, str]:
    return {"torch": torch.__version__.split("+")[0], "numpy": np.__version__}
