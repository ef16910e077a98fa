"""MNIST-family datasets in their distribution format, IDX (MNIST, Fashion-MNIST, KMNIST, EMNIST).

On-disk layout: a folder holding the four files, each plain or gzipped::

    train-images-idx3-ubyte   train-labels-idx1-ubyte
    t10k-images-idx3-ubyte    t10k-labels-idx1-ubyte

(EMNIST prefixes the names, ``emnist-balanced-train-images-idx3-ubyte``; ``test``
may stand for ``t10k``.) torchvision's layout, ``root/MNIST/raw/<files>``, is found
from ``root``, ``root/MNIST`` or the ``raw`` folder itself.

An IDX file is a big-endian header, ``0x00 0x00 <type> <ndim>`` then ``ndim``
uint32 sizes, then the values; these datasets use type ``0x08`` (uint8) for
images ``[N, H, W]`` and labels ``[N]``. EMNIST stores its images transposed (as
the EMNIST paper says); they are returned as the files hold them, the way
torchvision's EMNIST reader does too.
"""

from __future__ import annotations

import gzip
import math
import re
from pathlib import Path

import numpy as np

from srp_onnx.data.base import check_labels
from srp_onnx.errors import DataError

__all__ = ["find_idx", "read_idx_split"]

_UINT8 = 0x08
# role -> pattern of the file name (without .gz)
_PATTERNS = {
    ("train", "images"): re.compile(r"(.*-)?train-images-idx3-ubyte"),
    ("train", "labels"): re.compile(r"(.*-)?train-labels-idx1-ubyte"),
    ("test", "images"): re.compile(r"(.*-)?(t10k|test)-images-idx3-ubyte"),
    ("test", "labels"): re.compile(r"(.*-)?(t10k|test)-labels-idx1-ubyte"),
}
MAX_IDX_BYTES = 1 << 31  # 2 GiB uncompressed: far beyond any MNIST-family file


def _files(folder: Path) -> dict[tuple[str, str], Path]:
    found: dict[tuple[str, str], Path] = {}
    for f in sorted(folder.iterdir()):
        if not f.is_file():
            continue
        name = f.name[:-3] if f.name.endswith(".gz") else f.name
        for role, pat in _PATTERNS.items():
            if pat.fullmatch(name) and (role not in found or not f.name.endswith(".gz")):
                found[role] = f  # the plain file wins over its .gz twin
    return found


def find_idx(path: Path) -> dict[tuple[str, str], Path] | None:
    """The IDX files under ``path`` (itself, ``path/raw`` or ``path/*/raw``), or None if there are none."""
    candidates = [path, path / "raw", *sorted(p / "raw" for p in path.iterdir() if p.is_dir())]
    for folder in candidates:
        if folder.is_dir():
            files = _files(folder)
            if files:
                return files
    return None


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) != 4 or head[:2] != b"\0\0":
                raise DataError(f"IDX file '{path}': no IDX header (it should start with two zero bytes). "
                                "Give the original MNIST-format file.")
            if head[2] != _UINT8:
                raise DataError(f"IDX file '{path}': element type 0x{head[2]:02x}; only uint8 (0x08) images "
                                "and labels are read.")
            ndim = head[3]
            dims = np.frombuffer(f.read(4 * ndim), dtype=">u4")
            if len(dims) != ndim or ndim not in (1, 3):
                raise DataError(f"IDX file '{path}': header declares {ndim} dimensions; expected 3 (images) "
                                "or 1 (labels).")
            n = math.prod(int(d) for d in dims)  # Python ints: 3 x 2^32 sizes must not wrap
            if n > MAX_IDX_BYTES:
                raise DataError(f"IDX file '{path}': declares {n} values, too many for an MNIST-family file.")
            data = f.read(n + 1)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"IDX file '{path}': cannot read it ({e}). The file is damaged; fetch it again.") from None
    if len(data) != n:
        raise DataError(f"IDX file '{path}': header declares {n} values but the file holds {len(data)}. "
                        "The file is truncated or damaged.")
    return np.frombuffer(data, np.uint8).reshape(tuple(int(d) for d in dims))


def read_idx_split(files: dict[tuple[str, str], Path], split: str, where: str
                   ) -> tuple[np.ndarray, np.ndarray, int]:
    """(uint8 images [N, H, W, 1], int64 labels, number of classes) of the train or test split."""
    missing = [f"{split} {kind}" for kind in ("images", "labels") if (split, kind) not in files]
    if missing:
        raise DataError(f"IDX folder '{where}': no {' or '.join(missing)} file (e.g. "
                        f"{'t10k' if split == 'test' else 'train'}-images-idx3-ubyte.gz). Add it.")
    images = _read_idx(files[(split, "images")])
    labels = _read_idx(files[(split, "labels")])
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(f"IDX folder '{where}': the {split} images must be [N, H, W] and the labels [N].")
    if len(images) != len(labels):
        raise DataError(f"IDX folder '{where}': {len(images)} {split} images but {len(labels)} labels.")
    labels = check_labels(labels.astype(np.int64), f"IDX folder '{where}'")
    num_classes = max(10, int(labels.max()) + 1) if len(labels) else 10
    return images[..., None], labels, num_classes
