"""CiSS-Net's context reward and actor-critic returns (SPEC §2, Eq. 4-6).

Pure functions of arrays, jittable and vmappable. Maps are int (H, W) for one
image: predictions `Y_t` and `Y_{t+1}`, the context `K_t` (0 = "uncertain",
else class + 1) and labels `L` with `ignore_index`.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

Array = jax.Array


def improvement(pred_t: Array, pred_next: Array, labels: Array, *,
                ignore_index: int = 255) -> Array:
  """The measurement M of Eq. 4 per position, 0 where the label is ignored:

      M = +1    incorrect → correct          M = −1  correct → incorrect
      M = +0.5  correct → correct            M =  0  incorrect → incorrect
  """
  chex.assert_equal_shape([pred_t, pred_next, labels])
  before, after = pred_t == labels, pred_next == labels
  m = jnp.where(after, jnp.where(before, 0.5, 1.0), jnp.where(before, -1.0, 0.0))
  return jnp.where(labels != ignore_index, m, 0.0).astype(jnp.float32)


def window_mean(values: Array, valid: Array, window: tuple[int, int]) -> Array:
  """Mean of `values` over the valid positions of the Ch×Cw window centred on
  each position (positions outside the image do not count); 0 where the
  window has no valid position. `window` sizes must be odd."""
  ch, cw = window
  if ch % 2 == 0 or cw % 2 == 0 or ch < 1 or cw < 1:
    raise ValueError(f"context reward window {window} must be positive odd sizes "
                     "(the window is centred on each position).")
  box = lambda x: jax.lax.reduce_window(
      x, 0.0, jax.lax.add, (ch, cw), (1, 1),
      ((ch // 2, ch // 2), (cw // 2, cw // 2)))
  valid = valid.astype(jnp.float32)
  total, count = box(values * valid), box(valid)
  return jnp.where(count > 0, total / jnp.maximum(count, 1.0), 0.0)


def context_reward(pred_t: Array, pred_next: Array, context: Array, labels: Array, *,
                   window: tuple[int, int] = (5, 5), beta_correct: float = 0.4,
                   beta_uncertain: float = 0.2, ignore_index: int = 255) -> Array:
  """Eq. 4: the reward of the context action at every position of one image.

      r_t(i, j) = mean_{(i', j') ∈ W(i, j), L(i', j') valid} M(Y_t, Y_{t+1}, L)(i', j')
                  + β1·1[K_t(i, j) = L(i, j) + 1] + β2·1[K_t(i, j) = 0]

  with W(i, j) the Ch×Cw window centred on (i, j) clipped to the image, and
  r_t = 0 where L(i, j) is ignored.

  Args:
    pred_t, pred_next: (H, W) int predictions at steps t and t+1.
    context: (H, W) int context map K_t (0 = uncertain, else class + 1).
    labels: (H, W) int labels.
    window: (Ch, Cw), odd.
    beta_correct, beta_uncertain: β1, β2.
  Returns:
    (H, W) float32 rewards.
  """
  chex.assert_rank([pred_t, pred_next, context, labels], 2)
  chex.assert_equal_shape([pred_t, pred_next, context, labels])
  valid = labels != ignore_index
  m = improvement(pred_t, pred_next, labels, ignore_index=ignore_index)
  r = (window_mean(m, valid, tuple(window))
       + beta_correct * (context == labels + 1) + beta_uncertain * (context == 0))
  return jnp.where(valid, r, 0.0).astype(jnp.float32)


def nstep_returns(rewards: Array, bootstrap: Array, *, gamma: float) -> Array:
  """Discounted returns bootstrapped from the last value (Eq. 6):

      R_t = r_t + γ·R_{t+1},   R_T = V(s_T)

  so that `R_t − V(s_t) = Σ_{l≥t} γ^{l−t} δ_l` with `δ_l = r_l + γV_{l+1} − V_l`.

  Args:
    rewards: (T, ...) rewards r_0 … r_{T−1}.
    bootstrap: (...) V(s_T).
  Returns:
    (T, ...) returns R_0 … R_{T−1}.
  """
  chex.assert_equal_shape([rewards[0], bootstrap])

  def back(carry, r):
    carry = r + gamma * carry
    return carry, carry

  _, returns = jax.lax.scan(back, bootstrap.astype(jnp.float32), rewards, reverse=True)
  return returns
