"""ACIS's instance rewards: mask similarities, matching potentials (SPEC §3, Eq. 4-5).

Pure functions of arrays for one image, jittable and vmappable. Predictions
are T soft masks `S_t` (T, H, W) in [0, 1] (the decoder's sigmoid, not
binarised); ground truth is N padded instance masks `T_n` (N, H, W) with a
`gt_valid` (N,) mask, so that every image of a batch has the same shapes.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from jaxseg.rewards import matching

Array = jax.Array


def _mask_sums(pred: Array, gt: Array) -> tuple[Array, Array, Array]:
  """(Σ S_t T_n (T, N), Σ S_t (T,), Σ T_n (N,)) over pixels, in float32+."""
  chex.assert_rank([pred, gt], 3)
  chex.assert_equal_shape_suffix([pred, gt], 2)
  s = matching.as_float(pred)
  t = jnp.asarray(gt).astype(s.dtype)
  # HIGHEST: the default accelerator matmul precision (bf16 passes) would cost
  # the reward its third digit.
  inter = jnp.einsum("thw,nhw->tn", s, t, precision=jax.lax.Precision.HIGHEST)
  return inter, jnp.sum(s, axis=(1, 2)), jnp.sum(t, axis=(1, 2))


def _mask_columns(scores: Array, gt_valid: Array | None) -> Array:
  if gt_valid is None:
    return scores
  chex.assert_shape(gt_valid, (scores.shape[1],))
  return jnp.where(jnp.asarray(gt_valid).astype(bool)[None, :], scores, 0)


def soft_dice_scores(pred: Array, gt: Array, gt_valid: Array | None = None, *,
                     eps: float = 1e-6) -> Array:
  """Soft Dice F(S_t, T_n) of every prediction against every ground-truth mask:

      F(S, T) = 2 Σ_i S_i T_i / max(Σ_i S_i + Σ_i T_i, ε)

  (0 when both masks are empty; columns of invalid ground truth are 0).

  Args:
    pred: (T, H, W) float soft masks in [0, 1].
    gt: (N, H, W) bool or float ground-truth masks.
    gt_valid: (N,) bool, None = all valid.
  Returns:
    (T, N) float32 scores in [0, 1].
  """
  inter, s, t = _mask_sums(pred, gt)
  dice = 2 * inter / jnp.maximum(s[:, None] + t[None, :], eps)
  return _mask_columns(dice, gt_valid)


def iou_scores(pred: Array, gt: Array, gt_valid: Array | None = None, *,
               eps: float = 1e-6) -> Array:
  """Soft IoU of every prediction against every ground-truth mask:

      IoU(S, T) = Σ_i S_i T_i / max(Σ_i S_i + Σ_i T_i − Σ_i S_i T_i, ε)

  (the usual IoU for binary masks; 0 when both are empty; columns of invalid
  ground truth are 0). Same shapes as `soft_dice_scores`.
  """
  inter, s, t = _mask_sums(pred, gt)
  iou = inter / jnp.maximum(s[:, None] + t[None, :] - inter, eps)
  return _mask_columns(iou, gt_valid)


def matching_potentials(scores: Array, *, pred_valid: Array | None = None,
                        gt_valid: Array | None = None) -> Array:
  """State potentials of ACIS (Eq. 4) after each prediction:

      φ_t = max_{π}  Σ_{(i, n) ∈ π} F(S_i, T_n),   φ_0 = 0,

  over matchings π of maximum cardinality between the valid predictions
  among the first t and the valid ground truth (`max_matching` of the
  sub-matrix; a prediction is matched at most once, so a duplicate earns
  nothing).

  All T potentials come from one run of the shortest-augmenting-path solver
  over the predictions in order: once row t is added its matching is optimal
  for the rows < t. T "unmatched" columns of score 0 are appended and the real
  scores shifted to s' = s − min s + ε > 0 (ε = the score range, or 1): with
  strictly positive scores a maximum-weight matching has maximum cardinality,
  and the shift does not change which one of those is best. φ_t is then the
  sum of the original scores at the prefix's matching, so it is exact and its
  gradient is the envelope one (1 at matched pairs). Cost: O(T²(N + T))
  against O(T·max(T, N)³) for T separate matchings.

  Args:
    scores: (T, N) float, e.g. `soft_dice_scores(pred, gt)`; finite where
      both masks are valid.
    pred_valid: (T,) bool, None = all valid (an invalid prediction adds 0).
    gt_valid: (N,) bool, None = all valid.
  Returns:
    (T + 1,) float potentials φ_0 … φ_T.
  """
  chex.assert_rank(scores, 2)
  num_pred, num_gt = scores.shape
  pred_valid = matching.valid_or_all(pred_valid, num_pred)
  gt_valid = matching.valid_or_all(gt_valid, num_gt)
  s = matching.as_float(scores)
  if num_pred == 0 or num_gt == 0:
    return jnp.zeros((num_pred + 1,), s.dtype)
  valid = pred_valid[:, None] & gt_valid[None, :]
  any_valid = jnp.any(valid)
  low = jnp.where(any_valid, jnp.min(jnp.where(valid, s, jnp.inf)), 0)
  spread = jnp.where(any_valid, jnp.max(jnp.where(valid, s, -jnp.inf)) - low, 0)
  positive = (s - low) + jnp.where(spread > 0, spread, 1)  # ≥ ε > 0 where valid
  cost = jnp.concatenate([jnp.where(valid, -positive, 0),
                          jnp.zeros((num_pred, num_pred), s.dtype)], axis=1)
  col_ok = jnp.concatenate([gt_valid, jnp.ones((num_pred,), bool)])
  _, _, history = matching.shortest_augmenting_paths(cost, pred_valid, col_ok)
  added = jnp.concatenate([jnp.zeros((1,), jnp.int32),
                           jnp.cumsum(pred_valid, dtype=jnp.int32)])
  assignment = history[added]  # (T + 1, T): prefix t's matching, −1 / ≥ N unmatched
  matched = (assignment >= 0) & (assignment < num_gt)
  picked = s[jnp.arange(num_pred), jnp.clip(assignment, 0, num_gt - 1)]
  return jnp.sum(jnp.where(matched, picked, 0), axis=1)


def matching_rewards(scores: Array, *, pred_valid: Array | None = None,
                     gt_valid: Array | None = None) -> Array:
  """ACIS's reward (Eq. 5), the gain in potential of each prediction:

      r_t = φ_{t+1} − φ_t,   t = 0 … T−1,   so   Σ_t r_t = φ_T.

  Args: as `matching_potentials`.
  Returns:
    (T,) float rewards.
  """
  return jnp.diff(matching_potentials(scores, pred_valid=pred_valid, gt_valid=gt_valid))
