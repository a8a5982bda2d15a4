"""The jittable max-weight matching against scipy's linear_sum_assignment."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.optimize import linear_sum_assignment

from jaxseg import rewards
from jaxseg.rewards import matching

# A few shapes, reused everywhere, so that each compiles once.
SHAPES = [(1, 1), (4, 4), (3, 7), (7, 3), (8, 8)]
KINDS = ["normal", "ties", "negative", "equal", "uniform"]

max_matching = jax.jit(rewards.max_matching)


def random_scores(rng, shape, kind):
  if kind == "normal":
    return rng.normal(size=shape)
  if kind == "ties":  # few distinct integers: many optimal matchings
    return rng.integers(0, 3, shape).astype(np.float64)
  if kind == "negative":
    return -rng.random(shape) * 10 - 1
  if kind == "equal":
    return np.full(shape, 0.25)
  return rng.random(shape)


def random_mask(rng, size):
  p = rng.choice([0.0, 0.5, 1.0])
  return rng.random(size) < p


def check_against_scipy(scores, row_valid, col_valid, assignment, total, tol=1e-5):
  """`assignment` is a maximum-cardinality matching of the valid sub-matrix whose
  score sum is `total` and scipy's optimum."""
  scores = np.asarray(scores, np.float64)
  assignment, total = np.asarray(assignment), float(total)
  rows, cols = np.flatnonzero(row_valid), np.flatnonzero(col_valid)
  sub = scores[np.ix_(rows, cols)]
  ri, ci = linear_sum_assignment(sub, maximize=True)
  want = sub[ri, ci].sum()
  scale = max(1.0, np.abs(want))
  assert assignment.shape == (scores.shape[0],) and assignment.dtype == np.int32
  matched = np.flatnonzero(assignment >= 0)
  assert len(matched) == min(len(rows), len(cols)), assignment
  assert np.all(row_valid[matched]) and np.all(col_valid[assignment[matched]])
  assert len(set(assignment[matched].tolist())) == len(matched), "a column used twice"
  assert np.all(assignment[~np.isin(np.arange(len(assignment)), matched)] == -1)
  np.testing.assert_allclose(total, want, atol=tol * scale)
  np.testing.assert_allclose(scores[matched, assignment[matched]].sum(), total,
                             atol=tol * scale)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), shape=st.sampled_from(SHAPES),
       kind=st.sampled_from(KINDS))
def test_max_matching_matches_scipy(seed, shape, kind):
  rng = np.random.default_rng(seed)
  s = random_scores(rng, shape, kind).astype(np.float32)
  rv, cv = random_mask(rng, shape[0]), random_mask(rng, shape[1])
  a, total = max_matching(s, row_valid=rv, col_valid=cv)
  check_against_scipy(s, rv, cv, a, total)


@pytest.mark.parametrize("shape", SHAPES)
def test_vmap_over_many_matrices_matches_scipy_and_single_calls(shape):
  rng = np.random.default_rng(sum(shape))
  b = 60
  s = np.stack([random_scores(rng, shape, KINDS[i % len(KINDS)])
                for i in range(b)]).astype(np.float32)
  rv = np.stack([random_mask(rng, shape[0]) for _ in range(b)])
  cv = np.stack([random_mask(rng, shape[1]) for _ in range(b)])
  batched = jax.jit(jax.vmap(lambda s, r, c: rewards.max_matching(s, row_valid=r,
                                                                   col_valid=c)))
  a, total = batched(s, rv, cv)
  assert a.shape == (b, shape[0]) and total.shape == (b,)
  for i in range(b):
    check_against_scipy(s[i], rv[i], cv[i], a[i], total[i])
  for i in range(0, b, 7):  # the batched call is the per-item call
    a_i, t_i = max_matching(s[i], row_valid=rv[i], col_valid=cv[i])
    np.testing.assert_array_equal(np.asarray(a[i]), np.asarray(a_i))
    np.testing.assert_allclose(float(total[i]), float(t_i), atol=1e-6)


@pytest.mark.parametrize("n", [21, 64])
def test_larger_square_matrices(n):
  rng = np.random.default_rng(n)
  ones = np.ones(n, bool)
  for kind in ["uniform", "ties", "normal"]:
    s = random_scores(rng, (n, n), kind).astype(np.float32)
    a, total = max_matching(s, row_valid=ones, col_valid=ones)
    check_against_scipy(s, ones, ones, a, total)


