"""CiSS-Net: context-reinforced segmentation by advantage actor-critic (SPEC §2).

One train step, all inside `jit` (the batch sharded over `data`):

  X      = stop_gradient(trunk(image))                   frozen PSL trunk
  z_0    = BaseNet(X)
  for t in 0 … T−1 (lax.scan, or a static unroll: `ciss.rollout`):
    π_t, V_t = ContextNet(X, stop_gradient(softmax(z_t)))
    B_t ~ π_t                                           keep (1) / uncertain (0)
    K_t = (argmax z_t + 1) · B_t                        (Eq. 2)
    z_{t+1} = BaseNet(X) + BiasNet(X, F_e(onehot(K_t))) (Eq. 1)
    r_t = context_reward(argmax z_t, argmax z_{t+1}, K_t, L)   (Eq. 4)
  R_t = r_t + γ R_{t+1},  R_T = V(s_T)  (n-step, bootstrapped; Eq. 6)
  Loss = −mean(log π_t(B_t) · sg(R_t − V_t)) + mean((R_t − V_t)²)
         + λ1 · mean_t CE(z_t, L) + λ2 · mean(Σ π log π)              (Eq. 7)

Maps are at the trunk's feature resolution; the labels are block-mode
down-sampled to it (`rewards.downsample_labels`). Evaluation upsamples the
logits of every requested step t bilinearly and reports `val/miou_t{t}`.

Variants (`ciss.context`): "policy" (CiSS-Net; "gated" is λ2 = 0.001), "pmap"
(the raw p-map as context, B ≡ 1, no RL), "none" (the baseline: Base Net only).
The trunk is a PSL checkpoint (`config.init_from`), or is trained first into
`WORKDIR/trunk` for `ciss.trunk_steps` steps.
"""
from __future__ import annotations

import copy
import functools
import logging
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxseg import checkpoint as ckpt_lib
from jaxseg import losses
from jaxseg import models as models_lib
from jaxseg import plots
from jaxseg import rewards
from jaxseg.models.ciss import CiSSNet
from jaxseg.models.sfpnext import resize_bilinear
from jaxseg.trainers import common
from jaxseg.trainers import psl

CONTEXTS = ("policy", "pmap", "none")
# Parameters trained at `ciss.rl_lr_factor` × lr (the paper: 2e-4 vs 2e-3).
RL_PATTERN = r"(bias_net|context_net|context_encoder|policy_encoder)/.*"
TRUNK_PATTERN = r"trunk/.*"


# Tab. 4 rows: `--config=configs/ciss_*.py:VARIANT[,gamma=G][,entropy=L][,trunk=DIR]`.
VARIANTS = ("baseline", "pmap", "gated", "ciss")
CONFIG_OPTIONS = ("runlocal", "gamma", "entropy", "trunk")


