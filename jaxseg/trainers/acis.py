"""ACIS: actor-critic instance segmentation (SPEC §3), every stage of it.

Stages, each a run of its own under WORKDIR (reused when finished, or taken
from the ACIS workdir `config.init_from`):

  preproc/       PreprocNet: BCE on the foreground and the 8 angle bins.
  cvae[_nosp]/   Actor (one LSTM step from a zero state) + Decoder as a cVAE
                 on one random ground-truth instance: BCE + β·KL(q ‖ N(0, I))
                 (+ w·(1 − soft Dice) with `acis.dice_loss_weight`, see `mask_loss`).
  VARIANT/       the decoder frozen; one of
    bl        the same mask loss against Hungarian-assigned ground truth, full BPTT
    bl_trunc  the same with one-step BPTT
    ac        actor-critic: critic on discounted matching rewards, actor by
              the deterministic policy gradient through the frozen decoder
    ac_nokl / ac_nosp   AC without the KL term / without the State Pyramid

One episode (fixed length L, images with N < L instances masked at t ≥ N):

  M_0 = 0;  for t < L:  h_t, (μ_t, log σ²_t, c_t) = Actor([x, M_t, angles, fg], h_{t−1})
                        a_t = μ_t + σ_t ε_t   (μ_t in BL and at inference;
                                               σ_t ≥ acis.explore_std in critic episodes)
                        m_t = σ(Decoder(a_t; x, angles, fg))
                        M_{t+1} = max(M_t, m_t)
  φ_t = max-matching Σ soft-Dice(first t masks, ground truth);  r_t = φ_{t+1} − φ_t
  G_t = Σ_{i≥t} γ^{i−t} r_i                       (γ = 0.9, per step — not γ²)
  critic:  min Σ_t (Q(s_t, m_t) − G_t)²
  actor:   min Σ_t −Q(s_t, D(μ_t + sg(σ_t) ε_t)) + β_KL KL_t + BCE(c_t, [t + 1 < N])

BL-Trunc and AC take one-step gradients: `per_step_grads` differentiates each
step inside the scan and accumulates the gradient in the carry, so only one
step's activations are alive at a time; BL differentiates the whole scan and
keeps every step's. That is the paper's memory argument for the critic
(`bench/acis_ablation.py --memory` measures it).

The critic / actor schedule, `acis.critic_warmup` critic-only steps and then
`acis.critic_per_actor` critic steps per actor step, and the sequence length
(`acis.seq_lengths`, equal shares of the run) are functions of the host step:
each (kind, L) is its own compiled step.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import pathlib
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from PIL import Image

from jaxseg import checkpoint as ckpt_lib
from jaxseg import data as data_lib
from jaxseg import parallel
from jaxseg import plots
from jaxseg import rewards
from jaxseg.data import instance_targets
from jaxseg.data.errors import DataError
from jaxseg.data.folder import resize_bilinear, resize_nearest
from jaxseg.evaluation import instance as instance_eval
from jaxseg.models import acis as nets_lib
from jaxseg.trainers import common
from jaxseg.trainers import writer as writer_lib

METHODS = ("bl", "bl_trunc", "ac")
VARIANTS = ("bl", "bl_trunc", "ac", "ac_nokl", "ac_nosp")
CONFIG_OPTIONS = ("runlocal",)
BLOCKS = ("none", "lstm", "mask")
# Tab. 2's names: which recurrent state is left when the other is zeroed.
BLOCK_NAMES = {"none": "", "lstm": "_mask_only", "mask": "_lstm_only"}


def apply_variant(c: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
  """Sets `c.acis` for one Tab. 1 row, in place."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown ACIS variant {variant!r}; choose from {VARIANTS}.")
  c.trainer = "acis"
  c.acis.method = variant.split("_no")[0]
  c.acis.kl_weight = 0.0 if variant == "ac_nokl" else c.acis.kl_weight
  c.acis.state_pyramid = variant != "ac_nosp"
  return c


def validate(config: ml_collections.ConfigDict) -> None:
  a = config.acis
  if a.method not in METHODS:
    raise ValueError(f"config.acis.method={a.method!r} is unknown; choose from {METHODS}.")
  n = max(len(a.encoder_features), len(a.decoder_features), len(a.critic_features))
  if a.image_size % 2 ** n or a.image_size % 2 ** (len(a.preproc_features) - 1):
    raise ValueError(f"config.acis.image_size={a.image_size} must be divisible by 2**{n} "
                     "(one max-pool / upsampling per encoder, decoder and critic stage).")
  if len(a.encoder_features) != len(a.decoder_features):
    raise ValueError("config.acis.encoder_features and decoder_features need the same "
                     "number of stages (the bottleneck grid is image_size / 2**stages).")
  if not a.seq_lengths or min(a.seq_lengths) < 1 or max(a.seq_lengths) > a.max_instances:
    raise ValueError(f"config.acis.seq_lengths={tuple(a.seq_lengths)} must be in "
                     f"[1, acis.max_instances={a.max_instances}].")
  common.rollout_unrolled(a.rollout)  # raises on an unknown value
  if not 0.0 <= a.gamma <= 1.0:
    raise ValueError(f"config.acis.gamma={a.gamma} must be in [0, 1].")
  if any(b not in BLOCKS[1:] for b in a.eval_blocks):
    raise ValueError(f"config.acis.eval_blocks={tuple(a.eval_blocks)}: choose from {BLOCKS[1:]}.")
  for key in ("preproc_steps", "cvae_steps"):
    if a[key] <= 0 and not config.init_from:
      raise ValueError(f"config.acis.{key}={a[key]} must be > 0 (or set config.init_from "
                       "to an ACIS workdir whose stages have finished).")


