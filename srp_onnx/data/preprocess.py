"""Preprocessing: raw images -> the float32 tensor a model takes as input.

Two stages, in this order, matching torchvision's test-time transforms
(``Resize(resize)``, ``CenterCrop(crop)``, ``ToTensor()``, ``Normalize(mean, std)``):

1. Geometry (:meth:`Preprocessing.resize_crop`), per image with Pillow:

   * ``resize``: the shorter side becomes ``resize``, the longer one
     ``int(resize * long / short)`` (truncated, as torchvision), bilinear.
   * ``crop``: a centred ``crop x crop`` window with
     ``top = int(round((h - crop) / 2.0))``, ``left = int(round((w - crop) / 2.0))``
     (Python's round, half to even, as torchvision's ``CenterCrop``).

2. Intensity and layout (:meth:`Preprocessing.normalize`), on a whole batch, in
   float32 and in torchvision's order of operations::

       x = (raw / scale - mean[c]) / std[c]

   then ``NHWC -> NCHW`` when ``layout == "NCHW"``. A one-channel batch is
   repeated to three channels when the model wants three.

``size`` is the model's input (H, W). It is not a resize: images must *arrive*
at it after stage 1, otherwise :class:`~srp_onnx.errors.DataError` says so.

The converter stores :meth:`Preprocessing.to_json` in the ONNX model's
``metadata_props`` under :data:`METADATA_KEY`, so evaluation can feed the
spiking graph the same tensors the ANN was trained on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from PIL import Image

from srp_onnx.errors import DataError

__all__ = ["METADATA_KEY", "PRESETS", "Preprocessing"]

METADATA_KEY = "srp_onnx.preprocessing"
"""Key in an ONNX model's ``metadata_props`` holding :meth:`Preprocessing.to_json`."""

_LAYOUTS = ("NCHW", "NHWC")
MAX_IMAGE_PIXELS = 1 << 26  # 64 M pixels (8192 x 8192) per image, decoded or resized: refused beyond
# Fields written by to_json, in a fixed order (``source`` is provenance for messages only).
_JSON_FIELDS = ("mean", "std", "scale", "size", "resize", "crop", "layout", "channels")


