"""ACIS episodes (jaxseg.algorithms.acis.episode): one-step BPTT, the
Hungarian assignment and rewards against scipy, the exploration floor."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from jaxseg.algorithms.acis import episode as ep
from jaxseg.algorithms.acis import losses

from .conftest import LATENT, MAX_INSTANCES, synthetic_batch


def test_per_step_grads_is_one_step_bptt():
  """Σ_t ∇ℓ_t with the carry stop-gradiented, against plain autodiff of that sum."""
  w = {"a": jnp.array([0.7, -0.3]), "b": jnp.array(1.3)}
  xs = jnp.arange(1.0, 6.0)

  def step_loss(p, carry, x):
    h = jnp.tanh(p["a"] * carry + p["b"] * x)
    return jnp.sum(h ** 2) * x, (h, h.sum())

  def truncated(p):
    carry, total = jnp.zeros(2), 0.0
    for x in xs:
      loss, (h, _) = step_loss(p, carry, x)
      carry, total = jax.lax.stop_gradient(h), total + loss
    return total

  for unroll in (False, True):
    total, grads, outs = ep.per_step_grads(step_loss, w, jnp.zeros(2), xs, unroll=unroll)
    ref_total, ref_grads = jax.value_and_grad(truncated)(w)
    np.testing.assert_allclose(total, ref_total, rtol=1e-5)
    jax.tree.map(lambda g, r: np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6), grads, ref_grads)
    assert outs.shape == (5,)


def test_assignment_and_rewards_match_scipy(setup):
  nets, params = setup
  batch = synthetic_batch()
  targets = ep.make_targets(jnp.asarray(batch["instances"]), MAX_INSTANCES)
  rng = np.random.default_rng(1)
  length = 4
  masks = jnp.asarray(rng.random((length, 8, 32, 32)), jnp.float32)
  valid = losses.step_mask(targets.counts, length)
  assigned, matched = ep.assign_targets(masks, targets, valid)
  r = ep.episode_rewards(masks, targets, valid)
  for b in range(8):
    ids = np.unique(batch["instances"][b][batch["instances"][b] > 0])
    gt = (batch["instances"][b][None] == ids[:, None, None]).astype(np.float64)
    n = min(length, ids.size)
    m = np.asarray(masks[:n, b], np.float64)
    dice = 2 * np.einsum("thw,khw->tk", m, gt) / (m.sum((1, 2))[:, None] + gt.sum((1, 2)))
    rows, cols = linear_sum_assignment(dice, maximize=True)
    np.testing.assert_allclose(float(np.sum(r[:, b])), dice[rows, cols].sum(), rtol=1e-4)
    assert int(matched[:, b].sum()) == n
    got = {t: np.flatnonzero([np.array_equal(assigned[t, b], g) for g in gt])[0]
           for t in range(n)}
    assert sum(dice[t, k] for t, k in got.items()) == pytest.approx(dice[rows, cols].sum(),
                                                                   rel=1e-4)
    assert not np.any(np.asarray(r[n:, b]))  # steps past the count earn nothing


def test_explore_std_floors_the_sampled_noise(setup):
  """a = μ + max(σ, explore_std)·ε, checked through the decoded mask."""
  nets, params = setup
  batch = jax.tree.map(jnp.asarray, synthetic_batch())
  inputs = ep.make_inputs(nets, params["preproc"], batch["image"])
  init = ep.episode_start(nets, inputs)
  eps = jax.random.normal(jax.random.key(1), (inputs.x.shape[0], LATENT))
  _, (mu, logvar, _) = nets.actor.apply({"params": params["actor"]},
                                        inputs.actor(init[0]), init[1])
  sigma = np.exp(0.5 * np.asarray(logvar))
  assert sigma.max() < 0.1  # the actor starts near-deterministic (init_logvar)

  def decoded(action):
    return jax.nn.sigmoid(nets.decoder.apply({"params": params["decoder"]}, action,
                                             inputs.cond))

  for std, expect in ((0.0, mu + sigma * eps), (2.0, mu + 2.0 * eps)):
    _, out = ep.actor_step(nets, params["actor"], params["decoder"], inputs, *init, eps,
                             sample=True, explore_std=std)
    np.testing.assert_allclose(out["mask"], decoded(expect), atol=1e-5)
  assert np.abs(decoded(mu + 2.0 * eps) - decoded(mu + sigma * eps)).max() > 1e-3


@pytest.mark.parametrize("mode", ["none", "last", "random", "any"])
def test_load_episode_paints_a_random_subset_into_the_start_state(mode):
  """Against a numpy reading of the authors' -loadLast: k painted instances
  (none: 0, last: max(N − L, 0), random: 0 ≤ k ≤ max(N − L, 0), any: 0 ≤ k ≤ N),
  M_0 their union, the targets the others, and the painted subset differs
  across keys."""
  batch = synthetic_batch(b=6, max_count=6, seed=3)
  targets = ep.make_targets(jnp.asarray(batch["instances"]), MAX_INSTANCES)
  masks, valid = np.asarray(targets.masks), np.asarray(targets.valid)
  length, subsets, ks = 2, set(), []
  for seed in range(40):
    state0, rest = ep.load_episode(targets, jax.random.key(seed), length, mode)
    state0, rest_valid = np.asarray(state0), np.asarray(rest.valid)
    for i in range(valid.shape[0]):
      n = int(valid[i].sum())
      painted = valid[i] & ~rest_valid[i]
      k = int(painted.sum())
      assert not (rest_valid[i] & ~valid[i]).any()
      assert int(rest.counts[i]) == n - k == int(rest_valid[i].sum())
      spare = n if mode == "any" else max(n - length, 0)
      assert k == {"none": 0, "last": spare}.get(mode, k) and 0 <= k <= spare
      union = masks[i][painted].max(0) if k else np.zeros(masks.shape[2:])
      np.testing.assert_array_equal(state0[i], union)
      subsets.add((i, tuple(np.flatnonzero(painted))))
      ks.append((i, k))
  if mode != "none":
    assert len(subsets) > valid.shape[0]  # random subsets, not always the same ones
  if mode in ("random", "any"):  # every k in [0, N − L] ([0, N]) is drawn for the
    i = int(valid.sum(-1).argmax())  # image with most instances
    top = int(valid[i].sum()) - (length if mode == "random" else 0)
    assert {k for j, k in ks if j == i} == set(range(top + 1))


def test_erode_is_a_square_min_filter_inside_the_image():
  rng = np.random.default_rng(0)
  m = (rng.uniform(size=(2, 9, 11)) < 0.8).astype(np.float32)
  for r in (0, 1, 2):
    want = np.ones_like(m)
    for i in range(m.shape[1]):  # numpy loops: min over the (2r+1)² window in the image
      for j in range(m.shape[2]):
        want[:, i, j] = m[:, max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1].min((1, 2))
    np.testing.assert_array_equal(np.asarray(ep.erode(jnp.asarray(m), r)), want)


def test_load_episode_erodes_each_painted_instance_by_its_own_radius():
  """M_0 is the union of painted instances each eroded by some r in {0, …, R},
  every radius is drawn, the targets are the uneroded rest, and erode=0 is
  the plain painting with the same draws."""
  batch = synthetic_batch(b=6, max_count=6, seed=3)
  targets = ep.make_targets(jnp.asarray(batch["instances"]), MAX_INSTANCES)
  masks, valid = np.asarray(targets.masks), np.asarray(targets.valid)
  eroded = [np.asarray(ep.erode(targets.masks, r)) for r in range(3)]
  radii = set()
  for seed in range(10):
    key = jax.random.key(seed)
    plain, plain_rest = ep.load_episode(targets, key, 2, "random")
    state0, rest = ep.load_episode(targets, key, 2, ep.Load("random", erode=2))
    np.testing.assert_array_equal(np.asarray(rest.valid), np.asarray(plain_rest.valid))
    np.testing.assert_array_equal(np.asarray(rest.masks), masks)
    state0 = np.asarray(state0)
    assert (state0 <= np.asarray(plain)).all()
    for i in range(valid.shape[0]):
      painted = np.flatnonzero(valid[i] & ~np.asarray(rest.valid[i]))
      # Instances are disjoint, so M_0 on instance j is T_j eroded by its radius.
      for j in painted:
        r = [r for r in range(3) if np.array_equal(state0[i] * masks[i, j], eroded[r][i, j])]
        assert r, f"painted instance {j} of image {i} matches no erosion radius"
        radii.update(r if len(r) == 1 else [])
      np.testing.assert_array_equal(state0[i] * (masks[i][painted].sum(0) == 0) if
                                    len(painted) else state0[i], 0)
  assert radii == {0, 1, 2}
  with pytest.raises(ValueError, match="erosion"):
    ep.load_episode(targets, jax.random.key(0), 2, ep.Load("random", erode=-1))
