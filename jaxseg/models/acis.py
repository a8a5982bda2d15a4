"""ACIS networks (SPEC §3): pre-processing FCN, actor, State-Pyramid decoder, critic.

Channels-last throughout. With S the input size and n = len(features) of the
encoder / decoder, the bottleneck grid is S / 2ⁿ (the paper: S = 224, n = 5,
7 × 7; CPU configs: S = 112, n = 4, also 7 × 7).

  PreprocNet  image → logits of [foreground, 8 angle bins]  (trained alone)
  Actor       [image, M_t, angles, fg] → conv+pool ×n → FC → 2-layer LSTM →
              [h, x] → FC → (μ, log σ²) of the latent action; termination
              logit ("continue") from [h, x]
  Decoder     z → FC → grid × grid × f₀; per stage: concat the State Pyramid
              (image, angles, fg area-pooled to that scale), nearest ×2,
              conv3×3, LeakyReLU; 1×1 conv → mask logits at full resolution
  Critic      [image, M_t, mask, angles, fg] → conv+pool ×n → FC ... → Q(s, m)
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def max_pool(x: Array) -> Array:
  return nn.max_pool(x, (2, 2), strides=(2, 2))


def upsample2(x: Array) -> Array:
  """Nearest-neighbour ×2."""
  return jnp.repeat(jnp.repeat(x, 2, axis=-3), 2, axis=-2)


def area_pool(x: Array, size: int) -> Array:
  """(B, H, W, C) → (B, size, size, C) by averaging blocks (H divisible by size)."""
  b, h, w, c = x.shape
  return x.reshape(b, size, h // size, size, w // size, c).mean((2, 4))


class ConvStack(nn.Module):
  """[conv3×3, ReLU, max-pool 2] per entry of `features`, then flatten."""
  features: Sequence[int]

  @nn.compact
  def __call__(self, x: Array) -> Array:
    for f in self.features:
      x = max_pool(nn.relu(nn.Conv(f, (3, 3))(x)))
    return x.reshape(x.shape[0], -1)


class PreprocNet(nn.Module):
  """A small U-Net: logits (B, H, W, 1 + num_bins) of [fg, angle bins]."""
  features: Sequence[int] = (32, 64, 128)
  num_bins: int = 8

  @nn.compact
  def __call__(self, x: Array) -> Array:
    skips = []
    for i, f in enumerate(self.features):
      if i:
        x = max_pool(x)
      x = nn.relu(nn.Conv(f, (3, 3))(x))
      x = nn.relu(nn.Conv(f, (3, 3))(x))
      skips.append(x)
    for f, skip in zip(self.features[-2::-1], skips[-2::-1]):
      x = jnp.concatenate([upsample2(x), skip], -1)
      x = nn.relu(nn.Conv(f, (3, 3))(x))
      x = nn.relu(nn.Conv(f, (3, 3))(x))
    return nn.Conv(1 + self.num_bins, (1, 1))(x)


LSTMCarry = tuple[tuple[Array, Array], ...]


class Actor(nn.Module):
  """Encoder + stacked LSTM + latent and termination heads.

  `__call__(x, carry) -> (carry, (μ, log σ², continue logit))`; the carry is
  one (c, h) pair per layer (`initial_carry`).
  """
  features: Sequence[int] = (32, 48, 64, 96, 128)
  embed_dim: int = 512
  hidden_dim: int = 512
  num_layers: int = 2
  head_dim: int = 256
  latent_dim: int = 16
  # log σ² starts at this value everywhere (zero kernel): with σ ≈ 1 at
  # initialisation the sampled latent is almost pure noise, the decoder learns
  # to ignore it and the cVAE collapses (measured: KL -> 0.03, Dice 0.0).
  init_logvar: float = -6.0

  def initial_carry(self, batch: int) -> LSTMCarry:
    zeros = jnp.zeros((batch, self.hidden_dim), jnp.float32)
    return tuple((zeros, zeros) for _ in range(self.num_layers))

  @nn.compact
  def __call__(self, x: Array, carry: LSTMCarry):
    e = nn.relu(nn.Dense(self.embed_dim, name="embed")(ConvStack(self.features, name="encoder")(x)))
    h, new_carry = e, []
    for i, c in enumerate(carry):
      c, h = nn.OptimizedLSTMCell(self.hidden_dim, name=f"lstm_{i}")(c, h)
      new_carry.append(c)
    hx = jnp.concatenate([h, e], -1)
    f = nn.relu(nn.Dense(self.head_dim, name="head")(hx))
    mu = nn.Dense(self.latent_dim, name="mu")(f)
    logvar = nn.Dense(self.latent_dim, kernel_init=nn.initializers.zeros,
                      bias_init=nn.initializers.constant(self.init_logvar), name="logvar")(f)
    cont = nn.Dense(1, name="termination")(hx)[..., 0]
    return tuple(new_carry), (mu, logvar, cont)


class Decoder(nn.Module):
  """Latent → mask logits (B, S, S), conditioned on the State Pyramid.

  `cond` (B, S, S, C) is [image, angles, fg]; with `state_pyramid` it is
  area-pooled to each stage's scale and concatenated before the upsampling
  (False: the AC-Dice-NoSP ablation, the latent alone).
  """
  features: Sequence[int] = (96, 64, 48, 32, 16)
  state_pyramid: bool = True

  @nn.compact
  def __call__(self, z: Array, cond: Array) -> Array:
    size = cond.shape[1]
    grid = size // 2 ** len(self.features)
    x = nn.Dense(grid * grid * self.features[0], name="latent")(z)
    x = nn.leaky_relu(x.reshape(-1, grid, grid, self.features[0]))
    for f in self.features:
      if self.state_pyramid:
        x = jnp.concatenate([x, area_pool(cond, x.shape[1])], -1)
      x = nn.leaky_relu(nn.Conv(f, (3, 3))(upsample2(x)))
    return nn.Conv(1, (1, 1), name="out")(x)[..., 0]


class Critic(nn.Module):
  """Q(s, m) from [image, M_t, mask, angles, fg]: (B, S, S, C) → (B,)."""
  features: Sequence[int] = (32, 64, 128, 256, 512)
  fc: Sequence[int] = (1024, 1024, 512)

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = ConvStack(self.features, name="encoder")(x)
    for f in self.fc:
      x = nn.relu(nn.Dense(f)(x))
    return nn.Dense(1)(x)[..., 0]