# ----------------------------------------------------------------------------
# Networks and their inputs.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Nets:
  preproc: nets_lib.PreprocNet
  actor: nets_lib.Actor
  decoder: nets_lib.Decoder
  critic: nets_lib.Critic


def build_nets(config: ml_collections.ConfigDict) -> Nets:
  a = config.acis
  return Nets(
      preproc=nets_lib.PreprocNet(tuple(a.preproc_features), a.num_angle_bins),
      actor=nets_lib.Actor(tuple(a.encoder_features), a.embed_dim, a.hidden_dim,
                           a.lstm_layers, a.head_dim, a.latent_dim),
      decoder=nets_lib.Decoder(tuple(a.decoder_features), a.state_pyramid),
      critic=nets_lib.Critic(tuple(a.critic_features), tuple(a.critic_fc)))


def init_params(nets: Nets, config: ml_collections.ConfigDict, rng) -> dict[str, Any]:
  a = config.acis
  s, bins = a.image_size, a.num_angle_bins
  x = jnp.zeros((1, s, s, 3 + 1 + bins + 1))
  keys = jax.random.split(rng, 4)
  return {
      "preproc": nets.preproc.init(keys[0], x[..., :3])["params"],
      "actor": nets.actor.init(keys[1], x, nets.actor.initial_carry(1))["params"],
      "decoder": nets.decoder.init(keys[2], jnp.zeros((1, a.latent_dim)),
                                   x[..., :3 + bins + 1])["params"],
      "critic": nets.critic.init(keys[3], jnp.zeros((1, s, s, 3 + 2 + bins + 1)))["params"],
  }


def preproc_maps(nets: Nets, params, x):
  """(angles (B, S, S, 8), fg (B, S, S, 1)) probabilities, no gradient."""
  p = jax.nn.sigmoid(nets.preproc.apply({"params": jax.lax.stop_gradient(params)}, x))
  return p[..., 1:], p[..., :1]


@dataclasses.dataclass(frozen=True)
class Inputs:
  """What every step of an episode sees: x normalised image, the frozen
  pre-processing maps, and the decoder's condition [x, angles, fg]."""
  x: jax.Array
  angles: jax.Array
  fg: jax.Array

  @property
  def cond(self):
    return jnp.concatenate([self.x, self.angles, self.fg], -1)

  def actor(self, state):
    return jnp.concatenate([self.x, state[..., None], self.angles, self.fg], -1)

  def critic(self, state, mask):
    return jnp.concatenate([self.x, state[..., None], mask[..., None], self.angles,
                            self.fg], -1)


def make_inputs(nets: Nets, preproc_params, images) -> Inputs:
  x = common.normalize_images(images)
  return Inputs(x, *preproc_maps(nets, preproc_params, x))


@dataclasses.dataclass(frozen=True)
class Targets:
  masks: jax.Array  # float (B, K, S, S) ground-truth instances, padded
  valid: jax.Array  # bool (B, K)
  counts: jax.Array  # int (B,)


def make_targets(instances, max_instances: int) -> Targets:
  masks, valid = jax.vmap(functools.partial(
      instance_targets.instance_masks, max_instances=max_instances))(instances)
  return Targets(masks.astype(jnp.float32), valid, valid.sum(-1))


def kl_normal(mu, logvar):
  """KL(N(μ, σ²) ‖ N(0, I)) = ½ Σ_j (μ_j² + σ_j² − log σ_j² − 1)."""
  return 0.5 * jnp.sum(mu ** 2 + jnp.exp(logvar) - logvar - 1.0, -1)


def bce(logits, targets):
  return optax.sigmoid_binary_cross_entropy(logits, targets)


def mask_loss(logits, target, dice_weight: float):
  """Reconstruction loss per mask, over the last two (H, W) axes:

      mean_px BCE(σ(l), T) + w · (1 − 2 Σ σ(l) T / (Σ σ(l) + Σ T))

  The paper's loss is the BCE alone (w = 0). With a leaf covering ~1 % of the
  image, BCE alone settles on the empty mask at CPU scale (cVAE: Dice 0.0 and
  KL → 0 after 1200 steps), so the configs add the soft-Dice term.
  """
  p = jax.nn.sigmoid(logits)
  dice = 2 * jnp.sum(p * target, (-2, -1)) / (jnp.sum(p, (-2, -1)) +
                                              jnp.sum(target, (-2, -1)) + 1e-6)
  return bce(logits, target).mean((-2, -1)) + dice_weight * (1 - dice)


def hard_dice(logits, target):
  """Dice of (logits > 0) against a binary target over the last two axes:
  2 Σ P T / max(Σ P + Σ T, 1)."""
  pred = (logits > 0).astype(jnp.float32)
  return 2 * jnp.sum(pred * target, (-2, -1)) / jnp.maximum(
      jnp.sum(pred, (-2, -1)) + jnp.sum(target, (-2, -1)), 1)


