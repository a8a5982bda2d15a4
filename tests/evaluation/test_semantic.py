import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jaxseg.evaluation import semantic


def reference_miou(pred, label, num_classes, ignore):
  ious = []
  for c in range(num_classes):
    inter = union = 0
    for p, y in zip(pred.ravel(), label.ravel()):
      if y == ignore:
        continue
      inter += (p == c) and (y == c)
      union += (p == c) or (y == c)
    if union:
      ious.append(inter / union)
  return np.mean(ious) if ious else 0.0


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 6))
def test_miou_matches_numpy_loop(seed, num_classes):
  rng = np.random.default_rng(seed)
  label = rng.integers(0, num_classes, size=(7, 9))
  label[rng.random(label.shape) < 0.2] = 255
  pred = rng.integers(0, num_classes, size=(7, 9))
  cm = np.asarray(semantic.confusion_matrix(pred, label, num_classes=num_classes))
  assert cm.sum() == (label != 255).sum()
  got = semantic.metrics_from_confusion(cm)
  np.testing.assert_allclose(got["miou"], reference_miou(pred, label, num_classes, 255), rtol=1e-6)
  valid = label != 255
  np.testing.assert_allclose(got["pixel_acc"], (pred[valid] == label[valid]).mean() if valid.any() else 0.0)


def test_per_class_iou_is_nan_for_absent_classes_and_named():
  cm = np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]])
  m = semantic.metrics_from_confusion(cm, ["a", "b", "c"])
  assert m["iou/a"] == pytest.approx(3 / 4) and m["iou/b"] == pytest.approx(2 / 3)
  assert np.isnan(m["iou/c"])
  assert m["miou"] == pytest.approx((3 / 4 + 2 / 3) / 2)


def test_window_starts_cover_and_stay_inside():
  for size, crop, stride in [(100, 32, 21), (32, 32, 21), (20, 32, 21), (97, 40, 13)]:
    starts = semantic.window_starts(size, crop, stride)
    covered = np.zeros(max(size, crop), bool)
    for s in starts:
      assert 0 <= s and s + crop <= max(size, crop)
      covered[s:s + crop] = True
    assert covered[:size].all()


def test_sliding_window_equals_full_image_for_a_pointwise_model():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 255, size=(50, 70, 3)).astype(np.uint8)
  weights = rng.normal(size=(3, 5)).astype(np.float32)
  calls = []

  def predict(crops):
    calls.append(crops.shape)
    return crops.astype(np.float32) @ weights

  out = semantic.sliding_window_logits(predict, image, crop_size=(32, 32), stride=(21, 21),
                                       num_classes=5, batch_size=4)
  np.testing.assert_allclose(out, image.astype(np.float32) @ weights, rtol=1e-5)
  assert all(s == (4, 32, 32, 3) for s in calls)  # one compiled shape


def test_sliding_window_pads_small_images():
  image = np.ones((10, 12, 3), np.uint8)
  out = semantic.sliding_window_logits(
      lambda c: np.repeat(c[..., :1].astype(np.float32), 2, -1), image,
      crop_size=(32, 32), stride=(16, 16), num_classes=2, batch_size=2)
  assert out.shape == (10, 12, 2) and np.all(out == 1)
