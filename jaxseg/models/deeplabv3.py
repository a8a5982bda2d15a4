"""DeepLabV3 (Chen et al., 2017): dilated ResNet (output stride 8) + ASPP.

  x      = ResNet(images)[-1]                                      (stride 8)
  ASPP   = [up(conv1×1(avgpool(x))), conv1×1(x), conv3×3_d(x) for d ∈ (12, 24, 36)]
  X      = conv3×3(concat(ASPP))          each conv → GroupNorm → ReLU (the features X)
  logits = bilinear(conv1×1(dropout(X)), H × W)

As mmsegmentation's `ASPPHead` (image pooling first, a 3×3 bottleneck, the
dilations (1, 12, 24, 36) of its `-d8` configs). GroupNorm replaces BatchNorm
in the head.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models.sfpnext import ConvNormAct, resize_bilinear

Array = jax.Array
Dtype = Any


class ASPP(nn.Module):
  features: int
  dilations: Sequence[int] = (1, 12, 24, 36)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    h, w = x.shape[1:3]
    pooled = ConvNormAct(self.features, kernel=1, dtype=self.dtype, name="image_pool")(
        jnp.mean(x, axis=(1, 2), keepdims=True))
    outs = [jnp.broadcast_to(pooled, (x.shape[0], h, w, self.features))]
    for i, d in enumerate(self.dilations):
      outs.append(ConvNormAct(self.features, kernel=1 if d == 1 else 3, dilation=d,
                              dtype=self.dtype, name=f"branch{i}")(x))
    return jnp.concatenate(outs, axis=-1)


class DeepLabV3(nn.Module):
  """ResNet + ASPP + classifier; `features_only` returns X (stride 8)."""
  num_classes: int
  backbone: nn.Module  # ResNet(output_stride=8)
  aspp_dim: int = 512
  dropout: float = 0.1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: Array, *, train: bool, features_only: bool = False) -> Array:
    height, width = images.shape[1:3]
    if height % 8 or width % 8:
      raise ValueError(f"image size {height}x{width} not divisible by 8")
    x = self.backbone(images, train=train)[-1]
    x = ASPP(self.aspp_dim, dtype=self.dtype, name="aspp")(x)
    x = ConvNormAct(self.aspp_dim, dtype=self.dtype, name="bottleneck")(x)
    if features_only:
      return x.astype(jnp.float32)
    if self.dropout > 0:
      x = nn.Dropout(self.dropout)(x, deterministic=not train)
    logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="classifier")(x)
    return resize_bilinear(logits.astype(jnp.float32), height, width)
