"""CIFAR-10 / CIFAR-100, the python-pickle versions (``cifar-10-python.tar.gz``, ``cifar-100-python.tar.gz``).

On-disk layout after extraction::

    cifar-10-batches-py/   data_batch_1 .. data_batch_5, test_batch, batches.meta
    cifar-100-python/      train, test, meta

Each file is a pickled dict with bytes keys: ``b'data'`` (``N x 3072`` uint8,
one row per image, channel-major: 1024 red, 1024 green, 1024 blue values of a
32x32 image), ``b'labels'`` (CIFAR-10) or ``b'fine_labels'`` (CIFAR-100).
The meta files hold ``b'label_names'`` / ``b'fine_label_names'``.

The variant is detected from the files present; the folder that *contains*
``cifar-10-batches-py`` or ``cifar-100-python`` is accepted too. Unpickling
is restricted to the few numpy globals these files use, so a hostile file
cannot run code.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from srp_onnx.data.base import check_labels, one_line
from srp_onnx.errors import DataError

try:  # numpy >= 2 moved the pickle helpers to numpy._core
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]

__all__ = ["CIFAR10_FILES", "CIFAR100_FILES", "CifarArrays", "find_cifar", "read_cifar"]

CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR100_FILES = {"train": ["train"], "test": ["test"]}
_SUBFOLDERS = {"cifar-10-batches-py": "cifar10", "cifar-100-python": "cifar100"}

CifarArrays = tuple[np.ndarray, np.ndarray, int, list[str] | None]
"""(uint8 images [N, 32, 32, 3], int64 labels, num_classes, class names or None)."""


def find_cifar(path: Path) -> tuple[str, Path] | None:
    """``("cifar10" | "cifar100", folder)`` if ``path`` is (or directly contains) a CIFAR folder."""
    kind = _detect(path)
    if kind is not None:
        return kind, path
    found = [(k, path / sub) for sub, k in _SUBFOLDERS.items() if (path / sub).is_dir()]
    found = [(k, p) for k, p in found if _detect(p) == k]
    if len(found) > 1:
        raise DataError(
            f"Folder '{path}' holds both {' and '.join(str(p.name) for _, p in found)}; point at one of them."
        )
    return found[0] if found else None


def _detect(path: Path) -> str | None:
    names = CIFAR10_FILES["train"] + CIFAR10_FILES["test"] + ["batches.meta"]
    if any((path / n).is_file() for n in names):
        return "cifar10"
    # Files (not folders) named train/test: an ImageNet-style root has train/ and val/ folders.
    if any((path / n).is_file() for n in ("train", "test")) and (path / "meta").is_file():
        return "cifar100"
    return None


def read_cifar(kind: str, folder: Path, split: str) -> CifarArrays:
    """All images of ``split`` ("train" or "test") of a CIFAR folder, in file order."""
    files = (CIFAR10_FILES if kind == "cifar10" else CIFAR100_FILES)[split]
    missing = [n for n in files if not (folder / n).is_file()]
    if missing:
        expected = (
            "'data_batch_1'..'data_batch_5' and 'test_batch'" if kind == "cifar10" else "'train' and 'test'"
        )
        tarball = "cifar-10-python.tar.gz" if kind == "cifar10" else "cifar-100-python.tar.gz"
        raise DataError(
            f"CIFAR folder '{folder}': the {split} split needs {', '.join(repr(m) for m in missing)} "
            f"(expected {expected}, the python version of {kind.upper()}, {tarball} extracted). "
            f"Point the data path at the complete extracted folder."
        )
    label_key = b"labels" if kind == "cifar10" else b"fine_labels"
    num_classes = 10 if kind == "cifar10" else 100
    images, labels = [], []
    for name in files:
        path = folder / name
        d = _load_pickle(path)
        if b"data" not in d or label_key not in d:
            raise DataError(
                f"CIFAR file '{path}' lacks {b'data'!r} or {label_key!r} (has {sorted(d)[:6]}); "
                f"it is not a {kind} python batch file."
            )
        data = np.asarray(d[b"data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(
                f"CIFAR file '{path}': b'data' is {data.dtype} {data.shape}; expected uint8 [N, 3072]."
            )
        lab = check_labels(np.asarray(d[label_key]), f"CIFAR file '{path}'", num_classes)
        if len(lab) != len(data):
            raise DataError(f"CIFAR file '{path}': {len(data)} images but {len(lab)} labels.")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(lab)
    return (
        np.ascontiguousarray(np.concatenate(images)),
        np.concatenate(labels),
        num_classes,
        _class_names(kind, folder),
    )


def _class_names(kind: str, folder: Path) -> list[str] | None:
    meta, key = ("batches.meta", b"label_names") if kind == "cifar10" else ("meta", b"fine_label_names")
    if not (folder / meta).is_file():
        return None
    names = _load_pickle(folder / meta).get(key)
    if not isinstance(names, list):
        return None
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


MAX_PICKLE_ARRAY_BYTES = 1 << 30  # 1 GiB per array: a CIFAR file holds 150 MB


def _checked_size(shape: Any, dtype: Any) -> None:
    """Refuse an array a pickle asks for before it is allocated (a 150-byte file can ask for 3 GB)."""
    dims = shape if isinstance(shape, tuple) else (shape,)
    try:
        count = 1
        for d in dims:
            count *= int(d)
        size = count * np.dtype(dtype).itemsize
    except (TypeError, ValueError, OverflowError) as e:
        raise pickle.UnpicklingError(f"bad array shape {shape!r:.40}: {e}") from None
    if size > MAX_PICKLE_ARRAY_BYTES or any(int(d) < 0 for d in dims):
        raise pickle.UnpicklingError(f"an array of shape {shape!r:.60} ({size} bytes), more than a CIFAR file holds")


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    _checked_size(shape, dtype)
    return _multiarray._reconstruct(np.ndarray, shape, dtype)


def _ndarray(shape: Any, dtype: Any = float, *args: Any, **kwargs: Any) -> np.ndarray:
    _checked_size(shape, dtype)
    return np.ndarray(shape, dtype, *args, **kwargs)


# The only globals that pickled numpy arrays need (python 2 and 3 writers); array constructors are
# wrapped so that their size is checked before allocation (the data itself comes via __setstate__,
# which checks it against the shape).
_PICKLE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy", "ndarray"): _ndarray,
    ("numpy", "dtype"): np.dtype,
    # Python 3 writers encode bytes under protocol 2 as _codecs.encode(str, "latin1").
    ("_codecs", "encode"): codecs.encode,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Resolves only the globals that pickled numpy arrays need (python 2 and 3 writers)."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}") from None


def _load_pickle(path: Path) -> dict[bytes, Any]:
    try:
        with open(path, "rb") as f:
            d = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except OSError as e:
        raise DataError(f"CIFAR file '{path}' cannot be read ({one_line(e)}).") from None
    except Exception as e:  # noqa: BLE001 - a corrupt pickle raises almost any type
        raise DataError(
            f"CIFAR file '{path}' is not a readable CIFAR pickle ({one_line(e)}); re-extract it from the "
            f"python version of the archive."
        ) from None
    if not isinstance(d, dict):
        raise DataError(
            f"CIFAR file '{path}' holds a {type(d).__name__}, not a dict; it is not a CIFAR pickle."
        )
    # Files re-pickled by python 3 with str keys load as str: use bytes keys throughout.
    return {k.encode("latin1") if isinstance(k, str) else k: v for k, v in d.items()}
