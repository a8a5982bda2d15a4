"""The image-level RSS loss against a float64 numpy transcription of SPEC §1.2.

Every option of `rss.image_level_loss` (credit map / psd / class; the advantage
estimators; image or global groups; PSD's RMS normalisation; dropping flat
groups; ε-exploration) and the PSR composition of `rss.make_loss` (weights,
coarse-to-fine schedule, entropy bonus) is recomputed here with loops from the
actions the loss drew (recorded from the sampler), the loss value compared and
its gradient with respect to the logits compared to central finite differences
of the reference (the drawn actions held fixed, as `stop_gradient` holds them).
"""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import rewards
from jaxseg.algorithms import policy, rss, rss_credit

IGNORE = 255
C = 3


# --- the reference, in loops -----------------------------------------------------------


def ref_block_mean(z, f):
  b, h, w, c = z.shape
  out = np.zeros((b, h // f, w // f, c))
  for i, j in itertools.product(range(h // f), range(w // f)):
    out[:, i, j] = z[:, i * f:(i + 1) * f, j * f:(j + 1) * f].mean(axis=(1, 2))
  return out


def ref_block_mode(y, f):
  b, h, w = y.shape
  out = np.full((b, h // f, w // f), IGNORE)
  for k, i, j in itertools.product(range(b), range(h // f), range(w // f)):
    block = y[k, i * f:(i + 1) * f, j * f:(j + 1) * f].ravel()
    counts = [np.sum(block == c) for c in range(C)]
    if sum(counts):
      out[k, i, j] = int(np.argmax(counts))  # lowest id on a tie
  return out


def ref_class_iou(a, y, empty=1.0):
  out = []
  for c in range(C):
    inter = union = 0
    for p, q in zip(a.ravel(), y.ravel()):
      if q == IGNORE:
        continue
      inter += (p == c) and (q == c)
      union += (p == c) or (q == c)
    out.append(inter / union if union else empty)
  return np.array(out)


def ref_miou(a, y):
  present = [c for c in range(C) if ref_class_iou(a, y, empty=-1.0)[c] >= 0]
  iou = ref_class_iou(a, y)
  return float(np.mean([iou[c] for c in present])) if present else 0.0


def ref_group(r, estimator):
  """Advantages of one group of N rewards."""
  n = len(r)
  if estimator == "raw":
    return r.copy()
  if estimator == "drgrpo":
    return r - r.mean()
  if estimator == "rloo":
    return np.array([r[i] - np.mean(np.delete(r, i)) for i in range(n)])
  if estimator == "rank":
    r = np.array([sum(r[j] < r[i] for j in range(n)) + (sum(r[j] == r[i] for j in range(n)) - 1) / 2
                  for i in range(n)])
  return (r - r.mean()) / (r.std() + 1e-6)


def ref_image_loss(z, labels, actions, *, factor, credit="map", advantage="grpo",
                   psd_std_normalize=False, group="image", groups=1, eps=0.0,
                   drop_flat=False, resample=1.0):
  """The loss of SPEC §1.2 at one PSR scale from the drawn `actions` (B, N, h, w)
  (`resample` changes only how they were drawn)."""
  del resample
  zs = ref_block_mean(z, factor)
  y = ref_block_mode(labels, factor)
  b, n = actions.shape[:2]
  p = np.exp(zs - zs.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  q = (1 - eps) * p + eps / C
  r = np.array([[ref_miou(actions[k, i], y[k]) for i in range(n)] for k in range(b)])
  if credit == "class":
    iou = np.array([[ref_class_iou(actions[k, i], y[k]) for i in range(n)] for k in range(b)])
    adv_c = np.stack([np.stack([ref_group(iou[k, :, c], advantage) for c in range(C)], -1)
                      for k in range(b)])  # (B, N, C)
    adv = np.take_along_axis(adv_c[:, :, None, None, :], actions[..., None], -1)[..., 0]
  else:
    if group == "global":
      per = b // groups
      img = np.zeros((b, n))
      for g in range(groups):
        rows = r[g * per:(g + 1) * per]
        img[g * per:(g + 1) * per] = (rows - rows.mean()) / (rows.std() + 1e-6)
    else:
      img = np.stack([ref_group(r[k], advantage) for k in range(b)])
    if credit in ("psd", "greedy"):
      adv = np.zeros(actions.shape)
      for k, i in itertools.product(range(b), range(n)):
        if credit == "greedy":
          g = zs[k].argmax(-1)
          adv[k, i] = (r[k, i] - ref_miou(g, y[k])) * (actions[k, i] != g)
          continue
        for j in range(n):
          adv[k, i] += (img[k, i] - img[k, j]) * (actions[k, i] != actions[k, j]) / (n - 1)
      if psd_std_normalize:
        valid = np.broadcast_to((y != IGNORE)[:, None], adv.shape)
        nz = adv[valid & (np.abs(adv) > 1e-6)]
        adv = adv / (np.sqrt(np.mean(nz ** 2)) + 1e-6)
    else:
      adv = np.broadcast_to(img[:, :, None, None], actions.shape)
  valid = y != IGNORE
  if drop_flat:
    valid = valid & np.array([len(set(r[k])) > 1 for k in range(b)])[:, None, None]
  total = 0.0
  for k, i in itertools.product(range(b), range(n)):
    for u, v in itertools.product(range(y.shape[1]), range(y.shape[2])):
      if valid[k, u, v]:
        total += adv[k, i, u, v] * np.log(q[k, u, v, actions[k, i, u, v]])
  return -total / (n * max(valid.sum(), 1))


def ref_entropy(z, labels):
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  ent = -(p * np.log(p)).sum(-1)
  return ent[labels != IGNORE].mean()


def finite_difference(fn, z, h=1e-4):
  g = np.zeros_like(z)
  for idx in np.ndindex(z.shape):
    up, down = z.copy(), z.copy()
    up[idx] += h
    down[idx] -= h
    g[idx] = (fn(up) - fn(down)) / (2 * h)
  return g


# --- the loss as jaxseg computes it -----------------------------------------------------


def _inputs(seed=0, shape=(4, 8, 8)):
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.repeat(rng.integers(0, C, (shape[0], shape[1] // 2, shape[2] // 2)),
                               2, 1), 2, 2)
  labels[:, :2, :2] = IGNORE  # a whole ignored block at factor 2
  labels[0] = np.where(rng.random(shape[1:]) < 0.5, labels[0], IGNORE)
  labels[1] = 1
  z = rng.normal(size=(*shape, C)) * 1.5
  z[1, ..., 1] += 30.0  # every map of image 1 is all class 1 (without ε): a flat group
  return z, labels


def _recorded_actions(monkeypatch, fn):
  """Runs `fn()` eagerly and returns (its result, the actions each sampler call drew)."""
  drawn = []
  real = rewards.sample_actions

  def recording(*args, **kwargs):
    a = real(*args, **kwargs)
    drawn.append(np.moveaxis(np.asarray(a), 0, 1))  # (B, N, h, w)
    return a

  monkeypatch.setattr(rewards, "sample_actions", recording)
  out = fn()
  monkeypatch.setattr(rewards, "sample_actions", real)
  return out, drawn


OPTIONS = [
    dict(credit="map", advantage="grpo"),
    dict(credit="map", advantage="raw"),
    dict(credit="map", advantage="drgrpo"),
    dict(credit="map", advantage="rloo"),
    dict(credit="map", advantage="rank"),
    dict(credit="map", advantage="grpo", group="global", groups=2),
    dict(credit="map", advantage="grpo", group="global", groups=1),
    dict(credit="psd", advantage="raw"),
    dict(credit="psd", advantage="raw", psd_std_normalize=True),
    dict(credit="psd", advantage="rank", psd_std_normalize=True),
    dict(credit="psd", advantage="grpo", drop_flat=True),
    dict(credit="map", advantage="drgrpo", drop_flat=True, eps=0.2),
    dict(credit="class", advantage="grpo", eps=0.1),
    dict(credit="class", advantage="rloo"),
    dict(credit="psd", advantage="rank", resample=0.3, eps=0.1),
    dict(credit="greedy", advantage="raw"),
    dict(credit="greedy", advantage="raw", psd_std_normalize=True, eps=0.1, drop_flat=True),
]


def _jax_loss(z, labels, key, *, factor, opts, n=4):
  score = functools.partial(rewards.image_miou, num_classes=C, ignore_index=IGNORE)
  kw = dict(opts)
  eps = kw.pop("eps", 0.0)
  return rss.image_level_loss(jnp.asarray(z, jnp.float32), jnp.asarray(labels), key,
                              factor=factor, num_samples=n, score_fn=score, num_classes=C,
                              ignore_index=IGNORE, explore_eps=eps, **kw)


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("factor", [1, 2])
def test_image_level_loss_value_matches_the_reference(monkeypatch, opts, factor):
  z, labels = _inputs(seed=factor)
  key = jax.random.key(7)
  (loss, _), (actions,) = _recorded_actions(
      monkeypatch, lambda: _jax_loss(z, labels, key, factor=factor, opts=opts))
  want = ref_image_loss(z, labels, actions, factor=factor, **opts)
  np.testing.assert_allclose(float(loss), want, rtol=2e-4, atol=2e-6)


@pytest.mark.parametrize("opts", [OPTIONS[i] for i in (0, 4, 5, 8, 11, 12, 16)],
                         ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_image_level_loss_gradient_matches_finite_differences(monkeypatch, opts):
  z, labels = _inputs(seed=3, shape=(2, 4, 4))
  if opts.get("group") == "global":
    z, labels = _inputs(seed=3, shape=(4, 4, 4))
  key = jax.random.key(1)
  _, (actions,) = _recorded_actions(monkeypatch,
                                    lambda: _jax_loss(z, labels, key, factor=2, opts=opts))
  grad = jax.grad(lambda x: _jax_loss(x, labels, key, factor=2, opts=opts)[0])(
      jnp.asarray(z, jnp.float32))
  want = finite_difference(
      lambda x: ref_image_loss(x, labels, actions, factor=2, **opts), z)
  np.testing.assert_allclose(np.asarray(grad), want, rtol=1e-3, atol=2e-5)


def test_make_loss_sums_the_psr_scales_with_weights_schedule_and_entropy(monkeypatch):
  """Σ_s w_s(step)·L_s − λ·H over PSR scales 1/2 and 1 (coarse-to-fine: only the
  coarse scale before step 5), each scale with its own draw."""
  z, labels = _inputs(seed=5)
  opts = dict(credit="psd", advantage="raw", psd_std_normalize=True)
  score = functools.partial(rewards.image_miou, num_classes=C, ignore_index=IGNORE)
  loss_fn = rss.make_loss(lambda p, x, **_: p, level="image", num_samples=4, num_classes=C,
                          ignore_index=IGNORE, score_fn=score, factors=(2, 1),
                          weights=(0.5, 2.0), schedule="coarse_to_fine", unlock_fraction=0.5,
                          total_steps=20, entropy_coef=0.3, **opts)
  batch = {"image": jnp.zeros((*labels.shape, 3), jnp.uint8), "label": jnp.asarray(labels)}
  ent = ref_entropy(z, labels)
  for step, weights in ((0, (0.5, 0.0)), (7, (0.5, 2.0))):
    (loss, metrics), drawn = _recorded_actions(
        monkeypatch, lambda: loss_fn(jnp.asarray(z, jnp.float32), batch, jax.random.key(2),
                                     jnp.int32(step)))
    terms = [ref_image_loss(z, labels, a, factor=f, **opts) for a, f in zip(drawn, (2, 1))]
    want = sum(w * t for w, t in zip(weights, terms)) - 0.3 * ent
    np.testing.assert_allclose(float(loss), want, rtol=2e-4, atol=2e-6)
    np.testing.assert_allclose(float(metrics["train/pg_loss_s1"]), terms[1], rtol=2e-4,
                               atol=2e-6)
  grad = jax.grad(lambda x: loss_fn(x, batch, jax.random.key(2), jnp.int32(7))[0])(
      jnp.asarray(z, jnp.float32))
  _, drawn = _recorded_actions(
      monkeypatch, lambda: loss_fn(jnp.asarray(z, jnp.float32), batch, jax.random.key(2),
                                   jnp.int32(7)))
  small = (slice(0, 2),)  # the finite differences of two images suffice

  def ref(x):
    full = z.copy()
    full[small] = x
    return (0.5 * ref_image_loss(full, labels, drawn[0], factor=2, **opts)
            + 2.0 * ref_image_loss(full, labels, drawn[1], factor=1, **opts)
            - 0.3 * ref_entropy(full, labels))

  np.testing.assert_allclose(np.asarray(grad)[small], finite_difference(ref, z[small]),
                             rtol=2e-3, atol=5e-5)


def test_group_advantages_match_the_reference():
  rng = np.random.default_rng(0)
  r = rng.integers(0, 4, (6, 5)).astype(np.float64)  # integer rewards: ties
  r[0] = 2.0  # a flat group
  for estimator in rewards.ADVANTAGE_ESTIMATORS:
    got = np.asarray(rewards.group_advantages(jnp.asarray(r), estimator=estimator, axis=1))
    want = np.stack([ref_group(row, estimator) for row in r])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=estimator)
    if estimator != "raw":
      np.testing.assert_array_equal(got[0], 0.0)
  with pytest.raises(ValueError, match="unknown"):
    rewards.group_advantages(jnp.asarray(r), estimator="ppo")


def ref_clip_loss(logp, old, adv, valid, eps):
  total, count = 0.0, 0
  for idx in np.ndindex(logp.shape):
    if valid[idx[0], *idx[2:]]:
      ratio = np.exp(logp[idx] - old[idx])
      total += min(ratio * adv[idx], np.clip(ratio, 1 - eps, 1 + eps) * adv[idx])
      count += 1
  return -total / count


def test_clipped_surrogate_matches_the_reference():
  """PPO's clipped ratio: value against loops, gradient against finite
  differences; zero gradient where the ratio is clipped on the side its
  advantage pushes; REINFORCE's gradient at ratio 1."""
  rng = np.random.default_rng(0)
  logp = np.log(rng.uniform(0.05, 1.0, (2, 3, 4)))
  old = logp + rng.normal(0, 0.3, logp.shape)
  adv = rng.normal(size=logp.shape)
  valid = rng.random((2, 4)) < 0.8
  loss, frac = policy.surrogate(jnp.asarray(logp), jnp.asarray(adv), jnp.asarray(valid),
                                old_logp=jnp.asarray(old), kind="clip", clip_eps=0.2)
  np.testing.assert_allclose(float(loss), ref_clip_loss(logp, old, adv, valid, 0.2), rtol=1e-5)
  ratio = np.exp(logp - old)
  mask = np.broadcast_to(valid[:, None], logp.shape)
  np.testing.assert_allclose(float(frac), np.mean(np.abs(ratio - 1)[mask] > 0.2), rtol=1e-6)
  grad = jax.grad(lambda x: policy.surrogate(x, jnp.asarray(adv), jnp.asarray(valid),
                                             old_logp=jnp.asarray(old), kind="clip")[0])(
      jnp.asarray(logp))
  want = finite_difference(lambda x: ref_clip_loss(x, old, adv, valid, 0.2), logp, h=1e-5)
  np.testing.assert_allclose(np.asarray(grad), want, rtol=1e-3, atol=1e-6)
  on = jax.grad(lambda x: policy.surrogate(x, jnp.asarray(adv), jnp.asarray(valid),
                                           kind="clip")[0])(jnp.asarray(logp))
  plain = jax.grad(lambda x: policy.surrogate(x, jnp.asarray(adv), jnp.asarray(valid))[0])(
      jnp.asarray(logp))
  np.testing.assert_allclose(np.asarray(on), np.asarray(plain), rtol=1e-6)


def test_a_stored_draw_gives_the_on_policy_loss_and_gradient():
  """`make_rollout`'s draw handed to `make_loss` as batch["rollout"] (the
  first epoch) equals the loss drawing itself, for REINFORCE and clip."""
  z, labels = _inputs(seed=4)
  score = functools.partial(rewards.image_miou, num_classes=C, ignore_index=IGNORE)
  batch = {"image": jnp.zeros((*labels.shape, 3), jnp.uint8), "label": jnp.asarray(labels)}
  apply = lambda p, x, **_: p  # noqa: E731
  for kind in ("reinforce", "clip"):
    kw = dict(level="image", num_samples=4, num_classes=C, ignore_index=IGNORE,
              score_fn=score, factors=(2, 1), credit="psd", advantage="rank",
              explore_eps=0.1, policy_loss=kind)
    loss_fn = rss.make_loss(apply, **kw)
    drawn = rss.make_rollout(apply, **kw)(jnp.asarray(z, jnp.float32), batch,
                                          jax.random.key(3), 0)
    f = lambda x, b: loss_fn(x, b, jax.random.key(3), jnp.int32(0))[0]  # noqa: E731
    x = jnp.asarray(z, jnp.float32)
    np.testing.assert_allclose(f(x, {**batch, "rollout": drawn}), f(x, batch), rtol=1e-6)
    np.testing.assert_allclose(jax.grad(f)(x, {**batch, "rollout": drawn}),
                               jax.grad(f)(x, batch), rtol=1e-5, atol=1e-8)


def ref_critic_loss(values, actions, r, valid):
  b, n = actions.shape[:2]
  total = 0.0
  for k in range(b):
    q_hat = np.array([np.sum([values[k, u, v, actions[k, i, u, v]]
                               for u, v in zip(*np.nonzero(valid[k]))]) for i in range(n)])
    target = (r[k] - r[k].mean()) / (r[k].std() + 1e-6)
    total += np.sum(((q_hat - q_hat.mean()) - target) ** 2)
  return total / (b * n)


def test_critic_credit_and_loss_match_the_reference():
  """A_n(p) = Q_p(a_n(p)) − Σ_c q_p(c) Q_p(c); the critic's centred regression
  of each map's mean chosen value on its GRPO-normalised reward: value and
  gradient against loops."""
  rng = np.random.default_rng(1)
  values = rng.normal(size=(2, 3, 4, C))
  probs = rng.dirichlet(np.ones(C), size=(2, 3, 4))
  actions = rng.integers(0, C, (2, 5, 3, 4))
  r = rng.random((2, 5))
  valid = rng.random((2, 3, 4)) < 0.8
  got = np.asarray(rss_credit.critic_advantages(jnp.asarray(values), jnp.asarray(probs),
                                                jnp.asarray(actions)))
  for k, i, u, v in np.ndindex(actions.shape):
    want = values[k, u, v, actions[k, i, u, v]] - np.dot(probs[k, u, v], values[k, u, v])
    np.testing.assert_allclose(got[k, i, u, v], want, rtol=1e-5, atol=1e-6)
  loss_fn = lambda x: rss_credit.critic_loss(x, jnp.asarray(actions), jnp.asarray(r),  # noqa
                                             jnp.asarray(valid))
  np.testing.assert_allclose(float(loss_fn(jnp.asarray(values, jnp.float32))),
                             ref_critic_loss(values, actions, r, valid), rtol=1e-4)
  grad = jax.grad(loss_fn)(jnp.asarray(values, jnp.float32))
  want = finite_difference(lambda x: ref_critic_loss(x, actions, r, valid), values)
  np.testing.assert_allclose(np.asarray(grad), want, rtol=1e-3, atol=1e-5)