@dataclass(frozen=True)
class Preprocessing:
    """How raw images become model input. See the module docstring for the maths.

    ``mean`` and ``std`` have one entry per channel, or one entry for all.
    ``source`` only says where this object came from (e.g. ``"its metadata"``);
    it appears in error messages and is neither serialised nor compared.
    """

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float = 255.0
    size: tuple[int, int] | None = None
    resize: int | None = None
    crop: int | None = None
    layout: str = "NCHW"
    channels: int = 3
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        # Normalise types (JSON gives lists, users give ints) and reject nonsense early.
        def fail(what: str) -> DataError:
            return DataError(f"Preprocessing: {what}.")

        try:
            mean = tuple(float(m) for m in _as_tuple(self.mean))
            std = tuple(float(s) for s in _as_tuple(self.std))
            scale = float(self.scale)
        except (TypeError, ValueError) as e:
            raise fail(f"mean, std and scale must be numbers ({e})") from None
        if not _is_pos_int(self.channels):
            raise fail(f"channels must be a positive integer, got {self.channels!r}")
        channels = int(self.channels)
        for name, values in (("mean", mean), ("std", std)):
            if len(values) not in (1, channels):
                raise fail(
                    f"{name} has {len(values)} values but channels is {channels}; give "
                    + ("1 value" if channels == 1 else f"1 or {channels} values")
                )
            if not all(math.isfinite(v) for v in values):
                raise fail(f"{name} {values} is not finite")
        if min(std) <= 0:
            raise fail(f"std {std} must be positive")
        if not (math.isfinite(scale) and scale > 0):
            raise fail(f"scale {scale} must be a positive number (255 for 8-bit images)")
        size = None
        if self.size is not None:
            size_t = _as_tuple(self.size)
            if len(size_t) != 2 or not all(_is_pos_int(s) for s in size_t):
                raise fail(f"size must be (height, width) with positive integers, got {self.size!r}")
            size = (int(size_t[0]), int(size_t[1]))
        for name in ("resize", "crop"):
            value = getattr(self, name)
            if value is not None and not _is_pos_int(value):
                raise fail(f"{name} must be a positive integer or None, got {value!r}")
        if self.layout not in _LAYOUTS:
            raise fail(f"layout must be 'NCHW' or 'NHWC', got {self.layout!r}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "channels", channels)
        for name in ("resize", "crop"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, int(getattr(self, name)))

    # -- serialisation -------------------------------------------------------------------------

    def to_json(self) -> str:
        """Compact JSON of every field but ``source``; :meth:`from_json` inverts it."""
        d: dict[str, Any] = {k: getattr(self, k) for k in _JSON_FIELDS}
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["size"] = None if self.size is None else list(self.size)
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_json(cls, s: str, *, source: str = "") -> Preprocessing:
        """Parse :meth:`to_json` output. Missing keys take their defaults; unknown keys are an error.

        ``source`` (e.g. ``"its metadata"``) is quoted by later error messages.
        """
        where = f" (from {source})" if source else ""
        try:
            d = json.loads(s)
        except (TypeError, ValueError, RecursionError) as e:
            why = "nested too deep" if isinstance(e, RecursionError) else str(e)[:80]
            raise DataError(
                f"Preprocessing JSON{where} is not valid JSON ({why}); re-run the conversion."
            ) from None
        if not isinstance(d, dict):
            raise DataError(f"Preprocessing JSON{where} must be an object, got {type(d).__name__}.")
        known = {f.name for f in fields(cls)} - {"source"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DataError(
                f"Preprocessing JSON{where} has unknown keys {unknown}; known keys are {sorted(known)}."
            )
        return cls(**d, source=source)

    # -- the two stages ------------------------------------------------------------------------

    def output_hw(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) of an image of ``height x width`` after :meth:`resize_crop`."""
        if self.resize is not None:
            height, width = _resized_hw(height, width, self.resize)
        if self.crop is not None:
            height, width = self.crop, self.crop
        return height, width

    def resize_crop(self, images: np.ndarray) -> np.ndarray:
        """Stage 1 on a batch ``[N, H, W, C]`` (or ``[N, H, W]``); a no-op without resize/crop.

        The dtype is kept (uint8 via Pillow's 8-bit modes, float via mode ``"F"``).
        """
        images = _nhwc(images)
        if self.resize is None and self.crop is None:
            return images
        out = [self.resize_crop_image(img) for img in images]
        if not out:
            h, w = self.output_hw(images.shape[1], images.shape[2])
            return np.zeros((0, h, w, images.shape[3]), images.dtype)
        return np.stack(out)

    def resize_crop_image(self, image: np.ndarray) -> np.ndarray:
        """Stage 1 on one image ``[H, W, C]``."""
        if image.ndim != 3:
            raise DataError(f"resize_crop_image expects one image [H, W, C], got shape {image.shape}.")
        if self.resize is not None:
            h, w = _resized_hw(image.shape[0], image.shape[1], self.resize)
            if h * w > MAX_IMAGE_PIXELS:
                raise DataError(f"resize {self.resize} makes a {image.shape[0]}x{image.shape[1]} image {h}x{w}, "
                                f"more than the {MAX_IMAGE_PIXELS} pixels allowed; use a smaller resize or "
                                "images of a less extreme aspect ratio.")
            if (h, w) != image.shape[:2]:
                image = _pil_apply(image, lambda im: im.resize((w, h), Image.Resampling.BILINEAR))
        if self.crop is not None:
            h, w, c = image.shape[0], image.shape[1], self.crop
            if h < c or w < c:
                raise DataError(
                    f"an image is {h}x{w} (after resize) but crop is {c}; "
                    f"set resize to at least {c} or use a smaller crop."
                )
            top = round((h - c) / 2.0)
            left = round((w - c) / 2.0)
            image = image[top : top + c, left : left + c]
        return np.ascontiguousarray(image)

    def normalize(self, images: np.ndarray, *, where: str = "") -> np.ndarray:
        """Stage 2: ``[N, H, W, C]`` images already at the model's size -> float32 in ``layout``.

        ``where`` (e.g. ``"dataset '/data/cifar' (split 'test')"``) prefixes error messages.
        """
        images = _nhwc(images)
        prefix = f"{where}: " if where else ""
        _, h, w, c = images.shape
        if self.size is not None and (h, w) != self.size:
            origin = f" (from {self.source})" if self.source else ""
            raise DataError(
                f"{prefix}images are {h}x{w} but the model expects {self.size[0]}x{self.size[1]}{origin}; "
                f"use data of that size or set resize/crop in the preprocessing."
            )
        if c != self.channels:
            if c == 1 and self.channels == 3:
                images = np.repeat(images, 3, axis=3)
            else:
                raise DataError(
                    f"{prefix}images have {c} channel(s) but the model expects {self.channels}; "
                    f"convert the images or set channels in the preprocessing."
                )
        x = images.astype(np.float32) / np.float32(self.scale)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=np.float32)

    def apply(self, images: np.ndarray, *, where: str = "") -> np.ndarray:
        """Both stages: raw uint8/float images ``[N, H, W, C]`` or ``[N, H, W]`` -> float32 model input."""
        return self.normalize(self.resize_crop(images), where=where)


def _as_tuple(value: Any) -> tuple[Any, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(value)
    if isinstance(value, np.ndarray):
        return tuple(value.tolist())
    return (value,)


def _is_pos_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0


def _resized_hw(height: int, width: int, resize: int) -> tuple[int, int]:
    """torchvision's Resize(int): the shorter side becomes ``resize``, the longer one is truncated."""
    if height <= width:
        return resize, int(resize * width / height)
    return int(resize * height / width), resize


def _nhwc(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise DataError(f"images must be [N, H, W, C] or [N, H, W], got shape {images.shape}.")
    return images


def _pil_apply(image: np.ndarray, op: Callable[[Image.Image], Image.Image]) -> np.ndarray:
    """Run a Pillow operation on an ``[H, W, C]`` array, keeping its dtype.

    uint8 with 1 or 3 channels uses Pillow's ``L``/``RGB`` modes (what torchvision
    does on PIL images); anything else goes channel by channel (``L`` or ``F``).
    """
    if image.dtype == np.uint8 and image.shape[2] == 3:
        return np.asarray(op(Image.fromarray(image)))
    if image.dtype == np.uint8:
        planes = [
            np.asarray(op(Image.fromarray(np.ascontiguousarray(image[:, :, k]))))
            for k in range(image.shape[2])
        ]
        return np.stack(planes, axis=2)
    planes = [
        np.asarray(op(Image.fromarray(np.ascontiguousarray(image[:, :, k], np.float32))))
        for k in range(image.shape[2])
    ]
    return np.stack(planes, axis=2).astype(image.dtype, copy=False)


PRESETS: dict[str, Preprocessing] = {
    # Constants from docs/srp-algorithm.md section 1 (the paper code's transforms).
    "cifar10": Preprocessing(
        mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010), size=(32, 32), channels=3
    ),
    "cifar100": Preprocessing(
        mean=(129.3 / 255, 124.1 / 255, 112.4 / 255),
        std=(68.2 / 255, 65.4 / 255, 70.4 / 255),
        size=(32, 32),
        channels=3,
    ),
    "imagenet": Preprocessing(
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), size=(224, 224), resize=256, crop=224
    ),
    "mnist": Preprocessing(mean=(0.1307,), std=(0.3081,), size=(28, 28), channels=1),
    # sklearn digits are 0..16, so scale 16 maps them onto [0, 1].
    "digits": Preprocessing(mean=(0.0,), std=(1.0,), scale=16.0, size=(8, 8), channels=1),
}
"""Standard preprocessing per dataset; the dataset readers use these when none is given."""
