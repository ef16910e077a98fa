"""``.npz`` files with arrays ``x`` (images or model input) and ``y`` (labels).

* ``x`` uint8: raw images, ``[N, H, W]``, ``[N, H, W, C]``, or ``[N, C, H, W]``
  with ``C`` in {1, 3} and ``H, W > 4``; they go through the preprocessing.
* ``x`` float: already the model input; used as-is (preprocessing ignored),
  must be finite.
* ``y``: integer class indices ``[N]``, ``>= 0``.
* optional ``num_classes`` (a scalar); otherwise ``max(y) + 1``.

An npz holds a single split: ``split`` is ignored.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from srp_onnx.data.base import ArrayDataset, Dataset, batch_ranges, check_labels, one_line
from srp_onnx.data.preprocess import Preprocessing
from srp_onnx.errors import DataError, quote, safe

__all__ = ["FloatArrayDataset", "open_npz", "read_npz"]


class FloatArrayDataset(Dataset):
    """Model inputs stored as floats: no raw images, no preprocessing."""

    preprocessed = True

    def __init__(
        self,
        x: np.ndarray,
        labels: np.ndarray,
        *,
        source: str,
        split: str,
        num_classes: int | None,
        preprocessing: Preprocessing,
    ) -> None:
        self.x = x
        self.labels = labels
        self.name = Path(source).stem
        self.source = source
        self.split = split
        self.num_classes = num_classes
        self.classes = None
        self.preprocessing = preprocessing  # kept for callers that inspect it; never applied

    def __len__(self) -> int:
        return len(self.x)

    def batches(self, batch_size: int, start: int = 0, stop: int | None = None
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i, j in batch_ranges(len(self), batch_size, start, stop):
            yield self.x[i:j], self.labels[i:j]

    def raw_batches(self, batch_size: int, start: int = 0, stop: int | None = None
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        raise DataError(
            f"{self.where}: 'x' is float model input, so there are no raw images; "
            f"save raw uint8 images as 'x' to use raw batches."
        )


def read_npz(path: Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Validated ``(x, y, num_classes)`` from an npz; uint8 ``x`` comes back as ``[N, H, W, C]``.

    Members are read one at a time from the archive, their headers checked before anything is
    allocated (shape against the stored size, no object arrays, no 0-d arrays); with ``limit`` only
    the first ``limit`` samples of ``x`` are read (all labels are, to count the classes).
    """
    where = f"npz file {quote(path)}"
    try:
        archive = np.load(path, allow_pickle=False, mmap_mode=None)
    except Exception as e:  # noqa: BLE001 - np.load raises many types for a corrupt or foreign file
        raise DataError(
            f"{where} cannot be read ({safe(one_line(e))}); write it with np.savez(path, x=..., y=...)."
        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(
            f"{where} holds a single array, not an npz archive; write it with np.savez(path, x=..., y=...)."
        )
    with archive as f:
        missing = [k for k in ("x", "y") if k not in f.files]
        if missing:
            raise DataError(
                f"{where}: missing array {' and '.join(repr(k) for k in missing)} (has {safe(sorted(f.files))[:80]}); "
                f"save images as 'x' and labels as 'y' (np.savez(path, x=..., y=...))."
            )
        try:
            y = _member(f, "y", where)
            x = _member(f, "x", where, limit)
            stored_classes = _member(f, "num_classes", where, scalar=True) if "num_classes" in f.files else None
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 - as above, for a truncated member
            raise DataError(
                f"{where}: arrays cannot be read ({safe(one_line(e))}); the file may be truncated."
            ) from None
    for name, a in (("x", x), ("y", y)):
        if a.ndim == 0:
            raise DataError(f"{where}: {name} is a single value (0-d); it must hold one entry per sample.")
    x = x[:limit]
    if len(x) == 0:
        raise DataError(f"{where} is empty (x has shape {x.shape}); it must hold at least one sample.")
    if len(x) != (len(y) if limit is None else min(len(y), limit)):
        raise DataError(f"{where}: x has {len(x)}{' (first)' if limit else ''} samples but y has {len(y)}; they must "
                        "match one to one.")
    num_classes = None
    if stored_classes is not None:
        if stored_classes.size != 1 or not np.issubdtype(stored_classes.dtype, np.integer):
            raise DataError(f"{where}: 'num_classes' must be one integer, got {stored_classes!r}.")
        num_classes = int(stored_classes)
    labels = check_labels(y, where, num_classes)
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    labels = labels[:limit]

    if x.dtype == np.uint8:
        x = _to_nhwc(x, where)
    elif np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise DataError(f"{where}: x contains NaN or Inf; fix the data (x is used as model input as-is).")
        x = x.astype(np.float32, copy=False)
    else:
        raise DataError(
            f"{where}: x has dtype {x.dtype}; expected uint8 raw images or float model input "
            f"(convert with .astype(np.uint8) or .astype(np.float32))."
        )
    return x, labels, num_classes


def open_npz(path: Path, *, split: str, preprocessing: Preprocessing | None, limit: int | None) -> Dataset:
    x, labels, num_classes = read_npz(path, limit)
    if x.dtype != np.uint8:
        return FloatArrayDataset(
            x,
            labels,
            source=str(path),
            split=split,
            num_classes=num_classes,
            preprocessing=Preprocessing() if preprocessing is None else preprocessing,
        )
    if preprocessing is None:
        # No preset applies: scale to [0, 1] and keep the images' own channel count.
        preprocessing = Preprocessing(channels=x.shape[3])
    return ArrayDataset(
        x,
        labels,
        name=path.stem,
        source=str(path),
        split=split,
        preprocessing=preprocessing,
        num_classes=num_classes,
    )


MAX_ARRAY_BYTES = 1 << 36  # 64 GiB declared by one member: refused without reading


def _member(f: np.lib.npyio.NpzFile, key: str, where: str, limit: int | None = None, *,
            scalar: bool = False) -> np.ndarray:
    """One array of the archive, its header checked first; only ``limit`` rows read when given."""
    name = key if key in f.zip.namelist() else f"{key}.npy"
    info = f.zip.getinfo(name)
    with f.zip.open(info) as fp:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise DataError(f"{where}: {key!r} is stored in .npy format {version}; save it with numpy's np.savez.")
        if dtype.hasobject:
            raise DataError(f"{where}: {key!r} holds Python objects, which are not read (no pickles); "
                            "save numeric arrays.")
        if not all(isinstance(d, int) and d >= 0 for d in shape):
            raise DataError(f"{where}: {key!r} declares shape {shape}.")
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        if nbytes > MAX_ARRAY_BYTES or nbytes > info.file_size:
            raise DataError(f"{where}: {key!r} declares shape {shape} of {dtype} ({nbytes} bytes) but the archive "
                            f"holds {info.file_size} bytes for it; the file is corrupt or truncated.")
        if scalar:
            if count != 1:
                raise DataError(f"{where}: 'num_classes' must be one integer, got shape {shape}.")
        rows = shape[0] if shape else 1
        if limit is not None and shape and not fortran and limit < rows:
            shape = (limit, *shape[1:])
            count = math.prod(shape)
        data = fp.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise DataError(f"{where}: {key!r} is truncated ({len(data)} of {count * dtype.itemsize} bytes).")
    array = np.frombuffer(data, dtype=dtype, count=count)
    if fortran:
        return array.reshape(shape[::-1]).transpose()
    return array.reshape(shape)


def _to_nhwc(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 3:
        return x[..., None]
    if x.ndim == 4 and x.shape[3] in (1, 3):
        return x
    if x.ndim == 4 and x.shape[1] in (1, 3) and x.shape[2] > 4 and x.shape[3] > 4:
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    raise DataError(
        f"{where}: uint8 x has shape {x.shape}; expected [N, H, W], [N, H, W, C] or [N, C, H, W] "
        f"with C in (1, 3)."
    )
