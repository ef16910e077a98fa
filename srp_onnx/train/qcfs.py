"""QCFS: the quantization-clip-floor-shift activation used to train the ANN.

Every ReLU of the ANN is replaced by

    y = up * clip( floor( x / up * L + 0.5 ) / L , 0, 1 )

with a learnable scalar upper bound ``up`` (the SNN threshold ``theta`` after
conversion, initialised to 8.0) and ``L`` quantization levels. ``floor`` has a
straight-through gradient (identity in the backward pass), so ``up`` and the
weights learn through the quantizer; the clip passes gradient on [0, 1] with
its bounds included (as torch 1.x did, see :func:`clamp01`).

The forward is written op for op as in the paper code
(``x / up; floor(x * t + 0.5) / t; clamp(0, 1); * up``) because the converter
recognises exactly this Div/Mul/Add/Floor/Div/Clip/Mul chain in the exported
ONNX graph. During ONNX export the straight-through function is bypassed and
a plain ``Tensor.floor`` is traced, so both exporters emit a bare ``Floor``
node instead of an opaque autograd-function node.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class FloorSTE(torch.autograd.Function):
    """``floor`` with an identity (straight-through) gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.floor()

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        return grad_output

    @staticmethod
    def symbolic(g: Any, x: Any) -> Any:  # TorchScript exporter: a plain Floor node
        return g.op("Floor", x)


def _exporting() -> bool:
    """True while ``torch.onnx.export`` / ``torch.export`` traces the model."""
    if torch.onnx.is_in_onnx_export():
        return True
    compiler = getattr(torch, "compiler", None)
    is_exporting = getattr(compiler, "is_exporting", None)
    return bool(is_exporting()) if is_exporting is not None else False


def floor_ste(x: torch.Tensor) -> torch.Tensor:
    """Straight-through floor; a plain ``floor`` while exporting to ONNX."""
    if _exporting():
        return x.floor()
    return FloorSTE.apply(x)


def clamp01(x: torch.Tensor) -> torch.Tensor:
    """``clamp(x, 0, 1)`` whose gradient is 1 on the closed interval [0, 1], 0 outside.

    torch 2.x's ``clamp`` passes no gradient at the bounds themselves, and after the floor
    every input of QCFS's bottom step lands exactly on 0: with few levels (L = 1, 2) nearly
    all of a fresh network's activations sit there, no gradient reaches any weight and
    training never starts. The paper's code ran on torch 1.x, whose ``clamp`` counted the
    bounds as inside; this restores that. The forward value is ``clamp``'s, bit for bit,
    and export traces a plain ``clamp`` (a Clip node, as the converter expects).
    """
    y = torch.clamp(x, 0, 1)
    if _exporting() or not x.requires_grad:
        return y
    inside = ((x >= 0) & (x <= 1)).to(x.dtype)
    return y.detach() + (x - x.detach()) * inside


class QCFS(nn.Module):
    """Quantization-clip-floor-shift activation (QCFS, Bu et al. 2022).

    Args:
        L: quantization levels (the paper code calls it ``t``).
        up: initial upper bound; a learnable parameter of shape ``[1]`` named
            ``up`` so that the paper code's state_dicts load unchanged.
    """

    def __init__(self, L: int = 4, up: float = 8.0) -> None:
        super().__init__()
        if L < 1:
            raise ValueError(f"QCFS needs L >= 1, got {L}")
        self.up = nn.Parameter(torch.tensor([float(up)]), requires_grad=True)
        self.t = int(L)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x / self.up
        x = floor_ste(x * self.t + 0.5) / self.t
        x = clamp01(x)
        x = x * self.up
        return x

    def extra_repr(self) -> str:
        return f"L={self.t}, up={self.up.item():.4f}"
