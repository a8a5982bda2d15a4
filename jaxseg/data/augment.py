"""Host-side training augmentation in numpy and PIL (mmseg's recipe).

One call maps an example and a `np.random.Generator` to a fixed-size crop:

1. random rescale by s ~ U[scale_min, scale_max] (image bilinear, label and
   instances nearest);
2. random crop of `crop_size`; where the rescaled image is smaller, the crop
   is padded at the bottom/right with image 0, label `ignore_index` and
   instance 0;
3. horizontal flip with probability 1/2;
4. photometric distortion: brightness, contrast, saturation and hue, each
   applied with probability 1/2 (mmseg's PhotoMetricDistortion ranges).

Only the crop window is ever resampled: PIL's `resize(box=...)` reads the
source region that maps onto the crop, so a 2x upscale costs no more than the
crop itself. The photometric ops are all affine in RGB, so they are composed
into one 3x3 matrix and offset and applied in a single pass.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from jaxseg.data.images import nearest_indices

Array = np.ndarray

BRIGHTNESS_DELTA = 32.0
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA_DEGREES = 36.0  # mmseg's 18 in OpenCV's 0..180 hue units.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114],
                        [0.596, -0.274, -0.322],
                        [0.211, -0.523, 0.312]], np.float32)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class CropWindow:
  """Where the crop lies in the rescaled image of size `scaled`."""
  scaled: tuple[int, int]
  top: int
  left: int
  height: int  # Rows of real image in the crop; the rest is padding.
  width: int


def sample_crop_window(rng: np.random.Generator, size: tuple[int, int],
                       crop_size: tuple[int, int],
                       scale_range: tuple[float, float]) -> CropWindow:
  """Draws the scale and the crop offset for an image of `size` = (H, W)."""
  scale = rng.uniform(*scale_range)
  scaled = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
  top = int(rng.integers(0, max(scaled[0] - crop_size[0], 0) + 1))
  left = int(rng.integers(0, max(scaled[1] - crop_size[1], 0) + 1))
  return CropWindow(scaled, top, left, min(crop_size[0], scaled[0]),
                    min(crop_size[1], scaled[1]))


def crop_image(image: Array, window: CropWindow,
               crop_size: tuple[int, int]) -> Array:
  """Bilinear rescale-and-crop of an RGB uint8 image, zero padded."""
  h, w = image.shape[:2]
  sy, sx = h / window.scaled[0], w / window.scaled[1]
  box = (window.left * sx, window.top * sy, (window.left + window.width) * sx,
         (window.top + window.height) * sy)
  region = Image.fromarray(image).resize((window.width, window.height),
                                         Image.BILINEAR, box=box)
  out = np.zeros((*crop_size, 3), np.uint8)
  out[:window.height, :window.width] = np.asarray(region)
  return out


def crop_map(array: Array, window: CropWindow, crop_size: tuple[int, int],
             fill: int) -> Array:
  """Nearest rescale-and-crop of an id map to int32, padded with `fill`."""
  rows = nearest_indices(array.shape[0], window.scaled[0])
  cols = nearest_indices(array.shape[1], window.scaled[1])
  rows = rows[window.top:window.top + window.height]
  cols = cols[window.left:window.left + window.width]
  out = np.full(crop_size, fill, np.int32)
  out[:window.height, :window.width] = array[rows[:, None], cols[None, :]]
  return out


def _compose(first: tuple[Array, Array],
             then: tuple[Array, Array]) -> tuple[Array, Array]:
  """Affine maps x -> M x + b, composed as `then` after `first`."""
  (m1, b1), (m2, b2) = first, then
  return m2 @ m1, m2 @ b1 + b2


def sample_photometric(rng: np.random.Generator) -> tuple[Array, Array]:
  """Draws mmseg-like colour jitter as one affine map (M, b) on RGB.

  In order: brightness x + d, d ~ U[-32, 32]; contrast a x, a ~ U[0.5, 1.5]
  (before or after the next two, at random); saturation
  a x + (1 - a) luma(x); hue: rotation of the YIQ chroma plane by
  U[-36, 36] degrees. Each is applied with probability 1/2. Unlike mmseg,
  values are clipped once at the end, not after each step.
  """
  identity = np.eye(3, dtype=np.float32)
  transform = (identity, np.zeros(3, np.float32))
  contrast_first = rng.random() < 0.5
  steps = []
  if rng.random() < 0.5:
    delta = rng.uniform(-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA)
    steps.append((identity, np.full(3, delta, np.float32)))
  contrast = None
  if rng.random() < 0.5:
    contrast = (identity * rng.uniform(*CONTRAST_RANGE),
                np.zeros(3, np.float32))
    if contrast_first:
      steps.append(contrast)
  if rng.random() < 0.5:
    alpha = rng.uniform(*SATURATION_RANGE)
    matrix = alpha * identity + (1 - alpha) * np.outer(np.ones(3), _LUMA)
    steps.append((matrix, np.zeros(3, np.float32)))
  if rng.random() < 0.5:
    theta = np.deg2rad(rng.uniform(-HUE_DELTA_DEGREES, HUE_DELTA_DEGREES))
    rotation = np.array([[1, 0, 0],
                         [0, np.cos(theta), -np.sin(theta)],
                         [0, np.sin(theta), np.cos(theta)]])
    steps.append((_YIQ_TO_RGB @ rotation @ _RGB_TO_YIQ,
                  np.zeros(3, np.float32)))
  if contrast is not None and not contrast_first:
    steps.append(contrast)
  for step in steps:
    transform = _compose(transform, step)
  matrix, offset = transform
  return matrix.astype(np.float32), offset.astype(np.float32)


def apply_photometric(image: Array, matrix: Array, offset: Array) -> Array:
  """x -> clip(M x + b) on every RGB pixel of a uint8 image."""
  out = image.astype(np.float32) @ matrix.T + offset
  return np.clip(out, 0, 255).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class TrainAugmentation:
  """The training transform, as a picklable callable for grain `random_map`.

  Input: {"image": uint8 (H, W, 3), "label": (H, W), optionally "instances":
  (H, W), anything else is dropped}. Output: {"image": uint8 (*crop_size, 3),
  "label": int32 crop_size, and "instances": int32 crop_size if given}.
  """

  crop_size: tuple[int, int]
  ignore_index: int = 255
  scale_range: tuple[float, float] = (0.5, 2.0)
  flip: bool = True
  photometric: bool = True
  rotate: bool = False  # also vertical flips and 90° rotations (square crops)

  def __post_init__(self):
    if len(self.crop_size) != 2 or min(self.crop_size) <= 0:
      raise ValueError(f"crop_size must be (H, W) > 0, got {self.crop_size}")
    if self.rotate and self.crop_size[0] != self.crop_size[1]:
      raise ValueError(f"rotate needs a square crop_size, got {self.crop_size}")
    low, high = self.scale_range
    if not 0 < low <= high:
      raise ValueError(
          f"scale_range must satisfy 0 < min <= max, got {self.scale_range}")
    object.__setattr__(self, "crop_size", tuple(int(s) for s in self.crop_size))
    object.__setattr__(self, "scale_range", (float(low), float(high)))

  def __call__(self, example: dict, rng: np.random.Generator) -> dict:
    image = np.asarray(example["image"])
    window = sample_crop_window(rng, image.shape[:2], self.crop_size,
                                self.scale_range)
    out = {
        "image": crop_image(image, window, self.crop_size),
        "label": crop_map(np.asarray(example["label"]), window, self.crop_size,
                          self.ignore_index),
    }
    if "instances" in example:
      out["instances"] = crop_map(np.asarray(example["instances"]), window,
                                  self.crop_size, 0)
    if self.flip and rng.random() < 0.5:
      out = {k: np.ascontiguousarray(v[:, ::-1]) for k, v in out.items()}
    if self.rotate:  # with the flip above: the 8 symmetries of the square
      k = int(rng.integers(4))
      out = {key: np.ascontiguousarray(np.rot90(v, k)) for key, v in out.items()}
    if self.photometric:
      out["image"] = apply_photometric(out["image"], *sample_photometric(rng))
    return out
