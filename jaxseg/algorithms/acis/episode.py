"""ACIS episodes: the networks, what each step sees, one transition, the
episode as a scan, one-step gradients inside a scan, and the Hungarian
assignment and matching rewards of an episode's masks."""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxseg import parallel, rewards
from jaxseg.algorithms import normalize_images
from jaxseg.data import instance_targets
from jaxseg.models import acis as nets_lib


@dataclasses.dataclass(frozen=True)
class Nets:
  """The four networks; their params live under the same top-level names."""
  preproc: nets_lib.PreprocNet
  actor: nets_lib.Actor
  decoder: nets_lib.Decoder
  critic: nets_lib.Critic


def init_params(nets: Nets, rng, *, image_size: int, num_angle_bins: int,
                latent_dim: int) -> dict[str, Any]:
  s, bins = image_size, num_angle_bins
  x = jnp.zeros((1, s, s, 3 + 1 + bins + 1))
  keys = jax.random.split(rng, 4)
  return {
      "preproc": nets.preproc.init(keys[0], x[..., :3])["params"],
      "actor": nets.actor.init(keys[1], x, nets.actor.initial_carry(1))["params"],
      "decoder": nets.decoder.init(keys[2], jnp.zeros((1, latent_dim)),
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
  x = normalize_images(images)
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


LOADS = ("none", "last", "random", "any")


@dataclasses.dataclass(frozen=True)
class Load:
  """How an episode's M_0 is painted: `mode` (one of `LOADS`) and `erode`, the
  largest erosion radius (px) of a painted instance."""
  mode: str = "none"
  erode: int = 0

  @classmethod
  def of(cls, load: "Load | str") -> "Load":
    return load if isinstance(load, cls) else cls(load)


def erode(masks, radius: int):
  """Binary erosion of (…, H, W) {0, 1} masks by a (2r+1)² square: r 3×3 min-pools
  (the image border counts as inside)."""
  window = (1,) * (masks.ndim - 2) + (3, 3)
  for _ in range(radius):
    masks = jax.lax.reduce_window(masks, jnp.inf, jax.lax.min, window, (1,) * masks.ndim,
                                  "SAME")
  return masks


def load_episode(targets: Targets, rng, length: int, load: Load | str):
  """The episode's start state: (M_0 (B, S, S), the instances left to find).

  The authors' `-loadLast` (their dataloader): k of an image's N ground-truth
  instances, chosen at random, are painted into M_0 = max_{j painted} T_j and
  taken out of the targets, so the episode of length L covers the rest:

      "none"    k = 0                         (M_0 = 0, truncated at L)
      "last"    k = max(N − L, 0)             (their L < 0: the episode ends)
      "random"  k ~ U{0, …, max(N − L, 0)}    (their L > 0)
      "any"     k ~ U{0, …, N}                (jaxseg: states up to all covered)

  The remaining targets' `counts` are N − k, so the termination targets
  (`losses.continue_targets`) say whether instances stay uncovered after step t;
  with "any" an episode may run past its last instance (steps t ≥ N − k), where
  only the termination ("stop") is trained.

  With `erode` = R > 0 (jaxseg, not the authors') each painted instance is
  T_j eroded by r_j ~ U{0, …, R} px, so M_0 leaves a rim of a found instance
  uncovered as the actor's own masks do at inference (`bench/acis_steps.py`:
  the init repeats partly covered leaves); the painted instance stays out of
  the targets.
  """
  load = Load.of(load)
  mode = load.mode
  if mode not in LOADS:
    raise ValueError(f"episode start {mode!r}: choose from {LOADS}")
  if load.erode < 0:
    raise ValueError(f"episode start erosion {load.erode} px: must be >= 0")
  b = targets.valid.shape[0]
  if mode == "none":
    return jnp.zeros(targets.masks.shape[:1] + targets.masks.shape[2:]), targets
  pick_rng, k_rng = jax.random.split(rng)
  spare = targets.counts if mode == "any" else jnp.maximum(targets.counts - length, 0)
  painted = spare if mode == "last" else jnp.floor(
      jax.random.uniform(k_rng, (b,)) * (spare + 1)).astype(spare.dtype)
  order = jnp.where(targets.valid, jax.random.uniform(pick_rng, targets.valid.shape), 2.0)
  rank = jnp.argsort(jnp.argsort(order, -1), -1)  # valid instances first, in random order
  paint = targets.valid & (rank < painted[:, None])
  masks = targets.masks
  if load.erode:
    radius = jax.random.randint(jax.random.fold_in(rng, 1), targets.valid.shape, 0,
                                load.erode + 1)[..., None, None]
    eroded = targets.masks
    for r in range(1, load.erode + 1):  # each radius from the one before
      eroded = erode(eroded, 1)
      masks = jnp.where(radius == r, eroded, masks)
  state0 = jnp.max(masks * paint[..., None, None], axis=1)
  return state0, Targets(targets.masks, targets.valid & ~paint, targets.counts - painted)


def episode_start(nets: Nets, inputs: Inputs, state0=None):
  """(M_0, h_0): the state mask (`state0`, by default empty) and a zero LSTM state."""
  b, s = inputs.x.shape[:2]
  return (jnp.zeros((b, s, s)) if state0 is None else state0,
          nets.actor.initial_carry(b))


def rollout(nets: Nets, actor_params, decoder_params, inputs: Inputs, eps, *,
            sample: bool, block: str = "none", explore_std: float = 0.0,
            unroll: bool = False, state0=None):
  """The episode as one `lax.scan` over `eps` (L, B, latent) from `state0`:
  time-major outputs (`unroll`: every step inlined, faster on XLA:CPU, more
  memory)."""
  def step(c, e):
    return actor_step(nets, actor_params, decoder_params, inputs, *c, e,
                      sample=sample, block=block, explore_std=explore_std)

  return scan(step, episode_start(nets, inputs, state0), eps, unroll=unroll)[1]


def scan(f, init, xs, *, unroll: bool = False):
  """`lax.scan(f, init, xs)`, or with `unroll` the same steps as a Python loop.

  On XLA:CPU the loop's gradient is ~7× faster than that of
  `lax.scan(..., unroll=True)` (the ACIS actor-init step, L = 1, 112², batch
  4: 125 ms against 862 ms for the episode's gradient), and the program is
  the same otherwise.
  """
  if not unroll:
    return jax.lax.scan(f, init, xs)
  carry, ys = init, []
  for i in range(jax.tree.leaves(xs)[0].shape[0]):
    carry, y = f(carry, jax.tree.map(lambda x: x[i], xs))  # noqa: B023
    ys.append(y)
  return carry, jax.tree.map(lambda *y: jnp.stack(y), *ys)


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
  (_, grads, total), outs = scan(body, (init, zeros, jnp.zeros(())), xs, unroll=unroll)
  return total, grads, outs


MATCHINGS = {"device": (rewards.max_matching, rewards.matching_potentials),
             "host": (rewards.host_max_matching, rewards.host_matching_potentials)}


def assign_targets(masks, targets: Targets, valid, matching: str = "device", mesh=None):
  """Hungarian assignment of ground truth to the L predictions (soft Dice),
  solved on device or by scipy on the host (`MATCHINGS`); with `mesh`, each
  device solves its own shard (`parallel.per_shard`).

  masks (L, B, S, S), valid (L, B) → (targets (L, B, S, S), matched (L, B)).
  """
  match = MATCHINGS[matching][0]

  def one(m, gt, gt_valid, row_valid):
    scores = rewards.soft_dice_scores(m, gt, gt_valid)
    return match(scores, row_valid=row_valid, col_valid=gt_valid)[0]

  in_axes = (1, 0, 0, 1)
  assign = parallel.per_shard(jax.vmap(one, in_axes=in_axes), mesh, in_axes)(
      jax.lax.stop_gradient(masks), targets.masks, targets.valid, valid)  # (B, L)
  picked = jnp.take_along_axis(targets.masks, jnp.maximum(assign, 0)[..., None, None],
                               axis=1)
  return jnp.swapaxes(picked, 0, 1), (assign >= 0).T


def episode_rewards(masks, targets: Targets, valid, matching: str = "device", mesh=None):
  """r (L, B) = φ_{t+1} − φ_t of the soft-Dice max-matching potential of a
  time-major episode (`rewards.matching_rewards` per image; per shard with
  `mesh`, as `assign_targets`)."""
  potentials = MATCHINGS[matching][1]

  def one(m, gt, gt_valid, row_valid):
    scores = rewards.soft_dice_scores(m, gt, gt_valid)
    return jnp.diff(potentials(scores, pred_valid=row_valid, gt_valid=gt_valid))

  in_axes = (1, 0, 0, 1)
  return parallel.per_shard(jax.vmap(one, in_axes=in_axes, out_axes=1), mesh, in_axes, 1)(
      masks, targets.masks, targets.valid, valid) * valid
