"""Each paper's method as pure JAX functions: losses, rollouts, per-step gradients.

    psl.py    pixel-wise supervised learning (the baseline)
    rss.py    RSS: pixel- and image-level reward losses (PSR, PSD, SyncAN)
    ciss.py   CiSS-Net: the T-step context rollout and the A2C loss (Eq. 7)
    acis/     ACIS: episodes, losses, per-stage gradients, inference

Options are keyword-only arguments; nothing here reads a config, touches a file
or imports the input pipeline, checkpointing or plotting, so other JAX code can
import a method alone (as it imports `jaxseg.rewards`). Every loss factory
returns the one step contract the trainers compile:

    loss_fn(params, batch, rng, step) -> (loss, metrics)          # plain losses
    grads_fn(params, batch, rng, step) -> (loss, grads, metrics)  # `as_grads_fn`

`grads` may cover only some top-level parameter groups (ACIS's actor or
critic); the update leaves the others as they are.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# ImageNet statistics, as the ConvNeXt-V2 (and most segmentation) recipes use.
IMAGE_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
IMAGE_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


def normalize_images(images: jax.Array) -> jax.Array:
  """uint8 (..., 3) -> float32 standardised with the ImageNet mean and std."""
  return (images.astype(jnp.float32) - IMAGE_MEAN) / IMAGE_STD


def make_apply_fn(model):
  """(params, uint8 images, *, train, rng) -> logits of a Flax module,
  normalisation included."""

  def apply_fn(params, images, *, train, rng=None):
    return model.apply({"params": params}, normalize_images(images), train=train,
                       rngs={"dropout": rng} if train else None)

  return apply_fn


def as_grads_fn(loss_fn):
  """`loss_fn(params, batch, rng, step) -> (loss, metrics)` as the step
  contract `(params, batch, rng, step) -> (loss, grads, metrics)`."""

  def grads_fn(params, batch, rng, step):
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, batch, rng, step)
    return loss, grads, metrics

  return grads_fn