def step_mask(counts, length: int):
  """(L, B): step t of image b is real when t < N_b."""
  return jnp.arange(length)[:, None] < counts[None]


def continue_targets(counts, length: int):
  """(L, B) termination targets: 1 ("continue") while t + 1 < N_b, else 0."""
  return (jnp.arange(length)[:, None] + 1 < counts[None]).astype(jnp.float32)


def termination_loss(cont, counts, valid):
  """Mean BCE of the "continue" logits (L, B) against `continue_targets` on real steps."""
  target = continue_targets(counts, cont.shape[0])
  return jnp.sum(bce(cont, target) * valid) / jnp.maximum(valid.sum(), 1)


# ----------------------------------------------------------------------------
# Episodes.
# ----------------------------------------------------------------------------


def actor_step(nets: Nets, actor_params, decoder_params, inputs: Inputs, state, carry,
               eps, *, sample: bool, block: str = "none", explore_std: float = 0.0):
  """One transition: ((M_{t+1}, h_t), outputs) from (M_t, h_{t−1}).

  Sampled actions are a_t = μ_t + sg(max(σ_t, explore_std)) ε_t. `block`
  zeroes one recurrent state at every step (Tab. 2): "mask" gives the actor
  M_t = 0, "lstm" gives it a zero LSTM state.
  """
  if block == "lstm":
    carry = jax.tree.map(jnp.zeros_like, carry)
  seen = jnp.zeros_like(state) if block == "mask" else state
  carry, (mu, logvar, cont) = nets.actor.apply(
      {"params": actor_params}, inputs.actor(seen), carry)
  std = jax.lax.stop_gradient(jnp.maximum(jnp.exp(0.5 * logvar), explore_std))
  action = mu + std * eps if sample else mu
  logits = nets.decoder.apply({"params": decoder_params}, action, inputs.cond)
  mask = jax.nn.sigmoid(logits)
  out = {"state": state, "logits": logits, "mask": mask, "mu": mu, "logvar": logvar,
         "cont": cont}
  return (jnp.maximum(state, mask), carry), out


def episode_start(nets: Nets, inputs: Inputs):
  """(M_0, h_0): an empty state mask and a zero LSTM state."""
  b, s = inputs.x.shape[:2]
  return jnp.zeros((b, s, s)), nets.actor.initial_carry(b)


def rollout(nets: Nets, actor_params, decoder_params, inputs: Inputs, eps, *,
            sample: bool, block: str = "none", explore_std: float = 0.0,
            unroll: bool = False):
  """The episode as one `lax.scan` over `eps` (L, B, latent): time-major outputs
  (`unroll`: every step inlined, see `common.rollout_unrolled`)."""
  def step(c, e):
    return actor_step(nets, actor_params, decoder_params, inputs, *c, e,
                      sample=sample, block=block, explore_std=explore_std)

  return jax.lax.scan(step, episode_start(nets, inputs), eps,
                      unroll=True if unroll else 1)[1]


def per_step_grads(step_loss: Callable, params, init, xs, *, unroll: bool = False):
  """Σ_t ∇θ ℓ_t(θ; sg(s_t)) with one step's activations alive at a time.

  `step_loss(params, carry, x) -> (loss, (next_carry, out))`. Each step is
  differentiated inside the scan body and the gradient accumulated in the
  carry: one-step (truncated) BPTT, memory independent of the length.
  Returns (Σ_t ℓ_t, grads, stacked outs).
  """
  grad_fn = jax.value_and_grad(step_loss, has_aux=True)

  def body(c, x):
    carry, acc, total = c
    (loss, (carry, out)), g = grad_fn(params, carry, x)
    carry = jax.lax.stop_gradient(carry)
    return (carry, jax.tree.map(jnp.add, acc, g), total + loss), out

  zeros = jax.tree.map(jnp.zeros_like, params)
  (_, grads, total), outs = jax.lax.scan(body, (init, zeros, jnp.zeros(())), xs,
                                         unroll=True if unroll else 1)
  return total, grads, outs


def assign_targets(masks, targets: Targets, valid):
  """Hungarian assignment of ground truth to the L predictions (soft Dice).

  masks (L, B, S, S), valid (L, B) → (targets (L, B, S, S), matched (L, B)).
  """

  def one(m, gt, gt_valid, row_valid):
    scores = rewards.soft_dice_scores(m, gt, gt_valid)
    return rewards.max_matching(scores, row_valid=row_valid, col_valid=gt_valid)[0]

  assign = jax.vmap(one, in_axes=(1, 0, 0, 1))(
      jax.lax.stop_gradient(masks), targets.masks, targets.valid, valid)  # (B, L)
  picked = jnp.take_along_axis(targets.masks, jnp.maximum(assign, 0)[..., None, None],
                               axis=1)
  return jnp.swapaxes(picked, 0, 1), (assign >= 0).T


def matching_rewards(masks, targets: Targets, valid):
  """r (L, B) = φ_{t+1} − φ_t of the soft-Dice max-matching potential."""

  def one(m, gt, gt_valid, row_valid):
    scores = rewards.soft_dice_scores(m, gt, gt_valid)
    return rewards.matching_rewards(scores, pred_valid=row_valid, gt_valid=gt_valid)

  return jax.vmap(one, in_axes=(1, 0, 0, 1), out_axes=1)(
      masks, targets.masks, targets.valid, valid) * valid


