"""jaxseg_shapes' generator: the small dataset the project draws for itself.

Every example is drawn from `np.random.default_rng((seed, split, index))`, so
the same (split, index) gives the same arrays on every machine, with no
download. A picture is a background of two or three "stuff" regions separated
by wavy, roughly horizontal boundaries, with two to six "thing" shapes on top
that may occlude each other.

Colour is a weak, overlapping cue, as in real scenes: each class has a
prototype colour and every region or shape gets that colour plus a large
random offset (`_COLOUR_SPREAD`), so neighbouring classes overlap in colour.
Stuff classes also differ by texture (smooth clouds, vertical blades,
horizontal ripples) and thing classes by outline; thing textures are drawn
from a pool shared by all thing classes. (Version 1.0.0 had fully random
colours; a small network trained from scratch learned nothing from it in the
quick-start budget.) A shape is only kept if every shape
already placed stays at least `_MIN_VISIBLE_FRACTION` visible, so no instance
is (nearly) fully occluded.

Pure numpy; `jaxseg.data.embedded` writes the examples to a TFDS dataset.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

CLASS_NAMES: tuple[str, ...] = (
    "sky", "grass", "water", "circle", "rectangle", "triangle", "star")
NUM_CLASSES = len(CLASS_NAMES)
STUFF_CLASS_IDS: tuple[int, ...] = (0, 1, 2)
THING_CLASS_IDS: tuple[int, ...] = (3, 4, 5, 6)
SPLITS: tuple[str, ...] = ("train", "val")

DEFAULT_IMAGE_SIZE = (128, 128)
DEFAULT_NUM_TRAIN = 600
DEFAULT_NUM_VAL = 100

_GENERATOR_SEED = 20240611
_SPLIT_IDS = {"train": 0, "val": 1}
_MIN_THINGS, _MAX_THINGS = 2, 6
_PLACEMENT_ATTEMPTS = 8
_MIN_VISIBLE_FRACTION = 0.4
_MIN_SHAPE_PIXELS = 12

Array = np.ndarray


# ----------------------------------------------------------------------------
# Noise and textures. Every texture returns a float32 field of roughly unit
# scale that modulates a random base colour.
# ----------------------------------------------------------------------------


def _value_noise(rng: np.random.Generator, shape: tuple[int, int],
                 cell: tuple[float, float]) -> Array:
  """Bilinearly interpolated Gaussian noise with correlation length `cell`."""
  h, w = shape
  cy, cx = cell
  gh, gw = int(np.ceil(h / cy)) + 2, int(np.ceil(w / cx)) + 2
  grid = rng.standard_normal((gh, gw)).astype(np.float32)
  fy = np.arange(h, dtype=np.float32) / cy + rng.uniform(0, 1)
  fx = np.arange(w, dtype=np.float32) / cx + rng.uniform(0, 1)
  iy, ix = fy.astype(np.int32), fx.astype(np.int32)
  ty, tx = (fy - iy)[:, None], fx - ix
  rows = grid[:, ix] * (1 - tx) + grid[:, ix + 1] * tx
  return rows[iy] * (1 - ty) + rows[iy + 1] * ty


def _fine_noise(rng: np.random.Generator, shape: tuple[int, int]) -> Array:
  """Unit-variance white noise (uniform: cheaper than Gaussian, looks alike)."""
  return (rng.random(shape, dtype=np.float32) - 0.5) * np.float32(np.sqrt(12))


def _sky_texture(rng: np.random.Generator, shape: tuple[int, int],
                 yy: Array, xx: Array) -> Array:
  """Smooth, isotropic clouds with almost no fine detail."""
  del yy, xx
  cell = rng.uniform(10, 20)
  return 0.9 * _value_noise(rng, shape, (cell, cell)) + 0.1 * _fine_noise(
      rng, shape)


def _grass_texture(rng: np.random.Generator, shape: tuple[int, int],
                   yy: Array, xx: Array) -> Array:
  """Vertical blades: long correlation along y, none along x."""
  del yy, xx
  blades = _value_noise(rng, shape, (rng.uniform(4, 9), 1.0))
  return 1.1 * blades + 0.35 * _fine_noise(rng, shape)


def _water_texture(rng: np.random.Generator, shape: tuple[int, int],
                   yy: Array, xx: Array) -> Array:
  """Horizontal ripples: a wobbling sine along y plus horizontal streaks."""
  del xx
  period = rng.uniform(4, 8)
  wobble = _value_noise(rng, shape, (3.0, rng.uniform(10, 20)))
  ripples = np.sin(2 * np.pi * yy / period + 1.5 * wobble)
  streaks = _value_noise(rng, shape, (1.0, rng.uniform(8, 16)))
  return 0.8 * ripples + 0.4 * streaks + 0.15 * _fine_noise(rng, shape)


_STUFF_TEXTURES: dict[int, Callable[..., Array]] = {
    0: _sky_texture,
    1: _grass_texture,
    2: _water_texture,
}


def _thing_texture(rng: np.random.Generator, shape: tuple[int, int],
                   yy: Array, xx: Array) -> Array:
  """One of checker, stripes, dots or blotches, for any thing class."""
  kind = rng.integers(4)
  period = rng.uniform(5, 11)
  if kind == 0:
    pattern = ((yy // period + xx // period) % 2) * 2 - 1
  elif kind == 1:
    theta = rng.uniform(0, np.pi)
    pattern = np.sin(2 * np.pi * (np.cos(theta) * xx + np.sin(theta) * yy) /
                     period)
  elif kind == 2:
    pattern = np.sign(
        np.sin(2 * np.pi * xx / period) * np.sin(2 * np.pi * yy / period) -
        0.3)
  else:
    pattern = _value_noise(rng, shape, (period / 2, period / 2))
  return (0.8 * pattern + 0.2 * _fine_noise(rng, shape)).astype(np.float32)


_CLASS_COLOURS = np.array([
    (150, 185, 225),  # sky
    (85, 145, 70),  # grass
    (50, 100, 160),  # water
    (200, 80, 70),  # circle
    (210, 180, 60),  # rectangle
    (150, 90, 170),  # triangle
    (230, 140, 40),  # star
], np.float32)
_COLOUR_SPREAD = 45.0


def _paint_parameters(rng: np.random.Generator,
                      cls: int) -> tuple[Array, Array]:
  """A base colour near the class prototype and per-channel amplitudes."""
  colour = np.clip(_CLASS_COLOURS[cls] + rng.uniform(
      -_COLOUR_SPREAD, _COLOUR_SPREAD, size=3), 30, 225).astype(np.float32)
  amplitude = rng.uniform(18, 34) * rng.uniform(0.7, 1.0, size=3)
  return colour, amplitude.astype(np.float32)


def _paint(rng: np.random.Generator, texture: Array, cls: int) -> Array:
  """Turns a unit-scale texture field into RGB around the class's colour."""
  colour, amplitude = _paint_parameters(rng, cls)
  return texture[..., None] * amplitude + colour


