"""Training targets of the ACIS pre-processing network (SPEC §3), in jax.numpy.

Everything is jittable and vmappable: the number of instances is bounded by a
static `max_instances`, so shapes never depend on the data. An instance map is
an integer (H, W) array where ids ≤ 0 are background and each distinct
positive id is one instance (ids need not be contiguous, and must be below
2**31 − 1: maps are read as int32). Only the `max_instances` smallest ids are
kept; larger ones are dropped without notice inside jit, so check
`count_instances(instances) <= max_instances` on the host when loading data.

Image axes: y is the row index (axis 0, pointing down), x the column index
(axis 1, pointing right); a pixel's coordinates are its integer indices.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

_NO_ID = np.iinfo(np.int32).max  # sorts after every real id


def count_instances(instances: np.ndarray) -> int:
  """Number of distinct positive ids of a host-side instance map."""
  instances = np.asarray(instances)
  return int(np.unique(instances[instances > 0]).size)


def _check(instances: jax.Array, max_instances: int) -> jax.Array:
  if instances.ndim != 2:
    raise ValueError(f"instances must be (H, W), got shape {instances.shape}")
  if not jnp.issubdtype(instances.dtype, jnp.integer):
    raise ValueError(f"instances must be integer ids, got {instances.dtype}")
  if max_instances < 1:
    raise ValueError(f"max_instances must be >= 1, got {max_instances}")
  return instances.astype(jnp.int32)


def instance_index(instances: jax.Array, max_instances: int
                   ) -> tuple[jax.Array, jax.Array]:
  """Slot of each pixel's instance among the kept ids, and those ids.

  Returns `index` int32 (H, W) in [0, max_instances] — slot k for the k-th
  smallest positive id, `max_instances` for background and dropped ids — and
  `ids` int32 (max_instances,) in ascending order, padded with int32 max.
  """
  instances = _check(jnp.asarray(instances), max_instances)
  keys = jnp.where(instances > 0, instances, _NO_ID)
  ids = jnp.unique(keys, size=max_instances, fill_value=_NO_ID)
  slot = jnp.minimum(jnp.searchsorted(ids, keys), max_instances - 1)
  kept = (keys != _NO_ID) & (ids[slot] == keys)
  return jnp.where(kept, slot, max_instances).astype(jnp.int32), ids


def instance_masks(instances: jax.Array, max_instances: int
                   ) -> tuple[jax.Array, jax.Array]:
  """One mask per instance, in ascending id order, padded to `max_instances`.

  Returns `masks` bool (max_instances, H, W) with masks[k] = (instances ==
  k-th smallest positive id), all False for padding slots, and `valid` bool
  (max_instances,) marking the real ones. Ids past the `max_instances` smallest
  are dropped (see the module doc).
  """
  index, ids = instance_index(instances, max_instances)
  masks = index[None] == jnp.arange(max_instances)[:, None, None]
  return masks, ids != _NO_ID


def _centroids(index: jax.Array, num_segments: int) -> tuple[jax.Array, jax.Array]:
  """Mean row and column (float32, (num_segments,)) of each index value.

  Pixel counts per (segment, row) and (segment, column) are exact integers, so
  each moment is a float32 sum of H (or W) exact terms. Summing coordinates
  over all pixels in float32 instead put centroids tenths of a pixel off on
  256×768 maps.
  """
  def mean_coordinate(axis):
    size = index.shape[axis]
    coord = jax.lax.broadcasted_iota(jnp.int32, index.shape, axis)
    counts = jnp.bincount((index * size + coord).reshape(-1),
                          length=num_segments * size).reshape(num_segments, size)
    moment = jnp.sum(counts.astype(jnp.float32) * jnp.arange(size, dtype=jnp.float32), 1)
    return moment / jnp.maximum(counts.sum(1), 1).astype(jnp.float32)

  return mean_coordinate(0), mean_coordinate(1)


def angle_targets(instances: jax.Array, max_instances: int, *, num_bins: int = 8
                  ) -> tuple[jax.Array, jax.Array]:
  """Foreground and quantised centroid→pixel angles (Ren & Zemel; ACIS).

  With the centroid (cy, cx) = mean (y, x) of the pixels of instance k, a
  pixel (y, x) of k gets the one-hot of

      θ   = atan2(y − cy, x − cx)                 (θ = 0 along +x, π/2 along +y)
      bin = ⌊((θ + π/B) mod 2π) / (2π/B)⌋ ∈ {0, …, B−1},   B = num_bins

  so bin 0 is centred on +x and bins turn from +x towards +y (clockwise on
  screen, since y points down). A pixel at its centroid (a one-pixel instance)
  has atan2(0, 0) = 0, bin 0. Instances are disjoint, so the "max over
  instances" of the per-instance one-hots is this per-pixel one-hot.

  Returns `foreground` float32 (H, W) = [instances > 0] and `angles` float32
  (H, W, num_bins), all zeros on background and on dropped instances (whose
  pixels are still foreground).
  """
  if num_bins < 1:
    raise ValueError(f"num_bins must be >= 1, got {num_bins}")
  index, _ = instance_index(instances, max_instances)
  y, x = jnp.indices(index.shape)
  cy, cx = _centroids(index, max_instances + 1)
  theta = jnp.arctan2(y - cy[index], x - cx[index])
  width = 2 * math.pi / num_bins
  shifted = jnp.mod(theta + math.pi / num_bins, 2 * math.pi)
  # mod may round up to 2π for θ just below −π/B: that is the last bin.
  bins = jnp.minimum(jnp.floor(shifted / width).astype(jnp.int32), num_bins - 1)
  kept = index < max_instances
  angles = jax.nn.one_hot(bins, num_bins, dtype=jnp.float32) * kept[..., None]
  foreground = (jnp.asarray(instances) > 0).astype(jnp.float32)
  return foreground, angles
