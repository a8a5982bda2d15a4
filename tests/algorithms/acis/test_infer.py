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
