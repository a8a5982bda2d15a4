import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jaxseg.evaluation import instance, instance_metrics, mean_instance_metrics

KEYS = ("sbd", "dic", "abs_dic", "mucov", "mwcov", "avg_fp", "avg_fn")
IDS = np.array([1, 2, 3, 17, 250, 255, 256, 1000, 65535, 2**31 - 1, 2**40 + 7])


def reference_metrics(pred, gt):
  """Slow and obvious: boolean masks per id, Dice / IoU by np.sum."""
  p_masks = [pred == i for i in np.unique(pred) if i != 0]
  g_masks = [gt == i for i in np.unique(gt) if i != 0]

  def dice(a, b):
    return 2 * np.sum(a & b) / (np.sum(a) + np.sum(b))

  def iou(a, b):
    return np.sum(a & b) / np.sum(a | b)

  def best_dice(xs, ys):
    if not xs:
      return 1.0 if not ys else 0.0
    total = 0.0
    for a in xs:
      total += max([dice(a, b) for b in ys], default=0.0)
    return total / len(xs)

  best_iou = [max([iou(p, g) for p in p_masks], default=0.0) for g in g_masks]
  if g_masks:
    mucov = np.mean(best_iou)
    total = sum(np.sum(g) for g in g_masks)
    mwcov = sum(np.sum(g) / total * b for g, b in zip(g_masks, best_iou))
  else:
    mucov = mwcov = 1.0 if not p_masks else 0.0
  fp = [not any(iou(p, g) > 0.5 for g in g_masks) for p in p_masks]
  fn = [not any(iou(p, g) > 0.5 for p in p_masks) for g in g_masks]
  return {
      "sbd": min(best_dice(p_masks, g_masks), best_dice(g_masks, p_masks)),
      "dic": len(p_masks) - len(g_masks),
      "abs_dic": abs(len(p_masks) - len(g_masks)),
      "mucov": mucov,
      "mwcov": mwcov,
      "avg_fp": np.mean(fp) if fp else 0.0,
      "avg_fn": np.mean(fn) if fn else 0.0,
  }


def random_map(rng, shape, ids):
  """Overlapping rectangles (later ones occlude), or salt-and-pepper ids."""
  out = np.zeros(shape, np.int64)
  if rng.random() < 0.2:
    return np.where(rng.random(shape) < 0.5, rng.choice(ids, shape), 0)
  for _ in range(rng.integers(0, 7)):
    y0, x0 = rng.integers(0, shape[0]), rng.integers(0, shape[1])
    y1, x1 = y0 + rng.integers(1, shape[0] + 1), x0 + rng.integers(1, shape[1] + 1)
    out[y0:y1, x0:x1] = rng.choice(ids)
  return out


def relabel(rng, labels, ids):
  """The same instances under other ids (drawn from `ids`); 0 stays 0."""
  old, inverse = np.unique(labels, return_inverse=True)
  new = np.zeros(len(old), np.int64)
  new[old != 0] = rng.permutation(ids)[:np.sum(old != 0)]
  return new[inverse].reshape(labels.shape)


def perturb(rng, gt, ids):
  """A plausible prediction: relabelled gt with some pixels changed."""
  flip = rng.random(gt.shape) < rng.choice([0.0, 0.1, 0.3])
  return np.where(flip, rng.choice(np.append(ids, 0), gt.shape), relabel(rng, gt, ids))


def assert_metrics_equal(got, want):
  assert set(got) == set(KEYS)
  for k in KEYS:
    assert isinstance(got[k], float), k
    np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-12, err_msg=k)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_matches_loop_reference_on_random_maps(seed):
  rng = np.random.default_rng(seed)
  shape = tuple(rng.integers(1, 13, 2))
  ids = rng.choice(IDS, rng.integers(1, len(IDS) + 1), replace=False)
  gt = random_map(rng, shape, ids)
  pred = perturb(rng, gt, IDS) if rng.random() < 0.5 else random_map(rng, shape, ids)
  dtype = np.uint8 if max(pred.max(), gt.max()) < 256 and rng.random() < 0.5 else np.int64
  pred, gt = pred.astype(dtype), gt.astype(dtype)
  assert_metrics_equal(instance_metrics(pred, gt), reference_metrics(pred, gt))


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_iou_above_half_is_a_one_to_one_matching(seed):
  # The module's claim: with disjoint instances no assignment step is needed.
  rng = np.random.default_rng(seed)
  gt = random_map(rng, (10, 10), IDS)
  pred = perturb(rng, gt, IDS)
  m = instance.overlap_matrix(pred, gt)
  inter = m[1:, 1:]
  union = m[1:].sum(1)[:, None] + m[:, 1:].sum(0)[None, :] - inter
  matched = 2 * inter > union
  assert matched.sum(0).max(initial=0) <= 1 and matched.sum(1).max(initial=0) <= 1


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_swapping_pred_and_gt(seed):
  rng = np.random.default_rng(seed)
  a, b = random_map(rng, (9, 11), IDS), random_map(rng, (9, 11), IDS)
  ab, ba = instance_metrics(a, b), instance_metrics(b, a)
  assert ab["sbd"] == ba["sbd"] and ab["dic"] == -ba["dic"]
  assert ab["avg_fp"] == ba["avg_fn"] and ab["avg_fn"] == ba["avg_fp"]


