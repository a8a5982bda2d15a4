"""jaxseg.rewards against slow, obviously-correct numpy loops."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from jax.sharding import PartitionSpec as P

from jaxseg import rewards

IGNORE = 255


def ref_inter_union(a, y, num_classes):
  """Per class c, (#{a = c ∧ y = c}, #{a = c ∨ y = c}) over labelled pixels, by loops."""
  out = []
  for c in range(num_classes):
    inter = union = 0
    for p, t in zip(a.ravel(), y.ravel()):
      if t == IGNORE:
        continue
      inter += (p == c) and (t == c)
      union += (p == c) or (t == c)
    out.append((inter, union))
  return out


def ref_image_miou(a, y, num_classes):
  ious = [i / u for i, u in ref_inter_union(a, y, num_classes) if u]
  return float(np.mean(ious)) if ious else 0.0


def ref_psd(actions, r):
  n = len(r)
  out = np.zeros(actions.shape, np.float64)
  for i in range(n):
    for j in range(n):
      out[i] += (r[i] - r[j]) * (actions[i] != actions[j])
  return out / (n - 1)


def ref_normalize(r, where, eps=1e-6):
  sel = r[where]
  mean, std = sel.mean(), sel.std()
  return np.where(where, (r - mean) / (std + eps), 0.0)


def ref_block_mode(y, f, num_classes):
  h, w = y.shape
  out = np.full((h // f, w // f), IGNORE, y.dtype)
  for i in range(h // f):
    for j in range(w // f):
      block = y[i * f:(i + 1) * f, j * f:(j + 1) * f].ravel()
      block = block[block != IGNORE]
      if block.size:
        counts = np.bincount(block, minlength=num_classes)
        out[i, j] = int(np.argmax(counts))  # first maximum = lowest class id
  return out


def random_maps(rng, shape, num_classes, ignore_frac=0.2):
  y = rng.integers(0, num_classes, size=shape)
  y[rng.random(shape) < ignore_frac] = IGNORE
  return y


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 6), st.sampled_from([0.0, 0.3, 1.0]))
def test_image_miou_matches_numpy_loop(seed, num_classes, ignore_frac):
  rng = np.random.default_rng(seed)
  y = random_maps(rng, (6, 7), num_classes, ignore_frac)
  a = rng.integers(0, num_classes, size=(6, 7))
  got = rewards.image_miou(jnp.asarray(a), jnp.asarray(y), num_classes=num_classes)
  np.testing.assert_allclose(float(got), ref_image_miou(a, y, num_classes), atol=1e-6)


def test_image_miou_edge_cases():
  y = jnp.full((4, 4), IGNORE)
  assert float(rewards.image_miou(jnp.zeros((4, 4), jnp.int32), y, num_classes=3)) == 0.0
  y = jnp.arange(16).reshape(4, 4) % 3
  assert float(rewards.image_miou(y, y, num_classes=3)) == 1.0
  with pytest.raises(AssertionError):
    rewards.image_miou(jnp.zeros((2, 4, 4), jnp.int32), jnp.zeros((2, 4, 4), jnp.int32),
                       num_classes=3)


def test_image_miou_vmaps_and_jits():
  rng = np.random.default_rng(0)
  y = random_maps(rng, (3, 5, 6), 4)
  a = rng.integers(0, 4, size=(3, 5, 6))
  fn = jax.jit(jax.vmap(functools.partial(rewards.image_miou, num_classes=4)))
  got = np.asarray(fn(a, y))
  np.testing.assert_allclose(got, [ref_image_miou(a[i], y[i], 4) for i in range(3)],
                             atol=1e-6)


def test_pixel_correctness():
  rng = np.random.default_rng(1)
  y = random_maps(rng, (5, 6), 3)
  a = rng.integers(0, 3, size=(4, 5, 6))
  r, valid = rewards.pixel_correctness(jnp.asarray(a), jnp.asarray(y))
  np.testing.assert_array_equal(valid, np.broadcast_to(y != IGNORE, a.shape))
  np.testing.assert_array_equal(r, ((a == y) & (y != IGNORE)).astype(np.float32))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(2, 6), st.integers(1, 5))
def test_psd_matches_pairwise_loop(seed, n, num_classes):
  rng = np.random.default_rng(seed)
  actions = rng.integers(0, num_classes, size=(n, 4, 5))
  r = rng.random(n)
  if seed % 3 == 0:
    r[: n // 2] = r[-1]  # ties
  got = rewards.pairwise_spatial_difference(jnp.asarray(actions), jnp.asarray(r))
  np.testing.assert_allclose(np.asarray(got), ref_psd(actions, r), atol=1e-5)
  # The class-histogram form (C < N), exactly 0 where every map agrees.
  hist = np.asarray(rewards.pairwise_spatial_difference(
      jnp.asarray(actions), jnp.asarray(r), num_classes=max(num_classes, 1)))
  if num_classes < n:
    np.testing.assert_allclose(hist, ref_psd(actions, r), atol=1e-5)
    np.testing.assert_array_equal(hist[:, (actions == actions[0]).all(0)], 0.0)


def test_psd_is_zero_where_maps_agree_and_rejects_one_map():
  actions = jnp.zeros((3, 4, 4), jnp.int32).at[0, 0, 0].set(1)
  adv = rewards.pairwise_spatial_difference(actions, jnp.array([1.0, 0.0, 0.5]))
  assert np.count_nonzero(np.asarray(adv)) == 3  # pixel (0, 0) of each map
  np.testing.assert_allclose(adv[:, 0, 0], [(1.0 + 0.5) / 2, -1.0 / 2, -0.5 / 2])
  with pytest.raises(ValueError, match="N >= 2"):
    rewards.pairwise_spatial_difference(actions[:1], jnp.array([1.0]))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_normalize_advantages_matches_numpy(seed):
  rng = np.random.default_rng(seed)
  r = rng.random((3, 4, 5)) * 3
  where = rng.random(r.shape) < 0.7
  got = rewards.normalize_advantages(jnp.asarray(r), where=jnp.asarray(where))
  np.testing.assert_allclose(np.asarray(got), ref_normalize(r, where), rtol=1e-4,
                             atol=1e-4)
  # Along an axis: every row of the first axis its own group.
  got = rewards.normalize_advantages(jnp.asarray(r), where=jnp.asarray(where),
                                     axis=(1, 2))
  want = np.stack([ref_normalize(r[i], where[i]) for i in range(3)])
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


def test_sync_an_on_eight_devices_equals_global():
  """SyncAN inside shard_map (explicit psum) == normalising the global batch
  under plain jit; without the psum each device normalises its own shard."""
  assert jax.device_count() == 8
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  rng = np.random.default_rng(0)
  # Shards with very different statistics, so local != global.
  r_np = (rng.random((16, 6, 6)) * np.repeat(np.arange(1, 9), 2)[:, None, None])
  w_np = rng.random(r_np.shape) < 0.8
  shard = jax.sharding.NamedSharding(mesh, P("data"))
  r = jax.device_put(jnp.asarray(r_np, jnp.float32), shard)
  where = jax.device_put(jnp.asarray(w_np), shard)

  def sharded(axis_name):
    def fn(r, w):
      return rewards.normalize_advantages(r, where=w, axis_name=axis_name)
    return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=(P("data"), P("data")),
                                 out_specs=P("data")))

  synced = sharded("data")(r, where)
  global_ = jax.jit(lambda r, w: rewards.normalize_advantages(r, where=w))(r, where)
  want = ref_normalize(r_np.astype(np.float32).astype(np.float64), w_np)
  np.testing.assert_allclose(np.asarray(synced), np.asarray(global_), atol=1e-4)
  np.testing.assert_allclose(np.asarray(synced), want, atol=1e-4)
  local = np.asarray(sharded(None)(r, where))
  want_local = np.concatenate([ref_normalize(r_np[2 * i:2 * i + 2], w_np[2 * i:2 * i + 2])
                               for i in range(8)])
  np.testing.assert_allclose(local, want_local, atol=1e-4)
  assert np.abs(local - want).max() > 0.1


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([1, 2, 4]), st.integers(1, 5))
def test_downsample_labels_block_mode(seed, factor, num_classes):
  rng = np.random.default_rng(seed)
  y = random_maps(rng, (8, 12), num_classes, ignore_frac=0.5)
  got = rewards.downsample_labels(jnp.asarray(y), factor, num_classes=num_classes)
  np.testing.assert_array_equal(np.asarray(got), ref_block_mode(y, factor, num_classes))


