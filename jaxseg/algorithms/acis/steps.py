"""Each ACIS stage's gradients in the step contract.

Every function here, once `nets` and its keyword options are bound (e.g. with
`functools.partial`), is `(params, batch, rng, step) -> (loss, grads, metrics)`
with `grads` over the parameter groups the stage trains (`TRAINS`); `frozen`
holds the params of the earlier stages (pre-processing net, decoder).

BL-Trunc and AC take one-step gradients: `episode.per_step_grads`
differentiates each step inside the scan and accumulates the gradient in the
carry, so only one step's activations are alive at a time; BL differentiates
the whole scan and keeps every step's (the paper's memory argument).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxseg import rewards
from jaxseg.algorithms import normalize_images
from jaxseg.algorithms.acis import episode as ep
from jaxseg.algorithms.acis import losses
from jaxseg.data import instance_targets

# The parameter groups each step trains.
TRAINS = {"preproc": ("preproc",), "cvae": ("actor", "decoder"), "init": ("actor",),
          "bl": ("actor",),
          "bl_trunc": ("actor",), "critic": ("critic",), "actor": ("actor",)}

# Every episode step below takes `load` (`episode.load_episode`: which ground
# truth is painted into M_0) and starts the episode from that state, and those
# that match take `matching` (`episode.MATCHINGS`: on device or scipy on host)
# and `mesh` (with one, each device matches its own shard: `parallel.per_shard`).


def preproc_grads(nets: ep.Nets, params, batch, rng, step, *, max_instances: int,
                  num_angle_bins: int):
  """BCE on the foreground and on the 8 angle bins of the pre-processing net."""
  del rng, step
  x = normalize_images(batch["image"])
  fg, angles = jax.vmap(functools.partial(
      instance_targets.angle_targets, max_instances=max_instances,
      num_bins=num_angle_bins))(batch["instances"])

  def loss_fn(p):
    logits = nets.preproc.apply({"params": p["preproc"]}, x)
    fg_loss = losses.bce(logits[..., 0], fg).mean()
    angle_loss = losses.bce(logits[..., 1:], angles).mean()
    return fg_loss + angle_loss, {"train/fg_bce": fg_loss, "train/angle_bce": angle_loss}

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  return loss, grads, metrics


def cvae_grads(nets: ep.Nets, params, batch, rng, step, *, frozen, max_instances: int,
               latent_dim: int, kl_weight: float, dice_weight: float):
  """mask_loss(D(μ + σε; x), T_j) + β·KL for one random instance j per image."""
  del step
  inputs = ep.make_inputs(nets, frozen["preproc"], batch["image"])
  targets = ep.make_targets(batch["instances"], max_instances)
  pick_rng, eps_rng = jax.random.split(rng)
  logits_j = jnp.where(targets.valid, 0.0, -jnp.inf)
  j = jax.random.categorical(pick_rng, jnp.where(targets.counts[:, None] > 0, logits_j, 0.0))
  target = jnp.take_along_axis(targets.masks, j[:, None, None, None], 1)[:, 0]
  has = (targets.counts > 0).astype(jnp.float32)
  b = target.shape[0]
  eps = jax.random.normal(eps_rng, (b, latent_dim))

  def loss_fn(p):
    _, (mu, logvar, _) = nets.actor.apply({"params": p["actor"]}, inputs.actor(target),
                                          nets.actor.initial_carry(b))
    z = mu + jnp.exp(0.5 * logvar) * eps
    logits = nets.decoder.apply({"params": p["decoder"]}, z, inputs.cond)
    rec = jnp.sum(losses.mask_loss(logits, target, dice_weight) * has) / jnp.maximum(
        has.sum(), 1)
    kl = jnp.sum(losses.kl_normal(mu, logvar) * has) / jnp.maximum(has.sum(), 1)
    return rec + kl_weight * kl, {"train/mask_loss": rec, "train/kl": kl,
                                  "train/dice": jnp.mean(losses.hard_dice(logits, target))}

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  return loss, grads, metrics


def _episode_setup(nets, batch, rng, frozen, length, max_instances, latent_dim, load):
  """(inputs, remaining targets, valid steps (L, B), noise (L, B, latent), M_0)."""
  inputs = ep.make_inputs(nets, frozen["preproc"], batch["image"])
  load_rng, rng = jax.random.split(rng)
  state0, targets = ep.load_episode(ep.make_targets(batch["instances"], max_instances),
                                    load_rng, length, load)
  valid = losses.step_mask(targets.counts, length)
  eps = jax.random.normal(rng, (length, inputs.x.shape[0], latent_dim))
  return inputs, targets, valid, eps, state0


def bl_grads(nets: ep.Nets, params, batch, rng, step, *, frozen, length: int,
             max_instances: int, latent_dim: int, dice_weight: float,
             termination_weight: float, load: ep.Load | str = "none",
             matching: str = "device", mesh=None,
             unroll: bool = False):
  """BL: `mask_loss` against Hungarian-assigned instances, BPTT through every step."""
  del step
  inputs, targets, valid, eps, state0 = _episode_setup(
      nets, batch, rng, frozen, length, max_instances, latent_dim, load)

  def loss_fn(p):
    out = ep.rollout(nets, p["actor"], frozen["decoder"], inputs, eps, sample=False,
                     unroll=unroll, state0=state0)
    assigned, matched = ep.assign_targets(out["mask"], targets, valid, matching, mesh)
    w = matched.astype(jnp.float32)
    rec = jnp.sum(losses.mask_loss(out["logits"], assigned, dice_weight) * w) / jnp.maximum(
        w.sum(), 1)
    term = losses.termination_loss(out["cont"], targets.counts)
    return rec + termination_weight * term, {"train/mask_loss": rec,
                                             "train/termination": term}

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  return loss, grads, metrics


def bl_trunc_grads(nets: ep.Nets, params, batch, rng, step, *, frozen, length: int,
                   max_instances: int, latent_dim: int, dice_weight: float,
                   termination_weight: float, load: ep.Load | str = "none",
                   matching: str = "device", mesh=None, unroll: bool = False):
  """BL-Trunc: the same assignment from a forward pass, then one-step BPTT."""
  del step
  inputs, targets, valid, eps, state0 = _episode_setup(
      nets, batch, rng, frozen, length, max_instances, latent_dim, load)
  out = ep.rollout(nets, jax.lax.stop_gradient(params["actor"]), frozen["decoder"], inputs,
                   eps, sample=False, unroll=unroll, state0=state0)
  assigned, matched = ep.assign_targets(out["mask"], targets, valid, matching, mesh)
  w = matched.astype(jnp.float32)
  cont_target = losses.continue_targets(targets.counts, length)
  n_mask, n_steps = jnp.maximum(w.sum(), 1), cont_target.size

  def step_loss(p, carry, x):
    target, w_t, c_t, e = x
    carry, o = ep.actor_step(nets, p["actor"], frozen["decoder"], inputs, *carry, e,
                             sample=False)
    rec = jnp.sum(losses.mask_loss(o["logits"], target, dice_weight) * w_t) / n_mask
    term = jnp.sum(losses.bce(o["cont"], c_t)) / n_steps  # every step: `termination_loss`
    return rec + termination_weight * term, (carry, (rec, term))

  init = ep.episode_start(nets, inputs, state0)
  loss, grads, (rec, term) = ep.per_step_grads(
      step_loss, params, init, (assigned, w, cont_target, eps), unroll=unroll)
  return loss, grads, {"train/mask_loss": rec.sum(), "train/termination": term.sum()}


def critic_grads(nets: ep.Nets, params, batch, rng, step, *, frozen, length: int,
                 max_instances: int, latent_dim: int, gamma: float,
                 sample: bool = False, explore_std: float = 0.0,
                 load: ep.Load | str = "none",
                 matching: str = "device", mesh=None, unroll: bool = False):
  """Critic: Q(s_t, m_t) regressed on G_t of an episode (one step at a time).

  The episode's actions are the actor's means μ_t, as the authors run it
  (`-criticNoise 0`); with `sample` they are drawn with σ floored at
  `explore_std`, so the critic also sees masks away from the actor's mean.
  """
  del step
  inputs, targets, valid, eps, state0 = _episode_setup(
      nets, batch, rng, frozen, length, max_instances, latent_dim, load)
  out = ep.rollout(nets, params["actor"], frozen["decoder"], inputs, eps, sample=sample,
                   explore_std=explore_std, unroll=unroll, state0=state0)
  out = jax.lax.stop_gradient(out)
  r = ep.episode_rewards(out["mask"], targets, valid, matching, mesh)
  returns = rewards.nstep_returns(r, jnp.zeros_like(r[0]), gamma=gamma)
  vf = valid.astype(jnp.float32)
  n_valid = jnp.maximum(vf.sum(), 1)

  def step_loss(p, carry, x):
    state, mask, g, v = x
    q = nets.critic.apply({"params": p["critic"]}, inputs.critic(state, mask))
    err = jnp.sum((q - g) ** 2 * v) / n_valid
    return err, (carry, jnp.sum(q * v))

  loss, grads, q_sum = ep.per_step_grads(step_loss, {"critic": params["critic"]}, (),
                                         (out["state"], out["mask"], returns, vf),
                                         unroll=unroll)
  dice = jnp.sum(r) / jnp.maximum(jnp.sum(targets.counts), 1)
  return loss, grads, {"train/critic_loss": loss, "train/q": q_sum.sum() / n_valid,
                       "train/return": jnp.sum(returns * vf) / n_valid,
                       "train/reward_per_instance": dice}


def actor_grads(nets: ep.Nets, params, batch, rng, step, *, frozen, length: int,
                max_instances: int, latent_dim: int, kl_weight: float,
                termination_weight: float, sample: bool = False,
                load: ep.Load | str = "none",
                unroll: bool = False):
  """Actor: −Q(s_t, D(a_t)) + β_KL·KL_t + termination BCE, per step, with
  a_t = μ_t (the authors' `-realNoise 0`) or, with `sample`, μ_t + sg(σ_t)ε_t."""
  del step
  inputs, targets, valid, eps, state0 = _episode_setup(
      nets, batch, rng, frozen, length, max_instances, latent_dim, load)
  cont_target = losses.continue_targets(targets.counts, length)
  vf = valid.astype(jnp.float32)
  n_valid = jnp.maximum(vf.sum(), 1)
  critic = jax.lax.stop_gradient(params["critic"])

  def step_loss(p, carry, x):
    v_t, c_t, e = x
    state = carry[0]
    carry, o = ep.actor_step(nets, p["actor"], frozen["decoder"], inputs, *carry, e,
                             sample=sample)
    q = nets.critic.apply({"params": critic}, inputs.critic(state, o["mask"]))
    kl = losses.kl_normal(o["mu"], o["logvar"])
    term = jnp.sum(losses.bce(o["cont"], c_t)) / c_t.size  # every step: `termination_loss`
    loss = jnp.sum((-q + kl_weight * kl) * v_t) / n_valid + termination_weight * term / length
    return loss, (carry, (jnp.sum(q * v_t), jnp.sum(kl * v_t), term))

  init = ep.episode_start(nets, inputs, state0)
  loss, grads, (q, kl, term) = ep.per_step_grads(
      step_loss, {"actor": params["actor"]}, init, (vf, cont_target, eps), unroll=unroll)
  return loss, grads, {"train/q": q.sum() / n_valid, "train/kl": kl.sum() / n_valid,
                       "train/termination": term.sum() / length}
