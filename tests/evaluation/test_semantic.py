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


def _ref_iiou(images, num_classes, ignore=255):
  """Brute force: per-pixel weights avg_size(c) / size(instance)."""
  sizes = {}  # (image, id) -> (class, size)
  for n, (pred, lab, ins) in enumerate(images):
    for k in np.unique(ins):
      if k == 0:
        continue
      m = (ins == k) & (lab != ignore)
      if m.sum():
        sizes[(n, k)] = (np.bincount(lab[m]).argmax(), m.sum())
  avg = {c: np.mean([s for cc, s in sizes.values() if cc == c])
         for c in {cc for cc, _ in sizes.values()}}
  out = []
  for c in range(num_classes):
    if c not in avg:
      continue
    tp = fn = fp = 0.0
    for n, (pred, lab, ins) in enumerate(images):
      for y in range(lab.shape[0]):
        for x in range(lab.shape[1]):
          if lab[y, x] == ignore:
            continue
          if pred[y, x] == c and lab[y, x] != c:
            fp += 1
          key = (n, ins[y, x])
          if ins[y, x] > 0 and sizes[key][0] == c:
            w = avg[c] / sizes[key][1]
            if pred[y, x] == c:
              tp += w
            else:
              fn += w
    out.append(tp / (tp + fp + fn))
  return np.mean(out)


def test_iiou_matches_brute_force():
  rng = np.random.default_rng(0)
  images = []
  for _ in range(3):
    lab = rng.integers(0, 3, (6, 7))
    ins = np.where(lab > 0, rng.integers(0, 4, (6, 7)) + 10 * lab, 0)  # class-pure ids
    lab[rng.random((6, 7)) < 0.1] = 255
    pred = np.where(rng.random((6, 7)) < 0.6, np.minimum(lab, 2), rng.integers(0, 3, (6, 7)))
    images.append((pred, lab, ins))
  rows, fps = [], np.zeros(3, np.int64)
  for pred, lab, ins in images:
    inst, fp = semantic.instance_stats(pred, lab, ins, num_classes=3)
    rows.append(inst)
    fps += fp
  got = semantic.iiou_from_stats(np.concatenate(rows), fps, 3)
  np.testing.assert_allclose(got["iiou"], _ref_iiou(images, 3), rtol=1e-10)
  assert "iiou/0" not in got  # class 0 has no instances
