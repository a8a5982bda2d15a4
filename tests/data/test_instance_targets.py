import functools
import math

import jax
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jaxseg.data import instance_targets as targets

IDS = np.array([1, 2, 3, 7, 17, 250, 255, 256, 1000, 65535, 2**31 - 2])
EDGE_TOL = 1e-4  # float32 may put pixels this close to a bin edge either side
# Few static values keep the number of compilations (the test time) small.
masks_fn = jax.jit(targets.instance_masks, static_argnums=1)
angles_fn = jax.jit(targets.angle_targets, static_argnames=("max_instances", "num_bins"))


def random_instances(rng, shape, ids=IDS, max_boxes=8):
  """Overlapping rectangles (later ones occlude, so shapes are not convex)."""
  out = np.zeros(shape, np.int32)
  for _ in range(rng.integers(0, max_boxes + 1)):
    y0, x0 = rng.integers(0, shape[0]), rng.integers(0, shape[1])
    y1, x1 = y0 + rng.integers(1, shape[0] // 2 + 2), x0 + rng.integers(1, shape[1] // 2 + 2)
    out[y0:y1, x0:x1] = rng.choice(ids)
  return out


def reference_masks(instances, max_instances):
  ids = sorted({int(i) for i in instances.ravel() if i > 0})[:max_instances]
  masks = np.zeros((max_instances,) + instances.shape, bool)
  valid = np.zeros(max_instances, bool)
  for k, i in enumerate(ids):
    masks[k], valid[k] = instances == i, True
  return masks, valid


def reference_angles(instances, max_instances, num_bins):
  """Loops in float64; `near_edge` marks pixels within EDGE_TOL of a bin edge."""
  h, w = instances.shape
  angles = np.zeros((h, w, num_bins), np.float32)
  near_edge = np.zeros((h, w), bool)
  width = 2 * math.pi / num_bins
  for i in sorted({int(i) for i in instances.ravel() if i > 0})[:max_instances]:
    ys, xs = np.nonzero(instances == i)
    cy, cx = ys.mean(), xs.mean()
    for y, x in zip(ys, xs):
      shifted = (math.atan2(y - cy, x - cx) + math.pi / num_bins) % (2 * math.pi)
      angles[y, x, min(int(shifted // width), num_bins - 1)] = 1.0
      frac = shifted / width
      near_edge[y, x] = abs(frac - round(frac)) * width < EDGE_TOL
  return (instances > 0).astype(np.float32), angles, near_edge


def assert_angles_match(got, instances, max_instances, num_bins):
  fg, angles, near_edge = reference_angles(instances, max_instances, num_bins)
  got_fg, got_angles = map(np.asarray, got)
  assert got_fg.dtype == np.float32 and got_angles.dtype == np.float32
  np.testing.assert_array_equal(got_fg, fg)
  assert np.all(got_angles.sum(-1) <= 1)  # one-hot or zero everywhere
  np.testing.assert_array_equal(got_angles[~near_edge], angles[~near_edge])
  np.testing.assert_array_equal(got_angles.sum(-1), angles.sum(-1))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_masks_match_loop_reference(seed):
  rng = np.random.default_rng(seed)
  instances = random_instances(rng, (9, 13))
  max_instances = int(rng.choice([1, 4, 9]))  # often fewer slots than instances
  masks, valid = masks_fn(instances, max_instances)
  want_masks, want_valid = reference_masks(instances, max_instances)
  assert masks.dtype == bool and valid.dtype == bool
  np.testing.assert_array_equal(masks, want_masks)
  np.testing.assert_array_equal(valid, want_valid)
  assert int(valid.sum()) == min(targets.count_instances(instances), max_instances)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([8, 8, 8, 4]))
def test_angles_match_loop_reference(seed, num_bins):
  rng = np.random.default_rng(seed)
  instances = random_instances(rng, (11, 14))
  max_instances = int(rng.choice([1, 4, 9]))
  got = angles_fn(instances, max_instances=max_instances, num_bins=num_bins)
  assert_angles_match(got, instances, max_instances, num_bins)


def test_vmap_over_a_batch_matches_single_maps():
  rng = np.random.default_rng(0)
  batch = np.stack([random_instances(rng, (10, 12)) for _ in range(5)]
                   + [np.zeros((10, 12), np.int32)])
  masks_fn = jax.jit(jax.vmap(functools.partial(targets.instance_masks, max_instances=6)))
  angles_fn = jax.jit(jax.vmap(functools.partial(targets.angle_targets, max_instances=6)))
  masks, valid = masks_fn(batch)
  fg, angles = angles_fn(batch)
  assert masks.shape == (6, 6, 10, 12) and angles.shape == (6, 10, 12, 8)
  for b, instances in enumerate(batch):
    want_masks, want_valid = reference_masks(instances, 6)
    np.testing.assert_array_equal(masks[b], want_masks)
    np.testing.assert_array_equal(valid[b], want_valid)
    assert_angles_match((fg[b], angles[b]), instances, 6, 8)


def test_empty_map():
  empty = np.zeros((5, 7), np.uint8)
  masks, valid = masks_fn(empty, 3)
  assert masks.shape == (3, 5, 7) and not masks.any() and not valid.any()
  fg, angles = angles_fn(empty, max_instances=3)
  assert fg.shape == (5, 7) and angles.shape == (5, 7, 8)
  assert not fg.any() and not angles.any()
  assert targets.count_instances(empty) == 0


def test_single_pixel_instance_is_bin_zero():
  instances = np.zeros((4, 4), np.int32)
  instances[2, 1] = 42  # its own centroid: atan2(0, 0) = 0
  fg, angles = angles_fn(instances, max_instances=2)
  assert fg[2, 1] == 1 and fg.sum() == 1
  np.testing.assert_array_equal(angles[2, 1], np.eye(8)[0])
  assert angles.sum() == 1


def test_hand_computed_bins_and_axis_convention():
  # A plus of id 9 centred on (2, 2): right, down, left, up arms.
  instances = np.zeros((5, 5), np.uint8)
  instances[2, :] = instances[:, 2] = 9
  _, angles = angles_fn(instances, max_instances=1)
  bins = np.asarray(angles).argmax(-1)
  assert bins[2, 2] == 0 and bins[2, 4] == 0  # centre; +x (right) is angle 0
  assert bins[4, 2] == 2  # +y (down) is π/2: bin 2 of 8
  assert bins[2, 0] == 4 and bins[0, 2] == 6  # left π, up −π/2 ≡ 3π/2
  # Two pixels of id 3: centroid (0, 0.5); left pixel at π (bin 4), right at 0.
  _, angles = angles_fn(np.array([[3, 3]]), max_instances=1)
  np.testing.assert_array_equal(angles[0], np.eye(8)[[4, 0]])


def test_non_contiguous_ids_in_ascending_order_and_dropping():
  instances = np.array([[250, 0, 17],
                        [0, 3, 3],
                        [2**31 - 2, 0, 17]])
  masks, valid = masks_fn(instances, 5)
  np.testing.assert_array_equal(valid, [True, True, True, True, False])
  for k, i in enumerate([3, 17, 250, 2**31 - 2]):
    np.testing.assert_array_equal(masks[k], instances == i)
  assert targets.count_instances(instances) == 4
  # Two slots keep ids 3 and 17; 250 and 2**31 − 2 lose their angles, not fg.
  masks, valid = masks_fn(instances, 2)
  assert valid.all() and masks.sum() == 4
  fg, angles = angles_fn(instances, max_instances=2)
  np.testing.assert_array_equal(fg, instances > 0)
  np.testing.assert_array_equal(np.asarray(angles).sum(-1), np.isin(instances, [3, 17]))


def test_rejects_bad_inputs():
  with pytest.raises(ValueError, match=r"\(H, W\)"):
    targets.instance_masks(np.zeros((2, 3, 4), np.int32), 2)
  with pytest.raises(ValueError, match="integer"):
    targets.angle_targets(np.zeros((3, 4), np.float32), 2)
  with pytest.raises(ValueError, match="max_instances"):
    targets.instance_masks(np.zeros((3, 4), np.int32), 0)


def test_centroids_stay_accurate_on_a_kitti_sized_map():
  # One float32 scatter-add of coordinates put centroids ~0.4 px off here.
  rng = np.random.default_rng(0)
  instances = np.ones((256, 768), np.int32)
  instances[:85, :384] = 2
  instances[rng.random(instances.shape) < 0.01] = 0
  _, angles = angles_fn(instances, max_instances=2)
  ys, xs = np.indices(instances.shape)
  for i in (1, 2):
    m = instances == i
    theta = np.arctan2(ys[m] - ys[m].mean(), xs[m] - xs[m].mean())
    frac = ((theta + math.pi / 8) % (2 * math.pi)) / (math.pi / 4)
    far = np.abs(frac - np.round(frac)) * math.pi / 4 > EDGE_TOL
    want = np.minimum(np.floor(frac), 7).astype(int)
    np.testing.assert_array_equal(np.asarray(angles)[m].argmax(-1)[far], want[far])