# ----------------------------------------------------------------------------
# Losses / gradients per stage: (params, batch, rng, frozen, length) ->
# (loss, grads, metrics). `frozen` holds the earlier stages' params.
# ----------------------------------------------------------------------------


def preproc_grads(nets: Nets, config, params, batch, rng, frozen, length):
  del rng, frozen, length
  a = config.acis
  x = common.normalize_images(batch["image"])
  fg, angles = jax.vmap(functools.partial(
      instance_targets.angle_targets, max_instances=a.max_instances,
      num_bins=a.num_angle_bins))(batch["instances"])

  def loss_fn(p):
    logits = nets.preproc.apply({"params": p["preproc"]}, x)
    fg_loss = bce(logits[..., 0], fg).mean()
    angle_loss = bce(logits[..., 1:], angles).mean()
    return fg_loss + angle_loss, {"train/fg_bce": fg_loss, "train/angle_bce": angle_loss}

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  return loss, grads, metrics


def cvae_grads(nets: Nets, config, params, batch, rng, frozen, length):
  """mask_loss(D(μ + σε; x), T_j) + β·KL for one random instance j per image."""
  del length
  a = config.acis
  inputs = make_inputs(nets, frozen["preproc"], batch["image"])
  targets = make_targets(batch["instances"], a.max_instances)
  pick_rng, eps_rng = jax.random.split(rng)
  logits_j = jnp.where(targets.valid, 0.0, -jnp.inf)
  j = jax.random.categorical(pick_rng, jnp.where(targets.counts[:, None] > 0, logits_j, 0.0))
  target = jnp.take_along_axis(targets.masks, j[:, None, None, None], 1)[:, 0]
  has = (targets.counts > 0).astype(jnp.float32)
  b = target.shape[0]
  eps = jax.random.normal(eps_rng, (b, a.latent_dim))

  def loss_fn(p):
    _, (mu, logvar, _) = nets.actor.apply({"params": p["actor"]}, inputs.actor(target),
                                          nets.actor.initial_carry(b))
    z = mu + jnp.exp(0.5 * logvar) * eps
    logits = nets.decoder.apply({"params": p["decoder"]}, z, inputs.cond)
    rec = jnp.sum(mask_loss(logits, target, a.dice_loss_weight) * has) / jnp.maximum(
        has.sum(), 1)
    kl = jnp.sum(kl_normal(mu, logvar) * has) / jnp.maximum(has.sum(), 1)
    return rec + a.cvae_kl_weight * kl, {"train/mask_loss": rec, "train/kl": kl,
                                         "train/dice": jnp.mean(hard_dice(logits, target))}

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  return loss, grads, metrics


def _episode_setup(nets, config, batch, rng, frozen, length):
  a = config.acis
  inputs = make_inputs(nets, frozen["preproc"], batch["image"])
  targets = make_targets(batch["instances"], a.max_instances)
  valid = step_mask(targets.counts, length)
  eps = jax.random.normal(rng, (length, inputs.x.shape[0], a.latent_dim))
  return inputs, targets, valid, eps, common.rollout_unrolled(a.rollout)


def bl_grads(nets: Nets, config, params, batch, rng, frozen, length):
  """BL: `mask_loss` against Hungarian-assigned instances, BPTT through every step."""
  a = config.acis
  inputs, targets, valid, eps, unroll = _episode_setup(nets, config, batch, rng, frozen, length)

  def loss_fn(p):
    out = rollout(nets, p["actor"], frozen["decoder"], inputs, eps, sample=False,
                  unroll=unroll)
    assigned, matched = assign_targets(out["mask"], targets, valid)
    w = matched.astype(jnp.float32)
    rec = jnp.sum(mask_loss(out["logits"], assigned, a.dice_loss_weight) * w) / jnp.maximum(
        w.sum(), 1)
    term = termination_loss(out["cont"], targets.counts, valid)
    return rec + a.termination_weight * term, {"train/mask_loss": rec,
                                               "train/termination": term}

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  return loss, grads, metrics


def bl_trunc_grads(nets: Nets, config, params, batch, rng, frozen, length):
  """BL-Trunc: the same assignment from a forward pass, then one-step BPTT."""
  a = config.acis
  inputs, targets, valid, eps, unroll = _episode_setup(nets, config, batch, rng, frozen, length)
  out = rollout(nets, jax.lax.stop_gradient(params["actor"]), frozen["decoder"], inputs,
                eps, sample=False, unroll=unroll)
  assigned, matched = assign_targets(out["mask"], targets, valid)
  w = matched.astype(jnp.float32)
  cont_target = continue_targets(targets.counts, length)
  vf = valid.astype(jnp.float32)
  n_mask, n_valid = jnp.maximum(w.sum(), 1), jnp.maximum(vf.sum(), 1)

  def step_loss(p, carry, x):
    target, w_t, v_t, c_t, e = x
    carry, o = actor_step(nets, p["actor"], frozen["decoder"], inputs, *carry, e,
                          sample=False)
    rec = jnp.sum(mask_loss(o["logits"], target, a.dice_loss_weight) * w_t) / n_mask
    term = jnp.sum(bce(o["cont"], c_t) * v_t) / n_valid
    return rec + a.termination_weight * term, (carry, (rec, term))

  init = episode_start(nets, inputs)
  loss, grads, (rec, term) = per_step_grads(
      step_loss, params, init, (assigned, w, vf, cont_target, eps), unroll=unroll)
  return loss, grads, {"train/mask_loss": rec.sum(), "train/termination": term.sum()}


