"""Turn a dataset spec (a path or a built-in name) into a :class:`Dataset` or arrays.

Resolution order for a spec:

1. the strings ``"mnist"`` and ``"digits"`` are the built-ins (write ``./mnist``
   for a folder of that name);
2. a file ending in ``.npz``;
3. a CIFAR-10/100 python folder, or a folder containing one;
4. an MNIST-family IDX folder (MNIST, Fashion-MNIST, KMNIST, EMNIST; torchvision's
   ``root/MNIST/raw`` layout too);
5. an ImageNet-style class folder.

When ``preprocessing`` is ``None`` the format's preset is used (``cifar10``,
``cifar100``, ``mnist``, ``digits``, ``imagenet`` for class folders; for a
uint8 npz and IDX folders: scale 255, no normalisation, their own channel count).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np

from srp_onnx.data.base import ArrayDataset, Dataset, calib_indices, check_limit, check_split
from srp_onnx.data.builtin import BUILTIN_NAMES, read_builtin
from srp_onnx.data.cifar import find_cifar, read_cifar
from srp_onnx.data.idx import find_idx, read_idx_split
from srp_onnx.data.imagefolder import ImageFolderDataset, is_image_folder
from srp_onnx.data.npz import open_npz, read_npz
from srp_onnx.data.preprocess import PRESETS, Preprocessing
from srp_onnx.errors import DataError, quote

__all__ = ["load_arrays", "open_dataset"]

_FORMATS_HINT = (
    "pass an .npz file (arrays x, y), a CIFAR python folder, an MNIST-format (IDX) folder, an ImageNet-style "
    "class folder, "
    f"or a built-in name ({', '.join(BUILTIN_NAMES)})"
)


def open_dataset(
    spec: str | os.PathLike[str],
    *,
    split: str = "test",
    preprocessing: Preprocessing | None = None,
    limit: int | None = None,
) -> Dataset:
    """Open one split of a dataset; ``limit`` keeps its first N samples. Raises DataError."""
    check_limit(limit)
    if isinstance(spec, str) and spec in BUILTIN_NAMES:
        images, labels, num_classes = read_builtin(spec, split)
        return ArrayDataset(
            images[:limit],
            labels[:limit],
            name=spec,
            source=spec,
            split=split,
            preprocessing=PRESETS[spec] if preprocessing is None else preprocessing,
            num_classes=num_classes,
        )
    path = _existing_path(spec)
    check_split(split, f"dataset '{path}'")
    if path.is_file():
        return open_npz(path, split=split, preprocessing=preprocessing, limit=limit)
    cifar = find_cifar(path)
    if cifar is not None:
        kind, folder = cifar
        images, labels, num_classes, classes = _cifar_split(kind, folder, split)
        return ArrayDataset(
            images[:limit],
            labels[:limit],
            name=kind,
            source=str(folder),
            split=split,
            preprocessing=PRESETS[kind] if preprocessing is None else preprocessing,
            num_classes=num_classes,
            classes=classes,
        )
    idx = find_idx(path)
    if idx is not None:
        images, labels, num_classes = _idx_split(idx, split, path)
        return ArrayDataset(
            images[:limit],
            labels[:limit],
            name="idx",
            source=str(path),
            split=split,
            preprocessing=Preprocessing(channels=1) if preprocessing is None else preprocessing,
            num_classes=num_classes,
        )
    if is_image_folder(path):
        return ImageFolderDataset(
            path,
            split=split,
            preprocessing=PRESETS["imagenet"] if preprocessing is None else preprocessing,
            limit=limit,
        )
    raise DataError(
        f"Folder '{path}' is not a dataset folder of a known format; {_FORMATS_HINT}."
    )


def load_arrays(spec: str | os.PathLike[str], split: str = "train") -> tuple[np.ndarray, np.ndarray, int]:
    """A whole split in memory: (uint8 images [N, H, W, C], int64 labels, num_classes).

    For CIFAR, the built-ins and uint8 npz (the torch training code's input). Image
    folders are streamed instead: use :func:`image_folder_samples` and :func:`load_image`.
    """
    if isinstance(spec, str) and spec in BUILTIN_NAMES:
        return read_builtin(spec, split)
    path = _existing_path(spec)
    check_split(split, f"dataset '{path}'")
    if path.is_file():
        x, labels, num_classes = read_npz(path)
        if x.dtype != np.uint8:
            raise DataError(
                f"npz file '{path}': x is float model input, not raw images; "
                f"save uint8 images as x to train from it."
            )
        return x, labels, num_classes
    cifar = find_cifar(path)
    if cifar is not None:
        images, labels, num_classes, _ = _cifar_split(*cifar, split)
        return images, labels, num_classes
    idx = find_idx(path)
    if idx is not None:
        return _idx_split(idx, split, path)
    if is_image_folder(path):
        raise DataError(
            f"Folder '{path}' is an image class folder, which is streamed rather than loaded whole; "
            f"use image_folder_samples() and load_image()."
        )
    raise DataError(
        f"Folder '{path}' is not a dataset folder of a known format; {_FORMATS_HINT}."
    )


def _existing_path(spec: str | os.PathLike[str]) -> Path:
    try:
        path = Path(spec)
    except TypeError:
        raise DataError(f"Dataset spec {spec!r} is not a path or a name; {_FORMATS_HINT}.") from None
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        if not path.exists():
            raise DataError(f"Dataset {quote(path)} does not exist; {_FORMATS_HINT}.") from None
        raise DataError(f"Dataset {quote(path)} cannot be read ({os.strerror(e.errno or 0)}).") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise DataError(f"Dataset {quote(path)} is not a regular file or a folder (a device, FIFO or socket); "
                        f"{_FORMATS_HINT}.")
    if path.is_file() and path.suffix.lower() != ".npz":
        raise DataError(f"Dataset file {quote(path)} is not an .npz; {_FORMATS_HINT}.")
    return path


def _cifar_split(kind: str, folder: Path, split: str) -> tuple[np.ndarray, np.ndarray, int, list[str] | None]:
    if split != "calib":
        return read_cifar(kind, folder, split)
    images, labels, num_classes, classes = read_cifar(kind, folder, "train")
    index = calib_indices(len(images))
    return images[index], labels[index], num_classes, classes


def _idx_split(files: dict, split: str, path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    if split != "calib":
        return read_idx_split(files, split, str(path))
    images, labels, num_classes = read_idx_split(files, "train", str(path))
    index = calib_indices(len(images))
    return images[index], labels[index], num_classes
