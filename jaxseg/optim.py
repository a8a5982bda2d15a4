"""AdamW or SGD with warm-up + poly decay and per-parameter learning-rate factors."""
from __future__ import annotations

import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax


def param_path(path: tuple[Any, ...]) -> str:
  """'backbone/stage_0/block_1/dwconv/kernel' for a tree_util key path."""
  parts = []
  for k in path:
    parts.append(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))))
  return "/".join(parts)


def learning_rate_schedule(c: ml_collections.ConfigDict, total_steps: int):
  """Linear warm-up to `lr`, then `lr·(1 − t/T)^power` down to `end_lr`.

      lr(s) = lr · s / W                                        s < W
      lr(s) = (lr − end) · (1 − (s − W)/(S − W))^power + end    s ≥ W
  """
  warmup = min(c.warmup_steps, max(total_steps - 1, 0))
  decay = optax.polynomial_schedule(
      init_value=c.lr, end_value=c.end_lr, power=c.poly_power,
      transition_steps=max(total_steps - warmup, 1))
  if warmup == 0:
    return decay
  return optax.join_schedules(
      [optax.linear_schedule(0.0, c.lr, warmup), decay], [warmup])


def lr_multiplier_fn(patterns: Sequence[tuple[str, float]]):
  """'a/b/kernel' path -> factor of the first (regex, factor) matching it, else 1."""
  compiled = [(re.compile(p), float(f)) for p, f in patterns]

  def factor(name: str) -> float:
    for rx, f in compiled:
      if rx.fullmatch(name):
        return f
    return 1.0

  return factor


def lr_multiplier_tree(params, patterns: Sequence[tuple[str, float]]):
  """Per-leaf factor: the first (regex, factor) whose regex matches the path."""
  factor = lr_multiplier_fn(patterns)
  return jax.tree_util.tree_map_with_path(lambda path, _: factor(param_path(path)), params)


def scale_by_path(patterns: Sequence[tuple[str, float]]) -> optax.GradientTransformation:
  """Multiplies each update leaf by the factor its path's pattern gives.

  Works on the partial trees `optax.multi_transform` passes (masked leaves are
  empty nodes, so they are skipped)."""
  factor = lr_multiplier_fn(patterns)

  def update_fn(updates, state, params=None):
    del params
    return jax.tree_util.tree_map_with_path(
        lambda path, u: u * jnp.asarray(factor(param_path(path)), u.dtype), updates), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


def make_optimizer(
    c: ml_collections.ConfigDict, params, *, total_steps: int,
    classifier_pattern: str = r".*classifier.*", updates_per_step: int = 1):
  """clip → AdamW (decoupled weight decay) or SGD with momentum (L2 weight
  decay), on the schedule, decaying ≥2-D kernels only → lr factors.

  A factor f on a parameter multiplies its whole update, i.e. it trains with
  learning rate `f·lr(s)` (the RSS last-layer factor is one such pattern).
  Parameters with factor 0 are frozen: they get no optimizer state and are
  left out of gradient clipping (CiSS-Net's trunk). With `updates_per_step` k > 1
  (several updates per train step, `trainers.step.Epochs`) the schedule runs
  over k·total_steps updates (warm-up k·warmup_steps); the returned schedule
  is that of train steps. Returns (optimizer, schedule).
  """
  k = updates_per_step
  if k > 1:
    stretched = c.copy_and_resolve_references()
    stretched.warmup_steps = c.warmup_steps * k
    per_update = learning_rate_schedule(stretched, total_steps * k)
    schedule = lambda step: per_update(step * k)  # noqa: E731
  else:
    per_update = schedule = learning_rate_schedule(c, total_steps)
  patterns = [(classifier_pattern, c.last_layer_lr_factor)] + [
      (p, f) for p, f in c.lr_multipliers]
  chain = []
  if c.grad_clip_norm > 0:
    chain.append(optax.clip_by_global_norm(c.grad_clip_norm))
  decay_mask = lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)
  if c.name == "adamw":
    chain.append(optax.adamw(per_update, b1=c.b1, b2=c.b2, weight_decay=c.weight_decay,
                             mask=decay_mask))
  elif c.name == "sgd":  # coupled L2 weight decay, as the PSPNet/CiSS-Net recipes
    chain += [optax.add_decayed_weights(c.weight_decay, mask=decay_mask),
              optax.sgd(per_update, momentum=c.momentum or None)]
  else:
    raise ValueError(f"config.optim.name={c.name!r} is unknown; choose adamw or sgd.")
  factors = lr_multiplier_tree(params, patterns)
  if any(f != 1.0 for f in jax.tree.leaves(factors)):
    chain.append(scale_by_path(patterns))
  tx = optax.chain(*chain)
  if any(f == 0.0 for f in jax.tree.leaves(factors)):
    labels = jax.tree.map(lambda f: "frozen" if f == 0.0 else "train", factors)
    tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
  return tx, schedule


def per_group(txs: dict[str, optax.GradientTransformation]) -> optax.GradientTransformation:
  """One optimizer over a dict of parameter groups, `txs[k]` for group `k`
  (ACIS: Adam for the actor, Adam at 2× for the critic).

  The state is the plain dict `{k: txs[k].init(params[k])}`. `update` accepts
  gradients of any subset of the groups (an actor-only or a critic-only step)
  and returns updates for those alone, leaving the other groups' states as
  they were; `optax.multi_transform` would instead run every group's
  optimizer on every step (zero gradients still move Adam's moments).
  """

  def init_fn(params):
    return {k: txs[k].init(params[k]) for k in params}

  def update_fn(updates, state, params=None):
    out, state = {}, dict(state)
    for k, g in updates.items():
      out[k], state[k] = txs[k].update(g, state[k], None if params is None else params[k])
    return out, state

  return optax.GradientTransformation(init_fn, update_fn)
