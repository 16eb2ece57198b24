"""How raw images become the network's input, written once for every way in: the logged
MLflow model, ``denselab-predict`` and ``denselab.load`` all go through :class:`Preprocessing`.

The rule is the one training follows:

- a network takes images of its ``input_shape``: (H, W) grayscale or (H, W, C) colour;
- uint8 pixels are divided by 255; float pixels are taken as already in [0, 1] (what
  :func:`denselab.data.pixels.as_float` does to each batch of a split);
- image files are decoded as Flowers-17's photos are (:mod:`denselab.data.images`): converted
  to the network's colour mode, the largest centred crop of the network's aspect ratio cut
  out, and resized to (H, W) with Lanczos. A file already of that size is read as it is, so
  an MNIST PNG comes back exactly as the IDX bytes it was written from;
- arrays keep their size (a wrong one is refused); their channels are converted where that
  is unambiguous: grayscale to RGB by repeating, RGB to grayscale with Pillow's luma weights,
  RGBA by dropping alpha.

This module imports torch, NumPy and Pillow only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from denselab.data import images as image_decoding
from denselab.errors import DataError, InputError

# Pillow's ITU-R 601-2 luma transform ("L" mode), in its own fixed-point form: an RGB array
# turned grayscale here equals the same pixels saved and read back as a grayscale file.
LUMA = (19595, 38470, 7471)
DESCRIPTION = {
    "scaling": "uint8 pixels / 255; float pixels taken as already in [0, 1]",
    "resize": "image files: largest centred crop of the input's aspect ratio, Lanczos resize",
}


@dataclass(frozen=True)
class Preprocessing:
    """What a trained network takes, and the names of what it gives.

    ``pixel_dtype`` is the type of the training data's pixels ("uint8" or "float32"): the
    logged model's signature asks for it. ``class_labels`` are the classes' labels in the
    dataset's own files (0..K-1, or e.g. 1..K for an image table).
    """

    input_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    pixel_dtype: str = "uint8"
    class_labels: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        labels = self.class_labels or range(len(self.class_names))
        object.__setattr__(self, "class_labels", tuple(int(v) for v in labels))

    # -- what the network takes ----------------------------------------------------------

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.input_shape[0], self.input_shape[1]

    @property
    def channels(self) -> int:
        """0 for (H, W) grayscale, else C of (H, W, C)."""
        return self.input_shape[2] if len(self.input_shape) == 3 else 0

    @property
    def mode(self) -> str:
        """Pillow's mode for the network's images: L (grayscale) or RGB."""
        return "RGB" if self.channels == 3 else "L"

    @property
    def features(self) -> int:
        return math.prod(self.input_shape)

    # -- as JSON (logged with the model) -------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "pixel_dtype": self.pixel_dtype,
            "class_names": list(self.class_names),
            "class_labels": list(self.class_labels),
            "color_mode": self.mode,
            "image_size": list(self.size),
            **DESCRIPTION,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Preprocessing":
        return cls(
            input_shape=tuple(d["input_shape"]),
            class_names=tuple(d["class_names"]),
            pixel_dtype=str(d.get("pixel_dtype", "uint8")),
            class_labels=tuple(d.get("class_labels") or ()),
        )

    # -- arrays --------------------------------------------------------------------------

    def to_input(self, images: Any, source: str = "the images") -> torch.Tensor:
        """Raw images (N, H, W[, C]), or one image, as the network's float32 input
        (N, *input_shape) in [0, 1]. ``source`` names them in errors."""
        array = np.asarray(images.cpu() if isinstance(images, torch.Tensor) else images)
        array = self._pixels(array, source)
        if tuple(array.shape) == self.input_shape:  # one image
            array = array[None]
        array = self._channels(array, source)
        if tuple(array.shape[1:]) != self.input_shape:
            raise InputError(
                f"{source} holds images of shape {_shape(array.shape[1:])}, but the network "
                f"takes {_shape(self.input_shape)}; resize them, or pass image files, which "
                "are cropped and resized as in training."
            )
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if tensor.dtype == torch.uint8:
            return tensor.to(torch.float32).div_(255.0)
        return tensor.to(torch.float32)

    def _pixels(self, array: np.ndarray, source: str) -> np.ndarray:
        if array.dtype == np.uint8:
            return array
        if array.dtype.kind in "iu":  # integers from JSON or int64 arrays: pixels 0..255
            if array.size and (array.min() < 0 or array.max() > 255):
                raise InputError(
                    f"{source} holds integers outside 0..255; pass uint8 pixels (0-255) or "
                    "floats in [0, 1]."
                )
            return array.astype(np.uint8)
        if array.dtype.kind == "f":
            if array.size and not (
                np.isfinite(array).all() and 0 <= array.min() <= array.max() <= 1
            ):
                raise InputError(
                    f"{source} holds floats outside [0, 1]; divide 0-255 pixels by 255, or pass "
                    "them as uint8."
                )
            return array.astype(np.float32, copy=False)
        raise InputError(
            f"{source} holds {array.dtype} values, not pixels; pass uint8 pixels (0-255) or "
            "floats in [0, 1]."
        )

    def _channels(self, array: np.ndarray, source: str) -> np.ndarray:
        """(N, H, W[, C]) with the network's channels, where the conversion is unambiguous."""
        wanted = self.channels
        if array.ndim == 3 and wanted:  # grayscale images for a colour network
            return np.repeat(array[..., None], wanted, axis=3)
        if array.ndim != 4:
            return array
        have = array.shape[3]
        if have == wanted:
            return array
        if have == 1:
            return array[..., 0] if wanted == 0 else np.repeat(array, wanted, axis=3)
        if have == 4 and wanted in (0, 3):
            array = array[..., :3]  # RGBA: alpha dropped, as Pillow does converting to RGB
            have = 3
            if wanted == 3:
                return array
        if have == 3 and wanted == 0:
            return _luma(array)
        raise InputError(
            f"{source} holds images with {have} channels, but the network takes "
            f"{_shape(self.input_shape)}; pass grayscale, RGB or RGBA images."
        )

    # -- files ---------------------------------------------------------------------------

    def read_file(self, path: Path) -> np.ndarray:
        """The image file at ``path`` as uint8 pixels of ``input_shape`` (see the module)."""
        height, width = self.size
        try:
            if self.mode == "RGB" and height == width:
                # The call that decoded the training photos (Flowers-17), unchanged.
                pixels = image_decoding.decode_image(path, height)
            else:
                pixels = _decode(path, self.mode, (width, height))
        except (DataError, OSError, ValueError, Image.DecompressionBombError):
            raise InputError(
                f"{path} cannot be read as an image (not a format Pillow decodes, or damaged); "
                "remove it from the inputs or replace it."
            ) from None
        if self.channels == 1:
            pixels = pixels[..., None]
        return pixels


