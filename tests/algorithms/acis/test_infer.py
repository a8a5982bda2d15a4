"""ACIS inference helpers (jaxseg.algorithms.acis.infer)."""
import numpy as np
import pytest

from jaxseg.algorithms.acis import infer as acis


def test_inference_helpers():
  assert acis.num_predicted(np.array([0.9, 0.8, 0.3, 0.9])) == 3
  assert acis.num_predicted(np.array([0.9, 0.9])) == 2
  assert acis.num_predicted(np.array([0.1, 0.9])) == 1
  masks = np.zeros((3, 4, 4), np.float32)
  masks[0, :2] = 0.9
  masks[1, 1:3] = 0.95  # overlaps mask 0 on row 1 and wins there
  masks[2] = 0.4  # never above 0.5
  np.testing.assert_array_equal(acis.label_map(masks)[:, 0], [1, 2, 2, 0])
  assert acis.label_map(masks[:0]).shape == (4, 4)
  big = acis.paste_back(masks, (8, 6))
  assert big.shape == (3, 8, 6) and np.allclose(big[2], 0.4)
  gt = np.zeros((4, 4), np.int32)
  gt[:2], gt[2:] = 5, 9
  perfect = np.stack([gt == 9, gt == 5]).astype(np.float32)
  assert acis.gt_stop_dice(perfect, gt) == pytest.approx(1.0)
  assert acis.gt_stop_dice(perfect[:1], gt) == pytest.approx(0.5)


def test_fg_coverage_counts_ground_truth_foreground_pixels_under_any_label():
  gt = np.zeros((4, 4), np.int32)
  gt[:2], gt[3, :2] = 5, 9  # 10 foreground pixels
  labels = np.zeros((4, 4), np.int32)
  labels[0] = 1  # 4 on leaf 5
  labels[1, :2] = 2  # 2 more on leaf 5
  labels[2] = 3  # background only: does not count
  want = sum(labels[i, j] > 0 and gt[i, j] > 0 for i in range(4) for j in range(4)) / 10
  assert acis.fg_coverage(labels, gt) == pytest.approx(want) == pytest.approx(0.6)
  assert acis.fg_coverage(labels, np.zeros_like(gt)) == 0.0


def test_step_stats_tell_a_new_leaf_from_a_repeated_one():
  gt = np.zeros((4, 6), np.int32)
  gt[:, :3], gt[:, 3:] = 4, 7  # two leaves of 12 pixels
  masks = np.zeros((4, 4, 6), np.float32)
  masks[0, :, :3] = 0.9  # leaf 4 exactly
  masks[1, :2, 3:] = 0.8  # half of leaf 7: Dice 2·6 / (6 + 12)
  masks[2, :, 1:3] = 0.7  # inside the state, on leaf 4 again
  masks[3] = 0.2  # empty
  s = acis.step_stats(masks, gt)
  np.testing.assert_array_equal(s["area"], [12, 6, 8, 0])
  np.testing.assert_allclose(s["in_state"], [0, 0, 1, 0])
  np.testing.assert_allclose(s["best_dice"], [1, 2 / 3, 2 * 8 / 20, 0])
  np.testing.assert_array_equal(s["repeat"], [0, 0, 1, 0])
  assert acis.step_stats(masks, np.zeros_like(gt))["best_dice"].sum() == 0


def _brute_force_gt_stop_dice(masks, gt):
  """Every assignment of the first #gt binarised masks to the ground truth."""
  import itertools  # pylint: disable=g-import-not-at-top
  ids = [i for i in np.unique(gt) if i > 0]
  pred = [m > 0.5 for m in masks[:len(ids)]]
  best = 0.0
  for perm in itertools.permutations(range(len(ids)), len(pred)):
    total = 0.0
    for m, j in zip(pred, perm):
      g = gt == ids[j]
      total += 2 * np.sum(m & g) / max(m.sum() + g.sum(), 1)
    best = max(best, total)
  return best / len(ids)


def test_gt_stop_dice_is_the_best_assignment_by_brute_force():
  rng = np.random.default_rng(0)
  for n_pred, n_gt in [(3, 3), (2, 4), (5, 3), (1, 1), (4, 4)]:
    gt = rng.integers(0, n_gt + 1, (9, 11)) * 7  # ids 7, 14, ...
    gt[0, :n_gt] = np.arange(1, n_gt + 1) * 7  # every id present
    masks = rng.random((n_pred, 9, 11)).astype(np.float32)
    masks[0] = (gt == 14) * 0.9  # one near-perfect mask, not first in id order
    assert acis.gt_stop_dice(masks, gt) == pytest.approx(_brute_force_gt_stop_dice(masks, gt))
  assert acis.gt_stop_dice(np.zeros((0, 4, 4)), np.zeros((4, 4), np.int32)) == 1.0
  assert acis.gt_stop_dice(np.ones((1, 4, 4)), np.zeros((4, 4), np.int32)) == 0.0
