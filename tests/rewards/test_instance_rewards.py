"""ACIS's instance rewards against slow numpy loops and scipy's matching."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings, strategies as st
from scipy.optimize import linear_sum_assignment

from jaxseg import rewards

H, W = 5, 6
# (T predictions, N ground truths), reused so that each shape compiles once.
SHAPES = [(1, 1), (3, 5), (5, 3), (6, 6)]


def ref_scores(pred, gt, gt_valid, kind, eps=1e-6):
  t_, n_ = len(pred), len(gt)
  out = np.zeros((t_, n_), np.float64)
  for t in range(t_):
    for n in range(n_):
      if not gt_valid[n]:
        continue
      s, g = pred[t].astype(np.float64).ravel(), gt[n].astype(np.float64).ravel()
      inter = sum(a * b for a, b in zip(s, g))
      if kind == "dice":
        out[t, n] = 2 * inter / max(s.sum() + g.sum(), eps)
      else:
        out[t, n] = inter / max(s.sum() + g.sum() - inter, eps)
  return out


def ref_potentials(scores, pred_valid, gt_valid):
  """φ_t by scipy on the sub-matrix of the valid rows < t and valid columns."""
  t_ = scores.shape[0]
  cols = np.flatnonzero(gt_valid)
  phi = np.zeros(t_ + 1)
  for t in range(1, t_ + 1):
    rows = np.flatnonzero(pred_valid[:t])
    sub = scores[np.ix_(rows, cols)].astype(np.float64)
    ri, ci = linear_sum_assignment(sub, maximize=True)
    phi[t] = sub[ri, ci].sum()
  return phi


def random_masks(rng, t, n, soft):
  pred = rng.random((t, H, W))
  if not soft:
    pred = (pred < 0.4).astype(np.float32)
  gt = rng.random((n, H, W)) < rng.random((n, 1, 1))
  return pred.astype(np.float32), gt


dice = jax.jit(rewards.soft_dice_scores)
iou = jax.jit(rewards.iou_scores)
potentials = jax.jit(rewards.matching_potentials)
matching_rewards = jax.jit(rewards.matching_rewards)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), shape=st.sampled_from(SHAPES), soft=st.booleans())
def test_dice_and_iou_match_numpy(seed, shape, soft):
  rng = np.random.default_rng(seed)
  pred, gt = random_masks(rng, *shape, soft)
  gt_valid = rng.random(shape[1]) < 0.7
  got_dice = dice(pred, gt, gt_valid)
  got_iou = iou(pred, gt, gt_valid)
  assert got_dice.shape == shape and got_dice.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got_dice), ref_scores(pred, gt, gt_valid, "dice"),
                             atol=1e-6)
  np.testing.assert_allclose(np.asarray(got_iou), ref_scores(pred, gt, gt_valid, "iou"),
                             atol=1e-6)


def test_scores_by_hand():
  a = np.zeros((1, 2, 2), np.float32)
  a[0, 0] = 1.0  # two pixels
  b = np.zeros((3, 2, 2), bool)
  b[0, 0, 0] = True  # one of them
  b[1] = True  # all four
  # b[2] is empty: a prediction against an empty mask scores 0, not NaN.
  np.testing.assert_allclose(np.asarray(rewards.soft_dice_scores(a, b)),
                             [[2 / 3, 4 / 6, 0.0]], atol=1e-6)
  np.testing.assert_allclose(np.asarray(rewards.iou_scores(a, b)), [[0.5, 0.5, 0.0]],
                             atol=1e-6)
  empty = np.zeros((1, 2, 2), np.float32)
  np.testing.assert_array_equal(np.asarray(rewards.soft_dice_scores(empty, b[2:])), [[0.0]])
  # Default gt_valid = all valid; a gt_valid column is zeroed.
  np.testing.assert_allclose(
      np.asarray(rewards.soft_dice_scores(a, b, np.array([True, False, True]))),
      [[2 / 3, 0.0, 0.0]], atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), shape=st.sampled_from(SHAPES),
       kind=st.sampled_from(["dice", "ties", "negative"]))
def test_potentials_and_rewards_match_scipy(seed, shape, kind):
  rng = np.random.default_rng(seed)
  if kind == "dice":
    scores = rng.random(shape)
  elif kind == "ties":
    scores = rng.integers(0, 3, shape).astype(np.float64)
  else:
    scores = rng.normal(size=shape) - 1.0
  scores = scores.astype(np.float32)
  pred_valid = rng.random(shape[0]) < rng.choice([0.0, 0.6, 1.0])
  gt_valid = rng.random(shape[1]) < rng.choice([0.0, 0.6, 1.0])
  phi = np.asarray(potentials(scores, pred_valid=pred_valid, gt_valid=gt_valid))
  want = ref_potentials(scores, pred_valid, gt_valid)
  assert phi.shape == (shape[0] + 1,) and phi[0] == 0.0
  np.testing.assert_allclose(phi, want, atol=1e-5)
  r = np.asarray(matching_rewards(scores, pred_valid=pred_valid, gt_valid=gt_valid))
  np.testing.assert_allclose(r, np.diff(want), atol=1e-5)
  np.testing.assert_allclose(r.sum(), want[-1], atol=1e-5)  # telescopes to φ_T
  assert np.all(r[~pred_valid] == 0.0)
  if kind != "negative":  # non-negative scores: a prediction never lowers φ
    assert np.all(r >= -1e-6)


def test_potentials_equal_one_matching_per_prefix():
  """The incremental solver is `max_matching` with the rows < t valid."""
  rng = np.random.default_rng(5)
  scores = rng.random((6, 4)).astype(np.float32)
  pred_valid = np.array([1, 0, 1, 1, 1, 1], bool)
  gt_valid = np.array([1, 1, 0, 1], bool)

  def per_prefix(t):
    rows = (jnp.arange(6) < t) & pred_valid
    return rewards.max_matching(scores, row_valid=rows, col_valid=gt_valid)[1]

  slow = jax.jit(jax.vmap(per_prefix))(jnp.arange(7))
  fast = potentials(scores, pred_valid=pred_valid, gt_valid=gt_valid)
  np.testing.assert_allclose(np.asarray(fast), np.asarray(slow), atol=1e-6)


def test_potentials_gradient_is_the_prefix_matchings():
  rng = np.random.default_rng(9)
  scores = rng.random((4, 3)).astype(np.float32)
  grad = jax.jit(jax.grad(lambda s: rewards.matching_potentials(s)[-1]))(scores)
  a, _ = rewards.max_matching(scores)
  want = np.zeros_like(scores)
  a = np.asarray(a)
  want[np.flatnonzero(a >= 0), a[a >= 0]] = 1.0
  np.testing.assert_array_equal(np.asarray(grad), want)


def test_order_matters_only_through_the_matching():
  """A duplicate prediction earns nothing; a better one re-assigns (Eq. 5)."""
  scores = np.array([[0.9, 0.8],   # covers gt 0 well, gt 1 too
                     [0.9, 0.1],   # only gt 0: forces re-ordering of the matching
                     [0.9, 0.1]], np.float32)  # a duplicate once both are taken
  r = np.asarray(rewards.matching_rewards(scores))
  np.testing.assert_allclose(r, [0.9, (0.9 + 0.8) - 0.9, 0.0], atol=1e-6)


def test_dice_rewards_jit_and_vmap_over_a_batch():
  rng = np.random.default_rng(0)
  b, t, n = 3, 5, 3
  pred = rng.random((b, t, H, W)).astype(np.float32)
  gt = rng.random((b, n, H, W)) < 0.3
  gt_valid = np.array([[1, 1, 1], [1, 0, 1], [0, 0, 0]], bool)
  pred_valid = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 1, 1], [1, 1, 1, 1, 1]], bool)

  def reward_fn(pred, gt, pred_valid, gt_valid):
    scores = rewards.soft_dice_scores(pred, gt, gt_valid)
    return rewards.matching_rewards(scores, pred_valid=pred_valid, gt_valid=gt_valid)

  got = jax.jit(jax.vmap(reward_fn))(pred, gt, pred_valid, gt_valid)
  assert got.shape == (b, t)
  for i in range(b):
    scores = ref_scores(pred[i], gt[i], gt_valid[i], "dice")
    want = np.diff(ref_potentials(scores, pred_valid[i], gt_valid[i]))
    np.testing.assert_allclose(np.asarray(got[i]), want, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(got[2]), np.zeros(t))  # no ground truth


def test_potentials_of_equal_and_zero_scores():
  phi = rewards.matching_potentials(np.full((5, 3), 0.5, np.float32))
  np.testing.assert_allclose(np.asarray(phi), [0, 0.5, 1.0, 1.5, 1.5, 1.5], atol=1e-6)
  phi = rewards.matching_potentials(np.full((5, 3), -2.0, np.float32))  # forced matches
  np.testing.assert_allclose(np.asarray(phi), [0, -2, -4, -6, -6, -6], atol=1e-6)
  phi = rewards.matching_potentials(np.zeros((5, 3), np.float32))
  np.testing.assert_array_equal(np.asarray(phi), np.zeros(6))


def test_degenerate_shapes():
  assert rewards.matching_potentials(np.zeros((0, 3))).shape == (1,)
  np.testing.assert_array_equal(np.asarray(rewards.matching_potentials(np.zeros((4, 0)))),
                                np.zeros(5))
  assert rewards.matching_rewards(np.zeros((0, 2))).shape == (0,)


def test_potentials_with_large_sequences():
  rng = np.random.default_rng(21)
  for shape in [(21, 8), (8, 21), (21, 21)]:
    scores = rng.random(shape).astype(np.float32)
    phi = potentials(scores)
    np.testing.assert_allclose(np.asarray(phi),
                               ref_potentials(scores, np.ones(shape[0], bool),
                                              np.ones(shape[1], bool)), atol=2e-5)
