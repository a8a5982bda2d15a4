"""RSS losses (jaxseg.algorithms.rss): they learn and match their formulas."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxseg import rewards
from jaxseg.algorithms import rss, rss_credit

IGNORE = 255


def _label_map(seed=0, shape=(2, 16, 16), num_classes=4):
  """Blocky labels (so coarse PSR scales see the same classes) with ignore."""
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, num_classes, size=(shape[0], shape[1] // 4, shape[2] // 4))
  y = np.repeat(np.repeat(coarse, 4, 1), 4, 2)
  y[:, :2, :3] = IGNORE
  return jnp.asarray(y, jnp.int32)


def _fit(loss_of_logits, labels, num_classes, steps=150, lr=0.1):
  """Trains free logits (the 'model') with Adam; returns final argmax accuracy."""
  logits = jnp.zeros((*labels.shape, num_classes))
  tx = optax.adam(lr)
  opt = tx.init(logits)

  @jax.jit
  def step(logits, opt, rng):
    grads = jax.grad(loss_of_logits)(logits, labels, rng)
    updates, opt = tx.update(grads, opt)
    return optax.apply_updates(logits, updates), opt

  for i in range(steps):
    logits, opt = step(logits, opt, jax.random.key(i))
  valid = labels != IGNORE
  return float(jnp.sum((logits.argmax(-1) == labels) & valid) / jnp.sum(valid))


@pytest.mark.parametrize("kind", ["pixel", "naive", "psr_psd", "psr_multi"])
def test_policy_gradients_learn_the_labels(kind):
  """Free per-pixel logits trained by each RSS loss reach the labels (chance = 1/4)."""
  labels, c = _label_map(), 4
  score = functools.partial(rewards.image_miou, num_classes=c, ignore_index=IGNORE)

  def loss(logits, labels, rng):
    if kind == "pixel":
      return rss.pixel_level_loss(logits, labels, rng, num_samples=4, ignore_index=IGNORE)[0]
    factors = {"naive": [1], "psr_psd": [4], "psr_multi": [4, 2, 1]}[kind]
    total = 0.0
    for f, key in zip(factors, jax.random.split(rng, len(factors))):
      total += rss.image_level_loss(logits, labels, key, factor=f, num_samples=8,
                                    score_fn=score, num_classes=c, ignore_index=IGNORE,
                                    credit="map" if kind == "naive" else "psd",
                                    advantage="grpo" if kind == "naive" else "raw")[0]
    return total

  acc = _fit(loss, labels, c, steps=300 if kind == "naive" else 150)
  assert acc > 0.9, (kind, acc)


def test_pixel_loss_matches_its_formula():
  """-Σ A·log π(a) / (N·#valid) with A normalised over all valid (pixel, sample)
  rewards, recomputed here in numpy from the same samples."""
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(2, 4, 8, 3)), jnp.float32)
  labels = _label_map(shape=(2, 4, 8), num_classes=3).at[:, :1, :1].set(IGNORE)
  key = jax.random.key(3)
  loss, metrics = rss.pixel_level_loss(logits, labels, key, num_samples=4, ignore_index=IGNORE)
  a = np.moveaxis(np.asarray(rewards.sample_actions(key, logits, 4)), 0, 1)  # (B, N, H, W)
  y = np.asarray(labels)[:, None]
  valid = np.broadcast_to(y != IGNORE, a.shape)
  r = (a == y) & valid
  adv = (r - r[valid].mean()) / (r[valid].std() + 1e-6)
  logp = np.asarray(jax.nn.log_softmax(logits))
  lp = np.take_along_axis(np.broadcast_to(logp[:, None], (*a.shape, 3)), a[..., None], -1)[..., 0]
  want = -(adv * lp * valid).sum() / (4 * (np.asarray(labels) != IGNORE).sum())
  np.testing.assert_allclose(float(loss), want, rtol=1e-4)
  np.testing.assert_allclose(float(metrics["train/reward"]), r[valid].mean(), rtol=1e-5)


def test_nosync_normalises_each_shard_alone():
  rng = np.random.default_rng(0)
  r = jnp.asarray(rng.random((4, 3, 5)) * np.arange(1, 5)[:, None, None], jnp.float32)
  where = jnp.ones(r.shape, bool)
  got = rss.sharded_normalize(r, where, groups=2)
  for g in range(2):
    np.testing.assert_allclose(got[2 * g:2 * g + 2],
                               rewards.normalize_advantages(r[2 * g:2 * g + 2]), atol=1e-5)
  np.testing.assert_allclose(rss.sharded_normalize(r, where, groups=1),
                             rewards.normalize_advantages(r), atol=1e-6)


def test_coarse_to_fine_unlocks_coarsest_first():
  w = lambda step: np.asarray(rss.scale_weights(
      [1, 4, 2], step, weights=(1.0, 2.0, 3.0), schedule="coarse_to_fine",
      unlock_fraction=0.5, total_steps=60))
  # 3 scales unlock over the first half (30 steps): every 10 steps.
  np.testing.assert_array_equal(w(0), [0, 2, 0])
  np.testing.assert_array_equal(w(10), [0, 2, 3])
  np.testing.assert_array_equal(w(25), [1, 2, 3])
  np.testing.assert_array_equal(np.asarray(rss.scale_weights([1, 4], 0)), [1, 1])


def test_entropy_bonus_is_subtracted_from_the_loss():
  """loss(coef) = loss(0) − coef · mean entropy over valid pixels, same samples."""
  labels = _label_map()
  logits = jnp.asarray(np.random.default_rng(0).normal(size=(*labels.shape, 4)), jnp.float32)
  batch = {"image": jnp.zeros((*labels.shape, 3), jnp.uint8), "label": labels}
  score = functools.partial(rewards.image_miou, num_classes=4, ignore_index=IGNORE)
  out = {}
  for coef in (0.0, 0.3):
    loss_fn = rss.make_loss(lambda p, x, **_: p, level="image", num_samples=4, num_classes=4,
                            ignore_index=IGNORE, score_fn=score, factors=(1,),
                            entropy_coef=coef)
    out[coef] = loss_fn(logits, batch, jax.random.key(0), jnp.int32(0))
  ent = out[0.0][1]["train/entropy"]
  valid = labels != IGNORE
  want = jnp.sum(jnp.where(valid, rewards.entropy(logits), 0)) / jnp.sum(valid)
  np.testing.assert_allclose(ent, want, rtol=1e-5)
  np.testing.assert_allclose(out[0.3][0], out[0.0][0] - 0.3 * ent, rtol=1e-5, atol=1e-6)


def test_class_advantages_match_a_numpy_loop():
  """A_n(p) = normalised-over-n IoU_{a_n(p)}(a_n, y), recomputed by loops."""
  rng = np.random.default_rng(1)
  a = rng.integers(0, 4, (2, 5, 4, 6))
  y = rng.integers(0, 3, (2, 4, 6))
  y[0, 0] = IGNORE
  for baseline in ("grpo", "rloo"):
    got = np.asarray(rss_credit.class_advantages(jnp.asarray(a), jnp.asarray(y), num_classes=4,
                                          ignore_index=IGNORE, advantage=baseline))
    for b in range(2):
      iou = np.stack([np.asarray(rewards.class_iou(jnp.asarray(a[b, n]), jnp.asarray(y[b]),
                                                    num_classes=4, ignore_index=IGNORE))
                      for n in range(5)])  # (N, C)
      for n in range(5):
        if baseline == "grpo":
          adv = (iou[n] - iou.mean(0)) / (iou.std(0) + 1e-6)
        else:
          adv = iou[n] - np.delete(iou, n, 0).mean(0)
        np.testing.assert_allclose(got[b, n], adv[a[b, n]], rtol=1e-4, atol=1e-5)


def test_explore_logits_are_the_eps_uniform_mixture():
  z = jnp.asarray(np.random.default_rng(0).normal(size=(3, 5)) * 4, jnp.float32)
  q = np.exp(np.asarray(rss.explore_logits(z, 0.2)))
  np.testing.assert_allclose(q, 0.8 * np.asarray(jax.nn.softmax(z)) + 0.2 / 5, rtol=1e-5)
  np.testing.assert_allclose(q.sum(-1), 1.0, rtol=1e-5)
  assert rss.explore_logits(z, 0.0) is z


@pytest.mark.parametrize("kind", ["class_grpo", "class_rloo_eps"])
def test_class_rewards_learn_the_labels(kind):
  """Free per-pixel logits trained by per-class image-level credit reach the labels."""
  labels, c = _label_map(), 4
  score = functools.partial(rewards.image_miou, num_classes=c, ignore_index=IGNORE)

  def loss(logits, labels, rng):
    return rss.image_level_loss(logits, labels, rng, factor=4, num_samples=8, score_fn=score,
                                num_classes=c, ignore_index=IGNORE, credit="class",
                                advantage="rloo" if "rloo" in kind else "grpo",
                                explore_eps=0.1 if "eps" in kind else 0.0)[0]

  acc = _fit(loss, labels, c, steps=150)
  assert acc > 0.9, (kind, acc)


def test_class_diagnostics_match_numpy():
  rng = np.random.default_rng(2)
  labels = np.asarray(_label_map(seed=2, shape=(2, 8, 8), num_classes=3))
  logits = rng.normal(size=(2, 8, 8, 4)).astype(np.float32)
  actions = rng.integers(0, 3, (2, 3, 2, 2))
  got = rss.class_diagnostics(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(actions),
                              num_classes=4, ignore_index=IGNORE)
  valid = labels != IGNORE
  pred = logits.argmax(-1)
  ent = np.asarray(rewards.entropy(jnp.asarray(logits)))
  for c in range(4):
    np.testing.assert_allclose(got[f"train/cls/pred/{c}"], (pred[valid] == c).mean(), atol=1e-6)
    np.testing.assert_allclose(got[f"train/cls/label/{c}"], (labels[valid] == c).mean(),
                               atol=1e-6)
    sel = valid & (labels == c)
    want = ent[sel].mean() if sel.any() else np.nan
    np.testing.assert_allclose(got[f"train/cls/entropy/{c}"], want, rtol=1e-5)
    has = [(actions[b, n] == c).any() for b in range(2) for n in range(3)]
    np.testing.assert_allclose(got[f"train/cls/sampled/{c}"], np.mean(has), atol=1e-6)
