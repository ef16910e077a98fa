"""Train QCFS ANNs in torch and export them to ONNX for conversion (needs ``srp-onnx[train]``).

- :mod:`~srp_onnx.train.qcfs`: the QCFS activation (straight-through floor).
- :mod:`~srp_onnx.train.models`: VGG-16, ResNet-18/20/34, a small CNN, with the
  paper code's module names.
- :mod:`~srp_onnx.train.datasets`: torch Datasets over :mod:`srp_onnx.data`.
- :mod:`~srp_onnx.train.train`: the training loop (single process or torchrun DDP).
- :mod:`~srp_onnx.train.export`: ONNX export with metadata, checkpoint loading.
"""

from __future__ import annotations

from srp_onnx.train.export import export_onnx, load_checkpoint, training_metadata
from srp_onnx.train.models import ARCHS, build_model, qcfs_modules
from srp_onnx.train.qcfs import QCFS, floor_ste
from srp_onnx.train.train import (
    DEFAULTS,
    ExportResult,
    TrainConfig,
    TrainResult,
    evaluate,
    export_checkpoint,
    train,
)

__all__ = [
    "ARCHS",
    "DEFAULTS",
    "QCFS",
    "ExportResult",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "evaluate",
    "export_checkpoint",
    "export_onnx",
    "floor_ste",
    "load_checkpoint",
    "qcfs_modules",
    "train",
    "training_metadata",
]
