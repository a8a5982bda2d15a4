"""PSL: pixel-wise supervised learning, the baseline every reward method is
compared with (and the start of cold-start runs)."""
from __future__ import annotations

import functools

import jax.numpy as jnp

from jaxseg import losses
from jaxseg.trainers import common


def make_loss(*, config, apply_fn, info, mesh=None):
  """Cross-entropy with the dataset's ignore value and optional class weights."""
  del config, mesh
  weights = info.class_weights
  weights = None if weights is None else jnp.asarray(weights, jnp.float32)

  def loss_fn(params, batch, rng, step):
    del step
    logits = apply_fn(params, batch["image"], train=True, rng=rng)
    loss, num_valid = losses.softmax_cross_entropy(
        logits, batch["label"], ignore_index=info.ignore_index, class_weights=weights)
    return loss, {"train/valid_fraction": num_valid / batch["label"].size}

  return loss_fn


train_and_evaluate = functools.partial(common.train_and_evaluate, make_loss=make_loss)