def _decode(path: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    """data/images.decode_image for any mode and size: draft, convert, centred fit, Lanczos."""
    with Image.open(path) as image:
        image.draft(mode, size)
        converted = image_decoding._to_rgb(image) if mode == "RGB" else image.convert(mode)
        fitted = ImageOps.fit(converted, size, method=Image.Resampling.LANCZOS)
    return np.asarray(fitted, dtype=np.uint8)


def _luma(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype == np.uint8:
        r, g, b = (rgb[..., k].astype(np.uint32) for k in range(3))
        return ((r * LUMA[0] + g * LUMA[1] + b * LUMA[2] + 0x8000) >> 16).astype(np.uint8)
    weights = np.array(LUMA, dtype=np.float32) / 65536.0
    return (rgb @ weights).astype(np.float32)


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


# -- from a training run ---------------------------------------------------------------------


def preprocessing_of(datamodule) -> Preprocessing:
    """The preprocessing of a set-up datamodule's images."""
    return Preprocessing(
        input_shape=tuple(datamodule.input_shape),
        class_names=tuple(datamodule.class_names),
        pixel_dtype=getattr(datamodule, "pixel_dtype", "float32"),
        class_labels=tuple(datamodule.class_labels),
    )


def raw_pixels(x: torch.Tensor, pixel_dtype: str) -> np.ndarray:
    """A split's images as the dataset's files hold them: uint8 pixels stay, float [0, 1]
    tensors made from uint8 files go back to them exactly (k / 255 * 255 rounds to k)."""
    if x.dtype == torch.uint8 or pixel_dtype != "uint8":
        return x.cpu().numpy()
    return (x.cpu() * 255.0).round_().to(torch.uint8).numpy()
