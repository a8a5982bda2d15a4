"""Decoding and resizing single image and label files (host-side numpy/PIL);
every problem is a `DataError` naming the file."""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image

from jaxseg.data.errors import DataError

_LABEL_MODES = ("L", "P", "1", "I", "I;16", "I;16B", "I;16L")

Array = np.ndarray


def _open(path: pathlib.Path) -> Image.Image:
  """Opens and fully decodes `path`, turning any failure into a DataError."""
  try:
    with Image.open(path) as image:
      image.load()
      return image
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise DataError(f"cannot decode {path}: {e}") from e


def _image_size(path: pathlib.Path) -> tuple[int, int]:
  """(height, width) read from the file header only."""
  try:
    with Image.open(path) as image:
      return image.height, image.width
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise DataError(f"cannot decode {path}: {e}") from e


def nearest_indices(in_size: int, out_size: int) -> Array:
  """Source index of each output pixel for nearest-neighbour resizing."""
  return np.minimum(
      ((np.arange(out_size) + 0.5) * (in_size / out_size)).astype(np.int64),
      in_size - 1)


def resize_nearest(array: Array, size: tuple[int, int]) -> Array:
  """Nearest-neighbour resize of the first two axes to `size` = (H, W)."""
  rows = nearest_indices(array.shape[0], size[0])
  cols = nearest_indices(array.shape[1], size[1])
  return array[rows[:, None], cols[None, :]]


def decode_image(path: pathlib.Path) -> Array:
  """RGB uint8 (H, W, 3); any mode is converted, alpha is dropped."""
  image = _open(path)
  if image.mode != "RGB":
    image = image.convert("RGB")
  return np.asarray(image, dtype=np.uint8)


def resize_image(image: Array, size: tuple[int, int]) -> Array:
  """Bilinear resize of an RGB uint8 image to `size` = (H, W).

  PIL widens the filter when downscaling, so this is antialiased.
  """
  if image.shape[:2] == tuple(size):
    return image
  resized = Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR)
  return np.asarray(resized)


def decode_label(path: pathlib.Path) -> Array:
  """Single-channel label map: uint8 for 8-bit files, int32 for 16-bit ones.

  Palette PNGs give their raw indices, never the palette colours.
  """
  image = _open(path)
  if image.mode not in _LABEL_MODES:
    raise DataError(
        f"{path}: label image has mode {image.mode!r}; expected one channel of "
        "class or instance ids (mode L, P or 16-bit), not colours")
  if image.mode in ("L", "P", "1"):
    return np.asarray(image, dtype=np.uint8)
  return np.asarray(image).astype(np.int32)