def ac_critic_grads(nets: Nets, config, params, batch, rng, frozen, length):
  """Critic: Q(s_t, m_t) regressed on G_t of a sampled episode (one step at a time).

  The episode's actions are drawn with σ floored at `acis.explore_std` (the
  behaviour policy), so the critic also sees masks away from the actor's mean.
  """
  a = config.acis
  inputs, targets, valid, eps, unroll = _episode_setup(nets, config, batch, rng, frozen, length)
  out = rollout(nets, params["actor"], frozen["decoder"], inputs, eps, sample=True,
                explore_std=a.explore_std, unroll=unroll)
  out = jax.lax.stop_gradient(out)
  r = matching_rewards(out["mask"], targets, valid)
  returns = rewards.nstep_returns(r, jnp.zeros_like(r[0]), gamma=a.gamma)
  vf = valid.astype(jnp.float32)
  n_valid = jnp.maximum(vf.sum(), 1)

  def step_loss(p, carry, x):
    state, mask, g, v = x
    q = nets.critic.apply({"params": p["critic"]}, inputs.critic(state, mask))
    err = jnp.sum((q - g) ** 2 * v) / n_valid
    return err, (carry, jnp.sum(q * v))

  loss, grads, q_sum = per_step_grads(step_loss, {"critic": params["critic"]}, (),
                                      (out["state"], out["mask"], returns, vf), unroll=unroll)
  dice = jnp.sum(r) / jnp.maximum(jnp.sum(targets.counts), 1)
  return loss, grads, {"train/critic_loss": loss, "train/q": q_sum.sum() / n_valid,
                       "train/return": jnp.sum(returns * vf) / n_valid,
                       "train/reward_per_instance": dice}


def ac_actor_grads(nets: Nets, config, params, batch, rng, frozen, length):
  """Actor: −Q(s_t, D(μ_t + sg(σ_t)ε_t)) + β_KL·KL_t + termination BCE, per step."""
  a = config.acis
  inputs, targets, valid, eps, unroll = _episode_setup(nets, config, batch, rng, frozen, length)
  cont_target = continue_targets(targets.counts, length)
  vf = valid.astype(jnp.float32)
  n_valid = jnp.maximum(vf.sum(), 1)
  critic = jax.lax.stop_gradient(params["critic"])

  def step_loss(p, carry, x):
    v_t, c_t, e = x
    state = carry[0]
    carry, o = actor_step(nets, p["actor"], frozen["decoder"], inputs, *carry, e,
                          sample=True)
    q = nets.critic.apply({"params": critic}, inputs.critic(state, o["mask"]))
    kl = kl_normal(o["mu"], o["logvar"])
    term = bce(o["cont"], c_t)
    loss = jnp.sum((-q + a.kl_weight * kl + a.termination_weight * term) * v_t) / n_valid
    return loss, (carry, (jnp.sum(q * v_t), jnp.sum(kl * v_t), jnp.sum(term * v_t)))

  init = episode_start(nets, inputs)
  loss, grads, (q, kl, term) = per_step_grads(
      step_loss, {"actor": params["actor"]}, init, (vf, cont_target, eps), unroll=unroll)
  return loss, grads, {"train/q": q.sum() / n_valid, "train/kl": kl.sum() / n_valid,
                       "train/termination": term.sum() / n_valid}


# ----------------------------------------------------------------------------
# Update steps.
# ----------------------------------------------------------------------------


def make_update(grads_fn, txs: dict[str, optax.GradientTransformation], frozen):
  """(state, batch) -> (state, metrics, finite) for the params `grads_fn`
  returns gradients of (others stay); a non-finite step keeps the state."""

  def update(state, batch):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
    loss, grads, metrics = grads_fn(state["params"], batch, rng, frozen)
    params, opt_state = dict(state["params"]), dict(state["opt_state"])
    for k, g in grads.items():
      updates, opt_state[k] = txs[k].update(g, opt_state[k], params[k])
      params[k] = optax.apply_updates(params[k], updates)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new = {**state, "step": state["step"] + 1, "params": params, "opt_state": opt_state}
    new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
    return new, {"train/loss": loss, "train/grad_norm": grad_norm, **metrics}, finite

  return update


def seq_length(config, step: int) -> int:
  """L of (1-based) step `step`: `acis.seq_lengths` in equal shares of the run."""
  lengths = tuple(config.acis.seq_lengths)
  share = (step - 1) * len(lengths) // max(config.total_steps, 1)
  return lengths[min(share, len(lengths) - 1)]


def is_actor_step(config, step: int) -> bool:
  """After `critic_warmup` critic-only steps, every (k+1)-th step is the actor's."""
  a = config.acis
  s = step - 1 - a.critic_warmup
  return s >= 0 and s % (a.critic_per_actor + 1) == a.critic_per_actor


# ----------------------------------------------------------------------------
# Inference and evaluation.
# ----------------------------------------------------------------------------