@pytest.mark.parametrize("seed", range(5))
def test_identical_and_relabelled_maps_are_perfect(seed):
  rng = np.random.default_rng(seed)
  gt = random_map(rng, (16, 16), IDS)
  gt[0, 0] = 3  # at least one instance
  for pred in (gt, relabel(rng, gt, IDS)):
    got = instance_metrics(pred, gt)
    assert got == {"sbd": 1.0, "dic": 0.0, "abs_dic": 0.0, "mucov": 1.0,
                   "mwcov": 1.0, "avg_fp": 0.0, "avg_fn": 0.0}


def test_empty_sides():
  empty = np.zeros((4, 5), np.int32)
  some = empty.copy()
  some[1:3, 1:3], some[0, 4] = 7, 250
  assert instance_metrics(empty, empty) == {
      "sbd": 1.0, "dic": 0.0, "abs_dic": 0.0, "mucov": 1.0, "mwcov": 1.0,
      "avg_fp": 0.0, "avg_fn": 0.0}
  assert instance_metrics(empty, some) == {  # nothing predicted
      "sbd": 0.0, "dic": -2.0, "abs_dic": 2.0, "mucov": 0.0, "mwcov": 0.0,
      "avg_fp": 0.0, "avg_fn": 1.0}
  assert instance_metrics(some, empty) == {  # nothing to find
      "sbd": 0.0, "dic": 2.0, "abs_dic": 2.0, "mucov": 0.0, "mwcov": 0.0,
      "avg_fp": 1.0, "avg_fn": 0.0}
  for pred, gt in [(empty, empty), (empty, some), (some, empty)]:
    assert_metrics_equal(instance_metrics(pred, gt), reference_metrics(pred, gt))
  zero_size = np.zeros((0, 3), np.int32)
  assert instance_metrics(zero_size, zero_size)["sbd"] == 1.0


def test_hand_computed_split_and_spurious_instance():
  gt = np.array([[5, 5, 0, 0],
                 [5, 5, 9, 9],
                 [0, 0, 9, 9],
                 [0, 0, 9, 9]])
  pred = np.array([[3, 3, 0, 8],
                   [3, 0, 0, 7],
                   [0, 0, 7, 7],
                   [0, 0, 7, 7]])
  # |3|=3, |7|=5, |8|=1, |5|=4, |9|=6; 3∩5 = 3, 7∩9 = 5, 8 touches nothing.
  # Dice(3,5) = 6/7, Dice(7,9) = 10/11; IoU(3,5) = 3/4, IoU(7,9) = 5/6.
  got = instance_metrics(pred, gt)
  assert got["sbd"] == pytest.approx(min((6 / 7 + 10 / 11 + 0) / 3,  # = 136/231
                                         (6 / 7 + 10 / 11) / 2))
  assert got["sbd"] == pytest.approx(136 / 231)
  assert got["dic"] == 1.0 and got["abs_dic"] == 1.0
  assert got["mucov"] == pytest.approx((3 / 4 + 5 / 6) / 2)  # 19/24
  assert got["mwcov"] == pytest.approx(4 / 10 * 3 / 4 + 6 / 10 * 5 / 6)  # 0.8
  assert got["avg_fp"] == pytest.approx(1 / 3)  # the stray pixel 8
  assert got["avg_fn"] == 0.0


def test_hand_computed_merge():
  gt = np.array([[1, 1, 1, 2],
                 [1, 1, 1, 2]], np.uint8)
  pred = np.full((2, 4), 10, np.uint8)  # one prediction over both leaves
  # Dice = 12/14 and 4/10; IoU = 6/8 and 2/8.
  got = instance_metrics(pred, gt)
  assert got["sbd"] == pytest.approx(min(6 / 7, (6 / 7 + 4 / 10) / 2))  # 22/35
  assert got["dic"] == -1.0 and got["abs_dic"] == 1.0
  assert got["mucov"] == pytest.approx((6 / 8 + 2 / 8) / 2)
  assert got["mwcov"] == pytest.approx(6 / 8 * 6 / 8 + 2 / 8 * 2 / 8)  # 0.625
  assert got["avg_fp"] == 0.0 and got["avg_fn"] == 0.5


def test_iou_of_exactly_half_is_not_a_match():
  gt = np.array([[4, 4]])
  pred = np.array([[6, 0]])
  got = instance_metrics(pred, gt)
  assert got["mucov"] == 0.5 and got["sbd"] == pytest.approx(2 / 3)
  assert got["avg_fp"] == 1.0 and got["avg_fn"] == 1.0


def test_mean_over_images_averages_abs_dic_per_image():
  gt = np.array([[1, 1, 0, 2]])
  over = instance_metrics(np.array([[1, 1, 3, 2]]), gt)   # DiC +1
  under = instance_metrics(np.array([[1, 1, 0, 0]]), gt)  # DiC -1
  mean = mean_instance_metrics([over, under])
  assert mean["dic"] == 0.0 and mean["abs_dic"] == 1.0
  for k in KEYS:
    assert mean[k] == pytest.approx((over[k] + under[k]) / 2)
  with pytest.raises(ValueError):
    mean_instance_metrics([])
  with pytest.raises(ValueError):
    mean_instance_metrics([over, {"sbd": 1.0}])


def test_rejects_bad_inputs():
  with pytest.raises(ValueError, match="shape"):
    instance_metrics(np.zeros((3, 4), int), np.zeros((4, 3), int))
  with pytest.raises(ValueError, match="integer"):
    instance_metrics(np.zeros((3, 4)), np.zeros((3, 4), int))
