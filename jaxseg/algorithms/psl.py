"""PSL: pixel-wise supervised learning, the baseline every reward method is
compared with (and the start of cold-start runs)."""
from __future__ import annotations

import jax.numpy as jnp

from jaxseg import losses


def make_loss(apply_fn, *, ignore_index: int, class_weights=None):
  """`(params, batch, rng, step) -> (loss, metrics)`: the class-weighted
  cross-entropy `Σ_p w_y(p) · −log softmax(z(p))_y(p) / Σ_p w_y(p)` over
  pixels whose label is not `ignore_index`."""
  weights = None if class_weights is None else jnp.asarray(class_weights, jnp.float32)

  def loss_fn(params, batch, rng, step):
    del step
    logits = apply_fn(params, batch["image"], train=True, rng=rng)
    loss, num_valid = losses.softmax_cross_entropy(
        logits, batch["label"], ignore_index=ignore_index, class_weights=weights)
    return loss, {"train/valid_fraction": num_valid / batch["label"].size}

  return loss_fn