def test_downsample_logits_and_bad_factor():
  x = np.random.default_rng(0).normal(size=(2, 8, 4, 3)).astype(np.float32)
  got = np.asarray(rewards.downsample_logits(jnp.asarray(x), 4))
  want = x.reshape(2, 2, 4, 1, 4, 3).mean(axis=(2, 4))
  np.testing.assert_allclose(got, want, atol=1e-6)
  with pytest.raises(ValueError, match="must divide"):
    rewards.downsample_logits(jnp.asarray(x), 3)
  with pytest.raises(ValueError, match="must divide"):
    rewards.downsample_labels(jnp.zeros((6, 6), jnp.int32), 4, num_classes=2)


def test_sample_actions_follows_softmax():
  logits = jnp.array([[0.0, 1.0, 2.0, -1.0], [5.0, -30.0, 0.0, 0.0],
                      [-1e9, -1e9, -1e9, 0.0]])
  n = 40_000
  a = np.asarray(rewards.sample_actions(jax.random.key(0), logits, n))
  assert a.shape == (n, 3) and a.min() >= 0 and a.max() <= 3
  p = np.asarray(jax.nn.softmax(logits, -1))
  freq = np.stack([np.bincount(a[:, i], minlength=4) / n for i in range(3)])
  # 5 standard errors of a binomial frequency.
  tol = 5 * np.sqrt(p * (1 - p) / n) + 1e-9
  assert np.all(np.abs(freq - p) <= tol), (freq, p)


