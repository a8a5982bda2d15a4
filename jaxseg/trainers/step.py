"""The one compiled update every method and every stage shares.

A method supplies a `grads_fn(params, batch, rng, step) -> (loss, grads,
metrics)` (plain losses through `algorithms.as_grads_fn`); `make_update` turns
it into `(state, batch) -> (state, metrics, finite)` over the train state
`{step, params, opt_state, rng}` (and `ema_params` with a weight average), a
plain pytree orbax saves as it is.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from jaxseg import config as config_lib

GradsFn = Callable[[Any, dict, jax.Array, jax.Array], tuple[jax.Array, Any, dict]]

ROLLOUTS = ("auto", "scan", "unroll")


@dataclasses.dataclass(frozen=True)
class Epochs:
  """Several updates on one draw (PPO-style epochs): `rollout(params, batch,
  rng, step) -> dict` runs once per step under the params the step starts
  from (no gradient), then `grads` runs `epochs` times on
  `{**batch, "rollout": that dict}`, each time under the params the previous
  update left. The optimizer then takes `epochs` updates per train step."""
  rollout: Callable[[Any, dict, jax.Array, jax.Array], dict]
  grads: "GradsFn"
  epochs: int


def rollout_unrolled(rollout: str, key: str = "rollout") -> bool:
  """A method's `rollout` option (`key` names it in errors): "scan"
  (`lax.scan`, one compiled body), "unroll" (every step inlined) or "auto" =
  unroll on CPU, where XLA runs convolutions in a loop body 5-10× slower
  (ARCHITECTURE.md). Unrolled, XLA keeps every step's buffers alive: use
  "scan" where memory matters."""
  config_lib.check_choice(key, rollout, ROLLOUTS)
  if rollout == "auto":
    return jax.default_backend() == "cpu"
  return rollout == "unroll"


def init_state(params, *, tx: optax.GradientTransformation, rng,
               ema: bool = False) -> dict[str, Any]:
  """The train state is a plain pytree (orbax saves it as it is); with `ema`
  it holds `ema_params`, the weight average `make_update(ema_decay=...)` keeps."""
  state = {"step": jnp.zeros((), jnp.int32), "params": params,
           "opt_state": tx.init(params), "rng": jax.random.key_data(rng)}
  if ema:
    state["ema_params"] = jax.tree.map(jnp.copy, params)
  return state


def ema_update(ema, params, step, decay: float):
  """Polyak averaging with TF's warm-up (`tf.train.ExponentialMovingAverage`
  with `num_updates`), after the update to step t = `step`:

      d_t = min(decay, (1 + t) / (10 + t)),   θ̄_t = d_t · θ̄_{t-1} + (1 − d_t) · θ_t

  so early averages are not dominated by the starting point."""
  t = step.astype(jnp.float32)
  d = jnp.minimum(decay, (1.0 + t) / (10.0 + t))
  return jax.tree.map(lambda e, p: (d * e + (1.0 - d) * p).astype(e.dtype), ema, params)


def make_update(grads_fn: GradsFn | Epochs, tx: optax.GradientTransformation, schedule=None,
                ema_decay: float = 0.0):
  """One optimisation step: (state, batch) -> (state, metrics, finite).

  The per-step RNG is `fold_in(state.rng, state.step)`, so a resumed run draws
  the same randomness as an uninterrupted one; `grads_fn` also gets the step
  (for schedules inside a loss, e.g. RSS's coarse-to-fine scales). Where
  `grads` covers only some top-level groups of a dict of params, only those
  are updated (`tx` must then take such subsets, as `optim.per_group` does).
  A step with a non-finite loss or gradient norm returns the state as it was;
  the host stops the run. Metrics add `train/loss`, `train/grad_norm`,
  `train/update_ratio` = ||Δθ|| / ||θ|| (the divergence check's; ~1e-3 when
  healthy) and, with a `schedule`, `train/lr`. With `ema_decay` > 0 (the state
  from `init_state(ema=True)`) a finite step also moves `ema_params` toward
  the new params (`ema_update`). With `Epochs`, the draw is made once and the
  guarded update applied `epochs` times (each epoch's own RNG is the step's,
  so that the first epoch recomputes the draw's forward pass exactly); the
  metrics are the first epoch's (on-policy) with the last epoch's clip
  fraction(s) as `*clip_frac*_last`.
  """
  if isinstance(grads_fn, Epochs):
    return _epochs_update(grads_fn, tx, schedule, ema_decay)

  def update_fn(state, batch):
    step_rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
    loss, grads, aux = grads_fn(state["params"], batch, step_rng, state["step"])
    params, opt_state, finite, update_ratio, grad_norm = _guarded_apply(
        tx, state["params"], state["opt_state"], loss, grads)
    return _finish(state, params, opt_state, finite, update_ratio, grad_norm, loss, aux,
                   schedule, ema_decay)

  return update_fn


def _epochs_update(epochs: Epochs, tx, schedule, ema_decay):
  def update_fn(state, batch):
    step_rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
    drawn = jax.lax.stop_gradient(epochs.rollout(state["params"], batch, step_rng,
                                                 state["step"]))
    batch = {**batch, "rollout": drawn}
    params, opt_state, all_finite = state["params"], state["opt_state"], jnp.array(True)
    for e in range(epochs.epochs):
      loss_e, grads, aux_e = epochs.grads(params, batch, step_rng, state["step"])
      params, opt_state, finite, ratio_e, norm_e = _guarded_apply(tx, params, opt_state,
                                                                  loss_e, grads)
      all_finite &= finite
      if e == 0:
        loss, aux, update_ratio, grad_norm = loss_e, aux_e, ratio_e, norm_e
    aux = {**aux, **{f"{k}_last": v for k, v in aux_e.items() if "clip_frac" in k}}
    return _finish(state, params, opt_state, all_finite, update_ratio, grad_norm, loss, aux,
                   schedule, ema_decay)

  return update_fn


def _guarded_apply(tx, params, opt_state, loss, grads):
  """One optimizer update of `grads`, skipped (state kept) when the loss or the
  gradient norm is not finite: (params, opt_state, finite, ||Δθ||/||θ||, ||g||)."""
  partial = isinstance(params, dict) and set(grads) < set(params)
  sub = {k: params[k] for k in grads} if partial else params
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

  def apply(operands):
    grads, opt_state, sub = operands
    updates, opt_state = tx.update(grads, opt_state, sub)
    new_sub = optax.apply_updates(sub, updates)
    # ||Δθ|| of the params as applied, not ||updates||: the norm of
    # `updates` materialises them (and a copy of θ) between the optimizer's
    # fusions; this one reads the new and old θ (bench/update_norm.py,
    # ConvNeXt-V2-nano's 15 M params on 2 CPU cores: +7 against +12 ms).
    # ||θ|| is taken here too: read after the branch, the old θ would have
    # to outlive the update, and XLA copied every parameter to keep it
    # (158 copies, ~11 ms of a 96x128 ConvNeXt-V2-nano step).
    delta = optax.tree.norm(jax.tree.map(jnp.subtract, new_sub, sub))
    ratio = delta / jnp.maximum(optax.tree.norm(sub), 1e-12)
    return new_sub, opt_state, ratio.astype(jnp.float32)

  def keep(operands):
    return operands[2], operands[1], jnp.zeros((), jnp.float32)

  # The guard as a branch rather than a `where` over the whole state: a
  # finite step reads the state once, as an unguarded one would
  # (bench/profile_step.py, ConvNeXt-V2-nano: the optimizer's share fell
  # 95 -> 89 ms at 96x128 and 248 -> 175 ms at 512², README).
  new_sub, opt_state, update_ratio = jax.lax.cond(
      finite, apply, keep, (grads, opt_state, sub))
  return ({**params, **new_sub} if partial else new_sub), opt_state, finite, update_ratio, \
      grad_norm


def _finish(state, params, opt_state, finite, update_ratio, grad_norm, loss, aux, schedule,
            ema_decay):
  """The new train state and the step's metrics."""
  new = {**state, "step": state["step"] + finite.astype(state["step"].dtype),
         "params": params, "opt_state": opt_state}
  if ema_decay:
    new["ema_params"] = jax.lax.cond(
        finite, lambda e: ema_update(e, new["params"], new["step"], ema_decay),
        lambda e: e, state["ema_params"])
  metrics = {"train/loss": loss, "train/grad_norm": grad_norm,
             "train/update_ratio": update_ratio, **aux}
  if schedule is not None:
    metrics["train/lr"] = schedule(state["step"])
  return new, metrics, finite


def eval_params(state: dict[str, Any]):
  """The params a run evaluates and hands on: the weight average when the
  state keeps one (`optim.ema_decay` > 0), else the trained params."""
  return state.get("ema_params", state["params"])
