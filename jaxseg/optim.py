"""AdamW with warm-up + poly decay and per-parameter learning-rate factors."""
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


def lr_multiplier_tree(params, patterns: Sequence[tuple[str, float]]):
  """Per-leaf factor: the first (regex, factor) whose regex matches the path."""
  compiled = [(re.compile(p), float(f)) for p, f in patterns]

  def factor(path, _):
    name = param_path(path)
    for rx, f in compiled:
      if rx.fullmatch(name):
        return f
    return 1.0

  return jax.tree_util.tree_map_with_path(factor, params)


def scale_by_tree(factors) -> optax.GradientTransformation:
  """Multiplies each update leaf by a fixed per-leaf factor."""

  def update_fn(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, f: u * jnp.asarray(f, u.dtype), updates, factors), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


def make_optimizer(
    c: ml_collections.ConfigDict, params, *, total_steps: int,
    classifier_pattern: str = r".*classifier.*"):
  """clip → AdamW(schedule, decoupled weight decay on ≥2-D kernels) → lr factors.

  A factor f on a parameter multiplies its whole update, i.e. it trains with
  learning rate `f·lr(s)` (the RSS last-layer factor is one such pattern).
  Returns (optimizer, schedule).
  """
  schedule = learning_rate_schedule(c, total_steps)
  patterns = [(classifier_pattern, c.last_layer_lr_factor)] + [
      (p, f) for p, f in c.lr_multipliers]
  decay_mask = jax.tree.map(lambda p: p.ndim >= 2, params)
  chain = []
  if c.grad_clip_norm > 0:
    chain.append(optax.clip_by_global_norm(c.grad_clip_norm))
  chain.append(optax.adamw(schedule, b1=c.b1, b2=c.b2,
                           weight_decay=c.weight_decay, mask=decay_mask))
  factors = lr_multiplier_tree(params, patterns)
  if any(f != 1.0 for f in jax.tree.leaves(factors)):
    chain.append(scale_by_tree(factors))
  return optax.chain(*chain), schedule
