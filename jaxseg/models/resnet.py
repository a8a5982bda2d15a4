"""Bottleneck ResNet (He et al., 2016) as timm and torchvision build it, NHWC.

  stem "simple": conv7×7/2 (64) → norm → ReLU → maxpool 3×3/2   (torchvision)
  stem "deep":   3 × [conv3×3 → norm → ReLU], widths (w, w, 2w), the first
                 stride 2 → maxpool 3×3/2       (timm `resnet*c` w = 32, `*s` w = 64;
                 mmsegmentation's ResNetV1c; the PSPNet paper's stem is w = 64)
  stage s:       blocks of 1×1 → 3×3 (stride, dilation) → 1×1 (×4) + shortcut,
                 the stride on the 3×3 ("ResNet v1.5")

`output_stride` 8 or 16 replaces the stride of the last stages by dilation as
timm's `output_stride` and torchvision's `replace_stride_with_dilation` do: the
first block of a dilated stage keeps the previous dilation in its 3×3, the
others use the stage's (timm `make_blocks`). Returns the four stage outputs.

`norm` is "group" (GroupNorm, the default from scratch) or "affine" (pretrained
BatchNorm folded into a per-channel scale and bias by `jaxseg.models.weights`).
Padding is PyTorch's symmetric `d·(k−1)/2`, so imported weights see the same
pixels (XLA's "SAME" pads stride-2 convolutions on one side only).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models.sfpnext import ConvNormAct

Array = jax.Array
Dtype = Any

# name -> (depths, stem, stem width, base width).
RESNET_VARIANTS: dict[str, tuple[tuple[int, ...], str, int, int]] = {
    "resnet50": ((3, 4, 6, 3), "simple", 64, 64),  # torchvision / timm resnet50
    "resnet101": ((3, 4, 23, 3), "simple", 64, 64),
    "resnet50c": ((3, 4, 6, 3), "deep", 32, 64),  # timm resnet50c, mmseg ResNetV1c
    "resnet101c": ((3, 4, 23, 3), "deep", 32, 64),
    "resnet50s": ((3, 4, 6, 3), "deep", 64, 64),  # timm resnet50s, PSPNet's stem
    "resnet101s": ((3, 4, 23, 3), "deep", 64, 64),
    "resnet_debug": ((1, 1, 1, 1), "deep", 8, 8),  # tests and runlocal
    # The weight-import fixtures' sizes (tests/fixtures/weights/).
    "resnet_test": ((1, 1, 2, 1), "deep", 4, 4),
    "resnet_test7x7": ((1, 1, 2, 1), "simple", 64, 4),
}


def stage_strides(output_stride: int, stages: int = 4) -> list[tuple[int, int, int]]:
  """(stride, first-block dilation, dilation) per stage, as timm's `make_blocks`."""
  if output_stride not in (8, 16, 32):
    raise ValueError(f"output_stride={output_stride} must be 8, 16 or 32")
  net_stride, dilation, out = 4, 1, []
  for s in range(stages):
    stride, previous = (1 if s == 0 else 2), dilation
    if net_stride >= output_stride:
      dilation, stride = dilation * stride, 1
    else:
      net_stride *= stride
    out.append((stride, previous, dilation))
  return out


class Bottleneck(nn.Module):
  """1×1 → 3×3 (stride, dilation) → 1×1 (×4), residual; timm's names map
  conv1/bn1 → conv1, conv2/bn2 → conv2, conv3/bn3 → conv3, downsample → shortcut."""
  features: int
  stride: int = 1
  dilation: int = 1
  norm: str = "group"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    out = 4 * self.features
    cna = lambda f, name, **kw: ConvNormAct(f, norm=self.norm, dtype=self.dtype,
                                             name=name, **kw)
    y = cna(self.features, "conv1", kernel=1)(x)
    y = cna(self.features, "conv2", stride=self.stride, dilation=self.dilation)(y)
    y = cna(out, "conv3", kernel=1, act=False)(y)
    if x.shape[-1] != out or self.stride != 1:
      x = cna(out, "shortcut", kernel=1, stride=self.stride, act=False)(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """Bottleneck ResNet → (C2, C3, C4, C5); `output_stride` 32, 16 or 8."""
  depths: Sequence[int]
  stem: str = "deep"
  stem_width: int = 64
  width: int = 64
  output_stride: int = 32
  norm: str = "group"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool = False) -> tuple[Array, ...]:
    del train  # no dropout or batch statistics
    x = x.astype(self.dtype)
    cna = lambda f, name, **kw: ConvNormAct(f, norm=self.norm, dtype=self.dtype,
                                             name=name, **kw)
    if self.stem == "simple":
      x = cna(self.stem_width, "stem0", kernel=7, stride=2)(x)
    elif self.stem == "deep":
      w = self.stem_width
      for i, (f, s) in enumerate(((w, 2), (w, 1), (2 * w, 1))):
        x = cna(f, f"stem{i}", stride=s)(x)
    else:
      raise ValueError(f"stem={self.stem!r} must be 'simple' or 'deep'")
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    outputs = []
    for stage, (depth, (stride, first, dilation)) in enumerate(
        zip(self.depths, stage_strides(self.output_stride, len(self.depths)))):
      for i in range(depth):
        x = Bottleneck(self.width * 2 ** stage, stride=stride if i == 0 else 1,
                       dilation=first if i == 0 else dilation, norm=self.norm,
                       dtype=self.dtype, name=f"stage{stage}_block{i}")(x)
      outputs.append(x)
    return tuple(outputs)


def build_resnet(variant: str, **kwargs) -> ResNet:
  depths, stem, stem_width, width = RESNET_VARIANTS[variant]
  return ResNet(depths=depths, stem=stem, stem_width=stem_width, width=width, **kwargs)
