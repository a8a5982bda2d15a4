"""scipy's matching through jax.pure_callback: same contract as the device
solver, checked against scipy loops and the device results, under jit/vmap."""
import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

from jaxseg import rewards


def _ref_total(s, rows, cols):
  i, j = np.flatnonzero(rows), np.flatnonzero(cols)
  if not (i.size and j.size):
    return 0.0
  r, c = linear_sum_assignment(s[np.ix_(i, j)], maximize=True)
  return float(s[np.ix_(i, j)][r, c].sum())


def _batch(seed, b=5, r=7, c=6):
  rng = np.random.default_rng(seed)
  s = rng.random((b, r, c)).astype(np.float32)
  rows, cols = rng.random((b, r)) > 0.3, rng.random((b, c)) > 0.3
  rows[0], cols[1] = False, False  # nothing valid on one side
  return s, rows, cols


def test_max_matching_under_vmap_equals_scipy_and_the_device_solver():
  s, rows, cols = _batch(0)
  host = jax.jit(jax.vmap(lambda x, r, c: rewards.host_max_matching(
      x, row_valid=r, col_valid=c)))(s, rows, cols)
  dev = jax.jit(jax.vmap(lambda x, r, c: rewards.max_matching(
      x, row_valid=r, col_valid=c)))(s, rows, cols)
  want = [_ref_total(*x) for x in zip(s, rows, cols)]
  np.testing.assert_allclose(host[1], want, rtol=1e-6)
  np.testing.assert_allclose(host[1], dev[1], rtol=1e-6)
  a = np.asarray(host[0])
  assert np.all(a[~rows] == -1) and np.all(a[0] == -1)
  for i in range(len(s)):  # a matching: valid columns, each at most once
    used = a[i][a[i] >= 0]
    assert len(set(used)) == len(used) and np.all(cols[i][used])


def test_potentials_equal_prefix_solves_and_their_gradient_the_device_one():
  s, rows, cols = _batch(1, r=6, c=8)
  host = jax.jit(jax.vmap(lambda x, r, c: rewards.host_matching_potentials(
      x, pred_valid=r, gt_valid=c)))(s, rows, cols)
  for i in range(len(s)):
    want = [0.0] + [_ref_total(s[i][:t], rows[i][:t], cols[i]) for t in range(1, 7)]
    np.testing.assert_allclose(host[i], want, rtol=1e-6, atol=1e-7)
  grad = lambda f: jax.grad(lambda x: f(x, pred_valid=rows[2], gt_valid=cols[2]).sum())(  # noqa
      jnp.asarray(s[2]))
  np.testing.assert_allclose(grad(rewards.host_matching_potentials),
                             grad(rewards.matching_potentials), atol=1e-6)