def make_infer(nets: Nets, config, block: str = "none"):
  """jit (params, uint8 (B, S, S, 3)) -> (mask probs (T, B, S, S), continue
  probs (T, B)) for T = acis.max_instances mean-action steps."""
  a = config.acis

  @jax.jit
  def infer(params, images):
    inputs = make_inputs(nets, params["preproc"], images)
    eps = jnp.zeros((a.max_instances, images.shape[0], a.latent_dim))
    out = rollout(nets, params["actor"], params["decoder"], inputs, eps, sample=False,
                  block=block, unroll=common.rollout_unrolled(a.rollout))
    return out["mask"], jax.nn.sigmoid(out["cont"])

  return infer


def num_predicted(cont) -> int:
  """Steps kept: up to and including the first step whose continue prob < 0.5."""
  stop = np.flatnonzero(np.asarray(cont) < 0.5)
  return int(stop[0]) + 1 if stop.size else len(cont)


def label_map(masks: np.ndarray) -> np.ndarray:
  """(n, H, W) probabilities -> instance ids (H, W): the most probable mask
  where it exceeds 0.5, else background."""
  if not len(masks):
    return np.zeros(masks.shape[1:], np.int32)
  best = masks.argmax(0)
  return np.where(masks.max(0) > 0.5, best + 1, 0).astype(np.int32)


