"""ImageNet-style class folders, read one batch of files at a time.

Layout (torchvision ``ImageFolder`` conventions)::

    root/train/<class>/**/*.JPEG|jpg|png
    root/val/<class>/...          split "test" (``root/test/`` is accepted too)

A folder that directly holds class folders (no ``train``/``val``/``test``
inside) is taken as the split itself. Class indices follow the sorted class
folder names, files are sorted within a class (``sorted(os.walk(...))``, as
torchvision), so indices match a model trained with ``ImageFolder``.
``calib`` is a fixed-seed sample of 500 files of ``train``.

Each image is decoded with Pillow, converted to RGB (or L for one-channel
models), resized and centre-cropped per the preprocessing, then batched and
normalised. Only the current batch's files are in memory.
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from srp_onnx.data.base import (
    Dataset,
    batch_ranges,
    calib_indices,
    check_split,
    one_line,
)
from srp_onnx.data.preprocess import MAX_IMAGE_PIXELS, Preprocessing
from srp_onnx.errors import DataError, quote, safe
from srp_onnx.io import file_identity

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataset", "image_folder_samples", "is_image_folder", "load_image"]

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
IMAGE_FORMATS = ("JPEG", "PNG")  # the only decoders Pillow may use, whatever a file holds
_MAX_DEPTH = 64  # folder levels under a class folder
_SPLIT_FOLDERS = {"train": ("train",), "calib": ("train",), "test": ("val", "test")}


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode one image file to uint8 ``[H, W, 3]`` RGB (palette, gray and RGBA files are converted).

    Only JPEG and PNG decoders are used, whatever the file holds (Pillow otherwise picks a decoder from
    the content: an EPS named x.png would start Ghostscript), only regular files are opened (a FIFO would
    block), and the pixel count is checked before decoding (:data:`MAX_IMAGE_PIXELS`).
    16-bit gray PNGs are scaled to 8 bits (not clipped).
    """
    try:
        st = os.stat(path)
    except OSError as e:
        raise DataError(f"Image {quote(path)} cannot be read ({one_line(e)}); replace or remove it.") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"Image {quote(path)} is not a regular file; remove it from the image folder.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's warnings would be extra stderr lines; limits are ours
            with Image.open(path, formats=IMAGE_FORMATS) as im:
                w, h = im.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise DataError(f"Image {quote(path)} is {w}x{h} pixels, more than the {MAX_IMAGE_PIXELS} "
                                    "allowed (a decompression bomb?); resize or remove it.")
                if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                    wide = np.asarray(im, dtype=np.float64)
                    top = 65535.0 if im.mode.startswith("I;16") or wide.max(initial=0) > 255 else 255.0
                    gray = np.clip(np.rint(wide * (255.0 / top)), 0, 255).astype(np.uint8)
                    return np.repeat(gray[..., None], 3, axis=2)
                return np.asarray(im.convert("RGB"))
    except DataError:
        raise
    except Image.UnidentifiedImageError:
        raise DataError(f"Image {quote(path)} is not a JPEG or PNG file (the only formats read); convert or "
                        "remove it.") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises OSError, ValueError, DecompressionBombError, ...
        raise DataError(
            f"Image {quote(path)} cannot be decoded ({safe(one_line(e))}); replace or remove the file."
        ) from None


def is_image_folder(path: Path) -> bool:
    """Whether ``path`` looks like an image-folder root or split (it has non-hidden subfolders)."""
    return any(_subfolders(path))


