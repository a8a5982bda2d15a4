"""PSPNet: dilated ResNet (output stride 8) + Pyramid Pooling Module.

  stem:   3 × conv3×3 (64, 64, 128; the first stride 2) → maxpool 3×3/2
  stages: bottleneck ResNet, strides (1, 2, 1, 1) and dilations (1, 1, 2, 4),
          so the last stage is at stride 8 (Zhao et al., 2017)
  PPM:    x ⊕ up(conv1×1(avgpool_b(x))) for bins b ∈ (1, 2, 3, 6)
  head:   conv3×3 → GN → ReLU (the features X) → dropout → 1×1 classifier
          → bilinear to the input size

GroupNorm replaces BatchNorm, as everywhere in jaxseg (one `params`
collection, a pure `apply`). The Pyramid Pooling Module is also CiSS-Net's
context encoder F_e.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models.sfpnext import ConvNormAct, resize_bilinear

Array = jax.Array
Dtype = Any

RESNET_DEPTHS = {
    "resnet50": (3, 4, 6, 3),
    "resnet101": (3, 4, 23, 3),
    "resnet_debug": (1, 1, 1, 1),  # tests and runlocal
}


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


class Bottleneck(nn.Module):
  """ResNet bottleneck: 1×1 → 3×3 (stride, dilation) → 1×1 (×4), residual."""
  features: int
  stride: int = 1
  dilation: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    out = 4 * self.features
    y = ConvNormAct(self.features, kernel=1, dtype=self.dtype, name="conv1")(x)
    y = ConvNormAct(self.features, stride=self.stride, dilation=self.dilation,
                    dtype=self.dtype, name="conv2")(y)
    y = ConvNormAct(out, kernel=1, act=False, dtype=self.dtype, name="conv3")(y)
    if x.shape[-1] != out or self.stride != 1:
      x = ConvNormAct(out, kernel=1, stride=self.stride, act=False, dtype=self.dtype,
                      name="shortcut")(x)
    return nn.relu(x + y)


class DilatedResNet(nn.Module):
  """Deep-stem ResNet with dilated last two stages: features at stride 8."""
  depths: Sequence[int]
  width: int = 64
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    w = self.width
    for i, (f, s) in enumerate(((w, 2), (w, 1), (2 * w, 1))):
      x = ConvNormAct(f, stride=s, dtype=self.dtype, name=f"stem{i}")(x)
    x = nn.max_pool(x, (3, 3), (2, 2), padding="SAME")
    for stage, (depth, stride, dilation) in enumerate(
        zip(self.depths, (1, 2, 1, 1), (1, 1, 2, 4))):
      for i in range(depth):
        x = Bottleneck(w * 2 ** stage, stride=stride if i == 0 else 1,
                       dilation=dilation, dtype=self.dtype,
                       name=f"stage{stage}_block{i}")(x)
    return x


class PSPNet(nn.Module):
  """Dilated ResNet + PPM + classifier; `features_only` returns X (stride 8)."""
  num_classes: int
  depths: Sequence[int]
  width: int = 64
  ppm_dim: int = 512
  head_dim: int = 512
  dropout: float = 0.1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: Array, *, train: bool, features_only: bool = False) -> Array:
    height, width = images.shape[1:3]
    if height % 8 or width % 8:
      raise ValueError(f"image size {height}x{width} not divisible by 8")
    x = DilatedResNet(self.depths, self.width, dtype=self.dtype, name="backbone")(
        images.astype(self.dtype))
    x = PPM(self.ppm_dim, dtype=self.dtype, name="ppm")(x)
    x = ConvNormAct(self.head_dim, dtype=self.dtype, name="bottleneck")(x)
    if features_only:
      return x.astype(jnp.float32)
    if self.dropout > 0:
      x = nn.Dropout(self.dropout)(x, deterministic=not train)
    logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name="classifier")(x)
    return resize_bilinear(logits.astype(jnp.float32), height, width)
