"""DeepLabV3 (Chen et al., 2017): dilated ResNet (output stride 8) + ASPP.

  x      = ResNet(images)[-1]                                      (stride 8)
  ASPP   = [up(conv1×1(avgpool(x))), conv1×1(x), conv3×3_d(x) for d ∈ (12, 24, 36)]
  X      = conv3×3(concat(ASPP))          each conv → GroupNorm → ReLU (the features X)
  logits = bilinear(conv1×1(dropout(X)), H × W)

As mmsegmentation's `ASPPHead` (image pooling first, a 3×3 bottleneck, the
dilations (1, 12, 24, 36) of its `-d8` configs). GroupNorm replaces BatchNorm
in the head. The model is `pspnet.DilatedNet(context=ASPP(...))`.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models.sfpnext import ConvNormAct

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
