"""Supervised segmentation losses: pure functions of logits and labels."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def softmax_cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    *,
    ignore_index: int = 255,
    class_weights: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Pixel-wise cross-entropy with an ignore value and optional class weights.

  With valid pixels V = {p : y_p != ignore} and weights w (1 when None):

      L = Σ_{p∈V} w_{y_p} · (−log softmax(z_p)[y_p]) / Σ_{p∈V} w_{y_p}

  (the weighted mean PyTorch and mmseg use). Returns (loss, number of valid
  pixels); the loss is 0 when no pixel is valid.

  Args:
    logits: (..., C) float logits.
    labels: (...) int labels in [0, C) or `ignore_index`.
    ignore_index: label value that contributes nothing.
    class_weights: optional (C,) weights.
  """
  chex.assert_equal_shape_prefix([logits, labels], labels.ndim)
  chex.assert_rank(logits, labels.ndim + 1)
  num_classes = logits.shape[-1]
  valid = labels != ignore_index
  safe = jnp.where(valid, labels, 0)
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(log_p, safe[..., None], axis=-1)[..., 0]
  weight = valid.astype(jnp.float32)
  if class_weights is not None:
    chex.assert_shape(class_weights, (num_classes,))
    weight = weight * jnp.asarray(class_weights, jnp.float32)[safe]
  total = jnp.sum(weight)
  loss = jnp.sum(nll * weight) / jnp.maximum(total, 1e-12)
  return loss, jnp.sum(valid)