# ----------------------------------------------------------------------------
# Layout: stuff background and thing shapes.
# ----------------------------------------------------------------------------


def _stuff_background(rng: np.random.Generator, yy: Array,
                      xx: Array) -> tuple[Array, Array]:
  """Two or three stuff regions split by wavy, roughly horizontal curves."""
  h, w = yy.shape
  num_regions = int(rng.integers(2, 4))
  classes = rng.permutation(len(STUFF_CLASS_IDS))[:num_regions]
  x = np.arange(w, dtype=np.float32) / w
  region = np.zeros((h, w), np.int32)
  for offset in np.sort(rng.uniform(0.2, 0.8, num_regions - 1)):
    tilt = rng.uniform(-0.25, 0.25)
    amplitude = rng.uniform(0.0, 0.08)
    boundary = h * (offset + tilt * (x - 0.5) + amplitude *
                    np.sin(2 * np.pi * (rng.uniform(0.5, 2.0) * x +
                                        rng.uniform(0, 1))))
    region += yy > boundary[None, :]
  label = np.take(np.asarray(STUFF_CLASS_IDS, np.uint8)[classes], region)
  texture = np.zeros((h, w), np.float32)
  colours = np.zeros((num_regions, 3), np.float32)
  amplitudes = np.zeros((num_regions, 3), np.float32)
  for r, cls in enumerate(classes):
    mask = region == r
    if mask.any():
      field = _STUFF_TEXTURES[int(cls)](rng, (h, w), yy, xx)
      texture = np.where(mask, field, texture)
      colours[r], amplitudes[r] = _paint_parameters(rng, int(cls))
  image = (texture[..., None] * np.take(amplitudes, region, axis=0) +
           np.take(colours, region, axis=0))
  return image, label


def _fan_polygon_mask(vertices: Array, centre: Array, yy: Array,
                      xx: Array) -> Array:
  """Inside test for a polygon that is star-shaped about `centre`.

  The polygon (vertices counter-clockwise in (x, y)) is the union of the
  triangles (centre, v_k, v_k+1), each tested with three half-planes.
  """
  inside = np.zeros(yy.shape, bool)

  def left_of(a: Array, b: Array) -> Array:
    return (b[0] - a[0]) * (yy - a[1]) - (b[1] - a[1]) * (xx - a[0]) >= 0

  for k in range(len(vertices)):
    a, b = vertices[k], vertices[(k + 1) % len(vertices)]
    inside |= left_of(centre, a) & left_of(a, b) & left_of(b, centre)
  return inside


