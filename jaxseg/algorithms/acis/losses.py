"""ACIS's losses and targets: pure functions of logits and masks."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def kl_normal(mu, logvar):
  """KL(N(μ, σ²) ‖ N(0, I)) = ½ Σ_j (μ_j² + σ_j² − log σ_j² − 1)."""
  return 0.5 * jnp.sum(mu ** 2 + jnp.exp(logvar) - logvar - 1.0, -1)


def bce(logits, targets):
  return optax.sigmoid_binary_cross_entropy(logits, targets)


def mask_loss(logits, target, dice_weight: float):
  """Reconstruction loss per mask, over the last two (H, W) axes:

      mean_px BCE(σ(l), T) + w · (1 − 2 Σ σ(l) T / (Σ σ(l) + Σ T))

  The paper's loss is the BCE alone (w = 0); docs/acis_ablation_cvppp.md says
  why the CVPPP config adds the soft-Dice term.
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
  """(L, B) termination targets: 1 ("continue") while t + 1 < N_b, else 0 ("stop"),
  also on the steps past an image's last instance (t ≥ N_b)."""
  return (jnp.arange(length)[:, None] + 1 < counts[None]).astype(jnp.float32)


def termination_loss(cont, counts):
  """Mean BCE of the "continue" logits (L, B) against `continue_targets` over every
  step: the termination is also taught to stop once nothing is left, which
  states from `episode.load_episode(..., "any")` show it."""
  return bce(cont, continue_targets(counts, cont.shape[0])).mean()