def test_defaults_edge_cases_and_padding_is_never_read():
  s = np.array([[1.0, 5.0, 0.0], [4.0, 2.0, 0.0]], np.float32)
  a, total = rewards.max_matching(s)
  np.testing.assert_array_equal(np.asarray(a), [1, 0])
  assert float(total) == 9.0
  # 1x1, negative: a forced match.
  a, total = rewards.max_matching(np.array([[-3.0]]))
  assert np.asarray(a).tolist() == [0] and float(total) == -3.0
  # Nothing valid on either side.
  for rv, cv in [([False, False], [True] * 3), ([True, True], [False] * 3)]:
    a, total = rewards.max_matching(s, row_valid=np.array(rv), col_valid=np.array(cv))
    np.testing.assert_array_equal(np.asarray(a), [-1, -1])
    assert float(total) == 0.0
  # Degenerate shapes.
  a, total = rewards.max_matching(np.zeros((0, 4)))
  assert a.shape == (0,) and float(total) == 0.0
  a, total = rewards.max_matching(np.zeros((3, 0)))
  np.testing.assert_array_equal(np.asarray(a), [-1, -1, -1])
  # Invalid entries may hold anything: NaN, inf, huge.
  rng = np.random.default_rng(3)
  s = rng.random((7, 3)).astype(np.float32)
  rv = np.array([1, 0, 1, 1, 0, 1, 0], bool)
  cv = np.array([1, 1, 0], bool)
  dirty = s.copy()
  dirty[~rv] = np.nan
  dirty[:, ~cv] = np.inf
  a, total = max_matching(dirty, row_valid=rv, col_valid=cv)
  check_against_scipy(s, rv, cv, a, total)
  assert np.isfinite(float(total))


def test_integer_and_int_dtype_inputs():
  s = np.array([[3, 1, 2], [2, 3, 1], [1, 2, 3]], np.int32)
  a, total = rewards.max_matching(s)
  np.testing.assert_array_equal(np.asarray(a), [0, 1, 2])
  assert total.dtype == jnp.float32 and float(total) == 9.0


def test_usable_inside_jit_and_scan():
  rng = np.random.default_rng(7)
  s = rng.random((5, 4, 4)).astype(np.float32)

  @jax.jit
  def totals(stack):
    def step(acc, x):
      _, t = rewards.max_matching(x)
      return acc + t, t
    return jax.lax.scan(step, jnp.zeros(()), stack)

  acc, per = totals(s)
  ones = np.ones(4, bool)
  for i in range(5):
    ri, ci = linear_sum_assignment(s[i], maximize=True)
    np.testing.assert_allclose(float(per[i]), s[i][ri, ci].sum(), atol=1e-5)
  np.testing.assert_allclose(float(acc), float(per.sum()), atol=1e-5)
  check_against_scipy(s[0], ones, ones, *max_matching(s[0], row_valid=ones, col_valid=ones))


def test_history_is_optimal_for_every_prefix_of_rows():
  rng = np.random.default_rng(11)
  s = rng.random((6, 9)).astype(np.float32)
  row_ok = np.array([1, 1, 0, 1, 1, 1], bool)
  col_ok = np.array([1, 0, 1, 1, 1, 1, 0, 1, 1], bool)
  solve = jax.jit(matching.shortest_augmenting_paths)
  col4row, row4col, history = map(np.asarray, solve(-s, row_ok, col_ok))
  assert history.shape == (7, 6) and np.all(history[0] == -1)
  np.testing.assert_array_equal(history[row_ok.sum()], col4row)
  rows = np.flatnonzero(row_ok)
  for p in range(len(rows) + 1):
    prefix = np.zeros(6, bool)
    prefix[rows[:p]] = True
    check_against_scipy(s, prefix, col_ok, history[p],
                        s[np.flatnonzero(history[p] >= 0), history[p][history[p] >= 0]].sum())
  assert np.all(col4row[~row_ok] == -1)
  for i in rows:
    assert row4col[col4row[i]] == i


def test_gradient_of_total_is_the_matched_pairs():
  """Envelope theorem: d total / d s_ij = 1 at the matched pairs, else 0."""
  rng = np.random.default_rng(2)
  s = rng.random((4, 6)).astype(np.float32)
  rv = np.array([1, 1, 0, 1], bool)
  grad = jax.jit(jax.grad(
      lambda s: rewards.max_matching(s, row_valid=rv)[1]))(s)
  a = np.asarray(rewards.max_matching(s, row_valid=rv)[0])
  want = np.zeros_like(s)
  want[np.flatnonzero(a >= 0), a[a >= 0]] = 1.0
  np.testing.assert_array_equal(np.asarray(grad), want)


def test_all_equal_and_zero_matrices():
  for s in [np.zeros((8, 8), np.float32), np.full((8, 8), 7.0, np.float32)]:
    a, total = max_matching(s, row_valid=np.ones(8, bool), col_valid=np.ones(8, bool))
    assert sorted(np.asarray(a).tolist()) == list(range(8))
    np.testing.assert_allclose(float(total), 8 * s[0, 0])