def _shape_mask(rng: np.random.Generator, cls: int, centre: Array,
                radius: float, yy: Array, xx: Array) -> Array:
  """Rasterises one thing of class `cls` on the (sub-)grid `yy, xx`."""
  angle = rng.uniform(0, 2 * np.pi)
  cx, cy = centre
  if cls == 3:  # circle
    return (yy - cy)**2 + (xx - cx)**2 <= radius**2
  if cls == 4:  # rotated rectangle
    u = np.cos(angle) * (xx - cx) + np.sin(angle) * (yy - cy)
    v = -np.sin(angle) * (xx - cx) + np.cos(angle) * (yy - cy)
    aspect = rng.uniform(0.45, 0.9)
    return (np.abs(u) <= radius) & (np.abs(v) <= radius * aspect)
  if cls == 5:  # triangle
    angles = angle + np.array([0, 2, 4]) * np.pi / 3 + rng.uniform(
        -0.25, 0.25, 3)
    radii = radius * rng.uniform(0.9, 1.15, 3)
  else:  # five-pointed star
    angles = angle + np.arange(10) * np.pi / 5
    radii = radius * np.where(np.arange(10) % 2 == 0, 1.0,
                              rng.uniform(0.38, 0.55))
  vertices = np.stack([cx + radii * np.cos(angles),
                       cy + radii * np.sin(angles)], axis=1)
  return _fan_polygon_mask(vertices, np.asarray(centre), yy, xx)


def _propose_thing(rng: np.random.Generator, yy: Array,
                   xx: Array) -> tuple[int, tuple[slice, slice], Array]:
  """Draws a class, a bounding box and the mask inside it for one thing."""
  h, w = yy.shape
  cls = int(rng.choice(THING_CLASS_IDS))
  radius = rng.uniform(0.08, 0.22) * min(h, w)
  cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
  box = (slice(max(0, int(cy - radius) - 1), min(h, int(cy + radius) + 2)),
         slice(max(0, int(cx - radius) - 1), min(w, int(cx + radius) + 2)))
  mask = _shape_mask(rng, cls, np.array([cx, cy]), radius, yy[box], xx[box])
  return cls, box, mask


def _keeps_others_visible(instances: Array, box: tuple[slice, slice],
                          mask: Array, areas: list[int]) -> bool:
  """Whether painting `mask` on top leaves every placed thing visible enough."""
  if not areas:
    return True
  covered = np.bincount(instances[box][mask], minlength=len(areas) + 1)[1:]
  remaining = np.bincount(instances.ravel(), minlength=len(areas) + 1)[1:]
  remaining -= covered
  return bool(np.all(remaining >= _MIN_VISIBLE_FRACTION * np.asarray(areas)))


def _place_things(rng: np.random.Generator, image: Array, label: Array,
                  yy: Array, xx: Array) -> Array:
  """Paints thing shapes over `image`/`label` in place; returns instance ids."""
  instances = np.zeros(label.shape, np.int32)
  areas: list[int] = []
  for _ in range(int(rng.integers(_MIN_THINGS, _MAX_THINGS + 1))):
    for _ in range(_PLACEMENT_ATTEMPTS):
      cls, box, mask = _propose_thing(rng, yy, xx)
      area = int(mask.sum())
      if area >= _MIN_SHAPE_PIXELS and _keeps_others_visible(
          instances, box, mask, areas):
        break
    else:
      continue
    by, bx = yy[box], xx[box]
    texture = _thing_texture(rng, mask.shape, by, bx)
    shading = ((bx - bx[mask].mean()) * rng.uniform(-1, 1) +
               (by - by[mask].mean()) * rng.uniform(-1, 1)) / np.sqrt(area)
    colours = _paint(rng, texture, int(cls)) + 25 * shading[..., None]
    image[box] = np.where(mask[..., None], colours, image[box])
    label[box] = np.where(mask, np.uint8(cls), label[box])
    areas.append(area)
    instances[box] = np.where(mask, len(areas), instances[box])
  return _compact_ids(instances)


def _compact_ids(instances: Array) -> Array:
  """Renumbers visible instances 1..N in drawing order; 0 stays background."""
  present = np.unique(instances)
  present = present[present > 0]
  lookup = np.zeros(instances.max() + 1, np.uint16)
  lookup[present] = np.arange(1, len(present) + 1, dtype=np.uint16)
  return lookup[instances]


def generate_example(split: str, index: int,
                     image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE
                     ) -> dict[str, Array]:
  """Draws example `index` of `split`; the same arguments give the same arrays.

  Args:
    split: "train" or "val".
    index: non-negative example index.
    image_size: (height, width) in pixels.

  Returns:
    {"image": uint8 (H, W, 3), "label": uint8 (H, W) class ids into
    CLASS_NAMES, "instances": uint16 (H, W), 0 on stuff and 1..N on things}.
  """
  if split not in _SPLIT_IDS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  rng = np.random.default_rng((_GENERATOR_SEED, _SPLIT_IDS[split], index))
  h, w = image_size
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  image, label = _stuff_background(rng, yy, xx)
  instances = _place_things(rng, image, label, yy, xx)
  image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
  return {"image": image, "label": label, "instances": instances}