def image_folder_samples(
    root: str | os.PathLike[str], split: str = "train"
) -> tuple[list[tuple[Path, int]], list[str]]:
    """``([(file, class index), ...], class names)`` of one split, in reading order.

    Sorted by class then path for ``train``/``test``; ``calib`` is a fixed-seed sample of train.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Image folder '{root}' does not exist or is not a folder; check the path.")
    check_split(split, f"image folder '{root}'")
    folder = _split_folder(root, split)
    classes = _subfolders(folder)
    if not classes:
        raise DataError(
            f"Image folder '{folder}' has no class folders; expected <class>/<image> files "
            f"(e.g. '{folder}/n01440764/x.JPEG')."
        )
    samples: list[tuple[Path, int]] = []
    empty = []
    for index, name in enumerate(classes):
        files = [
            Path(d) / f
            for d, names in _walk(folder / name)
            for f in sorted(names)
            if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")
        ]
        if not files:
            empty.append(name)
        samples.extend((f, index) for f in files)
    if empty:
        shown = ", ".join(repr(n) for n in empty[:5]) + (
            f" and {len(empty) - 5} more" if len(empty) > 5 else ""
        )
        raise DataError(
            f"Image folder '{folder}': class folder(s) {shown} hold no {'/'.join(IMAGE_EXTENSIONS)} files; "
            f"add images or remove the empty folders (class indices depend on them)."
        )
    if split == "calib":
        samples = [samples[i] for i in calib_indices(len(samples))]
    return samples, classes


class ImageFolderDataset(Dataset):
    """Streams one split of an image folder; files are decoded only when their batch is requested."""

    def __init__(
        self,
        root: Path,
        *,
        split: str,
        preprocessing: Preprocessing,
        limit: int | None = None,
    ) -> None:
        samples, classes = image_folder_samples(root, split)
        self.samples = samples[:limit]
        self.classes = classes
        self.num_classes = len(classes)
        self.name = root.name
        self.source = str(root)
        self.split = split
        self.preprocessing = preprocessing
        if preprocessing.channels not in (1, 3):
            raise DataError(
                f"{self.where}: the preprocessing asks for {preprocessing.channels} channels; "
                f"image files give RGB (3) or gray (1)."
            )

    def __len__(self) -> int:
        return len(self.samples)

    def raw_batches(self, batch_size: int, start: int = 0, stop: int | None = None
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i, j in batch_ranges(len(self), batch_size, start, stop):
            chunk = self.samples[i:j]
            images = [self._read(path) for path, _ in chunk]
            first = images[0].shape[:2]
            for (path, _), img in zip(chunk, images):
                if img.shape[:2] != first:
                    h, w = img.shape[:2]
                    raise DataError(
                        f"Image '{path}' is {h}x{w} after resize/crop but '{chunk[0][0]}' is "
                        f"{first[0]}x{first[1]}; set crop in the preprocessing so all images end equal."
                    )
            yield np.stack(images), np.array([label for _, label in chunk], np.int64)

    def _read(self, path: Path) -> np.ndarray:
        image = load_image(path)  # looked up at call time, so tests can count calls
        if self.preprocessing.channels == 1:
            # Pillow's ITU-R 601-2 luma, the same as torchvision's Grayscale on PIL images.
            image = np.asarray(Image.fromarray(image).convert("L"))[..., None]
        try:
            image = self.preprocessing.resize_crop_image(image)
        except DataError as e:
            raise DataError(f"Image '{path}': {e}") from None
        size = self.preprocessing.size
        if size is not None and image.shape[:2] != size:
            h, w = image.shape[:2]
            origin = f" (from {self.preprocessing.source})" if self.preprocessing.source else ""
            raise DataError(
                f"Image '{path}' is {h}x{w} after resize/crop but the model expects {size[0]}x{size[1]}"
                f"{origin}; set resize/crop in the preprocessing or use images of that size."
            )
        return image


def _walk(top: Path) -> list[tuple[str, list[str]]]:
    """``sorted(os.walk(top, followlinks=True))`` as (folder, file names), refusing symlink loops and
    absurd depth (a link to an ancestor would make os.walk run forever)."""
    out = []
    for d, _dirs, names in os.walk(top, followlinks=True):
        here = Path(d)
        depth = len(here.relative_to(top).parts)
        if depth > _MAX_DEPTH:
            raise DataError(f"Image folder {quote(top)}: folders nest more than {_MAX_DEPTH} levels deep at "
                            f"{quote(here)}; is there a symlink loop?")
        key = file_identity(here)
        parent = here
        for _ in range(depth):
            parent = parent.parent
            if file_identity(parent) == key:
                raise DataError(f"Image folder {quote(top)}: {quote(here)} links back to {quote(parent)} (a "
                                "symlink loop); remove the link.")
        out.append((d, names))
    return sorted(out)


def _subfolders(path: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return []


def _split_folder(root: Path, split: str) -> Path:
    """The folder holding ``split``'s class folders (see the module docstring)."""
    present = [n for n in ("train", "val", "test") if (root / n).is_dir()]
    if not present:
        return root  # root holds the class folders itself
    for name in _SPLIT_FOLDERS[split]:
        if (root / name).is_dir():
            return root / name
    wanted = " or ".join(f"'{n}/'" for n in _SPLIT_FOLDERS[split])
    raise DataError(
        f"Image folder '{root}' has {', '.join(repr(n + '/') for n in present)} but no {wanted} "
        f"for split '{split}'; add it or pick another split."
    )
