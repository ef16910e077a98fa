"""srp-onnx: convert ANN ONNX graphs into spiking graphs with SRP (AAAI 2023)."""

from __future__ import annotations

__version__ = "0.2.0"

from srp_onnx.errors import DataError, ModelError, SrpOnnxError, UnsupportedNodeError, UsageError

__all__ = [
    "DataError",
    "ModelError",
    "SrpOnnxError",
    "UnsupportedNodeError",
    "UsageError",
    "__version__",
]
