"""CiSS-Net's networks (SPEC §2): Segment Net (Base + Bias Net) and Context Net
on the features X of a frozen segmentation trunk.

  X         = trunk(image, features_only=True)                 (B, h, w, D)
  Base Net  : z_base = conv1×1(conv3×3→GN→ReLU(X))
  Bias Net  : z_bias = Trunk(X ⊕ F_e(onehot(K, C+1)))          F_e: PPM, 1×1 out, no bias
  S-Net     : z_0 = z_base;  z_{t+1} = z_base + z_bias(K_t)     (Eq. 1)
  Context Net: Trunk(X ⊕ PPM(softmax(z_t))) → 2-way policy (keep / uncertain)
               and a value per position (1×1 convs without bias), one trunk

`Trunk` is 3 × (conv3×3 → GN → ReLU) with a residual around the last two,
then conv1×1 → GN → ReLU and dropout: the authors' Bias/Context Net body.
GroupNorm uses groups of 16 channels, as the paper. The methods `features`,
`base`, `bias` and `context` are applied separately (`model.apply(...,
method=...)`) so that the rollout can reuse X and z_base across steps.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models.pspnet import PPM
from jaxseg.models.sfpnext import ConvNormAct

Array = jax.Array
Dtype = Any
GROUP_SIZE = 16


class ContextTrunk(nn.Module):
  """3 × (conv3×3 → GN → ReLU), residual over the last two, conv1×1 → GN →
  ReLU, dropout, then a 1×1 conv without bias to `out` channels."""
  width: int
  out: int
  dropout: float = 0.1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    cna = lambda k, name: ConvNormAct(self.width, kernel=k, group_size=GROUP_SIZE,
                                      dtype=self.dtype, name=name)
    x = cna(3, "conv0")(x)
    x = x + cna(3, "conv2")(cna(3, "conv1")(x))
    x = cna(1, "conv3")(x)
    if self.dropout > 0:
      x = nn.Dropout(self.dropout)(x, deterministic=not train)
    return nn.Conv(self.out, (1, 1), use_bias=False, dtype=self.dtype, name="out")(x)


class CiSSNet(nn.Module):
  """Trunk + Base Net + Bias Net + Context Net.

  Attributes:
    trunk: a jaxseg segmentation model with `features_only` (frozen by the
      trainer; its params are `params["trunk"]`, a PSL checkpoint's params).
    num_classes: C.
    width: Base/Bias/Context Net channels (paper 512).
    context_dim: F_e's channels per PPM bin (paper 256).
    policy_dim: the Context Net's PPM channels per bin (paper 64).
    dropout: Bias/Context Net dropout (paper 0.1).
  """
  trunk: nn.Module
  num_classes: int
  width: int = 512
  context_dim: int = 256
  policy_dim: int = 64
  dropout: float = 0.1
  dtype: Dtype = jnp.float32

  def setup(self):
    self.base_conv = ConvNormAct(self.width, group_size=GROUP_SIZE, dtype=self.dtype)
    self.base_classifier = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype)
    self.context_encoder = PPM(self.context_dim, group_size=GROUP_SIZE, dtype=self.dtype)
    self.bias_net = ContextTrunk(self.width, self.num_classes, self.dropout, self.dtype)
    self.policy_encoder = PPM(self.policy_dim, group_size=GROUP_SIZE, dtype=self.dtype)
    self.context_net = ContextTrunk(self.width, 3, self.dropout, self.dtype)

  def features(self, images: Array) -> Array:
    """X: the trunk's features (always in inference mode: the trunk is frozen)."""
    return self.trunk(images, train=False, features_only=True)

  def base(self, x: Array) -> Array:
    """Base Net logits z_base (B, h, w, C), float32."""
    return self.base_classifier(self.base_conv(x)).astype(jnp.float32)

  def bias(self, x: Array, context: Array, *, train: bool) -> Array:
    """Bias Net logits for the context map K (B, h, w) int, 0 = uncertain."""
    k = jax.nn.one_hot(context, self.num_classes + 1, dtype=self.dtype)
    h = jnp.concatenate([x.astype(self.dtype), self.context_encoder(k)], axis=-1)
    return self.bias_net(h, train=train).astype(jnp.float32)

  def context(self, x: Array, probs: Array, *, train: bool) -> tuple[Array, Array]:
    """Context Net on softmax(z_t): policy logits (B, h, w, 2) over
    (uncertain, keep) and values (B, h, w)."""
    h = jnp.concatenate([x.astype(self.dtype), self.policy_encoder(probs)], axis=-1)
    out = self.context_net(h, train=train).astype(jnp.float32)
    return out[..., :2], out[..., 2]

  def __call__(self, images: Array, *, train: bool = False) -> Array:
    """One step with a full context (initialises every parameter): z_1."""
    x = self.features(images)
    z = self.base(x)
    policy, _ = self.context(x, jax.nn.softmax(z), train=train)
    keep = jnp.argmax(policy, -1)
    return z + self.bias(x, (jnp.argmax(z, -1) + 1) * keep, train=train)