def apply_variant(c, variant: str, args: dict[str, str]):
  """Sets `c.ciss` for one Tab. 4 row, then the Tab. 2/3 options, in place:
  `gamma=G` (γ), `entropy=L` (λ2), `trunk=DIR` (= `--config.init_from`)."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown CiSS-Net variant {variant!r}; choose from {VARIANTS}.")
  c.trainer = "ciss"
  c.ciss.context = {"baseline": "none", "pmap": "pmap"}.get(variant, "policy")
  c.ciss.entropy_coef = 0.001 if variant == "gated" else 0.05
  if "gamma" in args:
    c.ciss.gamma = float(args["gamma"])
  if "entropy" in args:
    c.ciss.entropy_coef = float(args["entropy"])
  if "trunk" in args:
    c.init_from = args["trunk"]
  return c


def validate(config: ml_collections.ConfigDict) -> None:
  cc = config.ciss
  if cc.context not in CONTEXTS:
    raise ValueError(f"config.ciss.context={cc.context!r} is unknown; choose from {CONTEXTS}.")
  for key in ("steps", "inference_steps"):
    if cc[key] < 0:
      raise ValueError(f"config.ciss.{key}={cc[key]} must be >= 0.")
  if any(t < 0 for t in cc.eval_steps):
    raise ValueError(f"config.ciss.eval_steps={tuple(cc.eval_steps)} must be >= 0.")
  if not 0.0 <= cc.gamma <= 1.0:
    raise ValueError(f"config.ciss.gamma={cc.gamma} must be in [0, 1].")
  if cc.rollout not in common.ROLLOUTS:
    raise ValueError(f"config.ciss.rollout={cc.rollout!r} is unknown; choose from "
                     f"{common.ROLLOUTS}.")
  if any(w % 2 == 0 or w < 1 for w in cc.window):
    raise ValueError(f"config.ciss.window={tuple(cc.window)} must be positive odd sizes.")
  if cc.width % 16:
    raise ValueError(f"config.ciss.width={cc.width} must be a multiple of 16 "
                     "(GroupNorm groups of 16 channels).")


def build_model(config: ml_collections.ConfigDict, info) -> CiSSNet:
  cc = config.ciss
  return CiSSNet(trunk=models_lib.build_model(config.model, info.num_classes),
                 num_classes=info.num_classes, width=cc.width,
                 context_dim=cc.context_dim, policy_dim=cc.policy_dim, dropout=cc.dropout)


def _apply(model, params, *args, method, rng=None, **kw):
  return model.apply({"params": params}, *args, method=method,
                     rngs=None if rng is None else {"dropout": rng}, **kw)


def features(model, params, images):
  """X of uint8 images, with no gradient into the frozen trunk.

  The gradient is stopped at the trunk's *parameters*, so autodiff sees
  symbolic-zero tangents and traces the trunk as a plain forward pass (no
  linearisation, no saved residuals)."""
  frozen = {**params, "trunk": jax.lax.stop_gradient(params["trunk"])}
  return _apply(model, frozen, common.normalize_images(images), method=CiSSNet.features)


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


def make_loss(*, config, apply_fn, info, mesh=None):
  """The CiSS-Net loss (Eq. 7) with the T-step rollout inside (`lax.scan` or a
  static unroll, `ciss.rollout`)."""
  del apply_fn, mesh
  validate(config)
  cc = config.ciss
  model = build_model(config, info)
  weights = info.class_weights
  weights = None if weights is None else jnp.asarray(weights, jnp.float32)
  ce = lambda z, y: losses.softmax_cross_entropy(
      z, y, ignore_index=info.ignore_index, class_weights=weights)[0]
  reward_fn = jax.vmap(functools.partial(
      rewards.context_reward, window=tuple(cc.window), beta_correct=cc.beta_correct,
      beta_uncertain=cc.beta_uncertain, ignore_index=info.ignore_index))
  steps = 0 if cc.context == "none" else cc.steps
  unroll = common.rollout_unrolled(cc.rollout)

  def loss_fn(params, batch, rng, step):
    del step
    x = features(model, params, batch["image"])
    labels = rewards.downsample_labels(  # block mode, to X's resolution
        batch["label"], batch["image"].shape[1] // x.shape[1],
        num_classes=info.num_classes, ignore_index=info.ignore_index)
    valid = labels != info.ignore_index
    z_base = _apply(model, params, x, method=CiSSNet.base)
    ce0 = ce(z_base, labels)
    metrics = {"train/ce_t0": ce0}
    if steps == 0:
      return cc.ce_weight * ce0, {**metrics, "train/ce": ce0}

    def body(z, rng_t):
      z_next, k, policy, value, keep = context_step(
          model, params, x, z_base, z, rng_t, context=cc.context, train=True)
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
    loss = cc.ce_weight * jnp.mean(ce_all)
    metrics.update({f"train/ce_t{t + 1}": tr["ce"][t] for t in range(steps)})
    metrics.update({
        "train/ce": jnp.mean(ce_all),
        "train/reward": jnp.mean(tr["reward"]),
        "train/keep_fraction": jnp.mean(tr["keep"]),
        "train/context_correct": jnp.mean(tr["context_correct"]),
        "train/improved_fraction": jnp.mean(tr["improved"]),
        "train/worsened_fraction": jnp.mean(tr["worsened"]),
    })
    if cc.context == "policy":
      _, bootstrap = _apply(model, params, x, jax.nn.softmax(z_last),
                            method=CiSSNet.context, train=False)
      returns = rewards.nstep_returns(tr["reward"], jax.lax.stop_gradient(bootstrap),
                                      gamma=cc.gamma)
      advantage = returns - tr["value"]
      policy_loss = -jnp.mean(tr["log_prob"] * jax.lax.stop_gradient(advantage))
      value_loss = jnp.mean(advantage ** 2)
      ent = jnp.mean(tr["entropy"])
      loss = loss + policy_loss + cc.value_coef * value_loss - cc.entropy_coef * ent
      metrics.update({"train/policy_loss": policy_loss, "train/value_loss": value_loss,
                      "train/entropy": ent, "train/return": jnp.mean(returns),
                      "train/value": jnp.mean(tr["value"]),
                      "train/advantage_std": jnp.std(advantage)})
    return loss, metrics

  return loss_fn


def eval_steps(config) -> tuple[tuple[int, ...], int]:
  """The steps evaluated (sorted, with the inference step) and the main one's index."""
  ts = sorted(set(config.ciss.eval_steps) | {config.ciss.inference_steps})
  return tuple(ts), ts.index(config.ciss.inference_steps)


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


