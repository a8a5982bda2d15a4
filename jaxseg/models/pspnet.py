"""PSPNet: dilated ResNet (output stride 8) + Pyramid Pooling Module.

  backbone: `jaxseg.models.resnet.ResNet` at output stride 8 (strides (1, 2, 1, 1),
          dilations (1, 1, 2, 4); Zhao et al., 2017), its last stage's output
  PPM:    x ⊕ up(conv1×1(avgpool_b(x))) for bins b ∈ (1, 2, 3, 6)
  head:   conv3×3 → GN → ReLU (the features X) → dropout → 1×1 classifier
          → bilinear to the input size

`DilatedNet` is this pipeline with the context module as a parameter; PSPNet
is `DilatedNet(context=PPM(...))`, DeepLabV3 `DilatedNet(context=ASPP(...))`
(jaxseg.models.deeplabv3).

GroupNorm replaces BatchNorm in the head, as everywhere in jaxseg (one
`params` collection, a pure `apply`); the backbone's norm is GroupNorm from
scratch or the folded BatchNorm of imported weights. The Pyramid Pooling Module is also CiSS-Net's
context encoder F_e.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models.sfpnext import ConvNormAct, classify, resize_bilinear

Array = jax.Array
Dtype = Any

def _bin_matrix(size: int, bins: int) -> np.ndarray:
  """(bins, size) averaging weights of adaptive pooling: bin i covers
  [floor(i·size/bins), ceil((i+1)·size/bins))."""
  m = np.zeros((bins, size), np.float32)
  for i in range(bins):
    lo, hi = (i * size) // bins, -(-(i + 1) * size // bins)
    m[i, lo:hi] = 1.0 / (hi - lo)
  return m


def adaptive_avg_pool(x: Array, bins: int) -> Array:
  """(B, H, W, C) → (B, bins, bins, C), as `nn.AdaptiveAvgPool2d(bins)`."""
  ph = jnp.asarray(_bin_matrix(x.shape[1], bins), x.dtype)
  pw = jnp.asarray(_bin_matrix(x.shape[2], bins), x.dtype)
  return jnp.einsum("ih,jw,bhwc->bijc", ph, pw, x)


class PPM(nn.Module):
  """Pyramid Pooling Module: `x ⊕ up(conv1×1→GN→ReLU(avgpool_b(x)))` over bins."""
  features: int
  bins: Sequence[int] = (1, 2, 3, 6)
  group_size: int = 0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    h, w = x.shape[1:3]
    outs = [x.astype(self.dtype)]
    for b in self.bins:
      y = ConvNormAct(self.features, kernel=1, group_size=self.group_size,
                      dtype=self.dtype, name=f"bin{b}")(adaptive_avg_pool(x, b))
      outs.append(resize_bilinear(y, h, w))
    return jnp.concatenate(outs, axis=-1)


class DilatedNet(nn.Module):
  """Stride-8 ResNet → context module (PPM: PSPNet, ASPP: DeepLabV3) → conv3×3 →
  GN → ReLU (the features X, returned by `features_only`) → dropout → 1×1
  classifier → bilinear to the input size."""
  num_classes: int
  backbone: nn.Module  # ResNet(output_stride=8)
  context: nn.Module  # (B, h, w, C) -> (B, h, w, C')
  head_dim: int = 512
  dropout: float = 0.1
  dtype: Dtype = jnp.float32
  init_std: float = 0.01  # the classifier's (sfpnext.classifier_init)

  @nn.compact
  def __call__(self, images: Array, *, train: bool, features_only: bool = False) -> Array:
    height, width = images.shape[1:3]
    if height % 8 or width % 8:
      raise ValueError(f"image size {height}x{width} not divisible by 8")
    x = self.context(self.backbone(images, train=train)[-1])
    x = ConvNormAct(self.head_dim, dtype=self.dtype, name="bottleneck")(x)
    if features_only:
      return x.astype(jnp.float32)
    return classify(x, self.num_classes, (height, width), dropout=self.dropout,
                    train=train, dtype=self.dtype, init_std=self.init_std)
