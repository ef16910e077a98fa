"""The :class:`Dataset` interface and the in-memory dataset behind most formats.

Splits are the same for every format: ``"train"``, ``"test"`` and ``"calib"``.
``calib`` is :data:`CALIB_SIZE` samples of ``train`` in a fixed shuffled order
(``np.random.default_rng(CALIB_SEED)``), so threshold calibration never sees
test data. What ``raw_batches`` yields and how ``batches`` relates to it::

    raw  = images after the preprocessing's resize/crop (uint8 [N, H, W, C])
    x    = preprocessing.normalize(raw)           # what batches() yields

Without resize/crop (every preset but ImageNet) ``raw`` is the stored images.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator

import numpy as np

from srp_onnx.data.preprocess import Preprocessing
from srp_onnx.errors import DataError

__all__ = ["CALIB_SEED", "CALIB_SIZE", "SPLITS", "ArrayDataset", "Dataset", "batch_ranges", "calib_indices"]

SPLITS = ("train", "test", "calib")
CALIB_SIZE = 500
CALIB_SEED = 0
MAX_CLASSES = 1 << 20  # class indices beyond this are a corrupt label array, not a classifier


class Dataset(abc.ABC):
    """A labelled image dataset read in deterministic order, one batch at a time.

    Attributes: ``name`` (short format name, e.g. ``"cifar10"``), ``num_classes``
    (``None`` when unknown), ``classes`` (class names or ``None``), ``split``,
    ``source`` (the path or built-in name it was opened from) and ``preprocessing``.
    """

    name: str
    num_classes: int | None
    classes: list[str] | None
    split: str
    source: str
    preprocessing: Preprocessing
    preprocessed = False  # True: the data is model input already and ``preprocessing`` is not applied

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of samples (after ``limit``)."""

    @abc.abstractmethod
    def raw_batches(self, batch_size: int, start: int = 0, stop: int | None = None
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(uint8 images [N, H, W, C] after resize/crop, int64 labels [N])``.

        ``start``/``stop`` read only samples ``start..stop-1`` (a shard: what a distributed
        worker reads from the same path), in batches of ``batch_size`` counted from ``start``.
        """

    def batches(self, batch_size: int, start: int = 0, stop: int | None = None
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(float32 model input in the preprocessing's layout, int64 labels [N])``; see raw_batches."""
        for raw, labels in self.raw_batches(batch_size, start, stop):
            yield self.preprocessing.normalize(raw, where=self.where), labels

    @property
    def where(self) -> str:
        """How error messages name this dataset."""
        return f"dataset '{self.source}' (split '{self.split}')"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.where}: {len(self)} samples>"


class ArrayDataset(Dataset):
    """Raw images held in memory (CIFAR, MNIST, digits, uint8 npz).

    Geometry is checked when the dataset is built, so a size mismatch with the
    model surfaces at open time rather than in the middle of an evaluation.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        name: str,
        source: str,
        split: str,
        preprocessing: Preprocessing,
        num_classes: int | None,
        classes: list[str] | None = None,
    ) -> None:
        self.images = images
        self.labels = labels
        self.name = name
        self.source = source
        self.split = split
        self.preprocessing = preprocessing
        self.num_classes = num_classes
        self.classes = classes
        if len(images) == 0:
            raise DataError(f"{self.where} is empty; check the path and the split.")
        if len(images) != len(labels):
            raise DataError(
                f"{self.where}: {len(images)} images but {len(labels)} labels; they must match one to one."
            )
        # Check size and channels on one sample now (cheap), not at the first batch.
        preprocessing.apply(images[:1], where=self.where)

    def __len__(self) -> int:
        return len(self.images)

    def raw_batches(self, batch_size: int, start: int = 0, stop: int | None = None
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i, j in batch_ranges(len(self), batch_size, start, stop):
            yield self.preprocessing.resize_crop(self.images[i:j]), self.labels[i:j]


def calib_indices(n: int) -> np.ndarray:
    """Indices of the calibration sample among ``n`` training samples (fixed seed, fixed order)."""
    return np.random.default_rng(CALIB_SEED).permutation(n)[:CALIB_SIZE]


def check_split(split: str, where: str) -> None:
    if split not in SPLITS:
        raise DataError(f"{where}: unknown split {split!r}; use one of {', '.join(SPLITS)}.")


def check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}.")


def batch_ranges(n: int, batch_size: int, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, int]]:
    """``(i, j)`` of each batch of samples ``start..stop-1`` of ``n`` (checked: 0 <= start <= stop <= n)."""
    check_batch_size(batch_size)
    stop = n if stop is None else stop
    for v in (start, stop):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise DataError(f"start and stop must be integers, got {v!r}.")
    if not 0 <= start <= stop <= n:
        raise DataError(f"sample range {start}..{stop} is outside the dataset's 0..{n}.")
    for i in range(start, stop, batch_size):
        yield i, min(i + batch_size, stop)


def check_limit(limit: int | None) -> None:
    if limit is not None and (
        not isinstance(limit, (int, np.integer)) or isinstance(limit, bool) or limit < 1
    ):
        raise DataError(f"limit must be a positive integer or None, got {limit!r}.")


def check_labels(labels: np.ndarray, where: str, num_classes: int | None = None) -> np.ndarray:
    """Labels as int64 ``[N]``; reject non-integer, negative or out-of-range ones."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(
            f"{where}: labels must be one class index per sample ([N]), got shape {labels.shape}."
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{where}: labels have dtype {labels.dtype}; expected integer class indices "
            f"(save them with .astype(np.int64))."
        )
    if labels.size and int(labels.min()) < 0:
        raise DataError(f"{where}: labels include {int(labels.min())}; class indices must be >= 0.")
    if labels.size and int(labels.max()) >= MAX_CLASSES:
        raise DataError(f"{where}: labels include {int(labels.max())}; class indices must be below {MAX_CLASSES}.")
    if num_classes is not None and labels.size and labels.max() >= num_classes:
        raise DataError(
            f"{where}: labels include {labels.max()} but there are {num_classes} classes; "
            f"class indices must be < {num_classes}."
        )
    return labels.astype(np.int64, copy=False)


def one_line(error: BaseException) -> str:
    """An exception's message on one line (for wrapping third-party errors)."""
    text = " ".join(str(error).split())
    return text or type(error).__name__
