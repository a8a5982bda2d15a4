"""Image-level RSS credit: how one scalar reward per sampled map (or, for
jaxseg's `class` credit, the mIoU's per-class terms) becomes an advantage per
position. Pure functions of the drawn maps (B, N, h, w), their rewards (B, N)
and the valid positions (B, h, w); nothing carries a gradient but the
critic's regression loss.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxseg import rewards


def class_advantages(actions, labels, *, num_classes, ignore_index, advantage="grpo"):
  """Per-class credit: `A_n(p) = Â_{n, a_n(p)}`, where `Â_{n,c}` is the
  advantage (`rewards.group_advantages` over the N maps of the image) of
  `IoU_c(a_n, y)` (`rewards.class_iou`, 1 where class c is neither predicted
  nor present).

  Every position is credited with the IoU of the class it chose, so the noise
  of the other classes' terms of the mIoU stays out of its advantage, and
  painting a class that the image lacks costs that class's IoU (1 → 0). This
  is C numbers per map (jaxseg's recipe `psr_class`), not the paper's scalar.
  actions (B, N, h, w), labels (B, h, w) -> (B, N, h, w) float32.
  """
  iou = jax.vmap(jax.vmap(
      functools.partial(rewards.class_iou, num_classes=num_classes, ignore_index=ignore_index),
      in_axes=(0, None)))(actions, labels)  # (B, N, C)
  adv = rewards.group_advantages(iou, estimator=advantage, axis=1)
  b, n = actions.shape[:2]
  flat = jnp.take_along_axis(adv, actions.reshape(b, n, -1), axis=-1)
  return flat.reshape(actions.shape)


def psd_advantages(actions, r, valid, *, std_normalize=False, num_classes=None):
  """PSD credit of the N maps of every image (SPEC §1.2):

      A_i(p) = Σ_j (R_i − R_j)·1[a_i(p) ≠ a_j(p)] / (N − 1)

  (`rewards.pairwise_spatial_difference`), with `std_normalize` divided by
  the root mean square (std about 0) of its non-zero entries at valid
  positions of the whole (global) batch. With `num_classes` < N the class-
  histogram form (O(N·C) per position instead of O(N²)). actions (B, N, h, w),
  r (B, N), valid (B, h, w) -> (A (B, N, h, w), fraction of non-zero entries)."""
  psd = functools.partial(rewards.pairwise_spatial_difference, num_classes=num_classes)
  return sparse_credit(jax.vmap(psd)(actions, r), valid, std_normalize)


def sparse_credit(adv, valid, std_normalize):
  """(adv, the fraction of its entries at valid positions that are non-zero),
  with `std_normalize` adv divided by the RMS of those non-zero entries.
  Non-zero means |A| > 1e-6: sums of tied differences (rank advantages) may
  cancel to float rounding instead of 0."""
  mask = (valid[:, None] & (jnp.abs(adv) > 1e-6)).astype(jnp.float32)
  nonzero = jnp.sum(mask) / jnp.maximum(adv.shape[1] * jnp.sum(valid), 1)
  if std_normalize:
    adv = adv / (jnp.sqrt(jnp.sum(adv * adv * mask) / jnp.maximum(jnp.sum(mask), 1.0)) + 1e-6)
  return adv, nonzero


def greedy_advantages(actions, r, greedy, r_greedy, valid, *, std_normalize=False):
  """Self-critical PSD: each sampled map against the greedy map,

      A_i(p) = (R_i − R_g)·1[a_i(p) ≠ g(p)],

  zero where a map agrees with the greedy one. For a draw that differs from
  g at one position p only, `E[A·∇log q(a(p))] = ∇ E[R]` (the g(p) term
  vanishes), so with a confident policy — few differing positions — each
  map's reward difference is credited to just the positions that caused it.
  actions (B, N, h, w), r (B, N), greedy (B, h, w), r_greedy (B,), valid
  (B, h, w) -> (A (B, N, h, w), fraction of non-zero entries); with
  `std_normalize` divided by the RMS of its non-zero entries, as PSD."""
  differ = (actions != greedy[:, None]).astype(jnp.float32)
  return sparse_credit((r - r_greedy[:, None])[:, :, None, None] * differ, valid,
                        std_normalize)


def critic_advantages(values, probs, actions):
  """Credit from a factored critic (value decomposition: each position an
  agent, the map's reward their team reward, as VDN / COMA):

      A_n(p) = Q_p(a_n(p)) − Σ_c q_p(c)·Q_p(c)

  with `Q` the critic's per-position, per-class values and `q` the acting
  policy's probabilities (a per-position baseline that does not depend on
  the action taken there). values / probs (B, h, w, C), actions (B, N, h, w)
  -> (B, N, h, w)."""
  chosen = jnp.take_along_axis(values[:, None], actions[..., None], axis=-1)[..., 0]
  return chosen - jnp.sum(probs * values, axis=-1)[:, None]


def critic_loss(values, actions, r, valid):
  """The critic's regression on the scalar rewards alone: an additive model of
  each map's reward relative to the other maps of its image,

      Q̂_n = Σ_{p valid} Q_p(a_n(p)),   T_n = (R_n − mean R) / (std R + ε),
      L = mean_{b,n} ((Q̂_n − mean_m Q̂_m) − T_n)²,

  so that Q_p(c) learns what class c at p adds to the map's reward (in units
  of the image's reward spread: a sum over V positions of terms of size
  ~1/√V, which a classifier initialised near 0 reaches quickly). values (B, h, w, C) with gradient, actions
  (B, N, h, w), r (B, N), valid (B, h, w) -> ()."""
  chosen = jnp.take_along_axis(values[:, None], actions[..., None], axis=-1)[..., 0]
  w = valid[:, None].astype(jnp.float32)
  q_hat = jnp.sum(chosen * w, axis=(2, 3))
  target = rewards.normalize_advantages(r, axis=1)
  return jnp.mean(((q_hat - jnp.mean(q_hat, axis=1, keepdims=True)) - target) ** 2)
