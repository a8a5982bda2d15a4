"""CiSS-Net: context-reinforced segmentation by advantage actor-critic (SPEC §2).

One train step, all inside `jit` (the batch sharded over `data`):

  X      = stop_gradient(trunk(image))                   frozen PSL trunk
  z_0    = BaseNet(X)
  for t in 0 … T−1 (lax.scan, or a static unroll):
    π_t, V_t = ContextNet(X, stop_gradient(softmax(z_t)))
    B_t ~ π_t                                           keep (1) / uncertain (0)
    K_t = (argmax z_t + 1) · B_t                        (Eq. 2)
    z_{t+1} = BaseNet(X) + BiasNet(X, F_e(onehot(K_t))) (Eq. 1)
    r_t = context_reward(argmax z_t, argmax z_{t+1}, K_t, L)   (Eq. 4)
  R_t = r_t + γ R_{t+1},  R_T = V(s_T)  (n-step, bootstrapped; Eq. 6)
  Loss = −mean(log π_t(B_t) · sg(R_t − V_t)) + mean((R_t − V_t)²)
         + λ1 · mean_t CE(z_t, L) + λ2 · mean(Σ π log π)              (Eq. 7)

Maps are at the trunk's feature resolution; the labels are block-mode
down-sampled to it (`rewards.downsample_labels`). Inference upsamples the
logits of every requested step t bilinearly (`predict_steps`).

Contexts: "policy" (CiSS-Net), "pmap" (the raw p-map as context, B ≡ 1, no RL),
"none" (the baseline: Base Net only).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxseg import losses
from jaxseg import rewards
from jaxseg.algorithms import normalize_images
from jaxseg.models.ciss import CiSSNet
from jaxseg.models.sfpnext import resize_bilinear

CONTEXTS = ("policy", "pmap", "none")
# Parameters trained at the RL learning-rate factor (the paper: 2e-4 vs 2e-3).
RL_PATTERN = r"(bias_net|context_net|context_encoder|policy_encoder)/.*"
TRUNK_PATTERN = r"trunk/.*"


def _apply(model, params, *args, method, rng=None, **kw):
  return model.apply({"params": params}, *args, method=method,
                     rngs=None if rng is None else {"dropout": rng}, **kw)


def features(model, params, images):
  """X of uint8 images, with no gradient into the frozen trunk.

  The gradient is stopped at the trunk's *parameters*, so autodiff sees
  symbolic-zero tangents and traces the trunk as a plain forward pass (no
  linearisation, no saved residuals)."""
  frozen = {**params, "trunk": jax.lax.stop_gradient(params["trunk"])}
  return _apply(model, frozen, normalize_images(images), method=CiSSNet.features)


def context_step(model, params, x, z_base, z, rng, *, context: str, train: bool):
  """One S-Net/C-Net iteration from logits z_t: (z_{t+1}, K_t, policy logits
  or None, values or None, B_t). Sampled when `train`, else keep where
  π(keep) > 0.5."""
  pred = jnp.argmax(z, axis=-1)
  policy = value = None
  pol_rng, bias_rng = jax.random.split(rng)
  if context == "policy":
    policy, value = _apply(model, params, x, jax.lax.stop_gradient(jax.nn.softmax(z)),
                           method=CiSSNet.context, train=train,
                           rng=pol_rng if train else None)
    keep_prob = jax.nn.softmax(policy)[..., 1]
    if train:
      keep = jax.random.uniform(jax.random.fold_in(pol_rng, 1), keep_prob.shape) < keep_prob
    else:
      keep = keep_prob > 0.5
    keep = keep.astype(jnp.int32)
  else:  # "pmap": the whole prediction is the context
    keep = jnp.ones_like(pred)
  k = (pred + 1) * keep
  z_next = z_base + _apply(model, params, x, k, method=CiSSNet.bias, train=train,
                           rng=bias_rng if train else None)
  return z_next, k, policy, value, keep


def make_loss(model, *, num_classes, ignore_index, class_weights=None, context="policy",
              steps=2, gamma=0.9, window=(5, 5), beta_correct=0.4, beta_uncertain=0.2,
              ce_weight=1.0, entropy_coef=0.05, value_coef=1.0, unroll=False):
  """The CiSS-Net loss (Eq. 7) `(params, batch, rng, step) -> (loss, metrics)`
  with the T = `steps` rollout inside (`lax.scan`, or inlined with `unroll`)."""
  weights = None if class_weights is None else jnp.asarray(class_weights, jnp.float32)
  ce = lambda z, y: losses.softmax_cross_entropy(
      z, y, ignore_index=ignore_index, class_weights=weights)[0]
  reward_fn = jax.vmap(functools.partial(
      rewards.context_reward, window=tuple(window), beta_correct=beta_correct,
      beta_uncertain=beta_uncertain, ignore_index=ignore_index))
  steps = 0 if context == "none" else steps

  def loss_fn(params, batch, rng, step):
    del step
    x = features(model, params, batch["image"])
    labels = rewards.downsample_labels(  # block mode, to X's resolution
        batch["label"], batch["image"].shape[1] // x.shape[1],
        num_classes=num_classes, ignore_index=ignore_index)
    valid = labels != ignore_index
    z_base = _apply(model, params, x, method=CiSSNet.base)
    ce0 = ce(z_base, labels)
    metrics = {"train/ce_t0": ce0}
    if steps == 0:
      return ce_weight * ce0, {**metrics, "train/ce": ce0}

    def body(z, rng_t):
      z_next, k, policy, value, keep = context_step(
          model, params, x, z_base, z, rng_t, context=context, train=True)
      pred, pred_next = jnp.argmax(z, -1), jnp.argmax(z_next, -1)
      out = {"ce": ce(z_next, labels),
             "reward": reward_fn(pred, pred_next, k, labels),
             "keep": keep.astype(jnp.float32),
             "context_correct": jnp.sum((k == labels + 1) & valid) / jnp.maximum(
                 jnp.sum((k > 0) & valid), 1),
             "improved": jnp.mean(((pred != labels) & (pred_next == labels) & valid)
                                  .astype(jnp.float32)),
             "worsened": jnp.mean(((pred == labels) & (pred_next != labels) & valid)
                                  .astype(jnp.float32))}
      if policy is not None:
        logp = jax.nn.log_softmax(policy)
        out["log_prob"] = jnp.take_along_axis(logp, keep[..., None], -1)[..., 0]
        out["entropy"] = -jnp.sum(jnp.exp(logp) * logp, -1)
        out["value"] = value
      return z_next, out

    if unroll:
      z_last, outs = z_base, []
      for rng_t in jax.random.split(rng, steps):
        z_last, out = body(z_last, rng_t)
        outs.append(out)
      tr = jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
    else:
      z_last, tr = jax.lax.scan(body, z_base, jax.random.split(rng, steps))
    ce_all = jnp.concatenate([ce0[None], tr["ce"]])
    loss = ce_weight * jnp.mean(ce_all)
    metrics.update({f"train/ce_t{t + 1}": tr["ce"][t] for t in range(steps)})
    metrics.update({
        "train/ce": jnp.mean(ce_all),
        "train/reward": jnp.mean(tr["reward"]),
        "train/keep_fraction": jnp.mean(tr["keep"]),
        "train/context_correct": jnp.mean(tr["context_correct"]),
        "train/improved_fraction": jnp.mean(tr["improved"]),
        "train/worsened_fraction": jnp.mean(tr["worsened"]),
    })
    if context == "policy":
      _, bootstrap = _apply(model, params, x, jax.nn.softmax(z_last),
                            method=CiSSNet.context, train=False)
      returns = rewards.nstep_returns(tr["reward"], jax.lax.stop_gradient(bootstrap),
                                      gamma=gamma)
      advantage = returns - tr["value"]
      policy_loss = -jnp.mean(tr["log_prob"] * jax.lax.stop_gradient(advantage))
      value_loss = jnp.mean(advantage ** 2)
      ent = jnp.mean(tr["entropy"])
      loss = loss + policy_loss + value_coef * value_loss - entropy_coef * ent
      metrics.update({"train/policy_loss": policy_loss, "train/value_loss": value_loss,
                      "train/entropy": ent, "train/return": jnp.mean(returns),
                      "train/value": jnp.mean(tr["value"]),
                      "train/advantage_std": jnp.std(advantage)})
    return loss, metrics

  return loss_fn


def rollout_logits(model, params, images, *, context: str, steps: int):
  """Inference: logits z_0 … z_steps (steps+1, B, h, w, C) and contexts K_0 …
  K_{steps−1} (steps, B, h, w), deterministic (keep where π(keep) > 0.5)."""
  x = features(model, params, images)
  z_base = _apply(model, params, x, method=CiSSNet.base)
  zs, ks = [z_base], [jnp.zeros(z_base.shape[:-1], jnp.int32)] * steps
  for t in range(steps):
    if context == "none":  # baseline: no context, every step is z_0
      zs.append(z_base)
    else:
      z, ks[t], *_ = context_step(model, params, x, z_base, zs[-1], jax.random.key(0),
                                  context=context, train=False)
      zs.append(z)
  return jnp.stack(zs), jnp.stack(ks) if steps else jnp.zeros((0, *z_base.shape[:-1]), jnp.int32)


def predict_steps(model, params, images, *, context: str, steps: tuple[int, ...]):
  """(n, H, W, len(steps)·C): the logits of each step t in `steps`, upsampled
  bilinearly to the image, concatenated on the class axis."""
  zs, _ = rollout_logits(model, params, images, context=context, steps=max(steps))
  h, w = images.shape[1:3]
  return jnp.concatenate([resize_bilinear(zs[t], h, w) for t in steps], axis=-1)