def make_predict(model, config):
  """predict(params, images) -> (n, H, W, len(ts)·C) logits of the steps ts."""
  ts, main = eval_steps(config)

  @jax.jit
  def predict(params, images):
    zs, _ = rollout_logits(model, params, images, context=config.ciss.context,
                           steps=max(ts))
    h, w = images.shape[1:3]
    return jnp.concatenate([resize_bilinear(zs[t], h, w) for t in ts], axis=-1)

  return predict, tuple(f"t{t}" for t in ts), main


def make_panel(model, config, info):
  """Rows of [image | label | p-map t=0 | K_0 | p-map t=1 | K_1 | …] (Fig. 1);
  context maps show "uncertain" in white."""
  steps = min(max(eval_steps(config)[0]), 3)

  @jax.jit
  def run(params, images):
    zs, ks = rollout_logits(model, params, images, context=config.ciss.context,
                            steps=steps)
    h, w = images.shape[1:3]
    return jnp.stack([jnp.argmax(resize_bilinear(z, h, w), -1) for z in zs]), ks

  def panel(params, images, labels):
    preds, ks = jax.device_get(run(params, images))
    col = lambda m: plots.colorize(m, info.num_classes, info.ignore_index)

    def context_tile(k):
      f = images.shape[1] // k.shape[0]
      k = np.repeat(np.repeat(k, f, 0), f, 1)
      tile = col(k - 1)
      tile[k == 0] = 255  # uncertain
      return tile

    return plots.tile_rows([
        [images[i], col(labels[i]), col(preds[0, i])]
        + [x for t in range(steps) for x in (context_tile(ks[t, i]), col(preds[t + 1, i]))]
        for i in range(images.shape[0])])

  return panel


def trunk_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The PSL run that trains the trunk: the same data, model and optimizer."""
  c = copy.deepcopy(config)
  c.trainer = "psl"
  c.total_steps = config.ciss.trunk_steps
  c.eval_every = min(c.eval_every, c.total_steps)
  c.checkpoint_every = min(c.checkpoint_every, c.total_steps)
  c.init_from = ""
  return c


def ensure_trunk(config: ml_collections.ConfigDict, trunk: pathlib.Path) -> pathlib.Path:
  """Trains the PSL trunk into `trunk` unless a checkpoint of at least
  `ciss.trunk_steps` steps is already there; returns `trunk`."""
  if (ckpt_lib.latest_step(trunk) or 0) >= config.ciss.trunk_steps:
    logging.info("reusing the finished PSL trunk in %s", trunk)
  else:
    logging.info("training the PSL trunk into %s", trunk)
    psl.train_and_evaluate(trunk_config(config), str(trunk))
  return trunk


def load_trunk(params, config):
  """Fresh CiSS params with `params["trunk"]` from the PSL checkpoint `init_from`."""
  loaded = ckpt_lib.load_params(config.init_from)
  merged, _ = ckpt_lib.merge_init(params["trunk"], loaded, reinit_pattern="^$")
  logging.info("CiSS-Net trunk from %s (frozen)", config.init_from)
  return {**params, "trunk": merged}


HOOKS = common.Hooks(build_model=build_model, init_params=load_trunk,
                     make_predict=make_predict, make_panel=make_panel)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> common.Run:
  """Trains the PSL trunk first when needed (into WORKDIR/trunk), then CiSS-Net
  with the trunk frozen and the Bias/Context Nets at `ciss.rl_lr_factor` × lr."""
  validate(config)
  config = copy.deepcopy(config)
  workdir = pathlib.Path(workdir)
  if not config.init_from:
    if config.ciss.trunk_steps <= 0:
      raise ValueError("CiSS-Net needs a frozen trunk: set config.init_from to a PSL "
                       "checkpoint directory or config.ciss.trunk_steps > 0 to train one "
                       "into WORKDIR/trunk first.")
    config.init_from = str(ensure_trunk(config, workdir / "trunk"))
  config.optim.lr_multipliers = ((TRUNK_PATTERN, 0.0),
                                 (RL_PATTERN, config.ciss.rl_lr_factor),
                                 *config.optim.lr_multipliers)
  return common.train_and_evaluate(config, str(workdir / "ciss"), make_loss=make_loss,
                                   hooks=HOOKS)
