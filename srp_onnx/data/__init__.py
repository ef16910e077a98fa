"""Datasets and preprocessing, numpy + Pillow only (no torch).

API contract (used by eval, calibration, analysis and training):

    open_dataset(spec, *, split="test", preprocessing=None, limit=None) -> Dataset

``spec`` is a path to an ``.npz`` (arrays ``x`` and ``y``), a CIFAR-10/100
python-pickle folder, an ImageNet-style class folder, or a built-in name
(``mnist``, ``digits``). See the module docstrings below for each format.

Modules, one job each:

* :mod:`~srp_onnx.data.preprocess`: :class:`Preprocessing` (resize/crop with
  Pillow, then ``(raw / scale - mean) / std`` and the layout), :data:`PRESETS`,
  :data:`METADATA_KEY` (where a converted model stores its preprocessing).
* :mod:`~srp_onnx.data.base`: the :class:`Dataset` interface; splits
  ``train``/``test``/``calib`` (``calib``: 500 training samples, fixed seed).
* :mod:`~srp_onnx.data.npz`, :mod:`~srp_onnx.data.cifar`,
  :mod:`~srp_onnx.data.imagefolder`, :mod:`~srp_onnx.data.builtin`: one reader per format.
* :mod:`~srp_onnx.data.loader`: :func:`open_dataset` and :func:`load_arrays`
  pick the reader from the spec.

Every ``Dataset`` yields batches in a fixed order::

    for x, y in ds.batches(256):      # float32 model input, int64 labels
    for raw, y in ds.raw_batches(256):  # uint8 [N, H, W, C] after resize/crop
        # x == ds.preprocessing.normalize(raw)

Errors are :class:`~srp_onnx.errors.DataError` with one-line messages naming the
path. Nothing here downloads anything.
"""

from __future__ import annotations

from srp_onnx.data.base import CALIB_SIZE, SPLITS, Dataset
from srp_onnx.data.imagefolder import image_folder_samples, load_image
from srp_onnx.data.loader import load_arrays, open_dataset
from srp_onnx.data.preprocess import METADATA_KEY, PRESETS, Preprocessing

__all__ = [
    "CALIB_SIZE",
    "METADATA_KEY",
    "PRESETS",
    "SPLITS",
    "Dataset",
    "Preprocessing",
    "image_folder_samples",
    "load_arrays",
    "load_image",
    "open_dataset",
]