def paste_back(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Bilinear upsampling of (n, S, S) probabilities to the original (H, W)."""
  return np.stack([np.asarray(Image.fromarray(m.astype(np.float32), mode="F").resize(
      (size[1], size[0]), Image.BILINEAR)) for m in masks]) if len(masks) else \
      np.zeros((0, *size), np.float32)


def gt_stop_dice(masks: np.ndarray, gt: np.ndarray) -> float:
  """Tab. 2's Dice*: the first #gt binarised masks max-matched to the ground
  truth by Dice; matched Dice summed over the ground-truth count."""
  ids = np.unique(gt[gt > 0])
  if not ids.size:
    return float(not len(masks))
  pred = (masks[:ids.size] > 0.5).astype(np.float32)
  truth = (gt[None] == ids[:, None, None]).astype(np.float32)
  scores = rewards.soft_dice_scores(jnp.asarray(pred), jnp.asarray(truth))
  return float(rewards.max_matching(scores)[1]) / ids.size


def _resize_example(ex, size: int):
  return (resize_bilinear(np.asarray(ex["image"]), (size, size)),
          resize_nearest(np.asarray(ex["instances"]), (size, size)))


def _first(source, max_examples: int) -> range:
  return range(len(source) if not max_examples else min(max_examples, len(source)))


def episode_evaluator(nets: Nets, config):
  """Instance metrics at the original resolution, plus Tab. 2's Dice* and |DiC|
  with each state of `acis.eval_blocks` zeroed."""
  a = config.acis
  infers = {b: make_infer(nets, config, b) for b in ("none", *a.eval_blocks)}

  def evaluate(params, source, max_examples: int = 0):
    rows, extra = [], {b: [] for b in infers}
    for i in tqdm.tqdm(_first(source, max_examples), desc="eval", leave=False):
      ex = source[i]
      image, _ = _resize_example(ex, a.image_size)
      gt = np.asarray(ex["instances"])
      count = instance_targets.count_instances(gt)
      for b, infer in infers.items():
        masks, cont = jax.device_get(infer(params, image[None]))
        k = num_predicted(cont[:, 0])
        full = paste_back(masks[:, 0], gt.shape)
        dice = gt_stop_dice(full, gt)
        if b == "none":
          rows.append({**instance_eval.instance_metrics(label_map(full[:k]), gt),
                       "dice_gt_stop": dice})
        else:
          extra[b].append((dice, abs(k - count)))
    metrics = instance_eval.mean_instance_metrics(rows)
    for b, vals in extra.items():
      if vals:
        metrics[f"dice_gt_stop{BLOCK_NAMES[b]}"] = float(np.mean([v[0] for v in vals]))
        metrics[f"abs_dic{BLOCK_NAMES[b]}"] = float(np.mean([v[1] for v in vals]))
    return metrics

  evaluate.infer = infers["none"]  # the panel's
  return evaluate


def order_panel(params, *, infer, config, source, count: int) -> np.ndarray:
  """Rows of image | ground truth | prediction coloured by time step
  (dark = first, yellow = last)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  cmap = matplotlib.colormaps["viridis"]
  a = config.acis
  rows = []
  for i in np.linspace(0, len(source) - 1, count).round().astype(int):
    image, inst = _resize_example(source[int(i)], a.image_size)
    masks, cont = jax.device_get(infer(params, image[None]))
    k = num_predicted(cont[:, 0])
    order = label_map(masks[:k, 0])
    colours = (np.asarray(cmap(np.linspace(0, 1, max(k, 2))))[:, :3] * 255).astype(np.uint8)
    pred = np.where(order[..., None] > 0, colours[np.maximum(order - 1, 0)], 0)
    ids = np.unique(inst, return_inverse=True)[1].reshape(inst.shape)
    rows.append([image, plots.colorize(ids, int(ids.max()) + 1, 0), pred.astype(np.uint8)])
  return plots.tile_rows(rows)


def preproc_evaluator(nets: Nets, config):
  """Foreground IoU and angle-bin accuracy on foreground pixels, at S × S."""
  a = config.acis

  @jax.jit
  def predict(p, image, inst):
    logits = nets.preproc.apply({"params": p}, common.normalize_images(image[None]))[0]
    fg, angles = instance_targets.angle_targets(inst, a.max_instances,
                                                num_bins=a.num_angle_bins)
    return logits, fg, angles

  def evaluate(params, source, max_examples: int = 0):
    inter = union = correct = total = 0
    for i in _first(source, max_examples):
      image, inst = _resize_example(source[i], a.image_size)
      logits, fg, angles = jax.device_get(predict(params["preproc"], image, inst))
      pred, truth = logits[..., 0] > 0, fg > 0
      inter += np.sum(pred & truth)
      union += np.sum(pred | truth)
      correct += np.sum((logits[..., 1:].argmax(-1) == angles.argmax(-1)) & truth)
      total += truth.sum()
    return {"fg_iou": inter / max(union, 1), "angle_acc": correct / max(total, 1)}

  return evaluate


def cvae_evaluator(nets: Nets, config):
  """Mean Dice of D(μ(x, T)) > 0.5 against T over every val instance, at S × S."""
  a = config.acis

  @jax.jit
  def dice(p, image, inst):
    """Hard Dice of every padded instance (K,) and which are real."""
    masks, valid = instance_targets.instance_masks(inst, a.max_instances)
    one = make_inputs(nets, p["preproc"], image[None])  # the K instances share it
    inputs = Inputs(*(jnp.broadcast_to(v, (a.max_instances, *v.shape[1:]))
                      for v in (one.x, one.angles, one.fg)))
    target = masks.astype(jnp.float32)
    _, (mu, _, _) = nets.actor.apply({"params": p["actor"]}, inputs.actor(target),
                                     nets.actor.initial_carry(a.max_instances))
    logits = nets.decoder.apply({"params": p["decoder"]}, mu, inputs.cond)
    return hard_dice(logits, target), valid

  def evaluate(params, source, max_examples: int = 0):
    dices = []
    for i in _first(source, max_examples):
      d, valid = jax.device_get(dice(params, *_resize_example(source[i], a.image_size)))
      dices += list(d[valid])
    return {"recon_dice": float(np.mean(dices)) if dices else float("nan")}

  return evaluate


# ----------------------------------------------------------------------------
# Stages.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str
  steps: int
  trains: tuple[str, ...]  # params keys with optimizers
  grads: Callable | None  # None: the final stage (its step depends on kind and L)
  evaluator: Callable  # (nets, config) -> fn(params, source, max_examples) -> metrics


def stage_plan(config) -> list[Stage]:
  a = config.acis
  cvae = "cvae" if a.state_pyramid else "cvae_nosp"
  final = ("actor", "critic") if a.method == "ac" else ("actor",)
  return [
      Stage("preproc", a.preproc_steps, ("preproc",), preproc_grads, preproc_evaluator),
      Stage(cvae, a.cvae_steps, ("actor", "decoder"), cvae_grads, cvae_evaluator),
      Stage(variant_name(a), config.total_steps, final, None, episode_evaluator),
  ]


def variant_name(a: ml_collections.ConfigDict) -> str:
  """The Tab. 1 row `config.acis` describes (the inverse of `apply_variant`)."""
  if a.method != "ac":
    return a.method
  if not a.state_pyramid:
    return "ac_nosp"
  return "ac_nokl" if a.kl_weight == 0 else "ac"


def _optimizers(config, stage: Stage):
  a, lr = config.acis, config.optim.lr
  adam = functools.partial(optax.adam, b1=config.optim.b1, b2=config.optim.b2)
  txs = {k: adam(lr) for k in stage.trains}
  if "critic" in txs:
    txs["critic"] = adam(lr * a.critic_lr_factor)
  if stage.grads is None and a.grad_clamp:  # the final stage: the actor is clamped
    txs["actor"] = optax.chain(optax.clip(a.grad_clamp), txs["actor"])
  return txs


def _stage_config(config, stage: Stage):
  c = copy.deepcopy(config)
  c.total_steps = stage.steps
  c.eval_every = min(c.eval_every, stage.steps)
  c.checkpoint_every = min(c.checkpoint_every, stage.steps)
  return c


def _check_counts(source, config, split: str) -> None:
  k = config.acis.max_instances
  for i in range(len(source)):
    n = instance_targets.count_instances(source[i]["instances"])
    if n > k:
      raise DataError(f"{split} image {source[i].get('name', i)!r} has {n} instances, more "
                      f"than config.acis.max_instances={k}; raise it.")


def run_stage(config, workdir: pathlib.Path, stage: Stage, *, nets: Nets, params,
              frozen, train_source, val_source, mesh) -> dict[str, Any]:
  """Trains one stage into `workdir` (resuming); returns its final params."""
  config = _stage_config(config, stage)
  repl = parallel.replicated(mesh)
  ds = data_lib.train_dataset_from_config(
      config.data, train_source, global_batch_size=config.batch_size, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count(),
      worker_count=config.data.worker_count)
  train_iter = iter(ds)
  txs = _optimizers(config, stage)
  trained = {k: params[k] for k in stage.trains}

  def init_state(p):
    return {"step": jnp.zeros((), jnp.int32), "params": p,
            "opt_state": {k: txs[k].init(p[k]) for k in p},
            "rng": jax.random.key_data(jax.random.key(config.seed + 1))}

  mgr = ckpt_lib.make_manager(workdir, max_to_keep=config.keep_checkpoints,
                              save_every=config.checkpoint_every)
  state = common.restore_or_init(mgr, init_state, trained, train_iter, repl)
  writer = writer_lib.MetricWriter(workdir)
  frozen_host, frozen = frozen, jax.device_put(frozen, repl)

  def to_device(host_batch):
    batch = common.device_batch(host_batch, mesh=mesh)
    return {k: batch[k] for k in ("image", "instances")}

  compiled = {}
  evaluate = stage.evaluator(nets, config)

  def compiled_update(kind, length):
    if (kind, length) not in compiled:
      fn = stage.grads or {"bl": bl_grads, "bl_trunc": bl_trunc_grads, "critic": ac_critic_grads,
                           "actor": ac_actor_grads}[kind]
      grads_fn = lambda p, b, r, f: fn(nets, config, p, b, r, f, length)  # noqa: E731
      sub_txs = {k: txs[k] for k in stage.trains}
      compiled[(kind, length)] = jax.jit(make_update(grads_fn, sub_txs, frozen),
                                         donate_argnums=0)
    return compiled[(kind, length)]

  def update(st, batch, step):
    if stage.grads is not None:
      return compiled_update(stage.name, 0)(st, batch)
    method = config.acis.method
    kind = method if method != "ac" else ("actor" if is_actor_step(config, step) else "critic")
    return compiled_update(kind, seq_length(config, step))(st, batch)

  def run_eval(step, st):
    t0 = time.time()
    p = {**frozen_host, **jax.device_get(st["params"])}
    metrics = evaluate(p, val_source, config.eval.max_examples)
    if stage.grads is None and config.eval.panel_examples and jax.process_index() == 0:
      panel = order_panel(p, infer=evaluate.infer, config=config, source=val_source,
                          count=config.eval.panel_examples)
      plots.save_png(workdir / "panels" / f"step_{step:06d}.png", panel)
    out = {f"val/{k}": v for k, v in metrics.items()}
    out["val/seconds"] = time.time() - t0
    writer.write(step, out)
    logging.info("%s step %d: %s", stage.name, step,
                 ", ".join(f"{k} {v:.4f}" for k, v in out.items()))
    return out

  logging.info("ACIS stage %s: %d steps into %s", stage.name, stage.steps, workdir)
  state, _ = common.run_loop(config, state, update, train_iter=train_iter,
                             to_device=to_device, mgr=mgr, writer=writer,
                             run_eval=run_eval, desc=stage.name)
  writer.flush()
  if jax.process_index() == 0:
    keys = ("train/loss", *(k for k in writer_lib.read_metrics(workdir)[-1] if k in (
        "val/fg_iou", "val/recon_dice", "val/sbd")))
    plots.learning_curves({stage.name: writer_lib.read_metrics(workdir)},
                          workdir / "learning_curve.png", keys=keys,
                          title=f"ACIS {stage.name}")
  writer.close()
  mgr.close()
  return jax.device_get(state["params"])


def _finished(path: pathlib.Path, steps: int) -> bool:
  return (ckpt_lib.latest_step(path) or 0) >= steps > 0


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       pretrain_only: bool = False) -> dict[str, float]:
  """Runs the stages `config` needs (only the pre-training ones with
  `pretrain_only`); returns the last stage's latest val metrics."""
  validate(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  train_source, info = data_lib.get_source(config.data, config.data.train_split)
  mesh = parallel.make_data_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  if not info.has_instances:
    raise DataError(f"ACIS needs instance labels; dataset {info.name!r} has none (use "
                    "data.name='instance_folder').")
  val_source, _ = data_lib.get_source(_unresized(config.data), config.data.val_split)
  _check_counts(train_source, config, config.data.train_split)
  nets = build_nets(config)
  params = jax.device_get(jax.jit(functools.partial(init_params, nets, config))(
      jax.random.key(config.seed)))
  plan = stage_plan(config)[:2 if pretrain_only else 3]
  for stage in plan:
    own = workdir / stage.name
    reuse = pathlib.Path(config.init_from) / stage.name if config.init_from else None
    is_final = stage.grads is None
    if not is_final and reuse is not None and _finished(reuse, stage.steps):
      logging.info("ACIS stage %s: from %s", stage.name, reuse)
      loaded = ckpt_lib.load_params(reuse)
    elif not is_final and _finished(own, stage.steps):
      logging.info("ACIS stage %s: reusing the finished run in %s", stage.name, own)
      loaded = ckpt_lib.load_params(own)
    else:
      frozen = {k: v for k, v in params.items() if k not in stage.trains}
      loaded = run_stage(config, own, stage, nets=nets, params=params, frozen=frozen,
                         train_source=train_source, val_source=val_source, mesh=mesh)
    params = {**params, **loaded}
  records = writer_lib.read_metrics(workdir / plan[-1].name)
  return {k: v for r in records for k, v in r.items() if k.startswith("val/")}


def _unresized(data_config):
  """The val split is read at its original size (masks are pasted back)."""
  c = copy.deepcopy(data_config)
  c.resize = None
  return c
