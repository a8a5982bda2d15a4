"""RSS: semantic segmentation trained from rewards (SPEC §1), as pure losses.

Two levels, both a loss `(params, batch, rng, step) -> (loss, metrics)` whose
sampling, rewards, advantages and per-scale terms sit inside the one jitted,
sharded train step:

* pixel: N actions per pixel, `r = 1[a == y]`, GRPO-normalised over the valid
  (pixel, sample) rewards of the global batch (SyncAN) or of each shard.
* image: per PSR scale, N whole action maps sampled from average-pooled logits,
  one scalar reward per map (a `SCORES` entry, default the image's mIoU against
  the block-mode label), an advantage estimator over the N maps of the image
  (`rewards.group_advantages`: raw, grpo, drgrpo, rloo, rank) credited to the
  whole map (naive) or by pair-wise spatial differences (PSD); or, jaxseg's
  recipe, per class (`credit="class"`: each position credited with the IoU
  term of the class it chose, C numbers per map); one loss term per scale.

Policy-gradient loss at each scale (`policy.surrogate`): REINFORCE
`-Σ stop_gradient(A)·log q(a) / (N·#valid)` over valid positions, or PPO's
clipped ratio when a draw is reused for several updates (`make_rollout` +
`trainers.step.Epochs`), minus `entropy_coef` × the mean policy entropy.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxseg import rewards
from jaxseg.algorithms import policy
from jaxseg.algorithms import rss_credit
from jaxseg.algorithms.policy import explore_logits  # noqa: F401  (rss.explore_logits)

LEVELS = ("pixel", "image")
PIXEL_GROUPS = ("global", "per_pixel")
IMAGE_GROUPS = ("image", "global")
SCHEDULES = ("all", "coarse_to_fine")
CREDITS = ("map", "psd", "greedy", "critic", "class")


def _accuracy_score(actions, labels, *, ignore_index):
  r, valid = rewards.pixel_correctness(actions, labels, ignore_index=ignore_index)
  return jnp.sum(r) / jnp.maximum(jnp.sum(valid), 1)


# Per-image score functions `(actions (H, W), labels (H, W)) -> ()`, built from
# (num_classes, ignore_index). Register another (e.g. `rewards.host_score(fn)`
# around an external evaluator) to train on it.
SCORES = {
    "miou": lambda num_classes, ignore_index: functools.partial(
        rewards.image_miou, num_classes=num_classes, ignore_index=ignore_index),
    "pixel_accuracy": lambda num_classes, ignore_index: functools.partial(
        _accuracy_score, ignore_index=ignore_index),
}


def sharded_normalize(r, where=None, *, groups: int):
  """`normalize_advantages` per shard: the batch axis (axis 0 of `r`) split
  into `groups` contiguous shards, each normalised on its own (SyncAN off).
  With `groups == 1` this is the global (SyncAN) statistic: under `jit` with a
  sharded batch XLA all-reduces the sums, as `psum` does inside `shard_map`."""
  split = lambda x: x.reshape(groups, r.shape[0] // groups, *r.shape[1:])
  adv = rewards.normalize_advantages(split(r), where=None if where is None else split(where),
                                     axis=tuple(range(1, r.ndim + 1)))
  return adv.reshape(r.shape)


def _sample(rng, logits, num_samples, eps=0.0, resample=1.0):
  """N actions per position from `explore_logits(z, eps)` (coupled by common
  random numbers when `resample` < 1: `rewards.sample_actions`) and their
  log-probs, both (B, N, ...)."""
  logits = explore_logits(logits, eps)
  a = rewards.sample_actions(rng, jax.lax.stop_gradient(logits), num_samples,
                             resample=resample)
  logp = rewards.action_log_probs(logits, a)
  return jnp.moveaxis(a, 0, 1), jnp.moveaxis(logp, 0, 1)


def pixel_level_loss(logits, labels, rng, *, num_samples, ignore_index, group="global",
                     groups=1, explore_eps=0.0):
  """Pixel-level RSS (SPEC §1.1). logits (B, H, W, C), labels (B, H, W).

  `a_n ~ π(z)` per pixel, `r_n(p) = 1[a_n(p) = y(p)]` on valid pixels,
  `A = (r − mean) / (std + eps)` over every valid (pixel, sample) of the batch
  (`groups` shards alone when SyncAN is off; `group="per_pixel"`: over the N
  samples of each pixel), loss `-Σ A·log π(a_n) / (N·#valid)`.
  """
  a, logp = _sample(rng, logits, num_samples, explore_eps)  # (B, N, H, W)
  r, valid = rewards.pixel_correctness(a, labels[:, None], ignore_index=ignore_index)
  if group == "per_pixel":
    adv = rewards.normalize_advantages(r, where=valid, axis=1)
  else:
    adv = sharded_normalize(r, valid, groups=groups)
  loss, _ = policy.surrogate(logp, adv, valid[:, 0])
  metrics = {"train/reward": jnp.sum(r) / jnp.maximum(jnp.sum(valid), 1),
             "train/adv_std": policy.masked_std(adv, valid)}
  return loss, metrics


def image_level_rollout(logits, labels, rng, *, factor, num_samples, score_fn, num_classes,
                        ignore_index, credit="map", advantage="grpo", psd_std_normalize=False,
                        group="image", groups=1, explore_eps=0.0, drop_flat=False,
                        resample=1.0, values=None):
  """The draw of image-level RSS at one PSR scale `s = 1/factor` (SPEC §1.2).

  `z_s = avgpool_f(z)`, `y_s = blockmode_f(y)`, `a_n ~ q(z_s)` for n < N
  (`explore_logits`: π itself when `explore_eps` = 0; with `resample` < 1
  the N maps share common random numbers and differ at fewer positions, each
  still a draw of q), `R_n = score(a_n, y_s)`: one scalar per sampled map.
  `Â = group_advantages(R, advantage)` over the N maps of an image (raw, grpo,
  drgrpo, rloo, rank; `group="global"`: GRPO over every map of the (shard's)
  batch instead). Credit per position:
    map:   `A_n(p) = Â_n`, broadcast over (h, w) (the paper's naive / PSR rows);
    psd:   `A_i(p) = Σ_j (Â_i − Â_j)·1[a_i(p) ≠ a_j(p)] / (N − 1)` (`psd_advantages`;
           the paper's PSD is `advantage="raw"`, Â = R), optionally divided by
           the RMS of its non-zero entries;
    greedy: PSD against the greedy map `g = argmax z_s` and its own reward
           (self-critical, one more scalar per image):
           `A_i(p) = (R_i − R_g)·1[a_i(p) ≠ g(p)]` (`greedy_advantages`), RMS-
           normalised as PSD with `psd_std_normalize`;
    critic: `A_n(p) = Q_p(a_n(p)) − Σ_c q_p(c)·Q_p(c)` from the critic's
           `values` (B, H, W, C), average-pooled as the logits
           (`rss_credit.critic_advantages`; the critic learns from the scalar
           rewards alone, `rss_credit.critic_loss`), RMS-normalised with
           `psd_std_normalize`;
    class: `class_advantages` — the mIoU's C per-class IoU terms, not a scalar
           (jaxseg's recipe).
  With `drop_flat`, images whose N rewards are all equal (no signal: every
  centred advantage is 0) leave the loss's normaliser too (DAPO's dynamic
  sampling, without re-drawing). Nothing here carries a gradient.
  Returns ({"actions" (B, N, h, w), "adv" (B, N, h, w), "valid" (B, h, w),
  "logp": log q(a) (B, N, h, w), "rewards" (B, N)}, metrics).
  """
  logits = jax.lax.stop_gradient(logits)
  z = rewards.downsample_logits(logits, factor)
  y = rewards.downsample_labels(labels, factor, num_classes=num_classes,
                                ignore_index=ignore_index)
  a, logp = _sample(rng, z, num_samples, explore_eps, resample)  # (B, N, h, w)
  r = rewards.sample_scores(score_fn, a, y)  # (B, N)
  valid = y != ignore_index  # (B, h, w)
  metrics = {}
  if credit == "class":
    adv = rss_credit.class_advantages(a, y, num_classes=num_classes,
                                      ignore_index=ignore_index, advantage=advantage)
  else:
    if group == "global":
      adv_img = sharded_normalize(r, groups=groups)
    else:
      adv_img = rewards.group_advantages(r, estimator=advantage, axis=1)
    if credit == "psd":
      adv, metrics["psd_nonzero"] = rss_credit.psd_advantages(
          a, adv_img, valid, std_normalize=psd_std_normalize, num_classes=num_classes)
    elif credit == "greedy":
      greedy = jnp.argmax(z, axis=-1)  # (B, h, w)
      r_greedy = jax.vmap(score_fn)(greedy, y)  # (B,)
      adv, metrics["psd_nonzero"] = rss_credit.greedy_advantages(
          a, r, greedy, r_greedy, valid, std_normalize=psd_std_normalize)
      metrics["greedy_reward"] = jnp.mean(r_greedy)
    elif credit == "critic":
      q_values = rewards.downsample_logits(jax.lax.stop_gradient(values), factor)
      probs = jnp.exp(explore_logits(z, explore_eps))
      adv, metrics["psd_nonzero"] = rss_credit.sparse_credit(
          rss_credit.critic_advantages(q_values, probs, a), valid, psd_std_normalize)
    else:
      adv = jnp.broadcast_to(adv_img[:, :, None, None], a.shape)
  flat = jnp.all(r == r[:, :1], axis=1)  # (B,)
  metrics["flat_groups"] = jnp.mean(flat.astype(jnp.float32))
  if drop_flat:
    valid = valid & ~flat[:, None, None]
  metrics["reward"] = jnp.mean(r)
  metrics["adv_std"] = policy.masked_std(adv, jnp.broadcast_to(valid[:, None], adv.shape))
  return {"actions": a, "adv": adv, "valid": valid, "logp": logp, "rewards": r}, metrics


def image_level_logp(logits, actions, *, factor, explore_eps=0.0):
  """`log q(a)` of drawn maps (B, N, h, w) under the policy of `logits` (B, H, W, C)."""
  z = explore_logits(rewards.downsample_logits(logits, factor), explore_eps)
  return jnp.moveaxis(rewards.action_log_probs(z, jnp.moveaxis(actions, 1, 0)), 0, 1)


def image_level_loss(logits, labels, rng, *, factor, explore_eps=0.0, policy_loss="reinforce",
                     clip_eps=0.2, rollout=None, values=None, critic_coef=1.0, **kwargs):
  """Image-level RSS at one PSR scale: `image_level_rollout` (or a given
  `rollout` of an earlier policy), then `policy.surrogate` of its actions'
  log-probabilities under `logits`; with a critic's `values` (credit
  "critic") plus `critic_coef` × its regression on the draw's rewards
  (`rss_credit.critic_loss`). Returns (loss, metrics)."""
  metrics = {}
  if rollout is None:
    rollout, metrics = image_level_rollout(logits, labels, rng, factor=factor,
                                           explore_eps=explore_eps, values=values, **kwargs)
  logp = image_level_logp(logits, rollout["actions"], factor=factor, explore_eps=explore_eps)
  loss, metrics["clip_frac"] = policy.surrogate(
      logp, rollout["adv"], rollout["valid"], old_logp=rollout["logp"], kind=policy_loss,
      clip_eps=clip_eps)
  if values is not None:
    metrics["critic_loss"] = rss_credit.critic_loss(
        rewards.downsample_logits(values, factor), rollout["actions"], rollout["rewards"],
        rollout["valid"])
    loss = loss + critic_coef * metrics["critic_loss"]
  return loss, metrics


def scale_weights(factors, step, *, weights=(), schedule="all", unlock_fraction=0.5,
                  total_steps=1):
  """Per-scale loss weights at `step`: `weights` (default 1 each), zeroed for
  scales not yet unlocked by the coarse-to-fine schedule (scales unlock
  coarsest first, evenly over the first `unlock_fraction` of training)."""
  w = jnp.asarray(weights or [1.0] * len(factors), jnp.float32)
  if schedule == "coarse_to_fine" and len(factors) > 1:
    rank = jnp.asarray([sorted(factors, reverse=True).index(f) for f in factors])
    span = unlock_fraction * total_steps / len(factors)
    w = w * (step >= rank * span)
  return w


def class_diagnostics(logits, labels, actions, *, num_classes, ignore_index):
  """Per-class collapse diagnostics of one step (`train/cls/<kind>/<c>`).

  Over valid pixels: `pred` = fraction predicted c (argmax), `label` =
  fraction labelled c, `entropy` = mean policy entropy on pixels labelled c
  (NaN where none is); `sampled` = fraction of the sampled maps (B, N, h, w)
  that contain c at least once.
  """
  valid = labels != ignore_index
  w = valid.reshape(-1).astype(jnp.float32)
  n = jnp.maximum(jnp.sum(w), 1.0)
  y = jnp.where(valid, labels, 0).reshape(-1)
  pred = jnp.argmax(logits, axis=-1).reshape(-1)
  ent = rewards.entropy(jax.lax.stop_gradient(logits)).reshape(-1)
  area_y = jnp.bincount(y, weights=w, length=num_classes)
  stats = {
      "pred": jnp.bincount(pred, weights=w, length=num_classes) / n,
      "label": area_y / n,
      "entropy": jnp.bincount(y, weights=w * ent, length=num_classes)
                 / jnp.where(area_y > 0, area_y, jnp.nan),
      "sampled": jnp.mean(jax.vmap(jax.vmap(
          lambda m: jnp.bincount(m.reshape(-1), length=num_classes) > 0))(actions),
                          axis=(0, 1)),
  }
  return {f"train/cls/{k}/{c}": v[c] for k, v in stats.items() for c in range(num_classes)}


def make_loss(apply_fn, *, level, num_samples, num_classes, ignore_index, groups=1,
              pixel_group="global", image_group="image", score_fn=None, factors=(1,),
              weights=(), schedule="all", unlock_fraction=0.5, total_steps=1, credit="map",
              advantage="grpo", psd_std_normalize=False, entropy_coef=0.0, explore_eps=0.0,
              drop_flat=False, resample=1.0, policy_loss="reinforce", clip_eps=0.2,
              critic_coef=1.0, diagnostics=False):
  """The RSS loss `(params, batch, rng, step) -> (loss, metrics)`.

  `level="pixel"`: `pixel_level_loss`; `"image"`: Σ_s w_s(step) ·
  `image_level_loss` over the PSR pooling `factors` (`scale_weights`), each
  scale with its own draw — made here, or taken from `batch["rollout"]` (one
  entry per scale, from `make_rollout`'s function under the params of an
  earlier update: PPO-style epochs, `trainers.step.Epochs`). `groups` > 1
  normalises each of that many batch shards alone (SyncAN off).
  `diagnostics` adds `class_diagnostics` (image level: of the first scale's
  sampled maps). With `credit="critic"` the model's output has 2·C channels:
  the policy's logits, then the critic's values (`rss_credit`).
  """
  kwargs = dict(num_samples=num_samples, score_fn=score_fn, num_classes=num_classes,
                ignore_index=ignore_index, credit=credit, advantage=advantage,
                psd_std_normalize=psd_std_normalize, group=image_group, groups=groups,
                drop_flat=drop_flat, resample=resample)

  def loss_fn(params, batch, rng, step):
    labels = batch["label"]
    logits, keys = _forward(apply_fn, params, batch, rng, len(factors))
    logits, values = split_critic(logits, num_classes, credit)
    valid = labels != ignore_index
    ent = jnp.sum(jnp.where(valid, rewards.entropy(logits), 0)) / jnp.maximum(jnp.sum(valid), 1)
    metrics = {"train/entropy": ent}
    if level == "pixel":
      loss, m = pixel_level_loss(logits, labels, keys[0], num_samples=num_samples,
                                 ignore_index=ignore_index, group=pixel_group, groups=groups,
                                 explore_eps=explore_eps)
      metrics.update(m)
    else:
      w = scale_weights(factors, step, weights=weights, schedule=schedule,
                        unlock_fraction=unlock_fraction, total_steps=total_steps)
      loss = 0.0
      for k, (f, key) in enumerate(zip(factors, keys)):
        given = batch["rollout"][f"s{f}"] if "rollout" in batch else None
        loss_k, m = image_level_loss(
            logits, labels, key, factor=f, explore_eps=explore_eps, policy_loss=policy_loss,
            clip_eps=clip_eps, rollout=given, values=values, critic_coef=critic_coef, **kwargs)
        loss = loss + w[k] * loss_k
        metrics.update({f"train/{name}_s{f}": v for name, v in m.items()})
        metrics[f"train/pg_loss_s{f}"] = loss_k
    if diagnostics:
      # The same draw as the (first) loss term's: XLA computes it once.
      if level == "pixel":
        a, _ = _sample(keys[0], logits, num_samples, explore_eps)
      elif "rollout" in batch:
        a = batch["rollout"][f"s{factors[0]}"]["actions"]
      else:
        a, _ = _sample(keys[0], rewards.downsample_logits(logits, factors[0]), num_samples,
                       explore_eps, resample)
      metrics.update(class_diagnostics(logits, labels, a, num_classes=num_classes,
                                       ignore_index=ignore_index))
    return loss - entropy_coef * ent, metrics

  return loss_fn


def split_critic(outputs, num_classes, credit):
  """(policy logits, critic values or None) of a model's output: with credit
  "critic" its 2·C channels are the logits, then the values."""
  if credit != "critic":
    return outputs, None
  return outputs[..., :num_classes], outputs[..., num_classes:]


def _forward(apply_fn, params, batch, rng, num_keys):
  rng_model, rng_sample = jax.random.split(rng)
  logits = apply_fn(params, batch["image"], train=True, rng=rng_model)
  return logits, jax.random.split(rng_sample, num_keys)


def make_rollout(apply_fn, *, factors=(1,), explore_eps=0.0, **kwargs):
  """The image-level draw `(params, batch, rng, step) -> {"s<f>": rollout}` of
  `make_loss` with the same arguments (`image_level_rollout` per PSR scale,
  with the same keys as the loss would draw): hand it to the loss as
  `batch["rollout"]` to update several times on one draw."""
  kwargs = {("group" if k == "image_group" else k): v for k, v in kwargs.items()
            if k in _ROLLOUT_ARGS}

  def rollout_fn(params, batch, rng, step):
    del step
    logits, keys = _forward(apply_fn, params, batch, rng, len(factors))
    logits, values = split_critic(logits, kwargs["num_classes"], kwargs.get("credit", "map"))
    return {f"s{f}": image_level_rollout(logits, batch["label"], key, factor=f,
                                         explore_eps=explore_eps, values=values, **kwargs)[0]
            for f, key in zip(factors, keys)}

  return rollout_fn


_ROLLOUT_ARGS = ("num_samples", "score_fn", "num_classes", "ignore_index", "credit",
                 "advantage", "psd_std_normalize", "image_group", "groups", "drop_flat",
                 "resample")