def test_coupled_samples_keep_the_softmax_and_differ_less():
  """With common random numbers (`resample` = ρ) every draw still follows
  softmax(z) at every position, and two draws disagree at a fraction
  (2ρ − ρ²)(1 − Σπ²) of the positions, counted here over many positions."""
  logits = jnp.tile(jnp.array([[0.0, 1.0, 2.0, -1.0]]), (20_000, 1))
  p = np.asarray(jax.nn.softmax(logits[0]))
  for rho in (1.0, 0.25):
    a = np.asarray(rewards.sample_actions(jax.random.key(3), logits, 6, resample=rho))
    for draw in (0, 5):
      freq = np.bincount(a[draw], minlength=4) / a.shape[1]
      assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / a.shape[1])), (rho, freq)
    want = (2 * rho - rho ** 2) * (1 - np.sum(p ** 2))
    got = np.mean(a[1] != a[2])
    assert abs(got - want) < 5 * np.sqrt(want * (1 - want) / a.shape[1]), (rho, got, want)


def test_action_log_probs_and_entropy():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(3, 4, 5)).astype(np.float32)
  a = rng.integers(0, 5, size=(2, 3, 4))
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  want = np.stack([np.take_along_axis(logp, a[n][..., None], -1)[..., 0] for n in range(2)])
  np.testing.assert_allclose(rewards.action_log_probs(jnp.asarray(z), jnp.asarray(a)), want,
                             atol=1e-5)
  np.testing.assert_allclose(rewards.entropy(jnp.asarray(z)),
                             -(np.exp(logp) * logp).sum(-1), atol=1e-5)


def test_host_score_plugs_in_a_non_jittable_scorer():
  rng = np.random.default_rng(2)
  y = random_maps(rng, (2, 5, 6), 3)
  a = rng.integers(0, 3, size=(2, 4, 5, 6))
  calls = []

  def external(actions, labels):  # plain numpy: could be any host program
    calls.append(actions.shape)
    return ref_image_miou(actions, labels, 3)

  got = jax.jit(functools.partial(rewards.sample_scores, rewards.host_score(external)))(a, y)
  want = [[ref_image_miou(a[b, n], y[b], 3) for n in range(4)] for b in range(2)]
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-6)
  assert calls and all(s == (5, 6) for s in calls)
  jit_score = functools.partial(rewards.image_miou, num_classes=3)
  np.testing.assert_allclose(rewards.sample_scores(jit_score, a, y), want, atol=1e-6)


def ref_class_iou(a, y, num_classes, empty=1.0):
  return np.array([i / u if u else empty for i, u in ref_inter_union(a, y, num_classes)])


@pytest.mark.parametrize("seed", range(3))
def test_class_iou_matches_numpy_loop_and_averages_to_image_miou(seed):
  rng = np.random.default_rng(seed)
  a = rng.integers(0, 4, (6, 7))
  y = rng.integers(0, 3, (6, 7))  # class 3 never labelled
  y[rng.random(y.shape) < 0.2] = IGNORE
  got = np.asarray(rewards.class_iou(jnp.asarray(a), jnp.asarray(y), num_classes=5))
  np.testing.assert_allclose(got, ref_class_iou(a, y, 5), atol=1e-6)
  assert got[4] == 1.0  # neither predicted nor labelled: a true negative
  present = [c for c in range(5) if ((a == c) & (y != IGNORE)).any() or (y == c).any()]
  np.testing.assert_allclose(got[present].mean(), ref_image_miou(a, y, 5), atol=1e-6)


def test_leave_one_out_matches_its_definition():
  r = np.random.default_rng(0).random((3, 5, 2))
  got = np.asarray(rewards.leave_one_out_advantages(jnp.asarray(r), axis=1))
  for b in range(3):
    for n in range(5):
      others = np.delete(r[b], n, axis=0).mean(0)
      np.testing.assert_allclose(got[b, n], r[b, n] - others, atol=1e-6)
  with pytest.raises(ValueError, match="N >= 2"):
    rewards.leave_one_out_advantages(jnp.ones((1, 3)), axis=0)
